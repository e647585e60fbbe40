"""Prometheus metrics at `/metrics` (`METRICS_ENABLED`; README "Operating" lists them).

Requests are counted by an ASGI wrapper around the whole app (`Metrics.wrap`), outside routing, so that a path no
route matches is counted too (as the route `unmatched`): by method, route *template* and status, with a latency
histogram; ~5 µs a request with 2 workers (counter and histogram writes to the worker's file), ~3 µs in a single
process. The requests in flight, the pool and the rate limiter's Redis fallback are sampled into gauges by each
worker every `SAMPLE_INTERVAL_S` (and by the worker answering a scrape): nothing of them on the request path.
Logins, mails and breached-password checks are counted where they happen (`count_login`, `count_email`,
`count_breach_check`).

uvicorn's `--workers` are processes, each counting its own requests. Under uvicorn's supervisor (a worker is a
`multiprocessing` child) every worker writes its metrics to memory-mapped files in one folder per server start,
`{METRICS_DIR or the temp dir}/accounts-api-metrics-{master pid}-{master start time}`, and a scrape answered by
any worker sums them all (prometheus_client's multiprocess mode): counts of a worker that died stay in the sums, its
gauges leave them. Folders of servers no longer running are removed when a worker starts. A process serving alone
(no `--workers`, or a test's server) keeps its metrics in memory."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import re
import shutil
import tempfile
import time
import tomllib
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import structlog
from litestar import Request, Response, get
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from app.auth import EXCLUDE_FROM_AUTH
from app.config import Settings
from db.executor import Executor

log = structlog.get_logger("app.metrics")

METRICS_PATH = "/metrics"
SAMPLE_INTERVAL_S = 1.0
MEDIA_TYPE = CONTENT_TYPE_LATEST.split("; charset")[0]  # Litestar adds the charset of text answers itself
UNMATCHED = "unmatched"  # the route label of a request no route matched (never its raw path)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Gauges each worker sets from its own state (`Metrics.sample`), summed over the live workers at a scrape.
SUMMED_GAUGES = {
    "http_requests_in_flight": "Requests being answered.",
    "db_pool_size": "Connections the database pool keeps (summed over workers).",
    "db_pool_checked_out": "Pool connections in use by requests (ORM sessions and fast statements).",
    "db_pool_overflow": "Connections open beyond the pool's size.",
    "db_pool_waiting": "Requests waiting for a pool connection (the pool is exhausted).",
}
# Requests here take milliseconds: finer buckets below 10 ms than the client's defaults.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LOGIN_OUTCOMES = ("succeeded", "failed", "refused")
EMAIL_OUTCOMES = ("queued", "sent", "failed", "not_configured")
BREACH_CHECK_OUTCOMES = ("ok", "breached", "error")
_FOLDER_PREFIX = "accounts-api-metrics-"
ROOT = Path(__file__).resolve().parent.parent

# The metrics of this process's app, for the counters called from request code (None: metrics are off). One app
# serves per process; a test process building several keeps the newest one's.
_active: Metrics | None = None


def count_login(outcome: str) -> None:
    """A login `succeeded`, `failed` (credentials or an inactive account) or was `refused` by the rate limits."""
    if _active is not None:
        _active.logins.labels(outcome).inc()


def count_email(kind: str, outcome: str) -> None:
    """A mail of a `kind` (its template: `reset_password`, `new_account`, `test_email`) was `queued` for sending
    after the answer (counted for recovery mails), `sent`, `failed`, or not sent as mail is `not_configured`."""
    if _active is not None:
        _active.emails.labels(kind, outcome).inc()


def count_breach_check(outcome: str) -> None:
    """A new password was looked up in the range API (app/breach.py): `ok` (not seen often enough), `breached`
    (refused), or `error` (no usable answer: let through, or refused with a 503 when failing closed)."""
    if _active is not None:
        _active.breach_checks.labels(outcome).inc()


def _start_time(pid: int) -> str:
    """The process's start time (clock ticks since boot), which tells it from a later process of the same pid."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "0"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def multiprocess_folder(settings: Settings) -> Path | None:
    """The folder shared by this server's workers, or None when this process serves alone."""
    parent = multiprocessing.parent_process()
    if parent is None or parent.pid is None:
        return None
    base = Path(settings.METRICS_DIR or tempfile.gettempdir())
    return base / f"{_FOLDER_PREFIX}{parent.pid}-{_start_time(parent.pid)}"


