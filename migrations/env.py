"""Alembic environment (async), driven by advanced-alchemy's AlembicCommands with the app's own engine."""

import asyncio
from typing import TYPE_CHECKING, cast

import click
import structlog
from advanced_alchemy.base import metadata_registry
from alembic import context
from sqlalchemy import pool
from sqlalchemy.ext.asyncio import async_engine_from_config

import db.models  # noqa: F401  (registers the tables on the metadata)
from db.adopt import AdoptionError, adopt
from db.engine import compare_type

if TYPE_CHECKING:
    from advanced_alchemy.alembic.commands import AlembicCommandConfig
    from sqlalchemy.engine import Connection

config = cast("AlembicCommandConfig", context.config)


def configure(**kwargs: object) -> None:
    context.configure(
        target_metadata=metadata_registry.get(config.bind_key),
        compare_type=compare_type if config.compare_type else False,
        version_table=config.version_table_name,
        version_table_schema=config.version_table_schema,
        user_module_prefix=config.user_module_prefix,
        render_as_batch=config.render_as_batch,
        **kwargs,  # type: ignore[arg-type]
    )


def do_run_migrations(connection: "Connection") -> None:
    configure(connection=connection)
    with context.begin_transaction():
        # A database the template created becomes our revision 0002 here, in the same transaction as the
        # revisions after it (alembic reads the current revision when run_migrations starts).
        adopted = adopt(connection)
        if adopted is not None:
            structlog.get_logger("migrations").info(
                "template database adopted",
                template_revision=adopted.revision,
                steps=[step.description for step in adopted.steps],
            )
        context.run_migrations()


async def run_migrations_online() -> None:
    # An engine of its own, without a pool: the app's engine may belong to another event loop.
    engine = async_engine_from_config({"sqlalchemy.url": config.db_url}, prefix="sqlalchemy.", poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    configure(url=config.db_url, literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()
else:
    try:
        asyncio.run(run_migrations_online())
    except AdoptionError as exc:
        # The operator gets the reason and the remedy (prestart, `just migrate`), not a traceback.
        raise click.ClickException(str(exc)) from None
