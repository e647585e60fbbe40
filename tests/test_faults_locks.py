"""Faults inside a healthy database, on PostgreSQL (issue 23): a table locked by another session, the errors that
mean "the database cannot serve this now" (503 with Retry-After, never 500), and a user deleted while creating
items (404, never 500)."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
from advanced_alchemy.exceptions import RepositoryError
from litestar import Litestar, get
from litestar.testing import TestClient
from sqlalchemy import make_url
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_dbapi
from sqlalchemy.exc import DBAPIError

from app.database import engine_config
from app.errors import DATABASE_UNAVAILABLE, UNAVAILABLE_SQLSTATES, USER_NOT_FOUND, exception_handlers
from app.main import create_app
from tests.conftest import (
    SUPERUSER_EMAIL,
    SUPERUSER_PASSWORD,
    Account,
    LiveServer,
    create_account,
    login,
    make_settings,
    random_email,
)

APPLICATION_NAME = "Test Project"  # make_settings' PROJECT_NAME: the app's connections in pg_stat_activity


class Session:
    """A PostgreSQL session of the test's own (asyncpg, on its own event loop in a thread), to hold locks and look."""

    def __init__(self, url: str) -> None:
        self.dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.connection: asyncpg.Connection[Any] | None = None

    def __enter__(self) -> Session:
        self.thread.start()
        self.connection = self._call(asyncpg.connect(self.dsn))
        return self

    def __exit__(self, *_: object) -> None:
        if self.connection is not None:
            self._call(self.connection.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        self.loop.close()

    def _call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def execute(self, sql: str, *args: Any) -> None:
        assert self.connection is not None
        self._call(self.connection.execute(sql, *args))

    def fetch(self, sql: str, *args: Any) -> list[Any]:
        assert self.connection is not None
        return list(self._call(self.connection.fetch(sql, *args)))

    def app_backends(self) -> set[int]:
        """The backend pids of the served app's connections."""
        rows = self.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = $1",
            APPLICATION_NAME,
        )
        return {row["pid"] for row in rows}

    def app_waits_on_a_lock(self) -> bool:
        rows = self.fetch(
            "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND application_name = $1"
            " AND wait_event_type = 'Lock'",
            APPLICATION_NAME,
        )
        return bool(rows)


@dataclass
class Service:
    http: httpx.Client
    url: str
    headers: dict[str, str]  # the superuser's
    database: Session


@contextmanager
def serve(url: str, **overrides: str) -> Iterator[Service]:
    """The app served against `url`, with the superuser signed in and a session of the test's own beside it."""
    with (
        LiveServer(create_app(make_settings(url, **overrides))) as server,
        httpx.Client(base_url=server.url + "/api/v1", timeout=30) as http,
        Session(url) as database,
    ):
        yield Service(http, server.url + "/api/v1", login(http, SUPERUSER_EMAIL, SUPERUSER_PASSWORD), database)


# A small budget per statement: the server gives up a lock wait after 0.5 s (app/database.py's server_timeouts).
QUICK = {"DB_COMMAND_TIMEOUT": "1", "DB_CONNECT_TIMEOUT": "1"}
# Longer than any answer the server's timeouts allow, even on a loaded machine; shorter than a hang (the clients'
# own timeout is 30 s).
NOT_A_HANG = 5.0


@pytest.fixture
def service(migrated_database: str) -> Iterator[Service]:
    with serve(migrated_database, **QUICK) as served:
        yield served


def new_account(service: Service) -> Account:
    return create_account(service.http, service.headers)


def new_item(service: Service, headers: dict[str, str]) -> str:
    response = service.http.post("/items/", json={"title": "an item"}, headers=headers)
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json() == {"detail": DATABASE_UNAVAILABLE}
    assert response.headers["retry-after"] == "5"


@dataclass
class Answer:
    kind: str
    status: int
    seconds: float
    response: httpx.Response


