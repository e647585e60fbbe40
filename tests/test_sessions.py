"""Sessions (issue 25): one per login, in the database, so that ending one holds on every replica at once; the
token the template's frontend sees is unchanged. Over HTTP on both engines, and the pruning against the database."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
from advanced_alchemy.alembic.commands import AlembicCommands
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from app import security
from app.database import sqlalchemy_config
from app.main import create_app
from app.sessions import client_network, prune, session_label
from db.executor import Executor
from db.models import LEGACY_SESSION_LABEL, User, UserSession, legacy_session_id, utc_now
from tests.conftest import (
    SECRET_KEY,
    Account,
    Database,
    LiveServer,
    Served,
    create_postgres_database,
    drop_postgres_database,
    login,
    make_settings,
)

UserFactory = Callable[..., Account]
INVALID = {"detail": "Could not validate credentials"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def sessions(http: httpx.Client, headers: dict[str, str], path: str = "/users/me/sessions") -> dict[str, Any]:
    response = http.get(path, headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def rows_of(database: Database, user_id: str) -> list[dict[str, Any]]:
    """Every user_session row of a user, all columns, newest first."""

    async def go(engine: AsyncEngine) -> list[dict[str, Any]]:
        async with engine.connect() as connection:
            statement = (
                select(UserSession.__table__)
                .where(UserSession.user_id == uuid.UUID(user_id))
                .order_by(UserSession.created_at.desc())
            )
            return [dict(row) for row in (await connection.execute(statement)).mappings()]

    return list(database.execute(go))


def set_session(database: Database, session_id: str | uuid.UUID, **values: Any) -> None:
    async def go(engine: AsyncEngine) -> None:
        async with engine.begin() as connection:
            await connection.execute(
                update(UserSession).where(UserSession.id == uuid.UUID(str(session_id))).values(**values)
            )

    database.execute(go)


@pytest.fixture
def replica(served: Served) -> Iterator[httpx.Client]:
    """Another instance of the app on the same database: what one ends, the other refuses."""
    settings = make_settings(served.database.url)
    with LiveServer(create_app(settings)) as server, httpx.Client(base_url=server.url + settings.API_V1_STR) as http:
        yield http


# ------------------------------------------------------------ pure helpers


def test_the_client_is_recorded_shortened_and_masked() -> None:
    assert client_network("203.0.113.77") == "203.0.113.0/24"
    assert client_network("2001:db8:1234:5678::1") == "2001:db8:1234::/48"
    assert client_network("::ffff:198.51.100.9") == "198.51.100.0/24"
    assert client_network("unknown") == ""
    assert session_label("Mozilla/5.0 (X11)") == "Mozilla/5.0 (X11)"
    assert len(session_label("x" * 500)) == 100
    assert session_label("a\x00b\nc") == "abc"


# ------------------------------------------------------------ listing and ending


def test_each_login_is_a_session_listed_newest_first_with_the_current_one_marked(
    client: httpx.Client, user: Account
) -> None:
    first = login(client, user.email, user.password)
    second_token = client.post(
        "/login/access-token",
        data={"username": user.email, "password": user.password},
        headers={"User-Agent": "SessionsTest/1.0"},
    ).json()["access_token"]
    listed = sessions(client, first)
    assert listed["count"] == 3  # the seeded account's own session, and the two logins
    newest, older, seeded = listed["data"]
    assert [newest["current"], older["current"], seeded["current"]] == [False, True, False]
    assert seeded["id"] == user.session_id
    assert newest["label"] == "SessionsTest/1.0"
    assert newest["client_network"] == "127.0.0.0/24"
    assert set(newest) == {"id", "created_at", "last_used_at", "expires_at", "label", "client_network", "current"}
    expires = datetime.fromisoformat(newest["expires_at"]) - datetime.fromisoformat(newest["created_at"])
    assert expires == timedelta(minutes=11520)
    claims = jwt.decode(second_token, SECRET_KEY, algorithms=["HS256"])
    assert claims["sid"] == newest["id"]
    assert [s["current"] for s in sessions(client, bearer(second_token))["data"]] == [True, False, False]


def test_an_ended_session_is_refused_at_once_by_another_replica(
    client: httpx.Client, replica: httpx.Client, user: Account
) -> None:
    other = login(client, user.email, user.password)
    assert replica.get("/users/me", headers=other).status_code == 200  # its caller's row is read each time
    other_id = next(s["id"] for s in sessions(client, other)["data"] if s["current"])
    ended = client.delete(f"/users/me/sessions/{other_id}", headers=user.headers)
    assert (ended.status_code, ended.json()) == (200, {"message": "Session ended"})
    refused = replica.get("/users/me", headers=other)
    assert (refused.status_code, refused.json()) == (403, INVALID)
    assert client.get("/users/me", headers=other).status_code == 403
    assert client.get("/users/me", headers=user.headers).status_code == 200
    again = client.delete(f"/users/me/sessions/{other_id}", headers=user.headers)
    assert (again.status_code, again.json()) == (404, {"detail": "Session not found"})
    assert [s["id"] for s in sessions(client, user.headers)["data"]] == [user.session_id]


def test_ending_the_current_session_signs_its_token_out(client: httpx.Client, user: Account) -> None:
    assert client.delete(f"/users/me/sessions/{user.session_id}", headers=user.headers).status_code == 200
    assert client.get("/users/me", headers=user.headers).status_code == 403


def test_a_session_of_someone_else_is_not_found(client: httpx.Client, new_account: UserFactory) -> None:
    mine, theirs = new_account(), new_account()
    for session_id in (theirs.session_id, str(uuid.uuid4())):
        response = client.delete(f"/users/me/sessions/{session_id}", headers=mine.headers)
        assert (response.status_code, response.json()) == (404, {"detail": "Session not found"})
    assert client.get("/users/me", headers=theirs.headers).status_code == 200
    malformed = client.delete("/users/me/sessions/not-a-uuid", headers=mine.headers)
    assert malformed.status_code == 422
    assert client.get("/users/me/sessions").status_code == 401


def test_ending_all_others_keeps_the_current_one(client: httpx.Client, user: Account) -> None:
    others = [login(client, user.email, user.password) for _ in range(2)]
    response = client.delete("/users/me/sessions", headers=user.headers)
    assert (response.status_code, response.json()) == (200, {"message": "Other sessions ended"})
    assert [client.get("/users/me", headers=h).status_code for h in others] == [403, 403]
    listed = sessions(client, user.headers)
    assert (listed["count"], listed["data"][0]["id"], listed["data"][0]["current"]) == (1, user.session_id, True)


def test_a_superuser_lists_and_ends_another_users_sessions(
    client: httpx.Client, replica: httpx.Client, new_account: UserFactory
) -> None:
    admin, user = new_account(is_superuser=True), new_account()
    second = login(client, user.email, user.password)
    listed = sessions(client, admin.headers, f"/users/{user.id}/sessions")
    assert listed["count"] == 2
    assert not any(s["current"] for s in listed["data"])
    ended = client.delete(f"/users/{user.id}/sessions/{user.session_id}", headers=admin.headers)
    assert (ended.status_code, ended.json()) == (200, {"message": "Session ended"})
    assert replica.get("/users/me", headers=user.headers).status_code == 403
    assert replica.get("/users/me", headers=second).status_code == 200
    everything = client.delete(f"/users/{user.id}/sessions", headers=admin.headers)
    assert (everything.status_code, everything.json()) == (200, {"message": "Sessions ended"})
    assert replica.get("/users/me", headers=second).status_code == 403
    assert sessions(client, admin.headers, f"/users/{user.id}/sessions") == {"data": [], "count": 0}
    assert client.get("/users/me", headers=admin.headers).status_code == 200  # the superuser's own are theirs


def test_a_superusers_session_routes_answer_404_for_a_missing_user_or_session(
    client: httpx.Client, new_account: UserFactory
) -> None:
    admin, user = new_account(is_superuser=True), new_account()
    gone = str(uuid.uuid4())
    for method, path in (
        ("GET", f"/users/{gone}/sessions"),
        ("DELETE", f"/users/{gone}/sessions"),
        ("DELETE", f"/users/{gone}/sessions/{user.session_id}"),
    ):
        response = client.request(method, path, headers=admin.headers)
        assert (response.status_code, response.json()) == (404, {"detail": "User not found"}), path
    response = client.delete(f"/users/{user.id}/sessions/{admin.session_id}", headers=admin.headers)
    assert (response.status_code, response.json()) == (404, {"detail": "Session not found"})
    assert client.get("/users/me", headers=admin.headers).status_code == 200


def test_a_normal_user_may_not_use_the_superusers_session_routes(
    client: httpx.Client, new_account: UserFactory
) -> None:
    user, other = new_account(), new_account()
    for method, path in (
        ("GET", f"/users/{other.id}/sessions"),
        ("DELETE", f"/users/{other.id}/sessions"),
        ("DELETE", f"/users/{other.id}/sessions/{other.session_id}"),
        ("GET", f"/users/{user.id}/sessions"),  # their own too: theirs are under /users/me
    ):
        response = client.request(method, path, headers=user.headers)
        assert (response.status_code, response.json()) == (
            403,
            {"detail": "The user doesn't have enough privileges"},
        ), path
    assert client.get("/users/me", headers=other.headers).status_code == 200


# ------------------------------------------------------------ revocation in session terms


def test_a_password_change_ends_the_other_sessions_but_not_its_own(
    client: httpx.Client, replica: httpx.Client, user: Account
) -> None:
    other = login(client, user.email, user.password)
    body = {"current_password": user.password, "new_password": "a-new-password-1"}
    assert client.patch("/users/me/password", json=body, headers=user.headers).status_code == 200
    assert replica.get("/users/me", headers=other).status_code == 403
    assert replica.get("/users/me", headers=user.headers).status_code == 200
    listed = sessions(client, user.headers)
    assert [(s["id"], s["current"]) for s in listed["data"]] == [(user.session_id, True)]


def test_a_reset_ends_every_session(client: httpx.Client, served: Served, user: Account) -> None:
    other = login(client, user.email, user.password)
    hashed = served.database.scalar('SELECT hashed_password FROM "user" WHERE email = :email', email=user.email)
    token = security.create_reset_token(user.email, hashed, SECRET_KEY, timedelta(hours=1))
    response = client.post("/reset-password/", json={"token": token, "new_password": "a-new-password-1"})
    assert response.status_code == 200, response.text
    assert [client.get("/users/me", headers=h).status_code for h in (user.headers, other)] == [403, 403]
    fresh = login(client, user.email, "a-new-password-1")
    assert sessions(client, fresh)["count"] == 1


def test_a_deactivation_ends_every_session(
    client: httpx.Client, user: Account, superuser_headers: dict[str, str]
) -> None:
    other = login(client, user.email, user.password)
    client.patch(f"/users/{user.id}", json={"is_active": False}, headers=superuser_headers)
    client.patch(f"/users/{user.id}", json={"is_active": True}, headers=superuser_headers)
    assert [client.get("/users/me", headers=h).status_code for h in (user.headers, other)] == [403, 403]
    assert sessions(client, superuser_headers, f"/users/{user.id}/sessions")["count"] == 0


def test_a_superuser_setting_a_password_ends_every_session(
    client: httpx.Client, user: Account, superuser_headers: dict[str, str]
) -> None:
    other = login(client, user.email, user.password)
    client.patch(f"/users/{user.id}", json={"password": "set-by-admin-1"}, headers=superuser_headers)
    assert [client.get("/users/me", headers=h).status_code for h in (user.headers, other)] == [403, 403]


# ------------------------------------------------------------ tokens without a session id


def template_token(user_id: str) -> str:
    """What the template's backend signed: only `sub` and `exp`."""
    return jwt.encode({"sub": user_id, "exp": datetime.now(UTC) + timedelta(days=8)}, SECRET_KEY, algorithm="HS256")


