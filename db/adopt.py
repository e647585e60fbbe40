"""Adopting, in place, a PostgreSQL database created by the full-stack-fastapi-template.

The template's tables hold the same data as ours under other names and with a few columns and indexes fewer. A
database at one of its UUID-era revisions is brought to the exact shape of our revision 0002, and alembic_version
says 0002, inside the migration transaction: our later revisions then apply on top, and any failure leaves the
database as it was. Everything that could stop the adoption is checked before the first change.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from advanced_alchemy.types import GUID, DateTimeUTC
from sqlalchemy import TextClause, bindparam, inspect, text
from sqlalchemy.engine import Connection

from db.identity import email_identity

TEMPLATE_UUID_REVISIONS = ("d98dd8ec85a3", "1a31ce608336", "fe56fa70289e")
TEMPLATE_INTEGER_REVISIONS = ("e2412789c190", "9c0a54914c78")
ADOPTED_REVISION = "0002"
RENAME_COMMAND = "just rename-user-email <user-id> <new-email>"
# As migrations 0001 and 0002 create them.
_INDEXES = {
    "ix_user_email_lower": 'UNIQUE INDEX ix_user_email_lower ON "user" (lower(email))',
    "ix_user_created_at": 'INDEX ix_user_created_at ON "user" (created_at)',
    "ix_item_created_at": "INDEX ix_item_created_at ON item (created_at)",
    "ix_item_owner_id_created_at": "INDEX ix_item_owner_id_created_at ON item (owner_id, created_at)",
}
_TEMPLATE_COLUMNS = {
    "user": {"id", "email", "is_active", "is_superuser", "full_name", "hashed_password"},
    "item": {"id", "title", "description", "owner_id"},
}


class AdoptionError(Exception):
    """The database cannot be adopted (or changed) as asked; the message says why and what to do."""


@dataclass(frozen=True)
class Step:
    description: str
    sql: str


@dataclass(frozen=True)
class Plan:
    revision: str
    steps: list[Step]


def template_revision(connection: Connection) -> str | None:
    """The template's alembic revision of this database, or None when the template did not create it."""
    if connection.dialect.name != "postgresql" or not inspect(connection).has_table("alembic_version"):
        return None
    versions = connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    known = [version for version in versions if version in TEMPLATE_UUID_REVISIONS + TEMPLATE_INTEGER_REVISIONS]
    return known[0] if known else None


def plan(connection: Connection) -> Plan | None:
    """What adopting this database would do (nothing is changed), or None when it is not a template database.
    Raises AdoptionError when it cannot be adopted as it is."""
    revision = template_revision(connection)
    if revision is None:
        return None
    if revision in TEMPLATE_INTEGER_REVISIONS:
        raise AdoptionError(
            f"this database was created by the full-stack-fastapi-template and is at its revision {revision}, "
            "with integer ids; upgrade it with the template to d98dd8ec85a3 or later first (its "
            "`alembic upgrade head`), then start this service again"
        )
    _check_columns(connection)
    _check_duplicate_emails(connection)
    _check_items_without_owner(connection)
    return Plan(revision=revision, steps=[*_created_at_steps(connection), *_constraint_steps(connection)])


def adopt(connection: Connection) -> Plan | None:
    """Adopt a template database in the caller's transaction; None (and no change) when it is not one."""
    if template_revision(connection) is None:
        return None
    # Two replicas starting at once: the second waits here, then finds the database adopted already.
    connection.execute(text("LOCK TABLE alembic_version IN ACCESS EXCLUSIVE MODE"))
    adoption = plan(connection)
    if adoption is not None:
        for step in adoption.steps:
            connection.exec_driver_sql(step.sql)
    return adoption


def _check_columns(connection: Connection) -> None:
    inspector = inspect(connection)
    for table, expected in _TEMPLATE_COLUMNS.items():
        present = {column["name"] for column in inspector.get_columns(table)} if inspector.has_table(table) else set()
        if missing := sorted(expected - present):
            raise AdoptionError(
                f'the template\'s table "{table}" lacks the column(s) {", ".join(missing)}: '
                "this database is not one the template's migrations left, so it is not adopted"
            )


def _check_duplicate_emails(connection: Connection) -> None:
    """The template compares emails exactly, we compare identities (db/identity.py): two accounts with one identity
    would both match one login. Revision 0002, which the adoption reaches first, also has a unique index on
    PostgreSQL's lower(email), so its collisions are refused too. Refuse with the list, so that the operator decides
    which one keeps the address."""
    groups = accounts_sharing_an_email(connection, also_lower=True)
    if groups:
        raise AdoptionError(
            f"cannot adopt this database created by the full-stack-fastapi-template: {len(groups)} email "
            "address(es) belong to several accounts each, and this service has one account per address, whatever "
            "its case or Unicode form (README: Emails and identity):\n"
            + duplicate_listing(groups)
            + f"\nGive all but one account of each group another email ({RENAME_COMMAND}), then start again. "
            "Nothing was changed"
        )