def load(url: str, clients: dict[str, Callable[[httpx.Client], httpx.Response]], seconds: float) -> list[Answer]:
    """Each client (a thread of its own, with its own HTTP connection) sends its request in a loop for `seconds`."""
    deadline = time.monotonic() + seconds

    def loop(kind: str, send: Callable[[httpx.Client], httpx.Response]) -> list[Answer]:
        answers = []
        with httpx.Client(base_url=url, timeout=30) as http:
            while time.monotonic() < deadline:
                started = time.monotonic()
                response = send(http)
                answers.append(Answer(kind, response.status_code, time.monotonic() - started, response))
        return answers

    with ThreadPoolExecutor(len(clients)) as pool:
        futures = [pool.submit(loop, kind.split("#")[0], send) for kind, send in clients.items()]
        return [answer for future in futures for answer in future.result()]


def p99(answers: list[Answer]) -> float:
    durations = sorted(answer.seconds for answer in answers)
    return durations[min(len(durations) - 1, int(len(durations) * 0.99))]


# ---------------------------------------------------------------- a table held ACCESS EXCLUSIVE


def clients_of(service: Service, account: Account, item_id: str) -> dict[str, Callable[[httpx.Client], httpx.Response]]:
    """Three routes on `item`, and /users/me and login, which never read it."""
    me = account.headers
    login = {"username": account.email, "password": account.password}
    return {
        "items#read": lambda http: http.get(f"/items/{item_id}", headers=me),
        "items#list": lambda http: http.get("/items/", headers=me),
        "items#create": lambda http: http.post("/items/", json={"title": "t"}, headers=me),
        "me#1": lambda http: http.get("/users/me", headers=me),
        "me#2": lambda http: http.get("/users/me", headers=me),
        "me#3": lambda http: http.get("/users/me", headers=me),
        "login#1": lambda http: http.post("/login/access-token", data=login),
        "login#2": lambda http: http.post("/login/access-token", data=login),
    }


def test_a_locked_table_is_a_503_for_its_routes_only_and_replaces_no_connection(service: Service) -> None:
    account = new_account(service)
    item_id = new_item(service, account.headers)
    me = account.headers
    # Open the whole pool (5) before the lock, so that every connection the app has is one of these.
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: service.http.get("/users/me", headers=me), range(200)))
    before = service.database.app_backends()
    # The same load without the lock: what this machine answers in now (the bounds below are relative to it, so
    # that a machine kept busy by other work does not fail them).
    unlocked = load(service.url, clients_of(service, account, item_id), seconds=2)
    usual = {kind: p99([answer for answer in unlocked if answer.kind == kind]) for kind in ("me", "login")}
    assert before

    service.database.execute("BEGIN")
    service.database.execute("LOCK TABLE item IN ACCESS EXCLUSIVE MODE")
    try:
        answers = load(service.url, clients_of(service, account, item_id), seconds=5)
    finally:
        service.database.execute("ROLLBACK")
    released = time.monotonic()

    items = [answer for answer in answers if answer.kind == "items"]
    others = [answer for answer in answers if answer.kind != "items"]
    assert items
    assert others
    for answer in items:
        assert_unavailable(answer.response)
        assert answer.seconds < NOT_A_HANG  # the server's lock_timeout (0.5 s), not a hang
    assert {answer.status for answer in others} == {200}, [a.response.text for a in others if a.status != 200][:3]
    me_answers = [answer for answer in others if answer.kind == "me"]
    print(f"\n/users/me during the lock: {len(me_answers)} answers, p99 {p99(me_answers) * 1000:.0f} ms")
    # The routes that never read `item` answer as they do without the lock: its waits hold no connection they need.
    assert p99(me_answers) < 3 * usual["me"] + 0.2, usual
    assert p99([answer for answer in others if answer.kind == "login"]) < 3 * usual["login"] + 0.3, usual

    # Back at once when the lock goes: the first requests after it succeed (no breaker, no backoff).
    assert service.http.get("/items/", headers=me).status_code == 200
    assert service.http.get(f"/items/{item_id}", headers=me).status_code == 200
    assert service.http.post("/items/", json={"title": "after"}, headers=me).status_code == 200
    assert time.monotonic() - released < NOT_A_HANG
    # Each statement the server canceled left its connection in the pool: none was replaced.
    after = service.database.app_backends()
    assert before <= after, f"replaced: {sorted(before - after)}"


