"""Load benchmark of the real service against a raw asyncpg + msgspec ceiling (bench/ceiling.py).

    uv run python -m bench.run [--workers 2] [--duration 10] [--large] [--markdown FILE] ...

In one invocation: create a fresh PostgreSQL database; start the service with `just serve` (WORKERS uvicorn
workers) and the ceiling with uvicorn (same worker count); seed a reader with 100 items and a writer through the
HTTP API; drive both with wrk (bench/lua/*.lua), scenario by scenario, alternating service and ceiling; then the
checks (users_me during a login storm, with the workers' RSS; optionally items_list on 1,000,000 items; 1 worker
at concurrency 64); print Markdown tables; stop everything and drop the database.

CPU ms/request is the uvicorn workers' user+system CPU time (/proc/<pid>/stat) over the measured run divided by
the requests wrk completed; db ms/request is the same for the PostgreSQL backends serving the bench database.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import asyncpg
import httpx

from bench import seed_large

ROOT = Path(__file__).resolve().parent.parent
LUA_DIR = Path(__file__).resolve().parent / "lua"
HOST = "127.0.0.1"
API = "/api/v1"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
MIB = 1024 * 1024
ADMIN_EMAIL = "admin@example.com"
READER_EMAIL = "reader@example.com"
WRITER_EMAIL = "writer@example.com"
USER_PASSWORD = "bench-user-password"
# Thresholds of the checks (issue 7).
STORM_P99_MS = 250.0
STORM_RSS_MIB = 400.0
STALL_SHARE = 0.1  # a whole second with fewer responses than this share of the mean is a stall
LARGE_MIN_RATIO = 0.75


# ---------------------------------------------------------------- /proc


def read_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (index 0 is the state), or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """User + system CPU seconds of each live process (all its threads)."""
    result = {}
    for pid in pids:
        fields = read_stat(pid)
        if fields is not None:
            result[pid] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return result


def rss_mib(pid: int) -> float:
    try:
        resident = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except OSError:
        return 0.0
    return resident * PAGE_SIZE / MIB


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def executable(pid: int) -> str:
    """The file name of the program a process runs, or "" if it is gone (processes come and go while we look)."""
    try:
        return Path(f"/proc/{pid}/exe").resolve(strict=True).name
    except OSError:
        return ""


def all_pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid in all_pids():
        fields = read_stat(pid)
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(pid)
    found, stack = [], [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def postgres_backends(database: str) -> list[int]:
    """PostgreSQL server processes serving `database` (their title names it: `postgres: user db host(port) …`)."""
    return [pid for pid in all_pids() if cmdline(pid).startswith("postgres: ") and f" {database} " in cmdline(pid)]


# ---------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    """A server process group we started (`just serve` or uvicorn), and its uvicorn worker processes."""

    name: str
    command: list[str]
    env: dict[str, str]
    port: int
    workers: int
    cwd: Path = ROOT
    process: subprocess.Popen[bytes] | None = None
    worker_pids: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self, log: Path) -> None:
        with log.open("ab") as output:
            self.process = subprocess.Popen(
                self.command,
                cwd=self.cwd,
                env=self.env,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"{self.name} exited with {self.process.returncode}; see {log}")
            self.worker_pids = self.find_workers()
            if len(self.worker_pids) == self.workers and self.healthy():
                time.sleep(1.0)  # let every worker finish its startup
                return
            time.sleep(0.3)
        raise SystemExit(f"{self.name} did not become ready in 120 s; see {log}")

    def find_workers(self) -> list[int]:
        assert self.process is not None
        tree = descendants(self.process.pid)
        spawned = [pid for pid in tree if "spawn_main" in cmdline(pid)]
        if spawned:
            return spawned
        # One worker: uvicorn serves from its own (python) process.
        return [pid for pid in tree if executable(pid).startswith("python")]

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}{API}/utils/health-check/", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def service(database_url: str, workers: int, secret: str, admin_password: str, repo: Path = ROOT) -> Server:
    """`just serve` of the checkout at `repo` (this one by default; another to compare a change)."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "ENVIRONMENT": "production",
        "SECRET_KEY": secret,
        "FIRST_SUPERUSER": ADMIN_EMAIL,
        "FIRST_SUPERUSER_PASSWORD": admin_password,
        "RATE_LIMIT_ENABLED": "false",
        "LOG_LEVEL": "WARNING",
        "HOST": HOST,
        "PORT": str(port),
        "WORKERS": str(workers),
    }
    just = shutil.which("just") or "just"
    return Server("service", [just, "serve"], env, port, workers, cwd=repo)