def test_a_template_token_is_the_legacy_session_and_ends_with_it(
    client: httpx.Client, replica: httpx.Client, new_account: UserFactory
) -> None:
    user = new_account(legacy_session=True)  # an account from before sessions
    token, another = template_token(user.id), template_token(user.id)
    assert client.get("/users/me", headers=bearer(token)).status_code == 200
    listed = sessions(client, bearer(token))
    legacy = [s for s in listed["data"] if s["current"]]
    assert [(s["id"], s["label"]) for s in legacy] == [
        (str(legacy_session_id(uuid.UUID(user.id))), LEGACY_SESSION_LABEL)
    ]
    assert listed["count"] == 2  # and the seeded login's
    response = client.delete(f"/users/me/sessions/{legacy[0]['id']}", headers=user.headers)
    assert response.status_code == 200
    assert [replica.get("/users/me", headers=bearer(t)).status_code for t in (token, another)] == [403, 403]
    assert replica.get("/users/me", headers=user.headers).status_code == 200


def test_a_token_without_a_session_of_an_account_created_since_is_refused(client: httpx.Client, user: Account) -> None:
    """An account made after migration 0007 has no legacy session: a sid-less token for it was never issued."""
    response = client.get("/users/me", headers=bearer(template_token(user.id)))
    assert (response.status_code, response.json()) == (403, INVALID)


