"""Load benchmark of the real service against raw asyncpg + msgspec ceilings (bench/ceiling.py, and for the health
route a bare Litestar app, bench/ceiling_litestar.py), and optionally another implementation of the same API.

    uv run python -m bench.run [--workers 2] [--duration 10] [--scenarios a,b] [--reference [NAME=]URL]... [--env K=V]

In one invocation: create a fresh PostgreSQL database; start the service with `just serve` (WORKERS uvicorn
workers, the production log level unless `--env LOG_LEVEL=…`) and the ceilings with uvicorn (same worker count,
uvloop, httptools); seed callers through the HTTP API (a reader with 100 items, a writer with 100 items, the
superuser) and the bulk straight into the database (100 users with a precomputed argon2 hash, items to delete,
users whose password changes; for items_list_100k, when it runs, a user with 100,000 items); drive every scenario
with wrk (bench/lua/*.lua), service then ceiling (then each reference), scenario by scenario; then the checks
(users_me during a login storm, with the workers' RSS; optionally items_list on 1,000,000 items; 1 worker at
concurrency 64); print Markdown tables; stop everything and drop the database.

Scenarios that consume rows (item_delete, password_change) get fresh rows for every wrk run; user_create makes
unique emails per run. Every scenario counts non-2xx answers in Lua: a normal run shows 0.

CPU ms/request is the uvicorn workers' user+system CPU time (/proc/<pid>/stat) over the measured run divided by
the requests wrk completed; db ms/request is the same for the PostgreSQL backends serving the bench database. The
references (`--reference june=http://127.0.0.1:8101 --reference current=http://127.0.0.1:8102`, e.g. the template's
two generations served by `just bench-template june|current`; a bare URL is named "reference") are measured by wrk
only (their processes and databases are not ours), each seeded through its own API by its own superuser, and shown
in a table of their own beside ours (req/s, p99, non-2xx, ours ÷ NAME per reference).
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
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from itertools import count
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import jwt

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
NEW_PASSWORD = "bench-changed-password"
LIST_USERS = 100  # seeded users: GET /users/ answers a full page of 100
HOARDER_EMAIL = "hoarder@example.com"
HOARDED_ITEMS = 100_000  # items_list_100k: the first page of a user who owns this many (issue 23)
# Rows seeded for one wrk run of a scenario that consumes them, per second of the run: above what the fastest
# implementation does on this machine (a Lua list that runs out repeats ids, and those 404s show as non-2xx).
DELETES_PER_SECOND = 10_000
PASSWORD_CHANGES_PER_SECOND = 60
# Thresholds of the checks (issue 7) and targets (issue 16).
STORM_P99_MS = 250.0
STORM_RSS_MIB = 400.0
STALL_SHARE = 0.1  # a whole second with fewer responses than this share of the mean is a stall
LARGE_MIN_RATIO = 0.75
BARE_LITESTAR_TARGET = 0.80
MIXED_P99_MS = 50.0


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


def service(
    database_url: str,
    workers: int,
    secret: str,
    admin_password: str,
    repo: Path = ROOT,
    extra_env: dict[str, str] | None = None,
) -> Server:
    """`just serve` of the checkout at `repo` (this one by default; another to compare a change), with `extra_env`
    (`--env`) over the bench's settings."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "ENVIRONMENT": "production",
        "SECRET_KEY": secret,
        "FIRST_SUPERUSER": ADMIN_EMAIL,
        "FIRST_SUPERUSER_PASSWORD": admin_password,
        "RATE_LIMIT_ENABLED": "false",
        "HOST": HOST,
        "PORT": str(port),
        "WORKERS": str(workers),
        **(extra_env or {}),
    }
    just = shutil.which("just") or "just"
    return Server("service", [just, "serve"], env, port, workers, cwd=repo)


def ceiling(dsn: str, workers: int, module: str = "bench.ceiling", name: str = "ceiling", pool: int = 20) -> Server:
    """A ceiling app (`module:app`) served as the service is: uvicorn, same workers, uvloop, httptools; `pool`
    database connections per worker at most."""
    port = free_port()
    command = [
        *(sys.executable, "-m", "uvicorn", f"{module}:app", "--host", HOST, "--port", str(port)),
        *("--workers", str(workers), "--loop", "uvloop", "--http", "httptools", "--no-access-log"),
        *("--log-level", "warning"),
    ]
    env = {**os.environ, "BENCH_CEILING_DSN": dsn, "BENCH_CEILING_POOL": str(pool)}
    return Server(name, command, env, port, workers)


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
    cpu_ms: float | None  # server workers' CPU per request (None: not ours to measure)
    db_ms: float | None  # PostgreSQL backends' CPU per request
    fewest_per_second: int  # responses in the slowest whole second of the run
    mean_per_second: float
    new_connections: int = 0  # database connections opened during the run (pool churn)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def wrk_threads(connections: int) -> int:
    return max(1, min(2, connections))