@dataclass(frozen=True)
class Account:
    id: UUID
    email: str
    created_at: datetime | None
    items: int = 0


def accounts_sharing_an_email(connection: Connection, *, also_lower: bool = False) -> list[tuple[str, list[Account]]]:
    """The accounts whose emails have one identity (db/identity.py), grouped under it, oldest first; with
    `also_lower`, on PostgreSQL, also those whose emails have one lower(email) (revision 0002's unique index).
    Works on the template's schema (no created_at at its first revisions) and on ours, on both engines."""
    created_at = "created_at" if _has_column(connection, "user", "created_at") else "NULL"
    rows = connection.execute(
        text(f'SELECT id, email, {created_at} AS created_at FROM "user"').columns(  # noqa: S608 (no outside input)
            id=GUID(), created_at=DateTimeUTC(timezone=True)
        )
    ).all()
    keys: list[dict[str, str]] = [{str(row.id): email_identity(row.email) for row in rows}]
    if also_lower and connection.dialect.name == "postgresql":
        lowered = connection.execute(text('SELECT id, lower(email) FROM "user"').columns(id=GUID())).all()
        keys.append({str(row[0]): row[1] for row in lowered})
    groups: list[tuple[str, list[Account]]] = []
    listed: set[frozenset[str]] = set()
    for key_of in keys:
        by_key: dict[str, list[Any]] = {}
        for row in rows:
            by_key.setdefault(key_of[str(row.id)], []).append(row)
        for key, members in by_key.items():
            ids = frozenset(str(row.id) for row in members)
            if len(members) > 1 and ids not in listed:
                listed.add(ids)
                groups.append((key, [Account(row.id, row.email, row.created_at) for row in members]))
    if not groups:
        return []
    counts = text("SELECT owner_id, count(*) AS items FROM item WHERE owner_id IS NOT NULL GROUP BY owner_id")
    items: dict[UUID, int] = {row.owner_id: row.items for row in connection.execute(counts.columns(owner_id=GUID()))}
    return [
        (
            key,
            sorted(
                (Account(a.id, a.email, a.created_at, items.get(a.id, 0)) for a in accounts),
                key=lambda a: (a.created_at is not None, a.created_at or datetime.min.replace(tzinfo=UTC), a.email),
            ),
        )
        for key, accounts in sorted(groups, key=lambda group: group[0])
    ]


def duplicate_listing(groups: list[tuple[str, list[Account]]]) -> str:
    lines = []
    for key, accounts in groups:
        lines.append(f"  {key}:")
        lines.extend(
            f"    id {a.id}  email {a.email}  created_at {a.created_at or 'unknown'}  {a.items} item(s)"
            for a in accounts
        )
    return "\n".join(lines)


def _check_items_without_owner(connection: Connection) -> None:
    orphans = connection.execute(text("SELECT count(*) FROM item WHERE owner_id IS NULL")).scalar_one()
    if orphans:
        raise AdoptionError(
            f"cannot adopt this database created by the full-stack-fastapi-template: {orphans} item(s) have no "
            "owner (item.owner_id is NULL), and every item needs one here; give them an owner or delete them, then "
            "start again. Nothing was changed"
        )


def _created_at_steps(connection: Connection) -> list[Step]:
    inspector = inspect(connection)
    steps = []
    for table in ("user", "item"):
        column = next((c for c in inspector.get_columns(table) if c["name"] == "created_at"), None)
        if column is None:
            steps.append(
                Step(f"add the column {table}.created_at", f'ALTER TABLE "{table}" ADD COLUMN created_at TIMESTAMPTZ')
            )
            missing = connection.execute(text(f'SELECT count(*) FROM "{table}"')).scalar_one()  # noqa: S608
        else:
            missing = connection.execute(
                text(f'SELECT count(*) FROM "{table}" WHERE created_at IS NULL')  # noqa: S608
            ).scalar_one()
        if missing:
            # Rows without a time were written before the template recorded one, so they are older than any
            # row that has one: the earliest recorded time keeps them first in time order.
            steps.append(
                Step(
                    f"set {table}.created_at of {missing} row(s) that have none to the earliest one recorded "
                    "(or to the adoption time when none is)",
                    f'UPDATE "{table}" SET created_at = (SELECT coalesce(min(created_at), now()) FROM "{table}") '  # noqa: S608
                    "WHERE created_at IS NULL",
                )
            )
        if column is None or column["nullable"]:
            steps.append(
                Step(f"make {table}.created_at NOT NULL", f'ALTER TABLE "{table}" ALTER COLUMN created_at SET NOT NULL')
            )
    return steps


