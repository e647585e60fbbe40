"""Adopting a database the full-stack-fastapi-template created: built here, revision by revision, the way its
migrations leave it (legacy names, NULL created_at, bcrypt and argon2 hashes), then adopted by the real prestart
and `just` recipes, and used over HTTP with the old passwords."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import bcrypt
import click
import httpx
import jwt
import pytest
from argon2 import PasswordHasher
from click.testing import Result
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.cli import adoption_plan, prestart
from app.database import sqlalchemy_config
from app.main import create_app
from tests.conftest import (
    MIGRATIONS_HEAD,
    ROOT,
    SECRET_KEY,
    Database,
    LiveServer,
    create_postgres_database,
    drop_postgres_database,
    free_port,
    login,
    make_settings,
    require,
    run,
    run_cli,
)
from tests.test_migrations import autogenerate_diff
from tests.test_serve import serve, stop, wait_until_healthy

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*expression-based index:UserWarning", "ignore:.*expression-based index"
)

INTEGER_REFUSAL = (
    "this database was created by the full-stack-fastapi-template and is at its revision {}, with integer ids; "
    "upgrade it with the template to d98dd8ec85a3 or later first (its `alembic upgrade head`), "
    "then start this service again"
)

# ---------------------------------------------------------------- the template's schema, revision by revision

# The DDL its alembic migrations emit on PostgreSQL (SQLModel's AutoString is VARCHAR; names are PostgreSQL's
# defaults, as it sets no naming convention).
TEMPLATE_MIGRATIONS: list[tuple[str, list[str]]] = [
    (
        "e2412789c190",
        [
            "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
            "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))",
            'CREATE TABLE "user" (email VARCHAR NOT NULL, is_active BOOLEAN NOT NULL, is_superuser BOOLEAN NOT NULL, '
            "full_name VARCHAR, id SERIAL NOT NULL, hashed_password VARCHAR NOT NULL, PRIMARY KEY (id))",
            'CREATE UNIQUE INDEX ix_user_email ON "user" (email)',
            "CREATE TABLE item (description VARCHAR, id SERIAL NOT NULL, title VARCHAR NOT NULL, "
            'owner_id INTEGER NOT NULL, PRIMARY KEY (id), FOREIGN KEY(owner_id) REFERENCES "user" (id))',
            "INSERT INTO alembic_version (version_num) VALUES ('e2412789c190')",
        ],
    ),
    (
        "9c0a54914c78",
        [
            'ALTER TABLE "user" ALTER COLUMN email TYPE VARCHAR(255)',
            'ALTER TABLE "user" ALTER COLUMN full_name TYPE VARCHAR(255)',
            "ALTER TABLE item ALTER COLUMN title TYPE VARCHAR(255)",
            "ALTER TABLE item ALTER COLUMN description TYPE VARCHAR(255)",
        ],
    ),
    (
        "d98dd8ec85a3",
        [
            'CREATE EXTENSION IF NOT EXISTS "uuid-ossp"',
            'ALTER TABLE "user" ADD COLUMN new_id UUID',
            "ALTER TABLE item ADD COLUMN new_id UUID",
            "ALTER TABLE item ADD COLUMN new_owner_id UUID",
            'UPDATE "user" SET new_id = uuid_generate_v4()',
            "UPDATE item SET new_id = uuid_generate_v4()",
            'UPDATE item SET new_owner_id = (SELECT new_id FROM "user" WHERE "user".id = item.owner_id)',
            'ALTER TABLE "user" ALTER COLUMN new_id SET NOT NULL',
            "ALTER TABLE item ALTER COLUMN new_id SET NOT NULL",
            "ALTER TABLE item DROP CONSTRAINT item_owner_id_fkey",
            "ALTER TABLE item DROP COLUMN owner_id",
            "ALTER TABLE item RENAME new_owner_id TO owner_id",
            'ALTER TABLE "user" DROP COLUMN id',
            'ALTER TABLE "user" RENAME new_id TO id',
            "ALTER TABLE item DROP COLUMN id",
            "ALTER TABLE item RENAME new_id TO id",
            'ALTER TABLE "user" ADD CONSTRAINT user_pkey PRIMARY KEY (id)',
            "ALTER TABLE item ADD CONSTRAINT item_pkey PRIMARY KEY (id)",
            'ALTER TABLE item ADD CONSTRAINT item_owner_id_fkey FOREIGN KEY(owner_id) REFERENCES "user" (id)',
        ],
    ),
    (
        "1a31ce608336",
        [
            "ALTER TABLE item ALTER COLUMN owner_id SET NOT NULL",
            "ALTER TABLE item DROP CONSTRAINT item_owner_id_fkey",
            'ALTER TABLE item ADD FOREIGN KEY(owner_id) REFERENCES "user" (id) ON DELETE CASCADE',
        ],
    ),
    (
        "fe56fa70289e",
        [
            "ALTER TABLE item ADD COLUMN created_at TIMESTAMP WITH TIME ZONE",
            'ALTER TABLE "user" ADD COLUMN created_at TIMESTAMP WITH TIME ZONE',
        ],
    ),
]

ADMIN = "admin@example.com"
ALICE = "Alice.Smith@Example.com"
# Who the template's backend writes, at which revision: users of the integer era hashed with bcrypt (passlib's
# days), one of the UUID era with argon2 (pwdlib's), one after created_at existed. Each with a few items.
USERS_WRITTEN_AFTER = {
    "e2412789c190": [ADMIN, ALICE],
    "d98dd8ec85a3": ["bob@example.com"],
    "fe56fa70289e": ["carol@example.com"],
}
PASSWORDS = {
    ADMIN: "template-admin-password",
    ALICE: "alice-old-password",
    "bob@example.com": "bob-old-password",
    "carol@example.com": "carol-old-password",
}
ITEMS = {ADMIN: 1, ALICE: 2, "bob@example.com": 1, "carol@example.com": 3}
# A second Alice, as the template allows, and the address she gets to resolve the clash (see add_case_duplicate).
RENAMED = "alice.second@example.com"
PASSWORDS[RENAMED] = "second-alice-password"
ITEMS[RENAMED] = 1
REVISIONS = [name for name, _ in TEMPLATE_MIGRATIONS]


def users_at(revision: str) -> list[str]:
    written = REVISIONS[: REVISIONS.index(revision) + 1]
    return [email for name in written for email in USERS_WRITTEN_AFTER.get(name, [])]


@cache
def bcrypt_hash(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(12)).decode()


@cache
def argon2_hash(password: str) -> str:
    return PasswordHasher().hash(password)  # pwdlib's Argon2Hasher uses argon2-cffi's defaults


def rows_written_after(revision: str) -> list[tuple[str, dict[str, Any]]]:
    """The statements the template's backend runs to create those users and items at that revision."""
    statements: list[tuple[str, dict[str, Any]]] = []
    for email in USERS_WRITTEN_AFTER.get(revision, []):
        if revision == "e2412789c190":  # serial ids, no created_at
            statements.append(
                (
                    'INSERT INTO "user" (email, is_active, is_superuser, full_name, hashed_password) '
                    "VALUES (:email, true, :superuser, :name, :hash)",
                    {
                        "email": email,
                        "superuser": email == ADMIN,
                        "name": email.split("@")[0],
                        "hash": bcrypt_hash(PASSWORDS[email]),
                    },
                )
            )
            statements += [
                (
                    "INSERT INTO item (title, description, owner_id) "
                    'SELECT :title, NULL, id FROM "user" WHERE email = :email',
                    {"title": f"{email} item {number}", "email": email},
                )
                for number in range(ITEMS[email])
            ]
            continue
        created_at = datetime.now(UTC) if revision == "fe56fa70289e" else None
        statements.append(
            (
                'INSERT INTO "user" (id, email, is_active, is_superuser, full_name, hashed_password) '
                "VALUES (:id, :email, true, false, NULL, :hash)",
                {"id": user_uuid(email), "email": email, "hash": argon2_hash(PASSWORDS[email])},
            )
        )
        statements += [
            (
                "INSERT INTO item (id, title, description, owner_id) "
                "VALUES (:id, :title, 'written by the template', :owner)",
                {"id": uuid.uuid4(), "title": f"{email} item {number}", "owner": user_uuid(email)},
            )
            for number in range(ITEMS[email])
        ]
        if created_at is not None:
            statements += [
                ('UPDATE "user" SET created_at = :at WHERE id = :id', {"at": created_at, "id": user_uuid(email)}),
                ("UPDATE item SET created_at = :at WHERE owner_id = :id", {"at": created_at, "id": user_uuid(email)}),
            ]
    return statements