def test_a_token_naming_another_users_session_is_refused(client: httpx.Client, new_account: UserFactory) -> None:
    mine, theirs = new_account(), new_account()
    expires = timedelta(minutes=5)
    forged = security.create_access_token(uuid.UUID(mine.id), 0, SECRET_KEY, expires, uuid.UUID(theirs.session_id))
    assert client.get("/users/me", headers=bearer(forged)).status_code == 403


def test_an_expired_session_is_refused(client: httpx.Client, served: Served, user: Account) -> None:
    set_session(served.database, user.session_id, expires_at=utc_now() - timedelta(seconds=1))
    assert client.get("/users/me", headers=user.headers).status_code == 403
    assert sessions(client, login(client, user.email, user.password))["count"] == 1


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [("GET", "/users/me", None), ("POST", "/items/", {"title": "checked in its own INSERT"})],
    ids=["read", "change"],
)
def test_last_used_at_is_written_after_the_answer_at_most_once_a_minute(
    client: httpx.Client, served: Served, user: Account, method: str, path: str, body: dict[str, str] | None
) -> None:
    """By the auth middleware's read of the caller, or by a change that checks its caller itself."""
    long_ago = utc_now() - timedelta(minutes=5)
    set_session(served.database, user.session_id, last_used_at=long_ago)
    assert client.request(method, path, json=body, headers=user.headers).status_code == 200
    deadline = time.monotonic() + 5
    while (used := rows_of(served.database, user.id)[0]["last_used_at"]) <= long_ago and time.monotonic() < deadline:
        time.sleep(0.05)
    assert used > long_ago
    assert client.request(method, path, json=body, headers=user.headers).status_code == 200
    time.sleep(0.3)
    assert rows_of(served.database, user.id)[0]["last_used_at"] == used  # within the minute: not written again