def ceiling(dsn: str, workers: int) -> Server:
    port = free_port()
    command = [
        *(sys.executable, "-m", "uvicorn", "bench.ceiling:app", "--host", HOST, "--port", str(port)),
        *("--workers", str(workers), "--loop", "uvloop", "--http", "httptools", "--no-access-log"),
        *("--log-level", "warning"),
    ]
    return Server("ceiling", command, {**os.environ, "BENCH_CEILING_DSN": dsn}, port, workers)


# ---------------------------------------------------------------- wrk


@dataclass
class Caller:
    email: str
    token: str
    user_id: str
    item_ids: list[str] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        return {
            "BENCH_TOKEN": self.token,
            "BENCH_USER_ID": self.user_id,
            "BENCH_ITEM_IDS": ",".join(self.item_ids),
            "BENCH_USERNAME": self.email,
            "BENCH_PASSWORD": USER_PASSWORD,
        }


@dataclass
class Result:
    requests: int
    seconds: float
    non2xx: int
    socket_errors: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    cpu_ms: float  # server workers' CPU per request
    db_ms: float  # PostgreSQL backends' CPU per request
    fewest_per_second: int  # responses in the slowest whole second of the run
    mean_per_second: float
    new_connections: int = 0  # database connections opened during the run (pool churn)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def wrk_command(url: str, script: str, connections: int, duration: float) -> list[str]:
    threads = max(1, min(2, connections))
    return [
        *("wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration:g}s", "--timeout", "10s"),
        *("-s", str(LUA_DIR / f"{script}.lua"), url),
    ]