def user_uuid(email: str) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_DNS, email)


def execute_all(database: Database, statements: list[tuple[str, dict[str, Any]]]) -> None:
    """In one transaction, as alembic runs a migration."""

    async def go(engine: AsyncEngine) -> None:
        async with engine.begin() as connection:
            for sql, params in statements:
                await connection.execute(text(sql), params)

    database.execute(go)


def build_template_database(database: Database, revision: str) -> Database:
    """The template's migrations up to `revision`, with the rows its backend writes along the way."""
    for name, statements in TEMPLATE_MIGRATIONS:
        execute_all(
            database,
            [
                *((sql, {}) for sql in statements),
                ("UPDATE alembic_version SET version_num = :name", {"name": name}),
                *rows_written_after(name),
            ],
        )
        if name == revision:
            return database
    raise AssertionError(revision)


@pytest.fixture
def new_database() -> Iterator[Callable[[], Database]]:
    urls: list[str] = []

    def create() -> Database:
        urls.append(create_postgres_database())
        return Database(urls[-1])

    yield create
    for url in urls:
        drop_postgres_database(url)


@pytest.fixture
def template_database(new_database: Callable[[], Database]) -> Callable[[str], Database]:
    return lambda revision: build_template_database(new_database(), revision)


# ---------------------------------------------------------------- looking at a database