# ------------------------------------------------------------ pruning


def add_sessions(database: Database, rows: list[dict[str, Any]]) -> None:
    async def go(engine: AsyncEngine) -> None:
        async with engine.begin() as connection:
            await connection.execute(insert(UserSession), rows)

    database.execute(go)


def session_row(user_id: str, **values: Any) -> dict[str, Any]:
    now = utc_now()
    return {
        "id": uuid.uuid4(),
        "user_id": uuid.UUID(user_id),
        "created_at": now,
        "last_used_at": now,
        "expires_at": now + timedelta(days=1),
        "ended_at": None,
        "label": "test",
        "client_network": "",
        "token_version": 0,
        "refresh_digest": None,
        "refresh_generation": 0,
        "legacy": False,
        **values,
    }


def run_prune(database: Database, limit: int | None = None) -> int:
    async def go(engine: AsyncEngine) -> int:
        return await prune(Executor(engine), limit=limit)

    return int(database.execute(go))


def set_user(database: Database, user_id: str, **values: Any) -> None:
    async def go(engine: AsyncEngine) -> None:
        async with engine.begin() as connection:
            await connection.execute(update(User).where(User.id == uuid.UUID(user_id)).values(**values))

    database.execute(go)


def test_pruning_deletes_the_sessions_nothing_accepts_again(served: Served, new_account: UserFactory) -> None:
    user = new_account()
    database = served.database
    now = utc_now()
    kept = session_row(user.id, token_version=0)
    live = session_row(user.id, token_version=1)
    prunable = [
        session_row(user.id, token_version=1, ended_at=now),
        session_row(user.id, token_version=1, expires_at=now - timedelta(seconds=1)),
        session_row(user.id, token_version=0),  # began before the password changed
    ]
    add_sessions(database, [kept, live, *prunable])
    # The user changed their password from `kept` (version 0 -> 1): the seeded session is stale too.
    set_user(database, user.id, token_version=1, kept_session_id=kept["id"])
    while run_prune(database) == 1000:  # a backlog of other tests' sessions, a batch at a time
        pass
    remaining = {row["id"] for row in rows_of(database, user.id)}
    assert remaining == {kept["id"], live["id"]}