def start_wrk(url: str, script: str, caller: Caller, connections: int, duration: float) -> subprocess.Popen[str]:
    env = {**os.environ, "BENCH_LUA_DIR": str(LUA_DIR), **caller.env()}
    return subprocess.Popen(
        wrk_command(url, script, connections, duration),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def parse_wrk(process: subprocess.Popen[str]) -> dict[str, float]:
    output, _ = process.communicate()
    for line in output.splitlines():
        if line.startswith("BENCH_JSON "):
            parsed: dict[str, float] = json.loads(line.removeprefix("BENCH_JSON "))
            return parsed
    raise SystemExit(f"wrk gave no summary:\n{output}")


async def database_sessions(database: str) -> int:
    """Connections ever opened to `database` (PostgreSQL's cumulative statistics; flushed within a second)."""
    connection = await asyncpg.connect(seed_large.ADMIN_DSN)
    try:
        return int(await connection.fetchval("SELECT sessions FROM pg_stat_database WHERE datname = $1", database))
    finally:
        await connection.close()


@contextmanager
def cpu_meter(server: Server, database: str) -> Iterator[dict[str, float]]:
    """Yields a dict that holds, once the block exits, the `server` and `db` CPU seconds spent inside it and the
    `connections` opened to the database meanwhile."""
    spent: dict[str, float] = {}
    sessions_before = asyncio.run(database_sessions(database))
    workers_before = cpu_seconds(server.worker_pids)
    db_before = cpu_seconds(postgres_backends(database))
    yield spent
    workers_after = cpu_seconds(server.worker_pids)
    db_after = cpu_seconds(postgres_backends(database))
    spent["server"] = sum(workers_after[pid] - workers_before.get(pid, 0.0) for pid in workers_after)
    spent["db"] = sum(db_after[pid] - db_before.get(pid, 0.0) for pid in db_after)
    time.sleep(1.0)  # backends report their statistics at most once a second
    spent["connections"] = asyncio.run(database_sessions(database)) - sessions_before


def to_result(summary: dict[str, float], spent: dict[str, float]) -> Result:
    requests = int(summary["requests"])
    per_request = 1000.0 / requests if requests else 0.0
    return Result(
        requests=requests,
        seconds=summary["duration_us"] / 1e6,
        non2xx=int(summary["non2xx"]),
        socket_errors=int(summary["connect"] + summary["read"] + summary["write"] + summary["timeout"]),
        p50_ms=summary["p50_us"] / 1000,
        p99_ms=summary["p99_us"] / 1000,
        max_ms=summary["max_us"] / 1000,
        cpu_ms=spent["server"] * per_request,
        db_ms=spent["db"] * per_request,
        fewest_per_second=int(summary["fewest_per_second"]),
        mean_per_second=summary["mean_per_second"],
        new_connections=int(spent.get("connections", 0)),
    )


def run_wrk(
    server: Server, database: str, script: str, caller: Caller, connections: int, duration: float, warmup: float
) -> Result:
    if warmup > 0:
        parse_wrk(start_wrk(server.url, script, caller, connections, warmup))
    with cpu_meter(server, database) as spent:
        summary = parse_wrk(start_wrk(server.url, script, caller, connections, duration))
    return to_result(summary, spent)


# ---------------------------------------------------------------- seeding through the API


def login(client: httpx.Client, email: str, password: str) -> str:
    response = client.post(f"{API}/login/access-token", data={"username": email, "password": password})
    response.raise_for_status()
    token: str = response.json()["access_token"]
    return token


def seed_callers(url: str, admin_password: str, items: int) -> tuple[Caller, Caller]:
    """A reader with `items` items and a writer with none, created through the HTTP API."""
    with httpx.Client(base_url=url, timeout=30) as client:
        admin = {"Authorization": f"Bearer {login(client, ADMIN_EMAIL, admin_password)}"}
        callers = []
        for email in (READER_EMAIL, WRITER_EMAIL):
            body = {"email": email, "password": USER_PASSWORD, "full_name": email.split("@")[0].title()}
            created = client.post(f"{API}/users/", json=body, headers=admin)
            created.raise_for_status()
            callers.append(Caller(email, login(client, email, USER_PASSWORD), created.json()["id"]))
        reader, writer = callers
        headers = {"Authorization": f"Bearer {reader.token}"}
        for n in range(items):
            body = {"title": f"Reader item {n}", "description": f"Item {n} of the reader"}
            response = client.post(f"{API}/items/", json=body, headers=headers)
            response.raise_for_status()
            reader.item_ids.append(response.json()["id"])
    return reader, writer


def login_caller(url: str, email: str, password: str) -> Caller:
    with httpx.Client(base_url=url, timeout=30) as client:
        token = login(client, email, password)
        me = client.get(f"{API}/users/me", headers={"Authorization": f"Bearer {token}"})
        me.raise_for_status()
        return Caller(email, token, me.json()["id"])


# ---------------------------------------------------------------- scenarios and checks


@dataclass(frozen=True)
class Scenario:
    name: str
    caller: str  # "reader" or "writer"
    on_ceiling: bool
    target: float | None  # minimum service/ceiling req/s ratio


SCENARIOS = [
    Scenario("health", "reader", True, None),
    Scenario("users_me", "reader", True, 0.40),
    Scenario("items_list", "reader", True, 0.40),
    Scenario("item_get", "reader", True, 0.40),
    Scenario("item_create", "writer", True, 0.35),
    Scenario("login", "reader", False, None),
]


@dataclass
class Row:
    scenario: Scenario
    connections: int
    service: Result
    ceiling: Result | None


@dataclass
class Check:
    name: str
    measured: str
    target: str
    met: bool


def ms(value: float) -> str:
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def main_table(rows: list[Row]) -> str:
    lines = [
        "| scenario | conc | req/s | p50 ms | p99 ms | non-2xx | sock err | cpu ms/req | db ms/req | db conns opened "
        "| ceiling req/s | ceiling p99 ms | ceiling cpu ms/req | ceiling db ms/req | % of ceiling | target |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for row in rows:
        s, c = row.service, row.ceiling
        ceiling_cells = (
            [f"{c.rps:.0f}", ms(c.p99_ms), f"{c.cpu_ms:.2f}", f"{c.db_ms:.2f}", f"{100 * s.rps / c.rps:.0f}%"]
            if c and c.rps
            else ["—"] * 5
        )
        target = "—"
        if row.scenario.target is not None and c and c.rps:
            met = s.rps / c.rps >= row.scenario.target
            target = f"≥{100 * row.scenario.target:.0f}%: {'met' if met else 'NOT met'}"
        cells = [
            row.scenario.name,
            str(row.connections),
            f"{s.rps:.0f}",
            ms(s.p50_ms),
            ms(s.p99_ms),
            str(s.non2xx),
            str(s.socket_errors),
            f"{s.cpu_ms:.2f}",
            f"{s.db_ms:.2f}",
            str(s.new_connections),
            *ceiling_cells,
            target,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def checks_table(checks: list[Check]) -> str:
    lines = ["| check | measured | target | met |", "|---|---|---|---|"]
    lines += [f"| {c.name} | {c.measured} | {c.target} | {'yes' if c.met else 'NO'} |" for c in checks]
    return "\n".join(lines)


def login_storm(
    server: Server, database: str, reader: Caller, connections: int, login_connections: int, duration: float
) -> list[Check]:
    """users_me at `connections` while `login_connections` clients log in non-stop; workers' RSS sampled."""
    peak = {pid: rss_mib(pid) for pid in server.worker_pids}
    idle = dict(peak)
    logins = start_wrk(server.url, "login", reader, login_connections, duration)
    reads = start_wrk(server.url, "users_me", reader, connections, duration)
    while reads.poll() is None or logins.poll() is None:
        for pid in server.worker_pids:
            peak[pid] = max(peak[pid], rss_mib(pid))
        time.sleep(0.1)
    me = to_result(parse_wrk(reads), {"server": 0.0, "db": 0.0})
    storm = to_result(parse_wrk(logins), {"server": 0.0, "db": 0.0})
    errors = me.non2xx + me.socket_errors + storm.non2xx + storm.socket_errors
    rss = ", ".join(f"{idle[pid]:.0f}→{peak[pid]:.0f}" for pid in server.worker_pids)
    return [
        Check(
            f"users_me (c={connections}) during {login_connections} concurrent logins: p99",
            f"{ms(me.p99_ms)} ms ({me.rps:.0f} req/s, p50 {ms(me.p50_ms)} ms; logins {storm.rps:.1f}/s, "
            f"p99 {ms(storm.p99_ms)} ms; errors {errors})",
            f"< {STORM_P99_MS:.0f} ms, 0 errors",
            me.p99_ms < STORM_P99_MS and errors == 0,
        ),
        Check(
            "worker RSS during the login storm (MiB, idle→peak)",
            rss,
            f"< {STORM_RSS_MIB:.0f} MiB each",
            max(peak.values()) < STORM_RSS_MIB,
        ),
    ]


# ---------------------------------------------------------------- report


def machine_description() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    memory_kib = int(Path("/proc/meminfo").read_text().split()[1])
    return f"{cpu}, {os.cpu_count()} cores, {memory_kib / MIB:.0f} GiB RAM, Linux {platform.release()}"


async def postgres_version() -> str:
    connection = await asyncpg.connect(seed_large.ADMIN_DSN)
    try:
        return str(await connection.fetchval("SHOW server_version"))
    finally:
        await connection.close()


def versions() -> str:
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False).stdout.split(" [")[0]
    packages = ["litestar", "advanced-alchemy", "sqlalchemy", "asyncpg", "msgspec", "uvicorn", "uvloop", "httptools"]
    names = ", ".join(f"{name} {version(name)}" for name in packages)
    return f"Python {platform.python_version()}, PostgreSQL {asyncio.run(postgres_version())}, {names}, {wrk}"


def git_commit(repo: Path) -> str:
    """The checkout's commit, marked when the served code (app/, db/, migrations/) has uncommitted changes."""

    def git(*arguments: str) -> str:
        return subprocess.run(["git", *arguments], cwd=repo, capture_output=True, text=True, check=False).stdout

    commit = git("rev-parse", "--short", "HEAD").strip() or f"unknown ({repo})"
    dirty = git("status", "--porcelain", "--", "app", "db", "migrations").strip()
    return commit + (" + uncommitted changes in app/db/migrations" if dirty else "")


# ---------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers of the service and the ceiling")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each run")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (login: --login-connections)")
    parser.add_argument("--login-connections", type=int, default=4)
    parser.add_argument(
        "--scenarios",
        default=",".join(s.name for s in SCENARIOS),
        help="comma-separated subset of: " + ", ".join(s.name for s in SCENARIOS),
    )
    parser.add_argument("--no-ceiling", action="store_true", help="skip the ceiling")
    parser.add_argument("--no-checks", action="store_true", help="skip the login-storm and concurrency-64 checks")
    parser.add_argument("--large", action="store_true", help="also compare items_list on 1,000,000 seeded items")
    parser.add_argument("--stress-connections", type=int, default=64, help="connections of the 1-worker check")
    parser.add_argument("--markdown", type=Path, help="also write the report (Markdown) to this file")
    parser.add_argument("--repo", type=Path, default=ROOT, help="serve the service from this checkout instead")
    parser.add_argument("--keep-database", action="store_true", help="do not drop the bench database")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install -y wrk); `just bench` installs it")
    chosen = [s for s in SCENARIOS if s.name in args.scenarios.split(",")]
    database = f"bench_{uuid.uuid4().hex[:10]}"
    dsn = seed_large.dsn_for(database)
    secret, admin_password = secrets.token_urlsafe(32), secrets.token_urlsafe(16)
    logs = Path(os.environ.get("BENCH_LOG_DIR", "/tmp")) / database
    logs.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    print(f"bench: database {database}, logs in {logs}", flush=True)
    asyncio.run(seed_large.admin_execute(f'CREATE DATABASE "{database}"'))
    servers: list[Server] = []
    rows: list[Row] = []
    checks: list[Check] = []
    try:
        app = service(seed_large.sqlalchemy_url(dsn), args.workers, secret, admin_password, args.repo.resolve())
        servers.append(app)
        app.start(logs / "service.log")
        top = ceiling(dsn, args.workers)
        if not args.no_ceiling:
            servers.append(top)
            top.start(logs / "ceiling.log")
        reader, writer = seed_callers(app.url, admin_password, items=100)
        callers = {"reader": reader, "writer": writer}
        print(f"bench: service on {app.url}, {args.workers} workers; seeded the reader's 100 items", flush=True)

        for scenario in chosen:
            connections = args.login_connections if scenario.name == "login" else args.connections
            caller = callers[scenario.caller]
            measured = run_wrk(app, database, scenario.name, caller, connections, args.duration, args.warmup)
            against = None
            if scenario.on_ceiling and not args.no_ceiling:
                against = run_wrk(top, database, scenario.name, caller, connections, args.duration, args.warmup)
            rows.append(Row(scenario, connections, measured, against))
            print(
                f"bench: {scenario.name}: {measured.rps:.0f} req/s"
                + (f" (ceiling {against.rps:.0f})" if against else ""),
                flush=True,
            )
        top.stop()

        if not args.no_checks:
            checks += login_storm(app, database, reader, args.connections, args.login_connections, args.duration)
        if args.large:
            checks.append(large_check(app, database, dsn, reader, args))
        if not args.no_checks:
            app.stop()
            checks.append(stress_check(database, dsn, secret, admin_password, reader, args, logs))
    finally:
        for server in servers:
            server.stop()
        if not args.keep_database:
            asyncio.run(seed_large.admin_execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))

    command = "just bench " + shlex.join(sys.argv[1:])
    report = [
        f"### {started:%Y-%m-%d %H:%M} UTC — `{command.strip()}`",
        "",
        f"- commit {git_commit(args.repo)}; {args.workers} workers; {args.duration:g} s per run "
        f"after {args.warmup:g} s warm-up; "
        f"wrk concurrency {args.connections} (login {args.login_connections})",
        f"- machine: {machine_description()}",
        f"- versions: {versions()}",
        "",
        main_table(rows),
    ]
    if checks:
        report += ["", checks_table(checks)]
    text = "\n".join(report) + "\n"
    print("\n" + text)
    if args.markdown:
        args.markdown.write_text(text)


