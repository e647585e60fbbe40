"""Admin commands, plugged into the Litestar CLI: `litestar --app app.main:create_app <command>`."""

from __future__ import annotations

import asyncio
import time

import click
import structlog
from advanced_alchemy.alembic.commands import AlembicCommands
from advanced_alchemy.extensions.litestar import SQLAlchemyAsyncConfig
from litestar import Litestar
from litestar.plugins import CLIPluginProtocol
from sqlalchemy import text

from app.config import Settings
from app.security import hash_password
from db.seed import ensure_first_superuser

log = structlog.get_logger("app.cli")


async def wait_for_database(config: SQLAlchemyAsyncConfig, attempts: int = 10, first_delay: float = 0.5) -> None:
    """Containers often start before their database: retry with exponential backoff, then give up loudly."""
    engine = config.get_engine()
    delay = first_delay
    for attempt in range(1, attempts + 1):
        try:
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except Exception as exc:
            if attempt == attempts:
                raise click.ClickException(f"database not reachable after {attempts} attempts: {exc}") from exc
            log.warning("database not ready", attempt=attempt, of=attempts, retry_in_s=delay, error=str(exc)[:200])
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        else:
            log.info("database ready", attempt=attempt)
            return
        finally:
            await engine.dispose()


def migrate(config: SQLAlchemyAsyncConfig) -> None:
    """Upgrade the schema to the newest revision (alembic, through advanced-alchemy)."""
    started = time.perf_counter()
    AlembicCommands(sqlalchemy_config=config).upgrade("head")
    log.info("migrations applied", duration_ms=round((time.perf_counter() - started) * 1000))


async def create_first_superuser(config: SQLAlchemyAsyncConfig, settings: Settings) -> bool:
    async with config.get_session() as session:
        created = await ensure_first_superuser(
            session, settings.FIRST_SUPERUSER, await hash_password(settings.FIRST_SUPERUSER_PASSWORD)
        )
    await config.get_engine().dispose()
    log.info("first superuser " + ("created" if created else "already exists"), email=settings.FIRST_SUPERUSER)
    return created


def prestart(config: SQLAlchemyAsyncConfig, settings: Settings) -> None:
    asyncio.run(wait_for_database(config))
    migrate(config)
    asyncio.run(create_first_superuser(config, settings))


def _config(app: Litestar) -> tuple[SQLAlchemyAsyncConfig, Settings]:
    settings: Settings = app.state.settings
    return app.state.db_config, settings


class AdminCLIPlugin(CLIPluginProtocol):
    def on_cli_init(self, cli: click.Group) -> None:
        @cli.command(name="prestart", help="Wait for the database, migrate it, create the first superuser.")
        def prestart_command(app: Litestar) -> None:
            prestart(*_config(app))

        @cli.command(name="create-superuser", help="Create FIRST_SUPERUSER unless that email exists.")
        def create_superuser_command(app: Litestar) -> None:
            db_config, settings = _config(app)
            asyncio.run(create_first_superuser(db_config, settings))
