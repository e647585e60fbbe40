"""Real parts only: the app served by uvicorn on a loopback port, a fresh PostgreSQL database (and a SQLite
file) migrated by the real migrations, and a real SMTP server receiving the mail."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from aiosmtpd.controller import Controller
from alembic.script import ScriptDirectory
from click.testing import CliRunner, Result
from litestar import Litestar
from litestar.cli.main import litestar_group
from sqlalchemy import event, make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.pool import NullPool
from uuid_utils.compat import uuid7

from app.cli import prestart
from app.config import Settings, get_settings, load_settings
from app.database import MIGRATIONS_DIR, sqlalchemy_config
from app.main import create_app
from app.security import create_access_token, passwords
from app.server import HttpProtocol
from db.models import LEGACY_SESSION_LABEL, User, UserSession, legacy_session_id, utc_now

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
SUPERUSER_EMAIL = "admin@example.com"
SUPERUSER_PASSWORD = "superuser-password"
SECRET_KEY = "test-secret-key-that-is-long-enough-for-hs256"
ENGINES = ["postgresql", "sqlite"]
# The newest revision of our migrations: where every migrated or adopted database ends.
MIGRATIONS_HEAD = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()


# The modules that take longest (servers in subprocesses, an image, fuzzing, hundreds of parametrized cases), longest
# first as measured: collected first, so that in parallel runs (`just test`, a module per worker) they start at once
# and the quick modules fill the other workers around them.
SLOW_MODULES = [
    "test_soak.py",
    "test_adopt.py",
    "test_hardening.py",
    "test_template_client.py",
    "test_faults_redis.py",
    "test_frontend_requests.py",
    "test_fuzz.py",
    "test_serve.py",
    "test_template_env.py",
    "test_faults.py",
    "test_faults_locks.py",
    "test_image.py",
    "test_replicas.py",
    "test_emails.py",
    "test_observability.py",
    "test_metrics.py",
    "test_template_writes.py",
    "test_server.py",
    "test_cli.py",
]


# Every HTTP client of the suite waits up to a minute for an answer, unless it says otherwise: httpx's default read
# timeout of 5 s made outcomes depend on machine load (a login's argon2 hash, on both cores kept busy by other work,
# took longer). httpx's functions and clients share this one default object.
httpx._config.DEFAULT_TIMEOUT_CONFIG.read = 60.0
httpx._config.DEFAULT_TIMEOUT_CONFIG.write = 60.0
httpx._config.DEFAULT_TIMEOUT_CONFIG.pool = 60.0


# ---------------------------------------------------------------- external tools

# Some modules drive programs beyond Python, PostgreSQL and Redis. A test that needs one names it,
# `@pytest.mark.needs("haproxy", "pgbouncer")` (or calls `require(...)` where it finds out it needs it); without
# it the test is skipped with the way to get it, except in CI (CI=true, as `.ci/run` sets), where it fails: CI never
# passes by skipping. "root" and the others below that are no program on the PATH are checked their own way.
IN_CI = os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}
POSTGRES_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"))), None)
TEMPLATE_MIRROR = Path(os.environ.get("TEMPLATE_MIRROR", "/work/.mirror/fastapi+full-stack-fastapi-template/repo"))


def tool_path(name: str) -> str | None:
    """A program on the PATH, in the virtual environment or in Debian's sbin folders (not on every user's PATH)."""
    venv_bin = str(Path(__file__).resolve().parent.parent / ".venv/bin")
    return shutil.which(name) or shutil.which(name, path=f"{venv_bin}:/usr/local/sbin:/usr/sbin:/sbin")


@dataclass(frozen=True)
class Tool:
    how: str  # how to get it
    present: Callable[[], bool] | None = None  # default: a program of that name (tool_path)


TOOLS: dict[str, Tool] = {
    "root": Tool("run the tests as root", lambda: os.geteuid() == 0),
    "haproxy": Tool("apt-get install haproxy (.ci/run installs it)"),
    "pgbouncer": Tool("apt-get install pgbouncer (.ci/run installs it)"),
    "podman": Tool("apt-get install podman (.ci/run installs it)"),
    "runc": Tool("apt-get install runc (.ci/run installs it)"),
    "debootstrap": Tool("apt-get install debootstrap (.ci/run installs it)"),
    "kubectl": Tool("install kubectl, https://kubernetes.io/docs/tasks/tools/ (its kustomize renders deploy/k8s)"),
    "podman-compose": Tool("uv sync (a dev dependency)"),
    "openssl": Tool("apt-get install openssl"),
    "postgresql-server": Tool(
        "apt-get install postgresql (initdb, postgres and pg_isready in /usr/lib/postgresql/*/bin)",
        lambda: POSTGRES_BIN is not None and (POSTGRES_BIN / "initdb").exists(),
    ),
    "pg_dump": Tool("apt-get install postgresql-client (pg_dump, pg_restore, createdb, dropdb)"),
    "redis-server": Tool("apt-get install redis-server (redis-server, redis-cli)"),
    "chromium": Tool("apt-get install chromium (headless: the docs' offline browser test; .ci/run installs it)"),
    "npm": Tool("apt-get install npm (installs bun for the template's frontend)"),
    "template-mirror": Tool(
        f"git clone --mirror https://github.com/fastapi/full-stack-fastapi-template {TEMPLATE_MIRROR}"
        " (or set TEMPLATE_MIRROR to such a mirror)",
        lambda: (TEMPLATE_MIRROR / "HEAD").exists(),
    ),
}


def is_present(name: str) -> bool:
    tool = TOOLS.get(name)
    return tool.present() if tool is not None and tool.present is not None else tool_path(name) is not None


def missing_reason(*names: str) -> str | None:
    """`needs X: how to get it` for each of `names` this machine lacks, or None when it has them all."""
    absent = [name for name in names if not is_present(name)]
    if not absent:
        return None
    return "; ".join(f"needs {name}: {TOOLS[name].how if name in TOOLS else f'install {name}'}" for name in absent)


def require(*names: str) -> None:
    """Skip the running test (fail it in CI) unless this machine has all of `names`."""
    __tracebackhide__ = True  # the skip names the test's line that needs it, not this one
    reason = missing_reason(*names)
    if reason is None:
        return
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: a missing tool fails the test, CI never skips it)", pytrace=False)
    pytest.skip(reason)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "needs(*tools): skip without these tools (fail in CI); tests/conftest.py TOOLS")
    config.addinivalue_line(
        "markers",
        "system: starts a process (a server, a CLI, a browser, a tool); `just test -m 'not system'` is the in-process"
        " inner loop. A test that needs a tool is one; one that starts a process unmarked fails (see SPAWNED)",
    )


# ---------------------------------------------------------------- the inner loop stays in-process

# What the running test (its setup, call and teardown) starts: the interpreter's audit events for every way a
# process begins. In a test not marked `system` the start is refused, so `-m "not system"` never pays an interpreter
# start-up and a new test that starts a process cannot hide in it.
SPAWN_EVENTS = {"subprocess.Popen", "os.posix_spawn", "os.fork", "os.forkpty", "os.exec", "os.spawn", "os.system"}
IN_PROCESS_TEST = False  # a test not marked `system` is running


def refuse_spawns(event: str, args: tuple[Any, ...]) -> None:
    if IN_PROCESS_TEST and event in SPAWN_EVENTS:
        started = f"{event} {args[0]!r}"[:200] if args else event
        raise RuntimeError(f"started a process without pytest.mark.system: {started}")


sys.addaudithook(refuse_spawns)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, None, None]:
    global IN_PROCESS_TEST
    IN_PROCESS_TEST = item.get_closest_marker("system") is None
    yield
    IN_PROCESS_TEST = False


def pytest_report_header(config: pytest.Config) -> list[str]:
    if hasattr(config, "workerinput"):  # an xdist worker: the controller prints it once
        return []
    verdict = "fail (CI=true)" if IN_CI else "are skipped"
    return [
        f"missing tool: {name}: the tests that need it {verdict}; to get it: {tool.how}"
        for name, tool in TOOLS.items()
        if not is_present(name)
    ]


def needed_by(item: pytest.Item) -> list[str]:
    return [name for mark in item.iter_markers("needs") for name in mark.args]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if IN_CI and (names := needed_by(item)):  # outside CI, the skip marks of pytest_collection_modifyitems
        require(*names)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def slowness(item: pytest.Item) -> int:
        name = item.path.name
        return SLOW_MODULES.index(name) if name in SLOW_MODULES else len(SLOW_MODULES)

    items.sort(key=slowness)  # stable: each module keeps its own order
    for item in items:
        if needed_by(item):
            item.add_marker(pytest.mark.system)
    if not IN_CI:
        for item in items:
            if reason := missing_reason(*needed_by(item)):
                item.add_marker(pytest.mark.skip(reason=reason))


# ---------------------------------------------------------------- databases


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine from a (synchronous) test."""
    return asyncio.run(coro)