def test_a_locked_user_table_is_a_503_for_login_signup_and_me(service: Service) -> None:
    """The routes of issue 23 that answered 500 on `user` held ACCESS EXCLUSIVE: the caller's read (fast path),
    login's read of the account, signup's INSERT."""
    account = new_account(service)
    service.database.execute("BEGIN")
    service.database.execute('LOCK TABLE "user" IN ACCESS EXCLUSIVE MODE')
    try:
        started = time.monotonic()
        answers = [
            service.http.get("/users/me", headers=account.headers),
            service.http.post("/login/access-token", data={"username": account.email, "password": account.password}),
            service.http.post("/users/signup", json={"email": random_email(), "password": "a-good-password"}),
            service.http.get("/items/", headers=account.headers),
        ]
        elapsed = time.monotonic() - started
    finally:
        service.database.execute("ROLLBACK")
    for response in answers:
        assert_unavailable(response)
    assert elapsed < 4 * NOT_A_HANG
    assert service.http.get("/users/me", headers=account.headers).status_code == 200


def test_a_statement_timeout_is_a_503_and_the_urls_own_setting_wins(migrated_database: str) -> None:
    """The URL's `options=-c lock_timeout=0` (no limit on lock waits) wins over the service's: a statement stuck on
    the lock then meets the server's statement_timeout (57014, query canceled) instead."""
    url = make_url(migrated_database).update_query_dict({"options": "-c lock_timeout=0"})
    with serve(url.render_as_string(hide_password=False), **QUICK) as service:
        settings = service.database.fetch("SHOW lock_timeout")
        assert settings[0][0] == "0"  # the test's own session: the server's default, as the URL's
        assert service.http.get("/items/", headers=service.headers).status_code == 200
        before = service.database.app_backends()
        service.database.execute("BEGIN")
        service.database.execute("LOCK TABLE item IN ACCESS EXCLUSIVE MODE")
        try:
            started = time.monotonic()
            response = service.http.get("/items/", headers=service.headers)
            assert time.monotonic() - started < NOT_A_HANG
        finally:
            service.database.execute("ROLLBACK")
        assert_unavailable(response)
        assert service.http.get("/items/", headers=service.headers).status_code == 200
        assert before <= service.database.app_backends()


def server_settings(url: str, **overrides: str) -> dict[str, str]:
    connect_args = engine_config(make_settings(url, **overrides)).connect_args
    assert isinstance(connect_args, dict)
    settings: dict[str, str] = connect_args["server_settings"]
    return settings


def test_a_request_waits_for_a_connection_no_longer_than_the_pools_timeout(migrated_database: str) -> None:
    """One pooled connection, held 3 s by a statement on a locked table (the URL lets it wait that long): a request
    of another route gives up after the pool's timeout (1 s here) with a 503 instead of queueing behind it."""
    url = make_url(migrated_database).update_query_dict({"options": "-c lock_timeout=3000 -c statement_timeout=3000"})
    overrides = {"DB_POOL_SIZE": "1", "DB_CONNECT_TIMEOUT": "1", "DB_COMMAND_TIMEOUT": "5"}
    with serve(url.render_as_string(hide_password=False), **overrides) as service:
        headers = service.headers
        service.database.execute("BEGIN")
        service.database.execute("LOCK TABLE item IN ACCESS EXCLUSIVE MODE")
        try:
            with ThreadPoolExecutor(1) as pool:
                stuck = pool.submit(service.http.get, "/items/", headers=headers)
                deadline = time.monotonic() + 5
                while not service.database.app_waits_on_a_lock():
                    assert time.monotonic() < deadline, "the item read never waited on the lock"
                    time.sleep(0.01)
                started = time.monotonic()
                waited = service.http.get("/users/me", headers=headers)
                elapsed = time.monotonic() - started
                assert_unavailable(stuck.result())
        finally:
            service.database.execute("ROLLBACK")
        assert_unavailable(waited)
        assert 0.9 < elapsed < 2.5  # the pool's timeout (1 s), not the stuck statement's 3 s
        assert service.http.get("/users/me", headers=headers).status_code == 200


