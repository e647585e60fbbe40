"""Database helpers that need nothing of the app: which backend a URL names, the SQLite file's folder, SQLite's
foreign keys, the driver arguments behind PgBouncer, a liveness ping, and alembic's type comparison (used by
migrations/env.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from uuid import uuid4

from advanced_alchemy.types import GUID
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def ensure_sqlite_folder(url: str) -> None:
    """The embedded default lives in a file under a folder that may not exist yet."""
    database = make_url(url).database
    if is_sqlite(url) and database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)


def _unique_statement_name() -> str:
    return f"__asyncpg_{uuid4().hex}__"


# Behind PgBouncer in transaction mode each transaction may run on another server connection, where a statement
# prepared and named on an earlier one does not exist (and its name may be taken): no statement caches, so the
# fast path's statements go unnamed, and SQLAlchemy's own get names no other statement has.
TRANSACTION_POOLING_ARGS: dict[str, Any] = {
    "statement_cache_size": 0,
    "prepared_statement_cache_size": 0,
    "prepared_statement_name_func": _unique_statement_name,
}


def enforce_foreign_keys(dbapi_connection: Any, _: Any) -> None:
    """SQLite leaves foreign keys unchecked (and `ON DELETE CASCADE` undone) unless each connection asks."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


async def ping(session: AsyncSession, seconds: float) -> None:
    """`SELECT 1`, within `seconds` (a `TimeoutError` otherwise, which the error handlers answer 503)."""
    async with asyncio.timeout(seconds):
        await session.execute(text("SELECT 1"))


def compare_type(
    context: Any, inspected_column: Any, metadata_column: Any, inspected_type: Any, metadata_type: Any
) -> bool | None:
    """Alembic type comparison. SQLite reflects advanced-alchemy's GUID (stored as BINARY(16)) as NUMERIC, which
    is no real difference; everything else uses alembic's default comparison."""
    if context.dialect.name == "sqlite" and isinstance(metadata_type, GUID):
        return False
    return None