async def admin_execute(sql: str) -> None:
    engine = create_async_engine(TEST_DATABASE_URL, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.exec_driver_sql(sql)
    finally:
        await engine.dispose()


def create_postgres_database() -> str:
    name = f"test_{uuid.uuid4().hex[:12]}"
    run(admin_execute(f'CREATE DATABASE "{name}"'))
    return make_url(TEST_DATABASE_URL).set(database=name).render_as_string(hide_password=False)


def drop_postgres_database(url: str) -> None:
    run(admin_execute(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))


@dataclass
class Database:
    url: str

    def execute(self, fn: Callable[[AsyncEngine], Coroutine[Any, Any, Any]]) -> Any:
        """Run `fn(engine)` against this database with a short-lived engine of the test's own."""

        async def go() -> Any:
            engine = create_async_engine(self.url, poolclass=NullPool)
            try:
                return await fn(engine)
            finally:
                await engine.dispose()

        return run(go())

    def id(self, value: str) -> uuid.UUID | bytes:
        """An id as a raw statement binds it here: SQLite stores UUIDs as 16 bytes (advanced-alchemy's GUID)."""
        parsed = uuid.UUID(value)
        return parsed.bytes if self.url.startswith("sqlite") else parsed

    def trigger_names(self, table: str) -> set[str]:
        """The names of the triggers on `table` (not PostgreSQL's internal ones, which enforce constraints)."""
        sql = {
            "postgresql": "SELECT tgname FROM pg_trigger WHERE tgrelid = CAST(:quoted AS regclass)"
            " AND NOT tgisinternal",
            "sqlite": "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = :table",
        }

        async def go(engine: AsyncEngine) -> set[str]:
            async with engine.connect() as connection:
                query = text(sql[engine.dialect.name])
                rows = await connection.execute(query, {"quoted": f'"{table}"', "table": table})
                return {row[0] for row in rows}

        return set(self.execute(go))

    def scalar(self, sql: str, **params: Any) -> Any:
        """The first column of the first row of a query."""

        async def go(engine: AsyncEngine) -> Any:
            async with engine.begin() as connection:
                return (await connection.execute(text(sql), params)).scalar()

        return self.execute(go)

    def run(self, sql: str, **params: Any) -> None:
        """A statement that returns no rows, committed."""

        async def go(engine: AsyncEngine) -> None:
            async with engine.begin() as connection:
                await connection.execute(text(sql), params)

        self.execute(go)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    url = create_postgres_database()
    yield url
    drop_postgres_database(url)


@pytest.fixture(scope="session", params=ENGINES)
def database(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Database:
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
    else:
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('sqlite') / 'test.db'}"
    prepare(url)
    return Database(url)


def prepare(url: str) -> None:
    """Migrate and create the first superuser, as `just serve` does before it serves."""
    settings = make_settings(url)
    prestart(sqlalchemy_config(settings), settings)


@pytest.fixture
def postgres_database() -> Iterator[Database]:
    """A fresh, empty PostgreSQL database of the test's own; dropped afterwards."""
    url = create_postgres_database()
    yield Database(url)
    drop_postgres_database(url)


@pytest.fixture
def migrated_database() -> Iterator[str]:
    """A fresh PostgreSQL database of the test's own, prepared as `just serve` prepares one; dropped afterwards."""
    url = create_postgres_database()
    try:
        prepare(url)
        yield url
    finally:
        drop_postgres_database(url)


# ---------------------------------------------------------------- mail


@dataclass
class Mailbox:
    messages: list[EmailMessage] = field(default_factory=list)
    port: int = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        return "250 Message accepted for delivery"

    def wait_for(self, count: int = 1, timeout: float = 5.0) -> list[EmailMessage]:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return list(self.messages)

    def to(self, address: str) -> list[EmailMessage]:
        return [message for message in self.messages if message["To"] == address]


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[Mailbox]:
    mailbox = Mailbox(port=free_port())
    controller = Controller(mailbox, hostname="127.0.0.1", port=mailbox.port)
    controller.start()
    yield mailbox
    controller.stop()


@pytest.fixture
def mailbox(smtp_server: Mailbox) -> Mailbox:
    smtp_server.messages.clear()
    return smtp_server


# ---------------------------------------------------------------- the served app


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_cli(environ: dict[str, str], *args: str) -> Result:
    """`litestar --app app.main:create_app <args>` in this process, with `environ` as its environment: what the
    recipes run, without an interpreter's start-up (~1 s) per call."""
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(litestar_group, ["--app", "app.main:create_app", *args], env=environ)
    finally:
        get_settings.cache_clear()


def make_settings(database_url: str, **overrides: str) -> Settings:
    environ = {
        "DATABASE_URL": database_url,
        "SECRET_KEY": SECRET_KEY,
        "ENVIRONMENT": "local",
        "PROJECT_NAME": "Test Project",
        "FRONTEND_HOST": "http://localhost:5173",
        "BACKEND_CORS_ORIGINS": "http://localhost,https://app.example.com",
        "FIRST_SUPERUSER": SUPERUSER_EMAIL,
        "FIRST_SUPERUSER_PASSWORD": SUPERUSER_PASSWORD,
        "DB_POOL_SIZE": "5",
        "RATE_LIMIT_ENABLED": "false",
        "LOG_LEVEL": "WARNING",
        # Thousands of logins: argon2 at its minimum (test_hardening.py checks the default profile over HTTP).
        "PASSWORD_HASH_PROFILE": "CHEAPEST",
        **overrides,
    }
    return load_settings(environ=environ, env_file=None)


class LiveServer:
    """uvicorn serving an app on a loopback port, in a thread with its own event loop."""

    def __init__(self, app: Litestar, **config: Any) -> None:
        self.app = app
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        config = {"http": HttpProtocol, **config}  # the protocol `just serve` runs
        self.server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="on", **config))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)
        self.sock.close()


