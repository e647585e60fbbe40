"""Hot-path statements, one round trip each, on a pooled connection outside the ORM session.

The requests measured by `bench/` (current user, item by id, a page of items, a new item) spend most of their
CPU in SQLAlchemy's execution layer (~0.5 ms a statement against ~0.1 ms on the driver, see bench/RESULTS.md).
On PostgreSQL these statements run straight on the asyncpg connection of a pooled SQLAlchemy connection,
compiled once by SQLAlchemy; elsewhere (SQLite) through SQLAlchemy Core. A single statement needs no
transaction around it, so none is opened."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
import msgspec
from sqlalchemy import Delete, Insert, Select, Update, bindparam, func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import greenlet_spawn
from uuid_utils.compat import uuid7

from db.models import Item, User, utc_now

Statement = Select[Any] | Insert | Update | Delete


class UserRow(msgspec.Struct, frozen=True):
    """The authenticated caller, as read once per request."""

    id: UUID
    email: str
    is_active: bool
    is_superuser: bool
    full_name: str | None
    hashed_password: str
    token_version: int
    kept_token_digest: str | None
    created_at: datetime


class ItemRow(msgspec.Struct, frozen=True):
    title: str
    description: str | None
    id: UUID
    owner_id: UUID
    created_at: datetime


_ITEM_COLUMNS = (Item.title, Item.description, Item.id, Item.owner_id, Item.created_at)
_NEWEST_FIRST = (Item.created_at.desc(), Item.id.desc())
_USER_COLUMNS = (
    User.id,
    User.email,
    User.is_active,
    User.is_superuser,
    User.full_name,
    User.hashed_password,
    User.token_version,
    User.kept_token_digest,
    User.created_at,
)
USER_BY_ID = select(*_USER_COLUMNS).where(User.id == bindparam("id"))
# The caller with the item a request names: an item id that matches nothing leaves the item columns null.
USER_AND_ITEM = (
    select(*_USER_COLUMNS, *(column.label(f"item_{column.key}") for column in _ITEM_COLUMNS))
    .outerjoin(Item, Item.id == bindparam("item_id"))
    .where(User.id == bindparam("id"))
)
ITEM_BY_ID = select(*_ITEM_COLUMNS).where(Item.id == bindparam("id"))
# One owner's page carries its total (a window over the owner's index range); the unfiltered page of a
# superuser does not, since a window count would read the whole table before the LIMIT.
OWN_ITEMS_PAGE = (
    select(*_ITEM_COLUMNS, func.count().over().label("total"))
    .where(Item.owner_id == bindparam("owner_id"))
    .order_by(*_NEWEST_FIRST)
    .limit(bindparam("limit"))
    .offset(bindparam("skip"))
)
OWN_ITEMS_COUNT = select(func.count()).select_from(Item).where(Item.owner_id == bindparam("owner_id"))
ALL_ITEMS_PAGE = select(*_ITEM_COLUMNS).order_by(*_NEWEST_FIRST).limit(bindparam("limit")).offset(bindparam("skip"))
ALL_ITEMS_COUNT = select(func.count()).select_from(Item)
INSERT_ITEM = insert(Item).values(
    id=bindparam("id"),
    title=bindparam("title"),
    description=bindparam("description"),
    owner_id=bindparam("owner_id"),
    created_at=bindparam("created_at"),
)


class DatabaseUnavailable(ConnectionError):
    """The hot path lost its connection or timed out (answered 503 like the ORM's connection errors)."""


# What a connection the database closed, terminated (`pg_terminate_backend`, a restart) or stopped answering raises:
# an in-flight statement gets the server's shutdown error, the next one finds the connection closed or, if the
# termination notice arrived while it sat in the pool, still consuming that error (InternalClientError).
_CONNECTION_LOST = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
)


def _item(row: Mapping[str, Any], prefix: str = "") -> ItemRow:
    return ItemRow(
        title=row[prefix + "title"],
        description=row[prefix + "description"],
        id=row[prefix + "id"],
        owner_id=row[prefix + "owner_id"],
        created_at=row[prefix + "created_at"],
    )