def large_check(app: Server, database: str, dsn: str, reader: Caller, args: argparse.Namespace) -> Check:
    small = run_wrk(app, database, "items_list", reader, args.connections, args.duration, args.warmup)
    print(f"bench: items_list before seeding {small.rps:.0f} req/s; seeding 1,000,000 items…", flush=True)
    seconds = asyncio.run(seed_large.seed(dsn))
    owner = login_caller(app.url, seed_large.seed_email(1), seed_large.SEED_PASSWORD)
    large = run_wrk(app, database, "items_list", owner, args.connections, args.duration, args.warmup)
    ratio = large.rps / small.rps if small.rps else 0.0
    return Check(
        "items_list of one user (100 items) with 1,000,000 items / 10,000 users in the table",
        f"{large.rps:.0f} req/s (p99 {ms(large.p99_ms)} ms) vs {small.rps:.0f} req/s on the small table: "
        f"{100 * ratio:.0f}% (seeded in {seconds:.0f} s)",
        f"≥ {100 * LARGE_MIN_RATIO:.0f}%",
        ratio >= LARGE_MIN_RATIO and large.non2xx + large.socket_errors == 0,
    )


def stress_check(
    database: str, dsn: str, secret: str, admin_password: str, reader: Caller, args: argparse.Namespace, logs: Path
) -> Check:
    single = service(seed_large.sqlalchemy_url(dsn), 1, secret, admin_password, args.repo.resolve())
    try:
        single.start(logs / "service-1-worker.log")
        result = run_wrk(single, database, "mixed", reader, args.stress_connections, args.duration, args.warmup)
    finally:
        single.stop()
    errors = result.non2xx + result.socket_errors
    stalled = result.fewest_per_second < STALL_SHARE * result.mean_per_second
    return Check(
        f"1 worker, concurrency {args.stress_connections}, mixed users_me/items_list/item_get/item_create",
        f"{result.rps:.0f} req/s, p99 {ms(result.p99_ms)} ms, max {ms(result.max_ms)} ms; slowest second "
        f"{result.fewest_per_second} responses (mean {result.mean_per_second:.0f}); "
        f"non-2xx {result.non2xx}, socket errors {result.socket_errors}",
        f"0 errors; no stall (every second ≥ {100 * STALL_SHARE:.0f}% of the mean)",
        errors == 0 and not stalled,
    )


if __name__ == "__main__":
    main()
