"""Rows written by code that knows only the template's columns of "user" (its initial_data and crud, an admin script,
a raw INSERT): the database fills user.email_key for a plain ASCII address, exactly as email_identity() computes it,
keeps it in step with a changed email, and refuses any other address without a key (migration 0005), on both engines.
"""

from __future__ import annotations

import asyncio
import string
import uuid
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest
from advanced_alchemy.alembic.commands import AlembicCommands
from advanced_alchemy.types import GUID, DateTimeUTC
from argon2 import PasswordHasher
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import TextClause, bindparam, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from app.database import sqlalchemy_config
from db.identity import email_identity
from db.models import utc_now
from tests.conftest import (
    ENGINES,
    MIGRATIONS_HEAD,
    Database,
    Served,
    create_postgres_database,
    drop_postgres_database,
    login,
    make_settings,
)

PASSWORD = "a-template-password"
REFUSAL = "user.email_key is not given"
TRIGGERS = {
    "postgresql": {"user_email_key_1_given", "user_email_key_2_fill"},
    "sqlite": {"user_email_key_given", "user_email_key_fill_insert", "user_email_key_fill_update"},
}


@cache
def template_hash(password: str) -> str:
    """As the template hashes: argon2id with argon2-cffi's default parameters (pwdlib's recommended hasher)."""
    return PasswordHasher().hash(password)


def tag() -> str:
    return uuid.uuid4().hex[:10]


def typed(sql: str) -> TextClause:
    """A raw statement whose id and created_at are bound as the table stores them (SQLite: a GUID is 16 bytes)."""
    types = {"id": GUID(), "created_at": DateTimeUTC(timezone=True)}
    return text(sql).bindparams(*(bindparam(name, type_=type_) for name, type_ in types.items() if f":{name}" in sql))


# The template's columns only, as its crud.create_user (SQLModel) writes them.
TEMPLATE_INSERT = (
    'INSERT INTO "user" (id, email, is_active, is_superuser, full_name, hashed_password, created_at) '
    "VALUES (:id, :email, true, false, :full_name, :hashed_password, :created_at)"
)


def template_row(email: str, password: str = PASSWORD) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "email": email,
        "full_name": "Written by the template",
        "hashed_password": template_hash(password),
        "created_at": utc_now(),
    }


def insert_as_the_template(database: Database, email: str, password: str = PASSWORD) -> uuid.UUID:
    row = template_row(email, password)

    async def go(engine: AsyncEngine) -> None:
        async with engine.begin() as connection:
            await connection.execute(typed(TEMPLATE_INSERT), row)

    database.execute(go)
    return uuid.UUID(str(row["id"]))


def update_email_as_the_template(database: Database, user_id: uuid.UUID, email: str) -> None:
    async def go(engine: AsyncEngine) -> None:
        async with engine.begin() as connection:
            await connection.execute(
                typed('UPDATE "user" SET email = :email WHERE id = :id'), {"email": email, "id": user_id}
            )

    database.execute(go)


def key_of(database: Database, email: str) -> Any:
    return database.scalar('SELECT email_key FROM "user" WHERE email = :email', email=email)


def notes_left(database: Database) -> Any:
    return database.scalar("SELECT count(*) FROM user_email_key_given")


def attempt_login(http: httpx.Client, email: str, password: str) -> httpx.Response:
    return http.post("/login/access-token", data={"username": email, "password": password})


# ---------------------------------------------------------------- the template's writes, over HTTP afterwards


def test_a_row_with_only_the_templates_columns_gets_its_key_and_logs_in(served: Served, client: httpx.Client) -> None:
    email = f"Template-{tag()}@Example.COM"
    user_id = insert_as_the_template(served.database, email)

    assert key_of(served.database, email) == email_identity(email) == email.lower()
    headers = login(client, email.lower(), PASSWORD)  # the template's argon2 hash verifies
    me = client.get("/users/me", headers=headers)
    assert me.status_code == 200, me.text
    assert (me.json()["id"], me.json()["email"], me.json()["full_name"]) == (
        str(user_id),
        email,
        "Written by the template",
    )
    assert notes_left(served.database) == 0


def test_the_same_address_in_another_case_is_refused_by_the_unique_index(served: Served) -> None:
    email = f"case-{tag()}@example.com"
    insert_as_the_template(served.database, email)

    with pytest.raises(IntegrityError, match="email_key"):
        insert_as_the_template(served.database, email.upper())

    count = 'SELECT count(*) FROM "user" WHERE email_key = :key'
    assert served.database.scalar(count, key=email_identity(email)) == 1


def test_several_rows_in_one_statement_each_get_their_own_key(served: Served) -> None:
    emails = [f"many-{tag()}@example.com" for _ in range(3)]

    async def go(engine: AsyncEngine) -> None:
        async with engine.begin() as connection:
            await connection.execute(typed(TEMPLATE_INSERT), [template_row(email) for email in emails])

    served.database.execute(go)
    assert [key_of(served.database, email) for email in emails] == [email_identity(email) for email in emails]


