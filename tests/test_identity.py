# ruff: noqa: RUF001  (the look-alike characters are the subject of these tests)
"""One account per email identity (db/identity.py), the same in every write and every lookup, on both engines.

The attack this guards against: the unique index and the lookup folded case differently (PostgreSQL's lower() makes
`İ` an `i`, Python's makes it `i̇`), so `vİctim@example.com` could sign up, block `victim@example.com` for good,
and log in as it with the squatter's password.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import httpx
import pytest
from advanced_alchemy.alembic.commands import AlembicCommands
from advanced_alchemy.types import GUID, DateTimeUTC
from sqlalchemy import Boolean, Column, Integer, MetaData, String, Table, insert
from sqlalchemy.ext.asyncio import AsyncEngine

from app.cli import rename_email
from app.database import sqlalchemy_config
from db.identity import email_identity
from db.models import utc_now
from tests.conftest import (
    ENGINES,
    MIGRATIONS_HEAD,
    Database,
    Mailbox,
    Served,
    create_postgres_database,
    drop_postgres_database,
    login,
    make_settings,
    run,
)

EXISTS = "The user with this email already exists in the system"
TAKEN = "User with this email already exists"
PASSWORD = "a-good-password"


def tag() -> str:
    return uuid.uuid4().hex[:10]


def fullwidth(text: str) -> str:
    """ASCII letters and digits in their fullwidth forms (U+FF01..U+FF5E)."""
    return "".join(chr(ord(c) + 0xFEE0) if c.isascii() and c.isalnum() else c for c in text)


def signup(http: httpx.Client, email: str, password: str = PASSWORD) -> httpx.Response:
    return http.post("/users/signup", json={"email": email, "password": password})


def attempt_login(http: httpx.Client, email: str, password: str) -> httpx.Response:
    return http.post("/login/access-token", data={"username": email, "password": password})


def me(http: httpx.Client, headers: dict[str, str]) -> dict[str, Any]:
    response = http.get("/users/me", headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


# ---------------------------------------------------------------- the squatting attack


def test_a_dotted_capital_i_cannot_squat_or_log_in_as_the_ascii_address(client: httpx.Client) -> None:
    t = tag()
    squatter, victim = f"vİctim{t}@example.com", f"victim{t}@example.com"
    assert signup(client, squatter, "squatter-password").status_code == 200

    # The victim can still sign up, and their own password opens their own account.
    created = signup(client, victim, "victim-password")
    assert created.status_code == 200, created.text
    assert me(client, login(client, victim, "victim-password"))["id"] == created.json()["id"]
    assert me(client, login(client, victim.upper(), "victim-password"))["id"] == created.json()["id"]

    # The squatter's password never opens the victim's address; it opens only the squatter's own account.
    refused = attempt_login(client, victim, "squatter-password")
    assert refused.status_code == 400
    assert refused.json() == {"detail": "Incorrect email or password"}
    assert me(client, login(client, squatter, "squatter-password"))["email"] == squatter


def test_the_dotted_capital_i_taken_second_is_a_separate_account_too(client: httpx.Client) -> None:
    t = tag()
    victim, squatter = f"victim{t}@example.com", f"vİctim{t}@example.com"
    assert signup(client, victim, "victim-password").status_code == 200
    assert signup(client, squatter, "squatter-password").status_code == 200
    assert attempt_login(client, victim, "squatter-password").status_code == 400
    assert me(client, login(client, victim, "victim-password"))["email"] == victim


def test_a_dotless_i_is_not_the_ascii_i(client: httpx.Client) -> None:
    t = tag()
    assert signup(client, f"victim{t}@example.com").status_code == 200
    assert signup(client, f"vıctim{t}@example.com", "other-password").status_code == 200
    assert attempt_login(client, f"victim{t}@example.com", "other-password").status_code == 400


# ---------------------------------------------------------------- what is one account


def test_a_greek_address_with_a_final_sigma_logs_in_in_any_case(client: httpx.Client) -> None:
    t = tag()
    email = f"οδυσσευς{t}@example.com"
    created = signup(client, email)
    assert created.status_code == 200, created.text
    for variant in (email, f"ΟΔΥΣΣΕΥΣ{t}@example.com", f"οδυσσευσ{t}@example.com"):
        assert me(client, login(client, variant, PASSWORD))["id"] == created.json()["id"]
    assert signup(client, f"ΟΔΥΣΣΕΥΣ{t}@example.com").json() == {"detail": EXISTS}


@pytest.mark.parametrize(
    ("stored", "variant"),
    [
        ("alice{t}@example.com", "ALICE{t}@Example.COM"),
        ("alice{t}@example.com", "{fullwidth_alice}@example.com"),
        ("alice{t}@example.com", "alice{t}@ｅｘａｍｐｌｅ.com"),
        ("carol{t}@example.com", "carol{t}@example.com\n"),
        ("carol{t}@example.com", "  Carol{t}@example.com "),
        ("café{t}@example.com", "cafe\u0301{t}@example.com"),
        ("straße{t}@example.com", "STRASSE{t}@example.com"),
        ("oﬃce{t}@example.com", "office{t}@example.com"),
    ],
    ids=["case", "fullwidth", "fullwidth-domain", "trailing-newline", "spaces", "nfd", "sharp-s", "ligature"],
)
def test_variants_of_an_address_are_one_account(client: httpx.Client, stored: str, variant: str) -> None:
    t = tag()
    stored = stored.format(t=t)
    variant = variant.format(t=t, fullwidth_alice=fullwidth(f"alice{t}"))
    created = signup(client, stored)
    assert created.status_code == 200, created.text

    duplicate = signup(client, variant, "another-password")
    assert duplicate.status_code == 400
    assert duplicate.json() == {"detail": EXISTS}
    # The variant logs in to the one account, which keeps the address as it was first written.
    assert me(client, login(client, variant, PASSWORD)) == created.json()
    assert created.json()["email"] == stored


def test_an_address_with_a_zero_width_character_is_refused(client: httpx.Client) -> None:
    """Invisible characters are rejected by email-validator as unsafe: no look-alike account can exist."""
    t = tag()
    assert signup(client, f"alice{t}@example.com").status_code == 200
    for invisible in ("\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad"):
        response = signup(client, f"ali{invisible}ce{t}@example.com", "another-password")
        assert response.status_code == 422, response.text
        assert "unsafe characters" in response.json()["detail"][0]["msg"]
        assert attempt_login(client, f"ali{invisible}ce{t}@example.com", PASSWORD).status_code == 400


def test_an_invalid_username_matches_no_account(client: httpx.Client) -> None:
    assert attempt_login(client, "not an address", PASSWORD).json() == {"detail": "Incorrect email or password"}


# ---------------------------------------------------------------- changes and recovery


def test_changing_the_email_to_a_variant_of_another_users_is_409(client: httpx.Client) -> None:
    t = tag()
    assert signup(client, f"owner{t}@example.com").status_code == 200
    assert signup(client, f"other{t}@example.com").status_code == 200
    headers = login(client, f"other{t}@example.com", PASSWORD)
    for variant in (f"OWNER{t}@example.com", f"{fullwidth(f'owner{t}')}@example.com", f"owner{t}@example.com\n"):
        response = client.patch("/users/me", json={"email": variant}, headers=headers)
        assert response.status_code == 409, variant
        assert response.json() == {"detail": TAKEN}

    # A variant of one's own address is no conflict: only how it is written changes.
    response = client.patch("/users/me", json={"email": f"Other{t}@Example.com"}, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["email"] == f"Other{t}@example.com"
    assert me(client, login(client, f"other{t}@example.com", PASSWORD))["email"] == f"Other{t}@example.com"


def test_recovery_for_a_variant_mails_the_stored_address(
    client: httpx.Client, mailbox: Mailbox, superuser_headers: dict[str, str]
) -> None:
    t = tag()
    stored = f"dora{t}@example.com"
    assert signup(client, stored).status_code == 200
    variant = f"{fullwidth(f'DORA{t}')}@EXAMPLE.com"

    assert client.post(f"/password-recovery/{variant}").status_code == 200
    mailbox.wait_for()
    assert [message["To"] for message in mailbox.messages] == [stored]

    html = client.post(f"/password-recovery-html-content/{variant}", headers=superuser_headers)
    assert html.status_code == 200
    assert stored in html.text


def test_the_cli_rename_compares_identities_and_keeps_the_key(served: Served, client: httpx.Client) -> None:
    t = tag()
    assert signup(client, f"erin{t}@example.com").status_code == 200
    frank = signup(client, f"frank{t}@example.com").json()["id"]
    config = sqlalchemy_config(served.settings)

    with pytest.raises(click.ClickException, match="is already the email of user"):
        run(rename_email(config, uuid.UUID(frank), f"{fullwidth(f'ERIN{t}')}@example.com"))

    assert run(rename_email(config, uuid.UUID(frank), f"Fred{t}@example.com")) == f"frank{t}@example.com"
    assert me(client, login(client, f"fred{t}@EXAMPLE.com", PASSWORD))["id"] == frank
    assert attempt_login(client, f"frank{t}@example.com", PASSWORD).status_code == 400


# ---------------------------------------------------------------- migration 0004 on existing rows


@pytest.fixture(params=ENGINES)
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "postgresql":
        url = create_postgres_database()
        yield Database(url)
        drop_postgres_database(url)
    else:
        yield Database(f"sqlite+aiosqlite:///{tmp_path / 'test.db'}")


def upgrade(database: Database, revision: str) -> None:
    AlembicCommands(sqlalchemy_config=sqlalchemy_config(make_settings(database.url))).upgrade(revision)


def insert_users(database: Database, emails: list[str]) -> list[uuid.UUID]:
    """Rows as revision 0003's service wrote them (GUID ids through the table's own types)."""
    user = Table(
        "user",
        MetaData(),
        Column("id", GUID),
        Column("email", String),
        Column("is_active", Boolean),
        Column("is_superuser", Boolean),
        Column("hashed_password", String),
        Column("token_version", Integer),
        Column("created_at", DateTimeUTC(timezone=True)),
    )
    ids = [uuid.uuid4() for _ in emails]
    rows = [
        {
            "id": id_,
            "email": email,
            "is_active": True,
            "is_superuser": False,
            "hashed_password": "x",
            "token_version": 0,
            "created_at": utc_now(),
        }
        for id_, email in zip(ids, emails, strict=True)
    ]

    async def go(engine: AsyncEngine) -> None:
        async with engine.begin() as connection:
            await connection.execute(insert(user), rows)

    database.execute(go)
    return ids


def test_upgrading_a_database_with_users_backfills_their_keys(empty_database: Database) -> None:
    upgrade(empty_database, "0003")
    # Not `victim` next to `vİctim`: PostgreSQL's lower() (in most locales) made them one at revision 0003.
    emails = ["Alice@example.com", "οδυσσευς@example.com", "vİctim@example.com", "ａｌｉｃｅ2@example.com"]
    insert_users(empty_database, emails)

    upgrade(empty_database, "head")

    assert empty_database.scalar("SELECT version_num FROM alembic_version") == MIGRATIONS_HEAD
    for email in emails:
        key = empty_database.scalar('SELECT email_key FROM "user" WHERE email = :email', email=email)
        assert key == email_identity(email)
    assert empty_database.scalar('SELECT count(*) FROM "user" WHERE email_key IS NULL') == 0


def test_upgrading_refuses_rows_that_share_an_identity_and_lists_them(empty_database: Database) -> None:
    upgrade(empty_database, "0003")
    # Distinct for revision 0003's lower(email) on both engines, one identity for this service.
    ids = insert_users(empty_database, ["straße@example.com", "STRASSE@example.com", "bob@example.com"])

    with pytest.raises(click.ClickException) as refused:
        upgrade(empty_database, "head")

    message = refused.value.message
    assert "1 email address(es) belong to several accounts each" in message
    assert "  strasse@example.com:" in message
    assert f"id {ids[0]}  email straße@example.com" in message
    assert f"id {ids[1]}  email STRASSE@example.com" in message
    assert "bob@example.com" not in message
    assert "just rename-user-email <user-id> <new-email>" in message
    assert empty_database.scalar("SELECT version_num FROM alembic_version") == "0003"