def dump(database: Database, *options: str) -> str:
    """pg_dump's text of the whole database, schema and rows: equal dumps, equal databases."""
    require("pg_dump")
    url = make_url(database.url)
    output = subprocess.run(
        [
            "pg_dump",
            "-h",
            url.host or "",
            "-p",
            str(url.port or 5432),
            "-U",
            url.username or "",
            *options,
            url.database or "",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # pg_dump writes a random key on these lines each time.
    return "\n".join(line for line in output.splitlines() if not line.startswith(("\\restrict", "\\unrestrict")))


def schema_facts(database: Database) -> dict[str, list[tuple[Any, ...]]]:
    """Columns (by name, not position), constraints and indexes of the two tables, as PostgreSQL defines them."""
    queries = {
        "columns": """SELECT table_name, column_name, data_type, character_maximum_length, is_nullable, column_default
                      FROM information_schema.columns WHERE table_name IN ('user', 'item') ORDER BY 1, 2""",
        "constraints": """SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint
                          WHERE conrelid IN ('"user"'::regclass, 'item'::regclass) ORDER BY 1, 2""",
        "indexes": """SELECT tablename, indexname, indexdef FROM pg_indexes
                      WHERE tablename IN ('user', 'item') ORDER BY 1, 2""",
    }

    async def go(engine: AsyncEngine) -> dict[str, list[tuple[Any, ...]]]:
        async with engine.connect() as connection:
            return {name: [tuple(row) for row in await connection.execute(text(sql))] for name, sql in queries.items()}

    return database.execute(go)


def rows(database: Database) -> dict[str, list[tuple[Any, ...]]]:
    """The template's columns of every row."""

    async def go(engine: AsyncEngine) -> dict[str, list[tuple[Any, ...]]]:
        async with engine.connect() as connection:
            users = await connection.execute(
                text('SELECT id, email, is_active, is_superuser, full_name, hashed_password FROM "user" ORDER BY id')
            )
            items = await connection.execute(text("SELECT id, title, description, owner_id FROM item ORDER BY id"))
            return {"user": [tuple(row) for row in users], "item": [tuple(row) for row in items]}

    return database.execute(go)


@pytest.fixture(scope="module")
def our_schema() -> Iterator[dict[str, list[tuple[Any, ...]]]]:
    """The shape our own migrations give a new database."""
    database = Database(create_postgres_database())
    try:
        settings = make_settings(database.url)
        prestart(sqlalchemy_config(settings), settings)
        yield schema_facts(database)
    finally:
        drop_postgres_database(database.url)


def assert_adopted(database: Database, before: dict[str, list[tuple[Any, ...]]], our_schema: dict[str, Any]) -> None:
    assert database.scalar("SELECT version_num FROM alembic_version") == MIGRATIONS_HEAD
    assert autogenerate_diff(database) == []
    assert schema_facts(database) == our_schema
    assert rows(database) == before  # every user and item kept, ids and password hashes included
    assert database.scalar('SELECT count(*) FROM "user" WHERE created_at IS NULL') == 0


def assert_users_work(api: str, emails: list[str]) -> None:
    """Each one logs in with the old password (any case of the email) and finds their own items."""
    with httpx.Client(base_url=api, timeout=30) as http:
        for email in emails:
            headers = login(http, email.lower(), PASSWORDS[email])
            me = http.get("/users/me", headers=headers)
            assert me.status_code == 200, me.text
            assert (me.json()["email"], me.json()["is_superuser"]) == (email, email == ADMIN)
            items = http.get("/items/", headers=headers).json()["data"]
            own = sorted(item["title"] for item in items if item["owner_id"] == me.json()["id"])
            assert own == [f"{email} item {number}" for number in range(ITEMS[email])]
            assert len(items) == (sum(ITEMS[e] for e in emails) if email == ADMIN else ITEMS[email])


# ---------------------------------------------------------------- running the service


def environment(database: Database) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("COV_", "PYTEST"))},
        "DATABASE_URL": database.url,
        "SECRET_KEY": SECRET_KEY,
        "ENVIRONMENT": "staging",
        "POSTGRES_PASSWORD": "unused-but-not-changethis",
        "FIRST_SUPERUSER": ADMIN,
        "FIRST_SUPERUSER_PASSWORD": "not-the-template-one",
    }