def test_changing_the_email_without_the_key_moves_the_key(served: Served, client: httpx.Client) -> None:
    old, new = f"old-{tag()}@example.com", f"New-{tag()}@Example.com"
    user_id = insert_as_the_template(served.database, old)

    update_email_as_the_template(served.database, user_id, new)

    assert key_of(served.database, new) == email_identity(new)
    assert login(client, new.lower(), PASSWORD)
    assert attempt_login(client, old, PASSWORD).status_code == 400
    assert notes_left(served.database) == 0


def test_other_columns_changed_without_the_key_keep_it(served: Served) -> None:
    email = f"other-{tag()}@example.com"
    user_id = insert_as_the_template(served.database, email)
    served.database.run(
        'UPDATE "user" SET full_name = :name, email = email WHERE id = :id',
        name="Renamed",
        id=served.database.id(str(user_id)),
    )
    assert key_of(served.database, email) == email_identity(email)


@pytest.mark.parametrize(
    "email",
    [
        "müller@example.com",  # non-ASCII local part
        "bob@bücher.example",  # non-ASCII domain
        "bob@XN--bcher-kva.example",  # Punycode: email-validator makes it bücher.example
        '"bob"@example.com',  # a quoted local part is unquoted
        "Bob<bob@example.com>",  # a display name
        "bob @example.com",  # a space
        "bob@[127.0.0.1]",  # a domain literal
        "no-at-sign",
    ],
)
def test_an_address_sql_cannot_fold_is_refused_without_a_key_and_nothing_is_stored(served: Served, email: str) -> None:
    with pytest.raises(IntegrityError, match=REFUSAL):
        insert_as_the_template(served.database, email)
    assert served.database.scalar('SELECT count(*) FROM "user" WHERE email = :email', email=email) == 0
    assert notes_left(served.database) == 0


def test_changing_the_email_to_one_sql_cannot_fold_is_refused_and_the_row_stays(served: Served) -> None:
    email = f"stays-{tag()}@example.com"
    user_id = insert_as_the_template(served.database, email)

    with pytest.raises(IntegrityError, match=REFUSAL):
        update_email_as_the_template(served.database, user_id, f"stäys-{tag()}@example.com")

    assert served.database.scalar('SELECT email FROM "user" WHERE email_key = :key', key=email) == email


def test_a_key_the_writer_gives_is_kept(served: Served) -> None:
    """Our rename command and any key-aware writer give the key: kept, also for an address SQL cannot fold."""
    email = f"Gïven-{tag()}@example.com"
    row = {**template_row(email), "key": email_identity(email)}

    async def go(engine: AsyncEngine) -> None:
        async with engine.begin() as connection:
            await connection.execute(
                typed(
                    'INSERT INTO "user" (id, email, email_key, is_active, is_superuser, full_name, hashed_password, '
                    "created_at) VALUES (:id, :email, :key, true, false, :full_name, :hashed_password, :created_at)"
                ),
                row,
            )

    served.database.execute(go)
    assert key_of(served.database, email) == email_identity(email)


# ---------------------------------------------------------------- our own writes are unchanged


def test_our_signup_and_email_change_keep_email_identitys_key(served: Served, client: httpx.Client) -> None:
    t = tag()
    email = f"Müller.{t}@example.com"
    response = client.post("/users/signup", json={"email": email, "password": "a-good-password"})
    assert response.status_code == 200, response.text
    assert key_of(served.database, email) == email_identity(email) == f"müller.{t}@example.com"

    # One identity, another spelling that SQL cannot fold: the statement sets the key itself, which stays.
    headers = login(client, email, "a-good-password")
    variant = f"MÜLLER.{t}@example.com"
    changed = client.patch("/users/me", json={"email": variant}, headers=headers)
    assert changed.status_code == 200, changed.text
    assert key_of(served.database, variant) == email_identity(email)
    assert notes_left(served.database) == 0

    other = f"Straße.{t}@example.com"
    moved = client.patch("/users/me", json={"email": other}, headers=headers)
    assert moved.status_code == 200, moved.text
    assert key_of(served.database, other) == email_identity(other) == f"strasse.{t}@example.com"
    assert login(client, f"STRASSE.{t}@example.com", "a-good-password")
    assert notes_left(served.database) == 0


def test_the_orm_gives_the_key_and_it_is_kept(served: Served, new_account: Any) -> None:
    email = f"ΟΔΥΣΣΕΥΣ.{tag()}@example.com"
    new_account(email=email)
    assert key_of(served.database, email) == email_identity(email)


# ---------------------------------------------------------------- the rule, checked against email_identity


# What the trigger computes in SQL: printable ASCII without `"`, `<`, `>`, `[`, `]`, with an @ and no xn-- label.
ALPHABET = "".join(c for c in map(chr, range(0x21, 0x7F)) if c not in '"<>[]')
LOCAL = string.ascii_letters + string.digits + ".+-_!#$%&'*/=?^`{|}~"


def foldable(address: str) -> bool:
    return "@" in address and "xn--" not in address.lower()