class Records(logging.Handler):
    """Keeps every log record it is given (attach it to the logger a test watches)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


# ---------------------------------------------------------------- audit events


def audit_events(records: Records) -> list[dict[str, Any]]:
    return [dict(record.msg) for record in records.records if isinstance(record.msg, dict)]


@pytest.fixture
def audit_records() -> Iterator[Records]:
    records = Records()
    audit_log = logging.getLogger("app.audit")
    audit_log.addHandler(records)
    try:
        yield records
    finally:
        audit_log.removeHandler(records)


def named(records: Records, event: str) -> list[dict[str, Any]]:
    return [entry for entry in audit_events(records) if entry["event"] == event]


def children_of(pid: int) -> list[int]:
    """The processes whose parent is `pid` (uvicorn's workers, say), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


@dataclass
class Served:
    url: str
    settings: Settings
    database: Database
    app: Litestar

    @property
    def api(self) -> str:
        return self.url + self.settings.API_V1_STR

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.api, timeout=30)


@pytest.fixture(scope="session")
def served(database: Database, smtp_server: Mailbox) -> Iterator[Served]:
    settings = make_settings(
        database.url,
        SMTP_HOST="127.0.0.1",
        SMTP_PORT=str(smtp_server.port),
        SMTP_TLS="false",
        EMAILS_FROM_EMAIL="noreply@example.com",
    )
    app = create_app(settings)
    with LiveServer(app) as server:
        yield Served(url=server.url, settings=settings, database=database, app=app)