def test_a_pruning_run_is_bounded(served: Served, new_account: UserFactory) -> None:
    user = new_account()
    now = utc_now()
    add_sessions(served.database, [session_row(user.id, ended_at=now) for _ in range(1005)])
    assert run_prune(served.database) == 1000  # at most 1000 rows a run
    assert run_prune(served.database, limit=3) == 3
    while run_prune(served.database):
        pass
    assert [row["id"] for row in rows_of(served.database, user.id)] == [uuid.UUID(user.session_id)]


# ------------------------------------------------------------ the migration


@pytest.mark.parametrize("engine", ["postgresql", "sqlite"])
def test_the_migration_gives_each_user_a_legacy_session(engine: str, tmp_path: Any) -> None:
    url = create_postgres_database() if engine == "postgresql" else f"sqlite+aiosqlite:///{tmp_path / 's.db'}"
    database = Database(url)
    commands = AlembicCommands(sqlalchemy_config=sqlalchemy_config(make_settings(url)))
    try:
        commands.upgrade("0006")
        ids = [uuid.uuid4(), uuid.uuid4()]
        for n, (user_id, digest) in enumerate(zip(ids, [None, "d" * 64], strict=True)):
            database.run(
                'INSERT INTO "user" (id, email, email_key, is_active, is_superuser, hashed_password, created_at, '
                "token_version, kept_token_digest) "
                "VALUES (:id, :email, :email, true, false, 'x', CURRENT_TIMESTAMP, :version, :digest)",
                id=database.id(str(user_id)),
                email=f"legacy-{n}@example.com",
                version=n + 2,
                digest=digest,
            )
        commands.upgrade("head")
        for n, user_id in enumerate(ids):
            (row,) = rows_of(database, str(user_id))
            assert row["id"] == legacy_session_id(user_id)
            assert (row["legacy"], row["label"], row["token_version"], row["ended_at"]) == (
                True,
                LEGACY_SESSION_LABEL,
                n + 2,
                None,
            )
            assert timedelta(days=7, hours=23) < row["expires_at"] - utc_now() <= timedelta(days=8)
        kept = database.scalar('SELECT count(*) FROM "user" WHERE kept_session_id IS NOT NULL')
        assert kept == 1
        commands.downgrade("0006")
        commands.upgrade("head")
    finally:
        if engine == "postgresql":
            drop_postgres_database(url)