ADDRESSES = st.one_of(
    # Shaped like addresses (valid ones, mostly: their local part stays, their domain is lowercased)...
    st.builds(
        "{}@{}.{}".format,
        st.text(LOCAL, min_size=1, max_size=16),
        st.lists(
            st.text(string.ascii_letters + string.digits + "-", min_size=1, max_size=10), min_size=1, max_size=3
        ).map(".".join),
        st.sampled_from(["com", "COM", "Org", "de", "io", "example", "test", "local"]),
    ),
    # ... and anything else the alphabet allows (mostly invalid: folded whole).
    st.text(ALPHABET, min_size=1, max_size=40).map(
        lambda s: s if "@" in s else s[: len(s) // 2] + "@" + s[len(s) // 2 :]
    ),
).filter(foldable)


@pytest.fixture(scope="module", params=ENGINES)
def empty_database(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    """A database of the module's own, at head, without users (so no generated address can meet an existing one)."""
    if request.param == "postgresql":
        url = create_postgres_database()
    else:
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('template-writes') / 'test.db'}"
    AlembicCommands(sqlalchemy_config=sqlalchemy_config(make_settings(url))).upgrade("head")
    yield Database(url)
    if request.param == "postgresql":
        drop_postgres_database(url)


class Session:
    """One connection on one event loop for many examples, each in a transaction rolled back."""

    def __init__(self, url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.engine = create_async_engine(url, poolclass=NullPool)
        self.connection: AsyncConnection = self.loop.run_until_complete(self.engine.connect())

    def key_written_for(self, email: str) -> str:
        async def go() -> str:
            async with self.connection.begin() as transaction:
                returned = (
                    await self.connection.execute(
                        typed(TEMPLATE_INSERT + " RETURNING email_key"), template_row(email, "x")
                    )
                ).scalar_one()
                stored = (
                    await self.connection.execute(text('SELECT email_key FROM "user" WHERE email = :e'), {"e": email})
                ).scalar_one()
                await transaction.rollback()
            if self.engine.dialect.name == "postgresql":
                assert returned == stored  # a BEFORE trigger: RETURNING sees the key
            else:
                assert returned == ""  # SQLite's RETURNING reports the row before its AFTER triggers ran
            return str(stored)

        return self.loop.run_until_complete(go())

    def close(self) -> None:
        self.loop.run_until_complete(self.connection.close())
        self.loop.run_until_complete(self.engine.dispose())
        self.loop.close()


@pytest.fixture(scope="module")
def session(empty_database: Database) -> Iterator[Session]:
    opened = Session(empty_database.url)
    yield opened
    opened.close()


def test_the_trigger_computes_what_email_identity_computes(session: Session) -> None:
    @settings(
        max_examples=75, derandomize=True, database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow]
    )
    @given(ADDRESSES)
    def check(email: str) -> None:
        assert session.key_written_for(email) == email_identity(email)

    check()


@settings(max_examples=2000, derandomize=True, database=None, deadline=None)
@given(ADDRESSES)
def test_for_such_an_address_email_identity_is_lower(email: str) -> None:
    """The claim the trigger rests on, in Python alone (cheap, so many more examples)."""
    assert email_identity(email) == email.lower()


@settings(max_examples=25, derandomize=True, database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(min_size=1, max_size=20).filter(lambda s: any(not ("!" <= c <= "~") for c in s) and "\x00" not in s))
def test_anything_outside_printable_ascii_is_refused(session: Session, email: str) -> None:
    with pytest.raises(IntegrityError, match=REFUSAL):
        session.key_written_for(email + "@example.com")


# ---------------------------------------------------------------- the schema at head, and back


def test_the_triggers_are_there_at_head(database: Database) -> None:
    """A later revision that rebuilds "user" on SQLite (batch_alter_table) must create them again."""
    assert database.scalar("SELECT version_num FROM alembic_version") == MIGRATIONS_HEAD
    engine = "postgresql" if database.url.startswith("postgresql") else "sqlite"
    # With migration 0008's, which revokes a deactivated user's personal access tokens.
    assert database.trigger_names("user") == TRIGGERS[engine] | {"personal_access_token_revoke"}


def test_a_downgrade_removes_the_triggers_and_an_upgrade_brings_them_back(tmp_path: Path) -> None:
    for url in (create_postgres_database(), f"sqlite+aiosqlite:///{tmp_path / 'down.db'}"):
        database = Database(url)
        commands = AlembicCommands(sqlalchemy_config=sqlalchemy_config(make_settings(url)))
        try:
            commands.upgrade("head")
            commands.downgrade("0004")
            assert database.trigger_names("user") == set()
            with pytest.raises(IntegrityError, match="email_key"):  # NOT NULL again, nothing fills it
                insert_as_the_template(database, f"down-{tag()}@example.com")
            commands.upgrade("head")
            email = f"up-{tag()}@example.com"
            insert_as_the_template(database, email)
            assert key_of(database, email) == email
        finally:
            if url.startswith("postgresql"):
                drop_postgres_database(url)