@pytest.fixture
def client(served: Served) -> Iterator[httpx.Client]:
    with served.client() as http:
        yield http


# ---------------------------------------------------------------- users and tokens


def random_email() -> str:
    return f"user-{uuid.uuid4().hex[:10]}@example.com"


def login(http: httpx.Client, email: str, password: str) -> dict[str, str]:
    response = http.post("/login/access-token", data={"username": email, "password": password})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


@pytest.fixture(scope="session")
def superuser_headers(served: Served) -> dict[str, str]:
    with served.client() as http:
        return login(http, SUPERUSER_EMAIL, SUPERUSER_PASSWORD)


@dataclass
class Account:
    id: str
    email: str
    password: str
    headers: dict[str, str]
    session_id: str | None = None  # its token's session, when seeded (a login's is in its token)


def create_account(http: httpx.Client, superuser_headers: dict[str, str], **fields: Any) -> Account:
    email = fields.pop("email", random_email())
    password = fields.pop("password", "a-good-password")
    response = http.post("/users/", json={"email": email, "password": password, **fields}, headers=superuser_headers)
    assert response.status_code == 200, response.text
    return Account(id=response.json()["id"], email=email, password=password, headers=login(http, email, password))


@cache
def password_hash(password: str, profile: str = "CHEAPEST") -> str:
    """One hash per test password and hash profile for the whole run, as the app's own."""
    hashed: str = run(passwords(profile).hash(password))
    return hashed