# ------------------------------------------------------------ refresh tokens (REFRESH_TOKEN_EXPIRE_MINUTES)

ACCESS_MINUTES, REFRESH_MINUTES = 15, 60


@pytest.fixture
def refreshing(served: Served) -> Iterator[httpx.Client]:
    """The app with refresh tokens on, on the served database."""
    settings = make_settings(
        served.database.url,
        ACCESS_TOKEN_EXPIRE_MINUTES=str(ACCESS_MINUTES),
        REFRESH_TOKEN_EXPIRE_MINUTES=str(REFRESH_MINUTES),
    )
    with LiveServer(create_app(settings)) as server, httpx.Client(base_url=server.url + settings.API_V1_STR) as http:
        yield http


def login_pair(http: httpx.Client, user: Account) -> dict[str, Any]:
    response = http.post("/login/access-token", data={"username": user.email, "password": user.password})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def refresh(http: httpx.Client, token: str, **fields: str) -> httpx.Response:
    return http.post("/login/refresh", data={"grant_type": "refresh_token", "refresh_token": token, **fields})


def test_the_default_login_answer_is_the_templates_byte_for_byte(client: httpx.Client, user: Account) -> None:
    response = client.post("/login/access-token", data={"username": user.email, "password": user.password})
    token = response.json()["access_token"]
    assert response.content == b'{"access_token":"' + token.encode() + b'","token_type":"bearer"}'
    off = refresh(client, "anything")
    assert (off.status_code, off.json()) == (400, {"detail": "Invalid refresh token"})


def test_a_refresh_rotates_the_tokens_of_the_same_session(refreshing: httpx.Client, user: Account) -> None:
    first = login_pair(refreshing, user)
    assert set(first) == {"access_token", "token_type", "refresh_token", "expires_in"}
    assert (first["token_type"], first["expires_in"]) == ("bearer", ACCESS_MINUTES * 60)
    sid = jwt.decode(first["access_token"], SECRET_KEY, algorithms=["HS256"])["sid"]
    assert first["refresh_token"].startswith(f"{sid}.0.")
    response = refresh(refreshing, first["refresh_token"])
    assert response.status_code == 200, response.text
    second = response.json()
    assert second["refresh_token"].startswith(f"{sid}.1.")
    assert jwt.decode(second["access_token"], SECRET_KEY, algorithms=["HS256"])["sid"] == sid
    assert refreshing.get("/users/me", headers=bearer(second["access_token"])).status_code == 200
    listed = sessions(refreshing, bearer(second["access_token"]))
    current = next(s for s in listed["data"] if s["current"])
    assert current["id"] == sid
    left = datetime.fromisoformat(current["expires_at"]) - utc_now()
    assert timedelta(minutes=REFRESH_MINUTES - 1) < left <= timedelta(minutes=REFRESH_MINUTES)
    # Multipart, as a browser's FormData sends it, works the same.
    third = refreshing.post(
        "/login/refresh",
        files={"grant_type": (None, "refresh_token"), "refresh_token": (None, second["refresh_token"])},
    )
    assert third.status_code == 200, third.text


def test_a_reused_refresh_token_ends_its_session_and_only_it(
    refreshing: httpx.Client, replica: httpx.Client, user: Account
) -> None:
    stolen, bystander = login_pair(refreshing, user), login_pair(refreshing, user)
    rotated = refresh(refreshing, stolen["refresh_token"]).json()
    again = refresh(refreshing, stolen["refresh_token"])
    assert (again.status_code, again.json()) == (400, {"detail": "Invalid refresh token"})
    # The session ended: its newest tokens too, on every replica.
    assert replica.get("/users/me", headers=bearer(rotated["access_token"])).status_code == 403
    assert refresh(refreshing, rotated["refresh_token"]).status_code == 400
    # The user's other sessions go on.
    assert replica.get("/users/me", headers=bearer(bystander["access_token"])).status_code == 200
    assert replica.get("/users/me", headers=user.headers).status_code == 200
    assert refresh(refreshing, bystander["refresh_token"]).status_code == 200