def just(database: Database, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["uv", "run", "just", *args], cwd=ROOT, env=environment(database), capture_output=True, text=True, timeout=120
    )


def adopt_by_prestart(database: Database) -> None:
    settings = make_settings(database.url)
    prestart(sqlalchemy_config(settings), settings)


# ---------------------------------------------------------------- adoption


@pytest.mark.parametrize("revision", ["d98dd8ec85a3", "1a31ce608336", "fe56fa70289e"])
@pytest.mark.system
def test_prestart_adopts_a_template_database_and_its_users_log_in_with_their_passwords(
    template_database: Callable[[str], Database], our_schema: dict[str, Any], revision: str
) -> None:
    database = template_database(revision)
    before = rows(database)
    recorded = database.scalar('SELECT min(created_at) FROM "user"') if revision == "fe56fa70289e" else None

    adopt_by_prestart(database)

    assert_adopted(database, before, our_schema)
    # Rows the template wrote without a time sort before those it wrote with one.
    if recorded is not None:
        assert database.scalar('SELECT count(DISTINCT created_at) FROM "user"') == 1
        assert database.scalar('SELECT min(created_at) FROM "user"') == recorded
    adopted = dump(database)
    adopt_by_prestart(database)  # the next start: nothing to adopt, the superuser exists
    assert dump(database) == adopted

    settings = make_settings(database.url)
    with LiveServer(create_app(settings)) as server:
        assert_users_work(server.url + settings.API_V1_STR, users_at(revision))


