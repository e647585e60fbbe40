"""Personal access tokens (issue 25) over HTTP, on both engines: made and shown once, listed without the token, used
as a bearer token on every route, limited by scope, refused where only a login's token may act, ended by revocation,
expiry and deactivation (not by a password change), and kept by their digest only. Plus the token format's pure
logic (mint, checksum, parse)."""

from __future__ import annotations

import hashlib
import re
import time
import uuid
import zlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from advanced_alchemy.alembic.commands import AlembicCommands
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from app import auth, security, services
from app.database import sqlalchemy_config
from db.models import PersonalAccessToken
from tests.conftest import (
    Account,
    Counted,
    Database,
    Records,
    Served,
    create_postgres_database,
    drop_postgres_database,
    login,
    make_settings,
    named,
    random_email,
    sent_by,
)

UserFactory = Callable[..., Account]
TOKEN_FORMAT = re.compile(r"lsp_[0-9A-Za-z]{30}[0-9A-Za-z]{6}")
INVALID_CREDENTIALS = {"detail": "Could not validate credentials"}
READ_ONLY = {"detail": "This token may only read"}
NOT_WITH_PAT = {"detail": "Not allowed with a personal access token"}


def create_token(http: httpx.Client, account: Account, **fields: Any) -> dict[str, Any]:
    body = {"name": "ci", "expires_in_days": 30, **fields}
    response = http.post("/users/me/tokens", json=body, headers=account.headers)
    assert response.status_code == 200, response.text
    created: dict[str, Any] = response.json()
    return created


def bearer(token: dict[str, Any] | str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token['token'] if isinstance(token, dict) else token}"}


def token_row(served: Served, token_id: str) -> dict[str, Any] | None:
    """Every column of the token's row, as the database keeps it."""

    async def go(engine: AsyncEngine) -> dict[str, Any] | None:
        async with engine.connect() as connection:
            query = select(PersonalAccessToken.__table__).where(PersonalAccessToken.id == uuid.UUID(token_id))
            row = (await connection.execute(query)).mappings().first()
            return dict(row) if row is not None else None

    found: dict[str, Any] | None = served.database.execute(go)
    return found


def set_columns(served: Served, token_id: str, **values: Any) -> None:
    async def go(engine: AsyncEngine) -> None:
        async with engine.begin() as connection:
            table = PersonalAccessToken.__table__
            await connection.execute(update(table).where(table.c.id == uuid.UUID(token_id)).values(**values))

    served.database.execute(go)