def wrk_command(url: str, script: str, connections: int, duration: float) -> list[str]:
    return [
        *("wrk", "-t", str(wrk_threads(connections)), "-c", str(connections), "-d", f"{duration:g}s"),
        *("--timeout", "10s", "-s", str(LUA_DIR / f"{script}.lua"), url),
    ]


def start_wrk(
    url: str, script: str, caller: Caller, connections: int, duration: float, extra: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "BENCH_LUA_DIR": str(LUA_DIR),
        "BENCH_THREADS": str(wrk_threads(connections)),
        **caller.env(),
        **(extra or {}),
    }
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
    """Connections ever opened to `database` (PostgreSQL's cumulative statistics; flushed within a second), 0 when
    PostgreSQL has no connection to spare for asking (the column is a hint, not worth failing a run for)."""
    try:
        connection = await asyncpg.connect(seed_large.ADMIN_DSN)
    except asyncpg.TooManyConnectionsError:
        return 0
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


def to_result(summary: dict[str, float], spent: dict[str, float] | None) -> Result:
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
        cpu_ms=spent["server"] * per_request if spent is not None else None,
        db_ms=spent["db"] * per_request if spent is not None else None,
        fewest_per_second=int(summary["fewest_per_second"]),
        mean_per_second=summary["mean_per_second"],
        new_connections=int(spent.get("connections", 0)) if spent is not None else 0,
    )


# What a scenario needs for one wrk run, besides its caller: extra environment (BENCH_FILE of fresh rows, ...).
Feed = Callable[[float], dict[str, str]]


def run_wrk(
    server: Server | None,
    url: str,
    database: str | None,
    script: str,
    caller: Caller,
    connections: int,
    duration: float,
    warmup: float,
    feed: Feed | None = None,
) -> Result:
    """A warm-up run, then the measured one (CPU metered when `server` and `database` are ours); `feed` prepares
    what each run consumes."""
    if warmup > 0:
        parse_wrk(start_wrk(url, script, caller, connections, warmup, feed(warmup) if feed else None))
    extra = feed(duration) if feed else None
    if server is None or database is None:
        return to_result(parse_wrk(start_wrk(url, script, caller, connections, duration, extra)), None)
    settle(server)
    with cpu_meter(server, database) as spent:
        summary = parse_wrk(start_wrk(url, script, caller, connections, duration, extra))
    settle(server)
    return to_result(summary, spent)


