"""Database wiring: engine, sessions (one per request, committed by advanced-alchemy on 2xx) and migrations."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from uuid import uuid4

from advanced_alchemy.extensions.litestar import (
    AlembicAsyncConfig,
    AsyncSessionConfig,
    EngineConfig,
    SQLAlchemyAsyncConfig,
)
from advanced_alchemy.types import GUID
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def engine_config(settings: Settings) -> EngineConfig:
    url = settings.database_url
    if is_sqlite(url):
        # One file, many readers, one writer: wait for the lock instead of failing.
        return EngineConfig(connect_args={"timeout": 30}, hide_parameters=True)
    return EngineConfig(
        # A statement's error message (logged, sent to Sentry) must not carry its values: hashes, addresses.
        hide_parameters=True,
        pool_size=settings.DB_POOL_SIZE,
        # A fixed pool: overflow connections are closed on return and reopened at the next burst (bench/ saw
        # hundreds a minute, each a handshake in some request's latency); a request waits for a free one instead.
        max_overflow=0,
        pool_timeout=max(1, round(settings.DB_CONNECT_TIMEOUT)),
        pool_pre_ping=False,
        connect_args={
            "timeout": settings.DB_CONNECT_TIMEOUT,
            "command_timeout": settings.DB_COMMAND_TIMEOUT,
            "server_settings": {"application_name": settings.PROJECT_NAME[:63]},
            **(TRANSACTION_POOLING_ARGS if settings.DB_TRANSACTION_POOLING else {}),
        },
    )


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


def ensure_sqlite_folder(url: str) -> None:
    """The embedded default lives in a file under a folder that may not exist yet."""
    database = make_url(url).database
    if is_sqlite(url) and database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)


def enforce_foreign_keys(dbapi_connection: Any, _: Any) -> None:
    """SQLite leaves foreign keys unchecked (and `ON DELETE CASCADE` undone) unless each connection asks."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def sqlalchemy_config(settings: Settings) -> SQLAlchemyAsyncConfig:
    url = settings.database_url
    ensure_sqlite_folder(url)
    config = SQLAlchemyAsyncConfig(
        connection_string=url,
        engine_config=engine_config(settings),
        session_config=AsyncSessionConfig(expire_on_commit=False),
        before_send_handler="autocommit",
        alembic_config=AlembicAsyncConfig(
            script_location=str(MIGRATIONS_DIR),
            version_table_name="alembic_version",
            compare_type=True,
            render_as_batch=is_sqlite(url),
        ),
    )
    if is_sqlite(url):
        event.listen(config.get_engine().sync_engine, "connect", enforce_foreign_keys)
    return config


def compare_type(
    context: Any, inspected_column: Any, metadata_column: Any, inspected_type: Any, metadata_type: Any
) -> bool | None:
    """Alembic type comparison. SQLite reflects advanced-alchemy's GUID (stored as BINARY(16)) as NUMERIC, which
    is no real difference; everything else uses alembic's default comparison."""
    if context.dialect.name == "sqlite" and isinstance(metadata_type, GUID):
        return False
    return None


async def ping(session: AsyncSession, seconds: float) -> None:
    """`SELECT 1`, within `seconds` (a `TimeoutError` otherwise, which the error handlers answer 503)."""
    async with asyncio.timeout(seconds):
        await session.execute(text("SELECT 1"))