def _constraint_steps(connection: Connection) -> list[Step]:
    inspector = inspect(connection)
    steps = []
    for table in ("user", "item"):
        name = inspector.get_pk_constraint(table)["name"]
        if name != f"pk_{table}":
            steps.append(
                Step(
                    f"rename the primary key {table}.{name} to pk_{table}",
                    f'ALTER TABLE "{table}" RENAME CONSTRAINT "{name}" TO pk_{table}',
                )
            )
    owner_id = next(column for column in inspector.get_columns("item") if column["name"] == "owner_id")
    if owner_id["nullable"]:
        steps.append(Step("make item.owner_id NOT NULL", "ALTER TABLE item ALTER COLUMN owner_id SET NOT NULL"))
    cascading = False
    for fk in inspector.get_foreign_keys("item"):
        if fk["constrained_columns"] != ["owner_id"]:
            continue
        if cascading or fk["options"].get("ondelete", "").upper() != "CASCADE":
            steps.append(
                Step(f"drop the foreign key item.{fk['name']}", f'ALTER TABLE item DROP CONSTRAINT "{fk["name"]}"')
            )
            continue
        cascading = True
        if fk["name"] != "fk_item_owner_id_user":
            steps.append(
                Step(
                    f"rename the foreign key item.{fk['name']} to fk_item_owner_id_user",
                    f'ALTER TABLE item RENAME CONSTRAINT "{fk["name"]}" TO fk_item_owner_id_user',
                )
            )
    if not cascading:
        steps.append(
            Step(
                "add the foreign key item.fk_item_owner_id_user (ON DELETE CASCADE)",
                "ALTER TABLE item ADD CONSTRAINT fk_item_owner_id_user FOREIGN KEY (owner_id) "
                'REFERENCES "user" (id) ON DELETE CASCADE',
            )
        )
    if not _has_column(connection, "user", "token_version"):
        steps.append(
            Step(
                "add the column user.token_version (0: the tokens already issued stay valid)",
                'ALTER TABLE "user" ADD COLUMN token_version INTEGER DEFAULT 0 NOT NULL',
            )
        )
    indexes = {index["name"] for table in ("user", "item") for index in inspector.get_indexes(table)}
    if "ix_user_email" in indexes:
        steps.append(Step("drop the case-sensitive unique index ix_user_email", "DROP INDEX ix_user_email"))
    for name, definition in _INDEXES.items():
        if name not in indexes:
            steps.append(Step(f"create the index {name}", f"CREATE {definition}"))
    steps.append(
        Step(
            f"record this service's revision {ADOPTED_REVISION} in alembic_version",
            f"UPDATE alembic_version SET version_num = '{ADOPTED_REVISION}'",  # noqa: S608
        )
    )
    return steps


def _has_column(connection: Connection, table: str, column: str) -> bool:
    return column in {c["name"] for c in inspect(connection).get_columns(table)}


def rename_user_email(connection: Connection, user_id: UUID, new_email: str) -> str:
    """Give an account another email (the way out of accounts sharing an identity); returns the old one. Works on
    the template's schema and on ours, on both engines."""

    def by_id(sql: str) -> TextClause:
        # Typed, so that SQLite (which stores a GUID as bytes and binds no UUID) gets the id as it stores it.
        return text(sql).bindparams(bindparam("id", type_=GUID()))

    old = connection.execute(by_id('SELECT email FROM "user" WHERE id = :id'), {"id": user_id}).scalar()
    if old is None:
        raise AdoptionError(f"no user has the id {user_id}")
    # Compared in Python, with the one rule (db/identity.py): the template's schema has no email_key column.
    key = email_identity(new_email)
    others = connection.execute(
        by_id('SELECT id, email FROM "user" WHERE id <> :id').columns(id=GUID()), {"id": user_id}
    ).all()
    taken = next((row.id for row in others if email_identity(row.email) == key), None)
    if taken is not None:
        raise AdoptionError(
            f"{new_email} is already the email of user {taken} (emails are compared whatever their case or Unicode "
            "form: README, Emails and identity)"
        )
    if _has_column(connection, "user", "email_key"):
        update = 'UPDATE "user" SET email = :email, email_key = :key WHERE id = :id'
        connection.execute(by_id(update), {"email": new_email, "key": key, "id": user_id})
    else:
        update = 'UPDATE "user" SET email = :email WHERE id = :id'
        connection.execute(by_id(update), {"email": new_email, "id": user_id})
    return str(old)