def settle(server: Server, limit: float = 20.0) -> None:
    """Wait until the workers are idle: a request whose client wrk dropped at the end of a run still runs to its
    end (a password hash queued behind others takes seconds), and would otherwise be counted in the next run."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        before = sum(cpu_seconds(server.worker_pids).values())
        time.sleep(0.25)
        if sum(cpu_seconds(server.worker_pids).values()) - before < 0.03:  # under ~12% of one core
            return


# ---------------------------------------------------------------- seeding


def login(client: httpx.Client, email: str, password: str) -> str:
    response = client.post(f"{API}/login/access-token", data={"username": email, "password": password})
    response.raise_for_status()
    token: str = response.json()["access_token"]
    return token


def create_caller(client: httpx.Client, admin: dict[str, str], email: str, items: int) -> Caller:
    """A normal user created by the superuser, logged in, with `items` items of their own."""
    body = {"email": email, "password": USER_PASSWORD, "full_name": email.split("@")[0].title()}
    created = client.post(f"{API}/users/", json=body, headers=admin)
    created.raise_for_status()
    caller = Caller(email, login(client, email, USER_PASSWORD), created.json()["id"])
    headers = {"Authorization": f"Bearer {caller.token}"}
    for n in range(items):
        body = {"title": f"Item {n} of {email}", "description": f"Item {n}, seeded by the bench"}
        response = client.post(f"{API}/items/", json=body, headers=headers)
        response.raise_for_status()
        caller.item_ids.append(response.json()["id"])
    return caller


def login_caller(url: str, email: str, password: str) -> Caller:
    with httpx.Client(base_url=url, timeout=30) as client:
        token = login(client, email, password)
        me = client.get(f"{API}/users/me", headers={"Authorization": f"Bearer {token}"})
        me.raise_for_status()
        return Caller(email, token, me.json()["id"])


def write_lines(path: Path, rows: Sequence[tuple[str, ...]]) -> dict[str, str]:
    path.write_text("".join(" ".join(row) + "\n" for row in rows))
    return {"BENCH_FILE": str(path)}


class Target:
    """An implementation under test and what its scenarios need: callers (reader, writer, admin) and the rows
    some scenarios consume. Subclasses seed the service's database directly (`Ours`, shared with the ceiling) or
    only through the HTTP API (`Reference`)."""

    def __init__(self, url: str, files: Path) -> None:
        self.url = url
        self.files = files
        self.callers: dict[str, Caller] = {}
        self.list_user_ids: list[str] = []
        self.me_users: list[tuple[str, str]] = []  # (id, token) of users that rename themselves
        self.runs = count(1)

    def next_file(self, name: str) -> Path:
        return self.files / f"{name}-{next(self.runs)}.txt"

    def feed(self, scenario: str, connections: int) -> Feed | None:
        """What each wrk run of `scenario` consumes, or None when it needs nothing but its caller."""
        if scenario == "item_delete":
            return lambda seconds: write_lines(self.next_file("delete"), self.delete_ids(seconds, connections))
        if scenario == "password_change":
            return lambda seconds: {
                **write_lines(self.next_file("password"), self.password_users(seconds, connections)),
                "BENCH_PASSWORD": self.password,
                "BENCH_NEW_PASSWORD": NEW_PASSWORD,
            }
        if scenario in ("user_update_me", "mixed"):
            return lambda seconds: write_lines(self.next_file("me"), self.me_users)
        if scenario == "user_update":
            return lambda seconds: {"BENCH_TARGET_IDS": ",".join(self.list_user_ids)}
        if scenario == "user_create":
            return lambda seconds: {"BENCH_RUN": f"{uuid.uuid4().hex[:8]}"}
        return None

    password = USER_PASSWORD

    def delete_ids(self, seconds: float, connections: int) -> list[tuple[str, ...]]:
        raise NotImplementedError

    def password_users(self, seconds: float, connections: int) -> list[tuple[str, ...]]:
        raise NotImplementedError


class Ours(Target):
    """The service (and the ceilings, on the same database): callers through the API, bulk rows by SQL, tokens
    minted with the service's secret in the template's claim set (`sub`, `exp`), which the service accepts."""

    password = seed_large.SEED_PASSWORD

    def __init__(self, url: str, files: Path, dsn: str, secret: str, admin_password: str) -> None:
        super().__init__(url, files)
        self.dsn = dsn
        self.secret = secret
        with httpx.Client(base_url=url, timeout=30) as client:
            admin_token = login(client, ADMIN_EMAIL, admin_password)
            admin = {"Authorization": f"Bearer {admin_token}"}
            me = client.get(f"{API}/users/me", headers=admin)
            me.raise_for_status()
            self.callers["admin"] = Caller(ADMIN_EMAIL, admin_token, me.json()["id"])
            self.callers["reader"] = create_caller(client, admin, READER_EMAIL, 100)
            self.callers["writer"] = create_caller(client, admin, WRITER_EMAIL, 100)
            self.me_users = asyncio.run(self.insert_users("listed", LIST_USERS, days_ago=1))
            self.list_user_ids = [user_id for user_id, _ in self.me_users]
            # The minted tokens work (or the service's token format has changed).
            check = client.get(f"{API}/users/me", headers={"Authorization": f"Bearer {self.me_users[0][1]}"})
            check.raise_for_status()

    def seed_hoarder(self) -> None:
        """The caller of items_list_100k, once: a user created through the API, with HOARDED_ITEMS items of their own
        inserted by SQL in one statement (the database's triggers count them), interleaved in time with nobody's."""
        if "hoarder" in self.callers:
            return
        with httpx.Client(base_url=self.url, timeout=30) as client:
            admin = {"Authorization": f"Bearer {self.callers['admin'].token}"}
            hoarder = create_caller(client, admin, HOARDER_EMAIL, 0)

        async def insert() -> None:
            connection = await asyncpg.connect(self.dsn)
            try:
                await connection.execute(
                    """
                    INSERT INTO item (id, title, description, owner_id, created_at)
                    SELECT gen_random_uuid(), 'Hoarded item ' || n, 'One of many, seeded by the bench', $1::uuid,
                           now() - interval '10 days' + n * interval '1 millisecond'
                    FROM generate_series(1, $2::int) AS n
                    """,
                    hoarder.user_id,
                    HOARDED_ITEMS,
                )
                await connection.execute("ANALYZE item")
            finally:
                await connection.close()

        asyncio.run(insert())
        self.callers["hoarder"] = hoarder

    def token(self, user_id: str, session_id: str | None) -> str:
        """An access token as a login mints it: of its session (`sid`) where the schema has sessions (migration
        0007), else the template's claim set, which the service takes as a legacy token."""
        now = int(time.time())
        if session_id is None:
            return jwt.encode({"sub": user_id, "exp": now + 6 * 3600}, self.secret, algorithm="HS256")
        claims = {"sub": user_id, "typ": "access", "ver": 0, "sid": session_id, "iat": now, "exp": now + 6 * 3600}
        return jwt.encode(claims, self.secret, algorithm="HS256")

    async def insert_users(self, prefix: str, number: int, days_ago: int) -> list[tuple[str, str]]:
        """`number` active normal users `<prefix><n>@bench.example.com` with the seed password's argon2 hash, each
        with a token of their own session (as if they had logged in): (id, token) pairs."""
        connection = await asyncpg.connect(self.dsn)
        try:
            rows = await connection.fetch(
                """
                INSERT INTO "user" (id, email, email_key, is_active, is_superuser, full_name, hashed_password,
                                    token_version, created_at)
                SELECT gen_random_uuid(), $1 || n || '@' || $2, $1 || n || '@' || $2, true, false,
                       'Bench user ' || n, $3, 0, now() - $4 * interval '1 day' + n * interval '1 millisecond'
                FROM generate_series(1, $5::int) AS n
                RETURNING id
                """,
                prefix,
                seed_large.EMAIL_DOMAIN,
                seed_large.SEED_HASH,
                days_ago,
                number,
            )
            user_ids = [row["id"] for row in rows]
            sessions: dict[Any, Any] = {}
            if await connection.fetchval("SELECT to_regclass('user_session') IS NOT NULL"):
                inserted = await connection.fetch(
                    """
                    INSERT INTO user_session (id, user_id, created_at, last_used_at, expires_at, label,
                                              client_network, token_version, refresh_generation, legacy)
                    SELECT gen_random_uuid(), user_id, now(), now(), now() + interval '6 hours', 'bench', '', 0, 0,
                           false
                    FROM unnest($1::uuid[]) AS user_id
                    RETURNING user_id, id
                    """,
                    user_ids,
                )
                sessions = {row["user_id"]: row["id"] for row in inserted}
        finally:
            await connection.close()
        return [
            (str(user_id), self.token(str(user_id), str(sessions[user_id]) if sessions else None))
            for user_id in user_ids
        ]

    def delete_ids(self, seconds: float, connections: int) -> list[tuple[str, ...]]:
        async def insert() -> list[tuple[str, ...]]:
            connection = await asyncpg.connect(self.dsn)
            try:
                rows = await connection.fetch(
                    """
                    INSERT INTO item (id, title, description, owner_id, created_at)
                    SELECT gen_random_uuid(), 'Item to delete ' || n, 'seeded by the bench', $1::uuid,
                           now() - interval '2 days' + n * interval '1 microsecond'
                    FROM generate_series(1, $2::int) AS n
                    RETURNING id
                    """,
                    self.callers["writer"].user_id,
                    int(DELETES_PER_SECOND * seconds) + 10 * connections,
                )
            finally:
                await connection.close()
            return [(str(row["id"]),) for row in rows]

        return asyncio.run(insert())

    def password_users(self, seconds: float, connections: int) -> list[tuple[str, ...]]:
        number = int(PASSWORD_CHANGES_PER_SECOND * seconds) + 4 * connections
        return list(asyncio.run(self.insert_users(f"pw-{uuid.uuid4().hex[:8]}-", number, days_ago=2)))


async def api_many(
    url: str, number: int, concurrency: int, one: Callable[[httpx.AsyncClient, int], Awaitable[str]]
) -> list[str]:
    """`one(client, n)` for n in range(number), `concurrency` at a time."""
    gate = asyncio.Semaphore(concurrency)

    async def gated(client: httpx.AsyncClient, n: int) -> str:
        async with gate:
            return await one(client, n)

    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        return list(await asyncio.gather(*(gated(client, n) for n in range(number))))


class Reference(Target):
    """Another implementation of the API (e.g. the template's backend), seeded through its HTTP API only: its
    superuser creates the callers and users, its callers create their items. Rows that wrk runs consume are created
    before each run, as many as its measured rate of creating them says the run will need."""

    def __init__(self, url: str, files: Path, email: str, password: str) -> None:
        super().__init__(url, files)
        self.tag = uuid.uuid4().hex[:8]
        with httpx.Client(base_url=url, timeout=60) as client:
            admin_token = login(client, email, password)
            self.admin = {"Authorization": f"Bearer {admin_token}"}
            me = client.get(f"{API}/users/me", headers=self.admin)
            me.raise_for_status()
            self.callers["admin"] = Caller(email, admin_token, me.json()["id"])
            for role in ("reader", "writer"):
                self.callers[role] = create_caller(client, self.admin, f"bench-{role}-{self.tag}@example.com", 100)
            total = client.get(f"{API}/users/", params={"limit": 1}, headers=self.admin).json()["count"]
        self.list_user_ids = asyncio.run(
            api_many(url, max(8, LIST_USERS - total), 8, lambda c, n: self.create_user(c, f"listed-{n}"))
        )
        me_ids = self.list_user_ids[:8]
        tokens = asyncio.run(api_many(url, len(me_ids), 8, lambda c, n: self.login(c, f"listed-{n}", USER_PASSWORD)))
        self.me_users = list(zip(me_ids, tokens, strict=True))

    def email(self, name: str) -> str:
        return f"bench-{name}-{self.tag}@example.com"

    async def create_user(self, client: httpx.AsyncClient, name: str) -> str:
        body = {"email": self.email(name), "password": USER_PASSWORD, "full_name": name}
        response = await client.post(f"{API}/users/", json=body, headers=self.admin)
        response.raise_for_status()
        return str(response.json()["id"])

    async def login(self, client: httpx.AsyncClient, name: str, password: str) -> str:
        form = {"username": self.email(name), "password": password}
        response = await client.post(f"{API}/login/access-token", data=form)
        response.raise_for_status()
        return str(response.json()["access_token"])

    def adaptive(
        self, seconds: float, connections: int, make: Callable[[int, int], list[tuple[str, ...]]]
    ) -> list[tuple[str, ...]]:
        """Rows for a run of `seconds`: a first batch times the reference's rate, the rest is sized from it, three
        times over: the first batch's rate is its slowest (connections opening), and a reference may consume rows
        faster than it makes them (the current template deleted 1,012 items too few at 1.5 times)."""
        started = time.perf_counter()
        first = make(0, 4 * connections)
        rate = len(first) / (time.perf_counter() - started)
        wanted = int(rate * seconds * 3) + 2 * connections
        return first + (make(len(first), wanted - len(first)) if wanted > len(first) else [])

    def delete_ids(self, seconds: float, connections: int) -> list[tuple[str, ...]]:
        writer = {"Authorization": f"Bearer {self.callers['writer'].token}"}

        async def one(client: httpx.AsyncClient, n: int) -> str:
            body = {"title": f"Item to delete {n}", "description": "seeded by the bench"}
            response = await client.post(f"{API}/items/", json=body, headers=writer)
            response.raise_for_status()
            return str(response.json()["id"])

        def make(start: int, number: int) -> list[tuple[str, ...]]:
            return [(item_id,) for item_id in asyncio.run(api_many(self.url, number, connections, one))]

        return self.adaptive(seconds, connections, make)

    def password_users(self, seconds: float, connections: int) -> list[tuple[str, ...]]:
        run = uuid.uuid4().hex[:8]

        async def one(client: httpx.AsyncClient, n: int) -> str:
            user_id = await self.create_user(client, f"pw-{run}-{n}")
            return f"{user_id} {await self.login(client, f'pw-{run}-{n}', USER_PASSWORD)}"

        def make(start: int, number: int) -> list[tuple[str, ...]]:
            made = asyncio.run(api_many(self.url, number, connections, lambda c, n: one(c, start + n)))
            return [tuple(line.split(" ")) for line in made]

        return self.adaptive(seconds, connections, make)


# ---------------------------------------------------------------- scenarios and checks


@dataclass(frozen=True)
class Scenario:
    name: str
    caller: str  # "reader", "writer", "admin", or "hoarder" (seeded when its scenario runs)
    on_ceiling: bool
    target: float | None  # minimum service/ceiling req/s ratio
    hashes: bool = False  # bound by password hashing: driven at --login-connections (more only queue)
    note: str = ""
    script: str = ""  # the Lua script (bench/lua/<script>.lua), when not the scenario's name


# Every DB route: ≥ 60% of its ceiling (issue 16); health: ≥ 80% of bare Litestar; mixed: p99 < 50 ms at c=64.
SCENARIOS = [
    Scenario("health", "reader", True, None),
    Scenario("users_me", "reader", True, 0.60),
    Scenario("items_list", "reader", True, 0.60),
    Scenario("item_get", "reader", True, 0.60),
    Scenario("item_create", "writer", True, 0.60),
    Scenario("item_update", "writer", True, 0.60),
    Scenario("item_delete", "writer", True, 0.60),
    Scenario("user_update_me", "reader", True, 0.60, note="100 users in turn"),
    Scenario("user_update", "admin", True, 0.60),
    Scenario("users_list", "admin", True, 0.60),
    Scenario("user_create", "admin", True, 0.60, hashes=True, note="one argon2 hash"),
    Scenario("password_change", "reader", True, 0.60, hashes=True, note="argon2 verify + hash"),
    Scenario("mixed", "reader", True, None),
    Scenario("login", "reader", False, None),
    # Last: its 100,000 items, seeded when it runs, would change the table under the scenarios above.
    Scenario("items_list_100k", "hoarder", True, 0.60, script="items_list", note="first 100 of 100,000 own items"),
]


@dataclass
class Row:
    scenario: Scenario
    connections: int
    service: Result
    ceiling: Result | None
    bare: Result | None = None  # bare Litestar (health only)
    references: dict[str, Result] = field(default_factory=dict)  # by reference name
    reference_notes: dict[str, str] = field(default_factory=dict)  # why a reference has no result


@dataclass
class Check:
    name: str
    measured: str
    target: str
    met: bool


def ms(value: float) -> str:
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def cpu(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def share(ours: Result, other: Result | None) -> str:
    return f"{100 * ours.rps / other.rps:.0f}%" if other and other.rps else "—"


def target_cell(row: Row) -> str:
    s, c = row.service, row.ceiling
    if row.scenario.name == "health" and row.bare and row.bare.rps:
        met = s.rps / row.bare.rps >= BARE_LITESTAR_TARGET
        return f"≥{100 * BARE_LITESTAR_TARGET:.0f}% of bare Litestar: {'met' if met else 'NOT met'}"
    if row.scenario.name == "mixed":
        return f"p99 < {MIXED_P99_MS:.0f} ms: {'met' if s.p99_ms < MIXED_P99_MS else 'NOT met'}"
    if row.scenario.target is not None and c and c.rps:
        met = s.rps / c.rps >= row.scenario.target
        return f"≥{100 * row.scenario.target:.0f}%: {'met' if met else 'NOT met'}"
    return "—"


def main_table(rows: list[Row]) -> str:
    bare = any(row.bare for row in rows)
    header = (
        "| scenario | conc | req/s | p50 ms | p99 ms | non-2xx | sock err | cpu ms/req | db ms/req | db conns opened "
        "| ceiling req/s | ceiling p99 ms | ceiling cpu ms/req | ceiling db ms/req | % of ceiling | target |"
    )
    align = "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|"
    if bare:
        header += " bare Litestar req/s | % of bare Litestar |"
        align += "--:|--:|"
    lines = [header, align]
    for row in rows:
        s, c = row.service, row.ceiling
        ceiling_cells = (
            [f"{c.rps:.0f}", ms(c.p99_ms), cpu(c.cpu_ms), cpu(c.db_ms), share(s, c)] if c and c.rps else ["—"] * 5
        )
        name = row.scenario.name + (f" ({row.scenario.note})" if row.scenario.note else "")
        cells = [
            name,
            str(row.connections),
            f"{s.rps:.0f}",
            ms(s.p50_ms),
            ms(s.p99_ms),
            str(s.non2xx),
            str(s.socket_errors),
            cpu(s.cpu_ms),
            cpu(s.db_ms),
            str(s.new_connections),
            *ceiling_cells,
            target_cell(row),
        ]
        if bare:
            cells += [f"{row.bare.rps:.0f}", share(s, row.bare)] if row.bare else ["—", "—"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def references_table(rows: list[Row], names: list[str]) -> str:
    """Ours beside every reference, one row per scenario: a table of its own, since the main one is already 16
    columns wide, and one table (not one per reference) so that both generations of the template read in one row.
    non-2xx counts wrk's socket errors too."""
    header = "| scenario | conc | ours req/s | ours p99 ms | ours non-2xx |"
    align = "|---|--:|--:|--:|--:|"
    for name in names:
        header += f" {name} req/s | {name} p99 ms | {name} non-2xx | ours ÷ {name} |"
        align += "--:|--:|--:|--:|"
    lines = [header, align]
    for row in rows:
        s = row.service
        name = row.scenario.name + (f" ({row.scenario.note})" if row.scenario.note else "")
        cells = [name, str(row.connections), f"{s.rps:.0f}", ms(s.p99_ms), str(s.non2xx + s.socket_errors)]
        for reference in names:
            r = row.references.get(reference)
            if r is not None:
                ratio = f"{s.rps / r.rps:.1f}x" if r.rps else "—"
                cells += [f"{r.rps:.0f}", ms(r.p99_ms), str(r.non2xx + r.socket_errors), ratio]
            else:
                cells += [row.reference_notes.get(reference, "—"), "—", "—", "—"]
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
    me = to_result(parse_wrk(reads), None)
    storm = to_result(parse_wrk(logins), None)
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


def served_template(url: str) -> str:
    """What `just bench-template` says it serves at `url` (bench/.templates/*/serving.json), or ""."""
    for path in sorted((Path(__file__).resolve().parent / ".templates").glob("*/serving.json")):
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if info.get("url") == url:
            return f" = template {path.parent.name} {info['commit'][:8]}, {info['workers']} workers, {info['how']}"
    return ""


def git_commit(repo: Path) -> str:
    """The checkout's commit, marked when the served code (app/, db/, migrations/) has uncommitted changes."""

    def git(*arguments: str) -> str:
        return subprocess.run(["git", *arguments], cwd=repo, capture_output=True, text=True, check=False).stdout

    commit = git("rev-parse", "--short", "HEAD").strip() or f"unknown ({repo})"
    dirty = git("status", "--porcelain", "--", "app", "db", "migrations").strip()
    return commit + (" + uncommitted changes in app/db/migrations" if dirty else "")


# ---------------------------------------------------------------- main


def env_pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return name, value


def reference_pair(text: str) -> tuple[str, str]:
    """`NAME=URL`, or a bare URL named "reference"."""
    name, sep, url = text.partition("=")
    if not sep or "/" in name or ":" in name:
        name, url = "reference", text
    if not name.replace("-", "").replace("_", "").isalnum() or not url.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(f"expected NAME=http://HOST:PORT or a URL, got {text!r}")
    return name, url.rstrip("/")


def per_reference(values: list[str], name: str, names: list[str], default: str) -> str:
    """The value given as `name=VALUE` for this reference, else the last one given without a reference's name,
    else `default` (a password may hold "=": only a reference's name before it makes it one reference's)."""
    general = default
    for value in values:
        prefix, sep, rest = value.partition("=")
        if sep and prefix in names:
            if prefix == name:
                return rest
        else:
            general = value
    return general


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers of the service and the ceilings")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per measured run (default 8)")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each run")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (login: --login-connections)")
    parser.add_argument("--login-connections", type=int, default=4)
    parser.add_argument("--mixed-connections", type=int, default=64, help="wrk connections of the mixed scenario")
    parser.add_argument(
        "--scenarios",
        default=",".join(s.name for s in SCENARIOS),
        help="comma-separated subset of: " + ", ".join(s.name for s in SCENARIOS),
    )
    parser.add_argument("--no-ceiling", action="store_true", help="skip the ceilings")
    parser.add_argument("--no-checks", action="store_true", help="skip the login-storm and concurrency-64 checks")
    parser.add_argument("--large", action="store_true", help="also compare items_list on 1,000,000 seeded items")
    parser.add_argument("--stress-connections", type=int, default=64, help="connections of the 1-worker check")
    parser.add_argument("--markdown", type=Path, help="also write the report (Markdown) to this file")
    parser.add_argument("--repo", type=Path, default=ROOT, help="serve the service from this checkout instead")
    parser.add_argument("--keep-database", action="store_true", help="do not drop the bench database")
    parser.add_argument(
        "--env",
        type=env_pair,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment of the served service (repeatable), e.g. --env LOG_LEVEL=WARNING",
    )
    parser.add_argument(
        "--reference",
        type=reference_pair,
        action="append",
        default=[],
        metavar="[NAME=]URL",
        help="another implementation of the API, already served (e.g. `just bench-template june`), repeatable: "
        "driven with the same scenarios, seeded through its HTTP API; a bare URL is named 'reference'",
    )
    parser.add_argument(
        "--ceiling-pool",
        type=int,
        help="database connections per ceiling worker (default 20, the service's DB_POOL_SIZE; 10 with one "
        "reference, 5 with more, so that the service's 40, the ceiling's and the references' pools (the template: "
        "up to 2 x 15 while measured, 2 x 5 idle) fit PostgreSQL's 100 connections)",
    )
    parser.add_argument(
        "--reference-superuser",
        action="append",
        default=[],
        metavar="[NAME=]EMAIL",
        help="the references' superuser (default admin@example.com); NAME=EMAIL for one reference (repeatable)",
    )
    parser.add_argument(
        "--reference-password",
        action="append",
        default=[],
        metavar="[NAME=]PASSWORD",
        help="its password (default changethis); NAME=PASSWORD for one reference (repeatable)",
    )
    args = parser.parse_args()
    names = [name for name, _ in args.reference]
    if len(set(names)) != len(names):
        parser.error(f"reference names must differ: {', '.join(names)}")
    args.credentials = {
        name: (
            per_reference(args.reference_superuser, name, names, "admin@example.com"),
            per_reference(args.reference_password, name, names, "changethis"),
        )
        for name in names
    }
    if args.ceiling_pool is None:
        args.ceiling_pool = 20 if not names else 10 if len(names) == 1 else 5
    unknown = set(args.scenarios.split(",")) - {s.name for s in SCENARIOS}
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    return args


def measure(
    server: Server | None,
    target: Target,
    database: str | None,
    scenario: Scenario,
    connections: int,
    args: argparse.Namespace,
) -> Result:
    """A scenario on one implementation: `server` (ours, CPU metered) or, when None, the reference at its URL.
    Ours (and the ceiling, on the same database) after a VACUUM ANALYZE of the bench database: each scenario starts
    from the same tables whatever the one before wrote (100 users updated at 3,000 a second leave their heap
    dead tuples that made the users_list after them 40% slower, the more so the faster the updates had been)."""
    if database is not None:
        asyncio.run(seed_large.vacuum(seed_large.dsn_for(database)))
    return run_wrk(
        server,
        server.url if server else target.url,
        database,
        scenario.script or scenario.name,
        target.callers[scenario.caller],
        connections,
        args.duration,
        args.warmup,
        target.feed(scenario.name, connections),
    )


def main() -> None:
    args = parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install -y wrk); `just bench` installs it")
    chosen = [s for s in SCENARIOS if s.name in args.scenarios.split(",")]
    extra_env = dict(args.env)
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
    references: dict[str, Reference] = {}
    reference_notes: dict[str, str] = {}  # a reference that could not be seeded, and why
    try:
        app = service(
            seed_large.sqlalchemy_url(dsn), args.workers, secret, admin_password, args.repo.resolve(), extra_env
        )
        servers.append(app)
        app.start(logs / "service.log")
        top = ceiling(dsn, args.workers, pool=args.ceiling_pool)
        bare = ceiling(dsn, args.workers, "bench.ceiling_litestar", "bare Litestar")
        if not args.no_ceiling:
            servers.append(top)
            top.start(logs / "ceiling.log")
            if any(s.name == "health" for s in chosen):
                servers.append(bare)
                bare.start(logs / "ceiling-litestar.log")
        ours = Ours(app.url, logs, dsn, secret, admin_password)
        print(f"bench: service on {app.url}, {args.workers} workers; seeded", flush=True)
        for name, url in args.reference:
            files = logs / name
            files.mkdir(exist_ok=True)
            try:
                references[name] = Reference(url, files, *args.credentials[name])
                print(f"bench: reference {name} on {url}; seeded through its API", flush=True)
            except httpx.HTTPError as exc:
                reference_notes[name] = f"not seeded: {exc}"
                print(f"bench: reference {name} {reference_notes[name]}", flush=True)

        for scenario in chosen:
            if scenario.caller == "hoarder":
                ours.seed_hoarder()
                print(f"bench: seeded {HOARDED_ITEMS:,} items of {HOARDER_EMAIL}", flush=True)
            if scenario.name == "login" or scenario.hashes:
                connections = args.login_connections
            elif scenario.name == "mixed":
                connections = args.mixed_connections
            else:
                connections = args.connections
            row = Row(scenario, connections, measure(app, ours, database, scenario, connections, args), None)
            if scenario.on_ceiling and not args.no_ceiling:
                row.ceiling = measure(top, ours, database, scenario, connections, args)
                if scenario.name == "health":
                    row.bare = measure(bare, ours, database, scenario, connections, args)
            for name, _ in args.reference:
                reference = references.get(name)
                if reference is None:
                    row.reference_notes[name] = "not seeded"
                elif scenario.caller not in reference.callers:
                    row.reference_notes[name] = "not seeded (too many items for its API)"
                else:
                    try:
                        row.references[name] = measure(None, reference, None, scenario, connections, args)
                    except (httpx.HTTPError, SystemExit) as exc:
                        row.reference_notes[name] = f"skipped: {str(exc).splitlines()[0][:80]}"
            rows.append(row)
            print(
                f"bench: {scenario.name}: {row.service.rps:.0f} req/s, p99 {ms(row.service.p99_ms)} ms, "
                f"non-2xx {row.service.non2xx}"
                + (f" (ceiling {row.ceiling.rps:.0f})" if row.ceiling else "")
                + (f" (bare Litestar {row.bare.rps:.0f})" if row.bare else "")
                + "".join(f" ({name} {result.rps:.0f})" for name, result in row.references.items()),
                flush=True,
            )
        top.stop()
        bare.stop()

        reader = ours.callers["reader"]
        if not args.no_checks:
            checks += login_storm(app, database, reader, args.connections, args.login_connections, args.duration)
        if args.large:
            checks.append(large_check(app, database, dsn, reader, args))
        if not args.no_checks:
            app.stop()
            checks.append(stress_check(database, dsn, secret, admin_password, reader, args, logs, extra_env))
    finally:
        for server in servers:
            server.stop()
        if not args.keep_database:
            asyncio.run(seed_large.admin_execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))

    command = "just bench " + shlex.join(sys.argv[1:])
    settings = ", ".join(f"{name}={value}" for name, value in extra_env.items()) or "none"
    report = [
        f"### {started:%Y-%m-%d %H:%M} UTC — `{command.strip()}`",
        "",
        f"- commit {git_commit(args.repo)}; {args.workers} workers; {args.duration:g} s per run "
        f"after {args.warmup:g} s warm-up; wrk concurrency {args.connections} (login {args.login_connections}, "
        f"mixed {args.mixed_connections}); ceiling pool {args.ceiling_pool} connections per worker; extra service "
        f"environment: {settings}",
        f"- machine: {machine_description()}",
        f"- versions: {versions()}",
    ]
    for name, url in args.reference:
        note = f" ({reference_notes[name]})" if name in reference_notes else ""
        report.append(f"- reference {name}: {url}{served_template(url)}{note}")
    report += ["", main_table(rows)]
    if args.reference:
        report += ["", references_table(rows, [name for name, _ in args.reference])]
    if checks:
        report += ["", checks_table(checks)]
    text = "\n".join(report) + "\n"
    print("\n" + text)
    if args.markdown:
        args.markdown.write_text(text)