def _user(row: Mapping[str, Any]) -> UserRow:
    return UserRow(
        id=row["id"],
        email=row["email"],
        is_active=row["is_active"],
        is_superuser=row["is_superuser"],
        full_name=row["full_name"],
        hashed_password=row["hashed_password"],
        token_version=row["token_version"],
        kept_token_digest=row["kept_token_digest"],
        created_at=row["created_at"],
    )


class HotPath:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.native = engine.dialect.driver == "asyncpg"
        self._compiled: dict[int, tuple[str, tuple[str, ...]]] = {}

    def _sql(self, statement: Statement) -> tuple[str, tuple[str, ...]]:
        """The driver's SQL and the order of its parameters (statements here are module constants)."""
        key = id(statement)
        if key not in self._compiled:
            compiled = statement.compile(dialect=self.engine.dialect)
            self._compiled[key] = (compiled.string, tuple(compiled.positiontup or ()))
        return self._compiled[key]

    async def _rows(self, statement: Statement, params: Mapping[str, Any]) -> Sequence[Mapping[str, Any]]:
        if self.native:
            sql, names = self._sql(statement)
            pooled = await self.engine.raw_connection()
            try:
                rows: Sequence[Mapping[str, Any]] = await pooled.driver_connection.fetch(  # type: ignore[union-attr]
                    sql, *(params[name] for name in names)
                )
            except _CONNECTION_LOST as exc:
                # The pool's other connections are as old as this one and likely as dead: invalidate them all, as
                # SQLAlchemy does on a disconnect it sees itself, so each is replaced when next checked out instead
                # of failing a request of its own once the database is back.
                await greenlet_spawn(self.engine.sync_engine.pool._invalidate, pooled, exc)
                raise DatabaseUnavailable(type(exc).__name__) from exc
            except asyncpg.PostgresError:
                await greenlet_spawn(pooled.close)  # the statement failed; its connection is fine
                raise
            except BaseException:
                # Cancelled mid-statement: the connection may be mid-protocol, so it is never handed out again.
                await greenlet_spawn(pooled.invalidate)
                raise
            pooled.close()  # no transaction was opened, so returning it to the pool sends nothing
            return rows
        async with self.engine.connect() as connection:
            result = await connection.execute(statement, dict(params))
            found = [dict(row) for row in result.mappings()] if result.returns_rows else []
            await connection.commit()
        return found

    async def user(self, user_id: UUID) -> UserRow | None:
        rows = await self._rows(USER_BY_ID, {"id": user_id})
        return _user(rows[0]) if rows else None

    async def user_and_item(self, user_id: UUID, item_id: UUID) -> tuple[UserRow | None, ItemRow | None]:
        """Both in one round trip (no item without its user: a missing user answers before a missing item)."""
        rows = await self._rows(USER_AND_ITEM, {"id": user_id, "item_id": item_id})
        if not rows:
            return None, None
        row = rows[0]
        return _user(row), (_item(row, prefix="item_") if row["item_id"] is not None else None)

    async def item(self, item_id: UUID) -> ItemRow | None:
        rows = await self._rows(ITEM_BY_ID, {"id": item_id})
        return _item(rows[0]) if rows else None

    async def items_page(self, owner_id: UUID | None, skip: int, limit: int) -> tuple[list[ItemRow], int]:
        """Newest first, with the total: one round trip for an owner's page that has rows, two otherwise."""
        if owner_id is None:
            rows = await self._rows(ALL_ITEMS_PAGE, {"skip": skip, "limit": limit})
            total = await self._count(ALL_ITEMS_COUNT, {})
            return [_item(row) for row in rows], total
        rows = await self._rows(OWN_ITEMS_PAGE, {"owner_id": owner_id, "skip": skip, "limit": limit})
        if rows:
            return [_item(row) for row in rows], int(rows[0]["total"])
        total = await self._count(OWN_ITEMS_COUNT, {"owner_id": owner_id}) if skip or not limit else 0
        return [], total

    async def _count(self, statement: Statement, params: Mapping[str, Any]) -> int:
        rows = await self._rows(statement, params)
        return int(next(iter(rows[0].values())))

    async def add_item(self, owner_id: UUID, title: str, description: str | None) -> ItemRow:
        item = ItemRow(title=title, description=description, id=uuid7(), owner_id=owner_id, created_at=utc_now())
        await self._rows(INSERT_ITEM, msgspec.structs.asdict(item))
        return item