def test_the_server_timeouts_sit_below_the_command_timeout() -> None:
    """What the engine sends in each connection's startup packet (the tests above show the server applying it)."""
    url = "postgresql+asyncpg://postgres@127.0.0.1/accounts"
    assert server_settings(url, **QUICK) == {
        "application_name": APPLICATION_NAME,
        "statement_timeout": "500",
        "lock_timeout": "500",
    }
    assert server_settings(url)["statement_timeout"] == "4000"  # DB_COMMAND_TIMEOUT's default, 5 s
    # The URL's own setting wins.
    assert server_settings(url + "?options=-c%20statement_timeout%3D200")["statement_timeout"] == "200"
    # PgBouncer in transaction mode refuses startup parameters it does not know (and a SET would leak to other
    # clients of its server connection): none then.
    pooled = server_settings(url, DB_TRANSACTION_POOLING="true")
    assert "statement_timeout" not in pooled
    assert "lock_timeout" not in pooled


def test_a_read_only_database_is_a_503_for_writes_only(migrated_database: str) -> None:
    """25006 for real: a standby (or a database in a failover) refuses writes; reads still answer. A login is a
    write (it starts a session): the token is one the primary issued."""
    with serve(migrated_database, **QUICK) as primary:
        headers = primary.headers
    url = make_url(migrated_database).update_query_dict({"options": "-c default_transaction_read_only=on"})
    with serve_signed_out(url.render_as_string(hide_password=False), **QUICK) as http:
        assert http.get("/users/me", headers=headers).status_code == 200
        assert http.get("/items/", headers=headers).status_code == 200
        assert_unavailable(http.post("/items/", json={"title": "t"}, headers=headers))
        assert_unavailable(http.patch("/users/me", json={"full_name": "New Name"}, headers=headers))
        assert_unavailable(
            http.post("/login/access-token", data={"username": SUPERUSER_EMAIL, "password": SUPERUSER_PASSWORD})
        )


@contextmanager
def serve_signed_out(url: str, **overrides: str) -> Iterator[httpx.Client]:
    with (
        LiveServer(create_app(make_settings(url, **overrides))) as server,
        httpx.Client(base_url=server.url + "/api/v1", timeout=30) as http,
    ):
        yield http


# ---------------------------------------------------------------- the table, for what cannot be provoked cheaply

# Each SQLSTATE the service answers 503 for, by asyncpg's class for it.
UNAVAILABLE = [
    asyncpg.LockNotAvailableError,  # 55P03
    asyncpg.QueryCanceledError,  # 57014
    asyncpg.SerializationError,  # 40001
    asyncpg.DeadlockDetectedError,  # 40P01
    asyncpg.ReadOnlySQLTransactionError,  # 25006
    asyncpg.TooManyConnectionsError,  # 53300
    asyncpg.AdminShutdownError,  # 57P01
    asyncpg.CrashShutdownError,  # 57P02
    asyncpg.CannotConnectNowError,  # 57P03
    asyncpg.ConnectionFailureError,  # 08006
    asyncpg.OutOfMemoryError,  # 53200
]


def _through_sqlalchemy(error: Exception) -> DBAPIError:
    """As the ORM path raises it: asyncpg's error translated by SQLAlchemy's adapter, wrapped in a DBAPIError."""
    dbapi = AsyncAdapt_asyncpg_dbapi
    translated = dbapi.Error(f"{type(error)}: {error}")
    translated.pgcode = translated.sqlstate = getattr(error, "sqlstate", None)  # type: ignore[attr-defined]
    translated.__cause__ = error
    wrapped = DBAPIError.instance("SELECT 1", None, translated, dbapi.Error)
    assert isinstance(wrapped, DBAPIError)
    return wrapped


def _through_advanced_alchemy(error: Exception) -> RepositoryError:
    wrapped = RepositoryError("An exception occurred")
    wrapped.__cause__ = _through_sqlalchemy(error)
    return wrapped


WRAPPINGS: dict[str, Callable[[Exception], Exception]] = {
    "fast path (asyncpg)": lambda error: error,
    "ORM (SQLAlchemy DBAPIError)": _through_sqlalchemy,
    "ORM (advanced-alchemy RepositoryError)": _through_advanced_alchemy,
}


def answer_to(error: Exception) -> httpx.Response:
    """What the service's error handlers answer for `error`, raised in a route (the handlers' own lookup by class)."""

    @get("/", sync_to_thread=False)
    def fail() -> None:
        raise error

    with TestClient(Litestar([fail], exception_handlers=exception_handlers)) as client:
        return client.get("/")