def wait_for_use(served: Served, token_id: str, timeout: float = 5.0) -> datetime:
    """last_used_at, once the job after the response has written it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = token_row(served, token_id)
        assert row is not None
        if row["last_used_at"] is not None:
            used: datetime = row["last_used_at"]
            return used
        time.sleep(0.02)
    raise AssertionError("last_used_at was not written")


# ---------------------------------------------------------------- the format (pure logic)


def test_a_minted_token_has_the_prefix_the_random_part_and_its_checksum() -> None:
    tokens = {security.mint_pat() for _ in range(200)}
    assert len(tokens) == 200
    for token in tokens:
        assert TOKEN_FORMAT.fullmatch(token)
        random_part, checksum = token[4:34], token[34:]
        assert checksum == security.base62(zlib.crc32(random_part.encode()), 6)
        assert security.parse_pat(token) == hashlib.sha256(token.encode()).hexdigest()


def test_base62_is_zero_padded_and_fits_any_crc32() -> None:
    assert security.base62(0, 6) == "000000"
    assert security.base62(61, 6) == "00000z"
    assert security.base62(62, 6) == "000010"
    assert len(security.base62(2**32 - 1, 6)) == 6


@pytest.mark.parametrize(
    "mangle",
    [
        lambda token: token[:-1] + ("A" if token[-1] != "A" else "B"),  # checksum
        lambda token: token[:10] + ("A" if token[10] != "A" else "B") + token[11:],  # random part
        lambda token: token[:-1],  # too short
        lambda token: token + "0",  # too long
        lambda token: token[:20] + "-" + token[21:],  # not base62
        lambda token: "lsp_",
    ],
)
def test_a_malformed_token_is_refused_by_its_format(mangle: Callable[[str], str]) -> None:
    with pytest.raises(security.InvalidTokenError):
        security.parse_pat(mangle(security.mint_pat()))


# ---------------------------------------------------------------- made once, listed without it


def test_a_token_is_shown_once_and_listed_without_it(client: httpx.Client, user: Account) -> None:
    first = create_token(client, user, name="laptop CLI")
    second = create_token(client, user, name="CI", scope="read-write", expires_in_days=365)
    assert list(first) == ["id", "name", "scope", "created_at", "expires_at", "last_used_at", "token"]
    assert (first["name"], first["scope"], first["last_used_at"]) == ("laptop CLI", "read", None)
    assert second["scope"] == "read-write"
    assert TOKEN_FORMAT.fullmatch(first["token"])
    security.parse_pat(first["token"])  # its checksum holds
    created = datetime.fromisoformat(second["created_at"])
    assert datetime.fromisoformat(second["expires_at"]) - created == timedelta(days=365)

    listed = client.get("/users/me/tokens", headers=user.headers)
    assert listed.status_code == 200
    body = listed.json()
    assert body["count"] == 2
    assert [row["id"] for row in body["data"]] == [second["id"], first["id"]]  # newest first
    shown = {key: value for key, value in first.items() if key != "token"}
    assert body["data"][1] == shown
    assert first["token"] not in listed.text
    assert second["token"] not in listed.text
    assert "digest" not in listed.text


def test_only_the_digest_is_kept(client: httpx.Client, served: Served, user: Account) -> None:
    created = create_token(client, user)
    row = token_row(served, created["id"])
    assert row is not None
    assert row["digest"] == hashlib.sha256(created["token"].encode()).hexdigest()
    random_part = created["token"][4:34]
    for column, value in row.items():
        assert random_part not in str(value), column
        assert created["token"] not in str(value), column


def test_another_users_tokens_are_not_listed(client: httpx.Client, new_account: UserFactory) -> None:
    owner, other = new_account(), new_account()
    create_token(client, owner)
    assert client.get("/users/me/tokens", headers=other.headers).json() == {"data": [], "count": 0}


@pytest.mark.parametrize(
    ("body", "loc", "type_"),
    [
        ({"name": "x", "expires_in_days": 366}, ["body", "expires_in_days"], "less_than_equal"),
        ({"name": "x", "expires_in_days": 0}, ["body", "expires_in_days"], "greater_than_equal"),
        ({"name": "x"}, ["body", "expires_in_days"], "missing"),
        ({"name": "", "expires_in_days": 1}, ["body", "name"], "string_too_short"),
        ({"name": "x" * 101, "expires_in_days": 1}, ["body", "name"], "string_too_long"),
        ({"name": "x", "expires_in_days": 1, "scope": "admin"}, ["body", "scope"], "literal_error"),
    ],
)
def test_an_invalid_request_for_a_token_is_422(
    client: httpx.Client, user: Account, body: dict[str, Any], loc: list[str], type_: str
) -> None:
    response = client.post("/users/me/tokens", json=body, headers=user.headers)
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert (error["loc"], error["type"]) == (loc, type_)
    if type_ == "literal_error":  # pydantic's words
        assert error["msg"] == "Input should be 'read' or 'read-write'"
    assert client.get("/users/me/tokens", headers=user.headers).json()["count"] == 0


def test_the_longest_lifetime_is_pat_max_days(client: httpx.Client, served: Served, user: Account) -> None:
    assert served.settings.PAT_MAX_DAYS == 365
    response = client.post("/users/me/tokens", json={"name": "x", "expires_in_days": 366}, headers=user.headers)
    assert response.json()["detail"][0]["msg"] == "Input should be less than or equal to 365"
    create_token(client, user, expires_in_days=365)


def test_the_token_routes_need_authentication(client: httpx.Client) -> None:
    for method, path in (
        ("POST", "/users/me/tokens"),
        ("GET", "/users/me/tokens"),
        ("DELETE", f"/users/me/tokens/{uuid.uuid4()}"),
    ):
        response = client.request(method, path, json={"name": "x", "expires_in_days": 1})
        assert response.status_code == 401, (method, path)


# ---------------------------------------------------------------- used as a bearer token


def test_a_token_acts_as_its_user(client: httpx.Client, user: Account) -> None:
    token = bearer(create_token(client, user, scope="read-write"))
    me = client.get("/users/me", headers=token)
    assert me.status_code == 200
    assert (me.json()["id"], me.json()["email"]) == (user.id, user.email)
    assert client.get(f"/users/{user.id}", headers=token).status_code == 200
    item = client.post("/items/", json={"title": "by CI"}, headers=token)
    assert item.status_code == 200, item.text
    assert item.json()["owner_id"] == user.id
    item_id = item.json()["id"]
    read = client.get(f"/items/{item_id}", headers=token)  # a ReadWithCaller route: the item read with the caller
    assert read.json() == item.json()
    assert client.get("/items/", headers=token).json()["count"] == 1
    assert client.put(f"/items/{item_id}", json={"title": "renamed"}, headers=token).json()["title"] == "renamed"
    assert client.delete(f"/items/{item_id}", headers=token).json() == {"message": "Item deleted successfully"}
    assert client.get(f"/items/{item_id}", headers=token).status_code == 404
    renamed = client.patch("/users/me", json={"full_name": "Robot"}, headers=token)
    assert (renamed.status_code, renamed.json()["full_name"]) == (200, "Robot")


def test_a_token_sees_only_what_its_user_sees(client: httpx.Client, new_account: UserFactory) -> None:
    owner, other = new_account(), new_account()
    item = client.post("/items/", json={"title": "not yours"}, headers=owner.headers).json()
    token = bearer(create_token(client, other, scope="read-write"))
    assert client.get(f"/items/{item['id']}", headers=token).json() == {"detail": "Not enough permissions"}
    assert client.get("/users/", headers=token).status_code == 403  # superusers only


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/items/", {"title": "no"}),
        ("PUT", "/items/{item}", {"title": "no"}),
        ("DELETE", "/items/{item}", None),
        ("PATCH", "/users/me", {"full_name": "no"}),
        ("DELETE", "/users/me", None),
    ],
)
def test_a_read_token_may_only_read(
    client: httpx.Client, user: Account, method: str, path: str, body: dict[str, str] | None
) -> None:
    item = client.post("/items/", json={"title": "kept"}, headers=user.headers).json()
    token = bearer(create_token(client, user))  # scope "read" by default
    response = client.request(method, path.format(item=item["id"]), json=body, headers=token)
    assert (response.status_code, response.json()) == (403, READ_ONLY)
    assert client.get(f"/items/{item['id']}", headers=token).json()["title"] == "kept"
    assert client.get("/users/me", headers=token).status_code == 200


@pytest.mark.parametrize("scope", ["read", "read-write"])
def test_no_token_manages_tokens_or_credentials(client: httpx.Client, user: Account, scope: str) -> None:
    created = create_token(client, user, scope=scope)
    token = bearer(created)
    password_change = {"current_password": user.password, "new_password": "another-good-password"}
    for method, path, body in (
        ("POST", "/users/me/tokens", {"name": "more", "expires_in_days": 1}),
        ("GET", "/users/me/tokens", None),
        ("DELETE", f"/users/me/tokens/{created['id']}", None),
        ("PATCH", "/users/me/password", password_change),
    ):
        response = client.request(method, path, json=body, headers=token)
        assert (response.status_code, response.json()) == (403, NOT_WITH_PAT), (method, path)
    email_change = client.patch("/users/me", json={"email": random_email()}, headers=token)
    assert (email_change.status_code, email_change.json()) == (
        403,
        NOT_WITH_PAT if scope == "read-write" else READ_ONLY,
    )
    me = client.get("/users/me", headers=user.headers).json()
    assert me["email"] == user.email
    assert client.get("/users/me/tokens", headers=user.headers).json()["count"] == 1
    login(client, user.email, user.password)  # the password did not change


def test_a_superusers_token_changes_no_accounts_credentials(client: httpx.Client, new_account: UserFactory) -> None:
    """A leaked superuser's token must not take over an account by giving it a new email (recovery links go there)
    or password; it may still change the rest."""
    admin, other = new_account(is_superuser=True), new_account()
    token = bearer(create_token(client, admin, scope="read-write"))
    for change in (
        {"email": random_email()},
        {"password": "a-new-good-password"},
        {"full_name": "x", "email": "a@b.co"},
    ):
        response = client.patch(f"/users/{other.id}", json=change, headers=token)
        assert (response.status_code, response.json()) == (403, NOT_WITH_PAT), change
    login(client, other.email, other.password)  # neither changed
    renamed = client.patch(f"/users/{other.id}", json={"full_name": "Renamed"}, headers=token)
    assert (renamed.status_code, renamed.json()["full_name"]) == (200, "Renamed")
    by_login = client.patch(f"/users/{other.id}", json={"password": "a-new-good-password"}, headers=admin.headers)
    assert by_login.status_code == 200


# ---------------------------------------------------------------- how a token ends


def test_a_revoked_token_is_refused(client: httpx.Client, user: Account, new_account: UserFactory) -> None:
    kept, revoked = create_token(client, user), create_token(client, user)
    response = client.delete(f"/users/me/tokens/{revoked['id']}", headers=user.headers)
    assert (response.status_code, response.json()) == (200, {"message": "Token revoked"})
    refused = client.get("/users/me", headers=bearer(revoked))
    assert (refused.status_code, refused.json()) == (403, INVALID_CREDENTIALS)
    assert client.get("/users/me", headers=bearer(kept)).status_code == 200
    assert [row["id"] for row in client.get("/users/me/tokens", headers=user.headers).json()["data"]] == [kept["id"]]
    not_found = {"detail": "Token not found"}
    again = client.delete(f"/users/me/tokens/{revoked['id']}", headers=user.headers)
    assert (again.status_code, again.json()) == (404, not_found)
    other = new_account()
    theirs = client.delete(f"/users/me/tokens/{kept['id']}", headers=other.headers)  # not their token
    assert (theirs.status_code, theirs.json()) == (404, not_found)
    assert client.delete(f"/users/me/tokens/{uuid.uuid4()}", headers=user.headers).status_code == 404
    malformed = client.delete("/users/me/tokens/not-a-uuid", headers=user.headers)
    assert malformed.status_code == 422
    assert malformed.json()["detail"][0]["loc"] == ["path", "token_id"]


def test_an_expired_token_is_refused(client: httpx.Client, served: Served, user: Account) -> None:
    created = create_token(client, user, expires_in_days=1)
    token = bearer(created)
    assert client.get("/users/me", headers=token).status_code == 200
    set_columns(served, created["id"], expires_at=datetime.now(UTC) - timedelta(seconds=1))
    refused = client.get("/users/me", headers=token)
    assert (refused.status_code, refused.json()) == (403, INVALID_CREDENTIALS)
    assert client.get("/users/me/tokens", headers=user.headers).json()["count"] == 1  # listed until revoked


def test_an_unknown_token_of_the_right_form_is_refused(client: httpx.Client) -> None:
    refused = client.get("/users/me", headers=bearer(security.mint_pat()))
    assert (refused.status_code, refused.json()) == (403, INVALID_CREDENTIALS)


def test_a_bad_checksum_is_refused_without_a_statement(counted: Counted, user: Account) -> None:
    http, statements = counted
    token = create_token(http, user)["token"]
    for forged in (token[:-1] + ("A" if token[-1] != "A" else "B"), "lsp_short", "lsp_" + "!" * 36):
        response, sent = sent_by(http, statements, "GET", "/users/me", headers=bearer(forged))
        assert (response.status_code, response.json()) == (403, INVALID_CREDENTIALS)
        assert sent == [], forged


def test_deactivation_ends_tokens_and_reactivation_does_not_revive_them(
    client: httpx.Client, served: Served, superuser_headers: dict[str, str], user: Account
) -> None:
    created = create_token(client, user, scope="read-write")
    token = bearer(created)
    assert client.patch(f"/users/{user.id}", json={"is_active": False}, headers=superuser_headers).status_code == 200
    inactive = client.get("/users/me", headers=token)
    assert (inactive.status_code, inactive.json()) == (400, {"detail": "Inactive user"})
    row = token_row(served, created["id"])
    assert row is not None
    assert row["revoked_at"] is not None  # by the database, in the deactivating statement
    assert client.patch(f"/users/{user.id}", json={"is_active": True}, headers=superuser_headers).status_code == 200
    revived = client.get("/users/me", headers=token)
    assert (revived.status_code, revived.json()) == (403, INVALID_CREDENTIALS)
    signed_in = Account(user.id, user.email, user.password, login(client, user.email, user.password))
    assert client.get("/users/me/tokens", headers=signed_in.headers).json()["count"] == 0
    assert client.get("/users/me", headers=bearer(create_token(client, signed_in))).status_code == 200  # a new one


def test_a_deactivation_by_any_writer_revokes_the_tokens(client: httpx.Client, served: Served, user: Account) -> None:
    """The template's own code or an admin's statement, not only the API: the trigger is the database's."""
    kept, ended = create_token(client, user), create_token(client, user)
    client.delete(f"/users/me/tokens/{kept['id']}", headers=user.headers)
    revoked_before = token_row(served, kept["id"])
    database = served.database
    database.run('UPDATE "user" SET full_name = :name WHERE id = :id', name="no change", id=database.id(user.id))
    assert token_row(served, ended["id"])["revoked_at"] is None
    database.run('UPDATE "user" SET is_active = false WHERE id = :id', id=database.id(user.id))
    database.run('UPDATE "user" SET is_active = true WHERE id = :id', id=database.id(user.id))
    assert token_row(served, ended["id"])["revoked_at"] is not None
    assert token_row(served, kept["id"]) == revoked_before  # a revoked one keeps when it was revoked
    assert client.get("/users/me", headers=bearer(ended)).json() == INVALID_CREDENTIALS