def remove_stale_folders(folder: Path) -> None:
    """Folders of servers no longer running: their master's pid is gone or now names another process."""
    for other in folder.parent.glob(f"{_FOLDER_PREFIX}*"):
        match = re.fullmatch(rf"{_FOLDER_PREFIX}(\d+)-(\d+)", other.name)
        if other == folder or match is None:
            continue
        pid, started = int(match[1]), match[2]
        if not _alive(pid) or _start_time(pid) != started:
            shutil.rmtree(other, ignore_errors=True)


def mark_dead_workers(folder: Path) -> None:
    """A dead worker's gauges leave the sums (its counts stay: they happened)."""
    pids = {int(m[1]) for f in folder.glob("*.db") if (m := re.search(r"_(\d+)\.db$", f.name))}
    for pid in pids:
        if not _alive(pid):
            multiprocess.mark_process_dead(pid, str(folder))  # type: ignore[no-untyped-call]


def build_version() -> str:
    """The project's version: installed metadata, else pyproject.toml beside the code, else `unknown`."""
    try:
        return metadata.version("accounts-api")
    except metadata.PackageNotFoundError:
        pass
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])
    return "unknown"


def build_commit(settings: Settings) -> str:
    """`BUILD_COMMIT`, else the checkout's HEAD when the code runs from a git checkout, else `unknown`."""
    if settings.BUILD_COMMIT:
        return settings.BUILD_COMMIT
    with contextlib.suppress(OSError, ValueError):
        git = ROOT / ".git"
        if git.is_file():  # a worktree: `gitdir: <path>`
            git = Path(git.read_text().split(":", 1)[1].strip())
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head
        ref = head.removeprefix("ref: ")
        common = Path((git / "commondir").read_text().strip()) if (git / "commondir").is_file() else Path(".")
        for folder in (git, git / common):
            if (folder / ref).is_file():
                return (folder / ref).read_text().strip()
            packed = folder / "packed-refs"
            if packed.is_file():
                for line in packed.read_text().splitlines():
                    if line.endswith(f" {ref}"):
                        return line.split(" ", 1)[0]
    return "unknown"