def test_the_table_names_every_sqlstate() -> None:
    for error_class in UNAVAILABLE:
        code = error_class.sqlstate
        assert code in UNAVAILABLE_SQLSTATES or code[:2] in UNAVAILABLE_SQLSTATES, code


@pytest.mark.parametrize("wrapping", WRAPPINGS)
@pytest.mark.parametrize("error_class", UNAVAILABLE, ids=lambda cls: f"{cls.sqlstate}-{cls.__name__}")
def test_each_unavailable_sqlstate_is_a_503(error_class: type[asyncpg.PostgresError], wrapping: str) -> None:
    assert_unavailable(answer_to(WRAPPINGS[wrapping](error_class("canceled"))))


@pytest.mark.parametrize("wrapping", WRAPPINGS)
def test_a_client_side_timeout_is_a_503(wrapping: str) -> None:
    # asyncpg's command_timeout and connect timeout raise TimeoutError (asyncio's, the builtin since 3.11).
    error = TimeoutError()
    assert_unavailable(answer_to(error if wrapping.startswith("fast") else WRAPPINGS[wrapping](error)))


@pytest.mark.parametrize("wrapping", WRAPPINGS)
def test_other_database_errors_stay_500s(wrapping: str) -> None:
    for error_class in (asyncpg.UndefinedTableError, asyncpg.NotNullViolationError, asyncpg.DataError):
        assert answer_to(WRAPPINGS[wrapping](error_class("a bug"))).status_code == 500


# ---------------------------------------------------------------- a user deleted while creating items


def test_an_item_created_by_a_user_being_deleted_is_a_404(migrated_database: str) -> None:
    """Deterministically: the user's deletion is under way (its row locked, not yet committed) when the item's
    INSERT checks its owner; the deletion commits and the foreign key fails. 404 "User not found", not 500."""
    with serve(migrated_database) as service:
        account = new_account(service)
        service.database.execute("BEGIN")
        service.database.execute('DELETE FROM "user" WHERE id = $1', uuid.UUID(account.id))
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(service.http.post, "/items/", json={"title": "t"}, headers=account.headers)
            deadline = time.monotonic() + 5
            while not service.database.app_waits_on_a_lock():
                assert time.monotonic() < deadline, "the INSERT never waited on the delete"
                assert not pending.done(), pending.result().text
                time.sleep(0.01)
            service.database.execute("COMMIT")
            response = pending.result()
        assert (response.status_code, response.json()) == (404, {"detail": USER_NOT_FOUND})
        assert service.database.fetch("SELECT 1 FROM item") == []


def test_deleting_users_while_they_create_items_is_never_a_500(migrated_database: str) -> None:
    """The race of issue 23 over HTTP: each user creates items from 3 clients while a superuser deletes it."""
    with serve(migrated_database) as service:
        statuses: dict[int, int] = {}
        for _ in range(8):
            account = new_account(service)
            stop = threading.Event()

            def create(headers: dict[str, str] = account.headers, stop: threading.Event = stop) -> list[httpx.Response]:
                """Items until the user is deleted, and a few after."""
                answers: list[httpx.Response] = []
                with httpx.Client(base_url=service.url, timeout=30) as http:
                    while not stop.is_set():
                        answers.append(http.post("/items/", json={"title": "t"}, headers=headers))
                    answers.extend(http.post("/items/", json={"title": "t"}, headers=headers) for _ in range(3))
                return answers

            with ThreadPoolExecutor(3) as pool:
                creators = [pool.submit(create) for _ in range(3)]
                time.sleep(0.15)
                deleted = service.http.delete(f"/users/{account.id}", headers=service.headers)
                stop.set()
                answers = [answer for creator in creators for answer in creator.result()]
            assert deleted.status_code == 200, deleted.text
            for answer in answers:
                statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
                assert answer.status_code in (200, 404), answer.text
                if answer.status_code == 404:
                    assert answer.json() == {"detail": USER_NOT_FOUND}
        print(f"\ndelete vs create: {statuses}")
        assert statuses.get(200)
        assert statuses.get(404)