def test_a_password_change_leaves_tokens_working(client: httpx.Client, user: Account) -> None:
    token = bearer(create_token(client, user))
    change = {"current_password": user.password, "new_password": "another-good-password"}
    assert client.patch("/users/me/password", json=change, headers=user.headers).status_code == 200
    assert client.get("/users/me", headers=token).status_code == 200


def test_a_deleted_users_tokens_go_with_them(client: httpx.Client, served: Served, user: Account) -> None:
    created = create_token(client, user)
    assert client.delete("/users/me", headers=user.headers).status_code == 200
    assert token_row(served, created["id"]) is None
    assert client.get("/users/me", headers=bearer(created)).status_code == 403


# ---------------------------------------------------------------- last use, statements, audit


def test_last_use_is_noted_after_the_response_once_a_minute(
    client: httpx.Client, served: Served, user: Account, audit_records: Records, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = create_token(client, user)
    token = bearer(created)
    assert client.get("/users/me", headers=token).status_code == 200
    first_use = wait_for_use(served, created["id"])
    for _ in range(3):
        assert client.get("/users/me", headers=token).status_code == 200
    time.sleep(0.2)
    assert wait_for_use(served, created["id"]) == first_use  # within the minute: not written again
    listed = client.get("/users/me/tokens", headers=user.headers).json()["data"][0]
    assert listed["last_used_at"] is not None
    (used,) = named(audit_records, "pat.first_used")
    assert (used["subject_id"], used["token_id"]) == (user.id, created["id"])
    # Two minutes later (by the clock the app reads), the next use is written again.
    later = first_use + timedelta(minutes=2)
    monkeypatch.setattr(auth, "utc_now", lambda: later)
    monkeypatch.setattr(services, "utc_now", lambda: later)
    assert client.get("/users/me", headers=token).status_code == 200
    deadline = time.monotonic() + 5
    while wait_for_use(served, created["id"]) == first_use and time.monotonic() < deadline:
        time.sleep(0.02)
    assert wait_for_use(served, created["id"]) == later
    assert len(named(audit_records, "pat.first_used")) == 1


def test_made_and_revoked_tokens_are_audited_without_the_token(
    client: httpx.Client, user: Account, audit_records: Records
) -> None:
    created = create_token(client, user, scope="read-write")
    client.delete(f"/users/me/tokens/{created['id']}", headers=user.headers)
    (made,) = named(audit_records, "pat.created")
    assert (made["subject_id"], made["token_id"], made["scope"]) == (user.id, created["id"], "read-write")
    (revoked,) = named(audit_records, "pat.revoked")
    assert (revoked["subject_id"], revoked["token_id"]) == (user.id, created["id"])
    assert created["token"] not in str([record.msg for record in audit_records.records])


def test_a_token_reads_the_caller_in_one_statement(counted: Counted, served: Served, user: Account) -> None:
    http, statements = counted
    created = create_token(http, user, scope="read-write")
    token = bearer(created)
    item = http.post("/items/", json={"title": "mine"}, headers=token).json()
    wait_for_use(served, created["id"])  # the first use's note is written: the next ones within the minute are not
    for method, path, expected in (
        ("GET", "/users/me", 1),
        ("GET", f"/items/{item['id']}", 1),  # the item read in the caller's statement
        ("PUT", f"/items/{item['id']}", 2),
    ):
        response, sent = sent_by(http, statements, method, path, json={"title": "x"}, headers=token)
        assert response.status_code == 200, response.text
        assert len(sent) == expected, (method, path, sent)
    refused, sent = sent_by(http, statements, "GET", "/users/me/tokens", headers=token)
    assert (refused.status_code, len(sent)) == (403, 1)


# ---------------------------------------------------------------- the migration


def test_the_migration_is_reversible_on_both_engines(tmp_path: Path) -> None:
    for url in (create_postgres_database(), f"sqlite+aiosqlite:///{tmp_path / 'tokens.db'}"):
        database = Database(url)
        commands = AlembicCommands(sqlalchemy_config=sqlalchemy_config(make_settings(url)))
        try:
            commands.upgrade("head")
            assert "personal_access_token_revoke" in database.trigger_names("user")
            commands.downgrade("0006")
            assert "personal_access_token_revoke" not in database.trigger_names("user")
            assert database.scalar("SELECT count(*) FROM alembic_version WHERE version_num = '0006'") == 1
            with pytest.raises(Exception, match="personal_access_token"):
                database.scalar("SELECT count(*) FROM personal_access_token")
            commands.upgrade("head")
            assert database.scalar("SELECT count(*) FROM personal_access_token") == 0
            assert "personal_access_token_revoke" in database.trigger_names("user")
        finally:
            if url.startswith("postgresql"):
                drop_postgres_database(url)