class Metrics:
    def __init__(self, settings: Settings, fast: Executor, rate_limiter: Any) -> None:
        self.fast = fast
        self.engine = fast.engine
        self.rate_limiter = rate_limiter
        self.folder = multiprocess_folder(settings)
        # The `_created` series of a process-local registry would only double the lines.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        own: CollectorRegistry | None = self.registry
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            remove_stale_folders(self.folder)
            mark_dead_workers(self.folder)
            # The metrics write to files (read by the collector of any worker answering a scrape) instead of
            # into a registry: the client takes the folder from this variable when it creates a metric's file.
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(self.folder)
            values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
            multiprocess.MultiProcessCollector(self.registry, path=str(self.folder))  # type: ignore[no-untyped-call]
            own = None
        self.requests = Counter(
            "http_requests_total", "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"], registry=own,
        )  # fmt: skip
        self.latency = Histogram(
            "http_request_duration_seconds", "Time from a request's arrival to the end of its answer.",
            ["method", "route"], buckets=LATENCY_BUCKETS, registry=own,
        )  # fmt: skip
        self.summed = {
            name: Gauge(name, documentation, registry=own, multiprocess_mode="livesum")
            for name, documentation in SUMMED_GAUGES.items()
        }
        self.logins = Counter(
            "logins_total", "Logins by outcome: succeeded, failed, refused (rate limited).", ["outcome"], registry=own
        )
        self.emails = Counter(
            "emails_total", "Mails by kind (template) and outcome: queued, sent, failed, not_configured.",
            ["kind", "outcome"], registry=own,
        )  # fmt: skip
        self.breach_checks = Counter(
            "password_breach_checks_total",
            "New passwords looked up in the range API, by outcome: ok, breached, error.",
            ["outcome"],
            registry=own,
        )
        self.redis_fallback = Gauge(
            "rate_limit_redis_fallback",
            "1 while a worker keeps rate limits per process because Redis does not answer.",
            registry=own, multiprocess_mode="livemax",
        )  # fmt: skip
        self.build = Gauge(
            "build_info", "The running build: version and commit.", ["version", "commit"],
            registry=own, multiprocess_mode="livemax",
        )  # fmt: skip
        self.build.labels(build_version(), build_commit(settings)).set(1)
        for outcome in LOGIN_OUTCOMES:  # every series from the start: a rate over a missing series is empty
            self.logins.labels(outcome)
        for outcome in BREACH_CHECK_OUTCOMES:
            self.breach_checks.labels(outcome)
        for kind in ("reset_password", "new_account", "test_email"):
            for outcome in EMAIL_OUTCOMES:
                if outcome != "queued" or kind == "reset_password":  # queued: counted for recovery mails
                    self.emails.labels(kind, outcome)
        # (method, route, status) -> (counter, histogram) children: a label lookup costs more than the count.
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._sampler: asyncio.Task[None] | None = None
        # Requests in flight in this worker, sampled into the gauge with the pool: an int costs nothing per request
        # (the gauge itself, a write to the worker's file twice a request, would double the cost of the counting).
        self._busy = [0]
        self.sample()

    # ------------------------------------------------------------ requests

    def wrap(self, app: ASGIApp) -> ASGIApp:
        """`app` (the Litestar app's ASGI handler, outside routing) with its HTTP requests counted."""
        busy = self._busy
        children, child = self._children, self._child
        clock = time.perf_counter

        async def metered(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != ScopeType.HTTP:
                await app(scope, receive, send)
                return
            started = clock()
            status = 500  # unless an answer starts: the server answers an exception that escapes with a 500

            async def send_status(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            busy[0] += 1
            try:
                await app(scope, receive, send_status)
            finally:
                busy[0] -= 1
                key = (scope["method"], scope.get("path_template") or UNMATCHED, status)
                counter, histogram = children.get(key) or child(key)
                counter.inc()
                histogram.observe(clock() - started)

        return metered

    def _child(self, key: tuple[str, str, int]) -> tuple[Any, Any]:
        method, route, status = key
        method = method if method in METHODS else "OTHER"
        found = (self.requests.labels(method, route, str(status)), self.latency.labels(method, route))
        if len(self._children) < 10_000:  # routes x methods x statuses: bounded, unless methods are invented
            self._children[key] = found
        return found

    # ------------------------------------------------------------ gauges

    def sample(self) -> None:
        """This worker's requests in flight, pool and rate limiter, into its gauges."""
        readings = {"http_requests_in_flight": self._busy[0]}
        pool: Any = self.engine.sync_engine.pool
        with contextlib.suppress(AttributeError, TypeError):  # pools without a size (SQLite's NullPool, say)
            # The async pool's queue: its asyncio.Queue's waiting getters (none until a checkout had to wait), and
            # the fast statements waiting their turn before it (db/executor.py).
            queue = getattr(getattr(pool, "_pool", None), "_queue", None)
            readings |= {
                "db_pool_size": pool.size(),
                "db_pool_checked_out": pool.checkedout() - self.fast.idle(),
                "db_pool_overflow": max(pool.overflow(), 0),
                "db_pool_waiting": len(getattr(queue, "_getters", ()) or ()) + self.fast.waiting(),
            }
        for name, reading in readings.items():
            self.summed[name].set(reading)
        self.redis_fallback.set(1 if self.rate_limiter.mode == "process (redis unavailable)" else 0)

    async def _sample_forever(self) -> None:
        while True:
            await asyncio.sleep(SAMPLE_INTERVAL_S)
            try:
                self.sample()
            except Exception:  # a sample must never end the sampling
                log.exception("metrics sample failed")

    async def start(self) -> None:
        global _active
        _active = self
        self._sampler = asyncio.get_running_loop().create_task(self._sample_forever())

    async def stop(self) -> None:
        global _active
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
        if _active is self:
            _active = None

    def scrape(self) -> bytes:
        self.sample()
        if self.folder is not None:
            mark_dead_workers(self.folder)
        return generate_latest(self.registry)


def metrics_endpoint(metrics: Metrics) -> Callable[..., Any]:
    @get(METRICS_PATH, include_in_schema=False, opt={EXCLUDE_FROM_AUTH: True}, sync_to_thread=False)
    def scrape(request: Request[Any, Any, Any]) -> Response[bytes]:
        return Response(metrics.scrape(), media_type=MEDIA_TYPE)

    return scrape