def large_check(app: Server, database: str, dsn: str, reader: Caller, args: argparse.Namespace) -> Check:
    small = run_wrk(app, app.url, database, "items_list", reader, args.connections, args.duration, args.warmup)
    print(f"bench: items_list before seeding {small.rps:.0f} req/s; seeding 1,000,000 items…", flush=True)
    seconds = asyncio.run(seed_large.seed(dsn))
    owner = login_caller(app.url, seed_large.seed_email(1), seed_large.SEED_PASSWORD)
    large = run_wrk(app, app.url, database, "items_list", owner, args.connections, args.duration, args.warmup)
    ratio = large.rps / small.rps if small.rps else 0.0
    return Check(
        "items_list of one user (100 items) with 1,000,000 items / 10,000 users in the table",
        f"{large.rps:.0f} req/s (p99 {ms(large.p99_ms)} ms) vs {small.rps:.0f} req/s on the small table: "
        f"{100 * ratio:.0f}% (seeded in {seconds:.0f} s)",
        f"≥ {100 * LARGE_MIN_RATIO:.0f}%",
        ratio >= LARGE_MIN_RATIO and large.non2xx + large.socket_errors == 0,
    )


def stress_check(
    database: str,
    dsn: str,
    secret: str,
    admin_password: str,
    reader: Caller,
    args: argparse.Namespace,
    logs: Path,
    extra_env: dict[str, str],
) -> Check:
    url = seed_large.sqlalchemy_url(dsn)
    single = service(url, 1, secret, admin_password, args.repo.resolve(), extra_env)
    try:
        single.start(logs / "service-1-worker.log")
        result = run_wrk(
            single, single.url, database, "mixed_even", reader, args.stress_connections, args.duration, args.warmup
        )
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
