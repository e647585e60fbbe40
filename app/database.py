"""The app's database wiring from its settings: engine, sessions (one per request, committed by advanced-alchemy on
2xx) and migrations. Helpers that need no settings live in db/engine.py."""

from __future__ import annotations

from pathlib import Path

from advanced_alchemy.extensions.litestar import (
    AlembicAsyncConfig,
    AsyncSessionConfig,
    EngineConfig,
    SQLAlchemyAsyncConfig,
)
from sqlalchemy import event

from app.config import Settings
from db.engine import TRANSACTION_POOLING_ARGS, enforce_foreign_keys, ensure_sqlite_folder, is_sqlite

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def server_timeouts(command_timeout: float) -> dict[str, str]:
    """PostgreSQL's own limits for a statement and for its wait on a lock, in milliseconds: half the client's
    `command_timeout` below it, at most a second, so that the server cancels the statement (an error on a
    connection that stays healthy, answered 503) before the client's timer gives the connection up, and with it
    every pooled connection (app's executor: a lost connection). A tenth was too little on a loaded machine: the
    cancel's answer arrived after the client's timer. A statement stuck on one locked table thus holds its pooled
    connection for at most that long, and routes that never read the table keep theirs.

    Not sent through PgBouncer in transaction mode (DB_TRANSACTION_POOLING): it refuses startup parameters it does
    not know, and a `SET` would stay on whichever server connection ran it, for other clients; set them there on
    the role (`ALTER ROLE … SET statement_timeout = …`) instead. `command_timeout` still bounds every statement."""
    margin = min(1.0, command_timeout / 2)
    milliseconds = str(max(1, int((command_timeout - margin) * 1000)))
    return {"statement_timeout": milliseconds, "lock_timeout": milliseconds}


def engine_config(settings: Settings) -> EngineConfig:
    url = settings.database_url
    if is_sqlite(url):
        # One file, many readers, one writer: wait for the lock instead of failing.
        return EngineConfig(connect_args={"timeout": 30}, hide_parameters=True)
    # The URL's own options (`?sslmode=require&application_name=…`, translated in app/config.py) win over ours.
    from_url = settings.database_connect_args
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
            **(TRANSACTION_POOLING_ARGS if settings.DB_TRANSACTION_POOLING else {}),
            **from_url,
            "server_settings": {
                "application_name": settings.PROJECT_NAME[:63],
                **({} if settings.DB_TRANSACTION_POOLING else server_timeouts(settings.DB_COMMAND_TIMEOUT)),
                **from_url.get("server_settings", {}),
            },
        },
    )


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