def test_a_refresh_token_we_never_issued_ends_nothing(refreshing: httpx.Client, user: Account) -> None:
    pair = login_pair(refreshing, user)
    sid, _, secret = pair["refresh_token"].split(".")
    for forged in (
        f"{sid}.0.{secret[:-1]}{'0' if secret[-1] != '0' else '1'}",  # a wrong tag
        f"{sid}.0.nonce~{'0' * 32}",
        f"{sid}.x.{secret}",
        "not-a-refresh-token",
        pair["access_token"],
    ):
        response = refresh(refreshing, forged)
        assert (response.status_code, response.json()) == (400, {"detail": "Invalid refresh token"}), forged
    assert refreshing.get("/users/me", headers=bearer(pair["access_token"])).status_code == 200
    assert refresh(refreshing, pair["refresh_token"]).status_code == 200


def test_the_refresh_form_is_validated(refreshing: httpx.Client) -> None:
    missing = refreshing.post("/login/refresh", data={"grant_type": "refresh_token"})
    assert missing.status_code == 422
    assert missing.json()["detail"][0]["loc"] == ["body", "refresh_token"]
    wrong = refreshing.post("/login/refresh", data={"grant_type": "password", "refresh_token": "x"})
    assert wrong.status_code == 422


def test_an_ended_or_revoked_session_refreshes_no_more(
    refreshing: httpx.Client, client: httpx.Client, user: Account, superuser_headers: dict[str, str]
) -> None:
    ended, changer, revoked = (login_pair(refreshing, user) for _ in range(3))
    headers = bearer(changer["access_token"])
    sid = ended["refresh_token"].split(".")[0]
    assert refreshing.delete(f"/users/me/sessions/{sid}", headers=headers).status_code == 200
    assert refresh(refreshing, ended["refresh_token"]).status_code == 400
    body = {"current_password": user.password, "new_password": "a-new-password-1"}
    assert refreshing.patch("/users/me/password", json=body, headers=headers).status_code == 200
    assert refresh(refreshing, revoked["refresh_token"]).status_code == 400  # revoked by the change
    kept = refresh(refreshing, changer["refresh_token"])  # the session that changed it is kept
    assert kept.status_code == 200, kept.text
    # (The served app's superuser token lives longer than this app's ACCESS_TOKEN_EXPIRE_MINUTES: it asks there.)
    assert client.patch(f"/users/{user.id}", json={"is_active": False}, headers=superuser_headers).is_success
    assert refresh(refreshing, kept.json()["refresh_token"]).status_code == 400  # inactive


def test_the_tables_hold_only_digests_of_the_tokens(refreshing: httpx.Client, served: Served, user: Account) -> None:
    first = login_pair(refreshing, user)
    second = refresh(refreshing, first["refresh_token"]).json()
    secrets_given = [first["refresh_token"], second["refresh_token"], first["access_token"], second["access_token"]]
    secrets_given += [token.split(".")[2] for token in (first["refresh_token"], second["refresh_token"])]
    rows = rows_of(served.database, user.id)
    stored = [str(value) for row in rows for value in row.values()]
    assert not [value for value in stored for secret in secrets_given if secret in value]
    digests = {row["refresh_digest"] for row in rows}
    assert security.token_digest(second["refresh_token"]) in digests
    assert security.token_digest(first["refresh_token"]) not in digests
    users_row = served.database.scalar('SELECT kept_token_digest FROM "user" WHERE email = :email', email=user.email)
    assert users_row is None