def test_a_token_the_template_issued_keeps_working(template_database: Callable[[str], Database]) -> None:
    """The template's access tokens (same SECRET_KEY, HS256, only `exp` and `sub`) outlive the move."""
    database = template_database("fe56fa70289e")
    adopt_by_prestart(database)
    token = jwt.encode(
        {"exp": datetime.now(UTC) + timedelta(days=8), "sub": str(user_uuid("bob@example.com"))},
        SECRET_KEY,
        algorithm="HS256",
    )
    settings = make_settings(database.url)
    with LiveServer(create_app(settings)) as server, httpx.Client(base_url=server.url + settings.API_V1_STR) as http:
        me = http.get("/users/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200, me.text
    assert me.json()["email"] == "bob@example.com"


def test_the_templates_own_writes_keep_working_after_the_adoption(template_database: Callable[[str], Database]) -> None:
    """Its initial_data, crud or an admin script write "user" without email_key: migration 0005's trigger fills it."""
    database = template_database("fe56fa70289e")
    adopt_by_prestart(database)
    triggers = "SELECT string_agg(tgname, ',' ORDER BY tgname) FROM pg_trigger WHERE tgrelid = '\"user\"'::regclass"
    # 0005's two, and 0008's (a deactivation revokes the user's personal access tokens).
    expected = "personal_access_token_revoke,user_email_key_1_given,user_email_key_2_fill"
    assert database.scalar(triggers + " AND NOT tgisinternal") == expected

    database.run(
        'INSERT INTO "user" (id, email, is_active, is_superuser, full_name, hashed_password, created_at) '
        "VALUES (:id, :email, true, false, NULL, :hash, now())",
        id=uuid.uuid4(),
        email="Dave@Example.com",
        hash=argon2_hash("dave-password"),
    )
    database.run("UPDATE \"user\" SET email = 'David@Example.com' WHERE email = 'Dave@Example.com'")
    assert database.scalar("SELECT email_key FROM \"user\" WHERE email = 'David@Example.com'") == "david@example.com"

    settings = make_settings(database.url)
    with LiveServer(create_app(settings)) as server, httpx.Client(base_url=server.url + settings.API_V1_STR) as http:
        headers = login(http, "david@example.com", "dave-password")
        assert http.get("/users/me", headers=headers).json()["email"] == "David@Example.com"
        refused = http.post("/login/access-token", data={"username": "dave@example.com", "password": "dave-password"})
        assert refused.status_code == 400


@pytest.mark.parametrize("revision", ["d98dd8ec85a3", "1a31ce608336", "fe56fa70289e"])
@pytest.mark.system
def test_just_serve_adopts_a_template_database(template_database: Callable[[str], Database], revision: str) -> None:
    database = template_database(revision)
    port = free_port()
    process = serve(database, port, workers=1)
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}", process)
        assert_users_work(f"http://127.0.0.1:{port}/api/v1", users_at(revision))
    finally:
        output = stop(process)
    assert "template database adopted" in output
    assert "first superuser already exists" in output
    assert database.scalar("SELECT version_num FROM alembic_version") == MIGRATIONS_HEAD
    assert autogenerate_diff(database) == []


@pytest.mark.system
def test_check_lists_the_steps_and_changes_nothing_then_just_adopt_adopts(
    template_database: Callable[[str], Database], our_schema: dict[str, Any]
) -> None:
    database = template_database("1a31ce608336")
    before, untouched = rows(database), dump(database)

    check = just(database, "adopt", "--check")

    assert check.returncode == 0, check.stderr
    assert "its revision 1a31ce608336" in check.stdout
    for step in (
        "add the column user.created_at",
        "rename the primary key user.user_pkey to pk_user",
        "rename the foreign key item.item_owner_id_fkey to fk_item_owner_id_user",
        "drop the case-sensitive unique index ix_user_email",
        "create the index ix_user_email_lower",
        "record this service's revision 0002 in alembic_version",
    ):
        assert step in check.stdout
    assert "Nothing was changed" in check.stdout
    assert dump(database) == untouched

    adopted = just(database, "adopt")
    assert adopted.returncode == 0, adopted.stderr
    assert "Adopted." in adopted.stdout
    assert_adopted(database, before, our_schema)
    assert run(adoption_plan(sqlalchemy_config(make_settings(database.url)))) is None  # nothing left to adopt


# ---------------------------------------------------------------- refusals


@pytest.mark.system
def test_an_integer_id_database_is_refused_with_one_line_by_just_serve(
    template_database: Callable[[str], Database],
) -> None:
    database = template_database("9c0a54914c78")
    untouched = dump(database)

    process = serve(database, free_port(), workers=1)
    output = process.communicate(timeout=120)[0].decode()

    assert process.returncode != 0
    assert "Traceback" not in output
    [line] = [line for line in output.splitlines() if "9c0a54914c78" in line]
    assert line == "Error: " + INTEGER_REFUSAL.format("9c0a54914c78")
    assert dump(database) == untouched


@pytest.mark.system
def test_the_first_template_revision_is_refused_by_prestart(template_database: Callable[[str], Database]) -> None:
    database = template_database("e2412789c190")
    untouched = dump(database)
    with pytest.raises(click.ClickException, match="revision e2412789c190, with integer ids") as refused:
        adopt_by_prestart(database)
    assert refused.value.message == INTEGER_REFUSAL.format("e2412789c190")
    assert dump(database) == untouched