def seed_account(served: Served, **fields: Any) -> Account:
    """An account written straight into the served database, with a token minted as a login mints one. Setting up
    a test's accounts this way skips the two argon2 hashes a signup and a login cost; the routes that create
    accounts and log in are tested through HTTP on their own."""
    email = fields.pop("email", random_email())
    password = fields.pop("password", "a-good-password")
    legacy = fields.pop("legacy_session", False)
    hashed_password = password_hash(password, served.settings.PASSWORD_HASH_PROFILE)
    user = User(id=uuid7(), email=email, hashed_password=hashed_password, **fields)
    user_id, version = user.id, 0
    expires = timedelta(minutes=served.settings.ACCESS_TOKEN_EXPIRE_MINUTES)
    # ... and its session, as a login starts one.
    session_id = uuid7()
    now = utc_now()
    user_session = UserSession(
        id=session_id,
        user_id=user_id,
        created_at=now,
        last_used_at=now,
        expires_at=now + expires,
        label="seeded",
        client_network="127.0.0.0/24",
        token_version=version,
    )
    # `legacy_session=True`: the account existed before sessions (migration 0007 gave it its legacy session), so
    # tokens without a session id (the template's, ours from before) are its.
    sessions = [user_session]
    if legacy:
        sessions.append(
            UserSession(
                id=legacy_session_id(user_id),
                user_id=user_id,
                created_at=now,
                last_used_at=now,
                expires_at=now + timedelta(days=8),
                label=LEGACY_SESSION_LABEL,
                client_network="",
                token_version=version,
                legacy=True,
            )
        )

    async def insert(engine: AsyncEngine) -> None:
        async with AsyncSession(engine) as session:
            session.add(user)
            await session.flush()
            session.add_all(sessions)
            await session.commit()

    served.database.execute(insert)
    token = create_access_token(user_id, version, served.settings.SECRET_KEY, expires, session_id)
    headers = {"Authorization": f"Bearer {token}"}
    return Account(id=str(user_id), email=email, password=password, headers=headers, session_id=str(session_id))


@pytest.fixture
def new_account(served: Served) -> Callable[..., Account]:
    return lambda **fields: seed_account(served, **fields)


@pytest.fixture
def user(new_account: Callable[..., Account]) -> Account:
    return new_account()


ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- statements sent


Counted = tuple[httpx.Client, list[str]]


@pytest.fixture
def counted(served: Served) -> Iterator[Counted]:
    """A client of a server of its own whose statements reaching the database are recorded (`counting`)."""
    with counting(create_app(make_settings(served.database.url))) as found:
        yield found


@contextmanager
def counting(app: Litestar) -> Iterator[Counted]:
    """A client of `app`, served, whose statements reaching the database are recorded: on PostgreSQL what the
    driver sends from every pooled connection (the fast statements run on it), on SQLite what SQLAlchemy executes
    (fast statements and the ORM's alike; so a route that would fall back on the ORM, whose prepared statements
    asyncpg's logger does not see, still counts there)."""
    statements: list[str] = []
    engine = app.state.db_config.get_engine().sync_engine
    if engine.dialect.driver == "asyncpg":

        def log_queries(dbapi_connection: Any, _: Any) -> None:
            dbapi_connection.driver_connection.add_query_logger(lambda query: statements.append(query.query))

        event.listen(engine, "connect", log_queries)
    else:
        event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    with LiveServer(app) as server, httpx.Client(base_url=server.url + "/api/v1") as http:
        yield http, statements


def sent_by(
    http: httpx.Client, statements: list[str], method: str, path: str, **kwargs: Any
) -> tuple[httpx.Response, list[str]]:
    """A request and the statements it sent. asyncpg calls query loggers soon after a statement, possibly after the
    response: a request through the server's event loop (the health check reads nothing) lets them land."""
    http.get("/utils/health-check/")
    statements.clear()
    response = http.request(method, path, **kwargs)
    http.get("/utils/health-check/")
    return response, list(statements)