def add_case_duplicate(database: Database, revision: str) -> uuid.UUID:
    """Another account whose email differs from Alice's only in case, as the template allows, with an item."""
    duplicate = uuid.uuid4()
    execute_all(
        database,
        [
            (
                'INSERT INTO "user" (id, email, is_active, is_superuser, full_name, hashed_password) '
                "VALUES (:id, 'alice.smith@example.com', true, false, NULL, :hash)",
                {"id": duplicate, "hash": argon2_hash(PASSWORDS[RENAMED])},
            ),
            (
                "INSERT INTO item (id, title, owner_id) VALUES (:id, :title, :owner)",
                {"id": uuid.uuid4(), "title": f"{RENAMED} item 0", "owner": duplicate},
            ),
        ],
    )
    if revision == "fe56fa70289e":
        database.run(
            'UPDATE "user" SET created_at = :at WHERE id = :id', at=datetime(2025, 3, 1, tzinfo=UTC), id=duplicate
        )
    return duplicate


@pytest.mark.system
def test_case_duplicate_emails_are_refused_with_the_listing_before_any_change_then_renamed(
    template_database: Callable[[str], Database], our_schema: dict[str, Any]
) -> None:
    database = template_database("fe56fa70289e")
    duplicate = add_case_duplicate(database, "fe56fa70289e")
    alice = database.scalar('SELECT id FROM "user" WHERE email = :email', email=ALICE)
    untouched = dump(database)

    with pytest.raises(click.ClickException) as refused:
        adopt_by_prestart(database)

    message = refused.value.message
    assert "1 email address(es) belong to several accounts" in message
    assert "  alice.smith@example.com:" in message
    assert f"id {alice}  email {ALICE}  created_at unknown  2 item(s)" in message
    assert f"id {duplicate}  email alice.smith@example.com  created_at 2025-03-01 00:00:00+00:00  1 item(s)" in message
    assert "just rename-user-email <user-id> <new-email>" in message
    assert dump(database) == untouched

    check = cli(database, "adopt", "--check")  # the operator's view: the same listing, no traceback
    assert check.exit_code == 1
    assert f"id {duplicate}  email alice.smith@example.com" in check.output
    assert "Traceback" not in check.output
    assert dump(database) == untouched

    renamed = just(database, "rename-user-email", str(duplicate), RENAMED)
    assert renamed.returncode == 0, renamed.stderr
    assert f"alice.smith@example.com is now {RENAMED}" in renamed.stdout
    before = rows(database)
    adopt_by_prestart(database)
    assert_adopted(database, before, our_schema)
    settings = make_settings(database.url)
    with LiveServer(create_app(settings)) as server:
        assert_users_work(server.url + settings.API_V1_STR, [ALICE, RENAMED])


@pytest.mark.system
def test_refusals_name_what_to_fix_at_the_first_uuid_revision(template_database: Callable[[str], Database]) -> None:
    """At d98dd8ec85a3 there is no created_at yet, and items may have no owner."""
    database = template_database("d98dd8ec85a3")
    duplicate = add_case_duplicate(database, "d98dd8ec85a3")
    database.run("INSERT INTO item (id, title, owner_id) VALUES (:id, 'nobody''s', NULL)", id=uuid.uuid4())
    untouched = dump(database)

    with pytest.raises(click.ClickException) as refused:
        adopt_by_prestart(database)
    assert f"id {duplicate}  email alice.smith@example.com  created_at unknown  1 item(s)" in refused.value.message
    assert dump(database) == untouched

    database.run('UPDATE "user" SET email = :email WHERE id = :id', email=RENAMED, id=duplicate)
    untouched = dump(database)
    with pytest.raises(click.ClickException, match=r"1 item\(s\) have no owner"):
        adopt_by_prestart(database)
    assert dump(database) == untouched


@pytest.mark.system
def test_emails_that_differ_in_unicode_form_are_refused_too_and_the_rename_compares_identities(
    template_database: Callable[[str], Database], our_schema: dict[str, Any]
) -> None:
    """Alice's address in fullwidth letters: distinct for the template and for lower(), one account here."""
    database = template_database("fe56fa70289e")
    variant = "\uff41\uff4c\uff49\uff43\uff45.smith@example.com"
    duplicate = uuid.uuid4()
    database.run(
        'INSERT INTO "user" (id, email, is_active, is_superuser, full_name, hashed_password, created_at) '
        "VALUES (:id, :email, true, false, NULL, :hash, :at)",
        id=duplicate,
        email=variant,
        hash=argon2_hash(PASSWORDS[RENAMED]),
        at=datetime(2025, 3, 1, tzinfo=UTC),
    )
    untouched = dump(database)

    with pytest.raises(click.ClickException) as refused:
        adopt_by_prestart(database)
    assert "  alice.smith@example.com:" in refused.value.message
    assert f"id {duplicate}  email {variant}  created_at 2025-03-01 00:00:00+00:00  0 item(s)" in refused.value.message
    assert dump(database) == untouched

    # The rename is held to the same rule: another variant of Alice's address is refused.
    taken = cli(database, "rename-user-email", str(duplicate), "ALICE.SMITH@example.com")
    assert taken.exit_code == 1
    assert "is already the email of user" in taken.output
    assert dump(database) == untouched

    assert cli(database, "rename-user-email", str(duplicate), RENAMED).exit_code == 0
    before = rows(database)
    adopt_by_prestart(database)
    assert_adopted(database, before, our_schema)
    assert database.scalar('SELECT email_key FROM "user" WHERE id = :id', id=duplicate) == RENAMED


@pytest.mark.system
def test_the_readme_procedure_backup_adopt_and_the_way_back(
    template_database: Callable[[str], Database], tmp_path: Path
) -> None:
    database = template_database("fe56fa70289e")
    url = make_url(database.url)
    server = ["-h", str(url.host), "-p", str(url.port or 5432), "-U", str(url.username)]
    original = dump(database)
    backup = tmp_path / "template-backup.dump"
    subprocess.run(["pg_dump", *server, "-Fc", "-f", str(backup), str(url.database)], check=True)

    adopt_by_prestart(database)
    assert database.scalar("SELECT version_num FROM alembic_version") == MIGRATIONS_HEAD

    # The way back: recreate the database and restore the backup.
    subprocess.run(["dropdb", *server, str(url.database)], check=True)
    subprocess.run(["createdb", *server, str(url.database)], check=True)
    subprocess.run(["pg_restore", *server, "-d", str(url.database), str(backup)], check=True)
    assert dump(database) == original
    assert database.scalar("SELECT version_num FROM alembic_version") == "fe56fa70289e"


@pytest.mark.system
def test_adoption_and_our_later_revisions_are_one_transaction(template_database: Callable[[str], Database]) -> None:
    """A later revision that fails (here 0003, whose column a customised template already has) takes the whole
    adoption back with it."""
    assert MIGRATIONS_HEAD != "0002"
    database = template_database("fe56fa70289e")
    database.run('ALTER TABLE "user" ADD COLUMN kept_token_digest VARCHAR(64)')
    untouched = dump(database)
    with pytest.raises(Exception, match="kept_token_digest"):
        adopt_by_prestart(database)
    assert dump(database) == untouched


def cli(database: Database, *args: str) -> Result:
    """The litestar CLI in this process (the `just` recipes run the same commands in a process of their own)."""
    return run_cli(environment(database), *args)


def test_the_cli_adopts_renames_and_says_plainly_what_it_refuses(template_database: Callable[[str], Database]) -> None:
    database = template_database("fe56fa70289e")
    check = cli(database, "adopt", "--check")
    assert check.exit_code == 0, check.output
    assert "its revision fe56fa70289e" in check.output
    assert "Nothing was changed (--check)." in check.output

    alice = str(database.scalar('SELECT id FROM "user" WHERE email = :email', email=ALICE))
    refused = cli(database, "rename-user-email", alice, "not-an-address")
    assert refused.exit_code == 1
    assert "Error: value is not a valid email address: An email address must have an @-sign." in refused.output

    renamed = cli(database, "rename-user-email", alice, "alice.renamed@example.com")
    assert renamed.exit_code == 0, renamed.output
    assert f"email {ALICE} is now alice.renamed@example.com" in renamed.output

    adopted = cli(database, "adopt")
    assert adopted.exit_code == 0, adopted.output
    assert "Adopted." in adopted.output
    again = cli(database, "adopt", "--check")
    assert "Nothing to adopt" in again.output
    assert database.scalar("SELECT version_num FROM alembic_version") == MIGRATIONS_HEAD

    integer_ids = template_database("9c0a54914c78")
    refusal = cli(integer_ids, "prestart")
    assert refusal.exit_code == 1
    assert "Error: " in refusal.output
    assert "d98dd8ec85a3" in refusal.output
