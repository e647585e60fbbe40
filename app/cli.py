"""Admin commands, plugged into the Litestar CLI: `litestar --app app.main:create_app <command>`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from uuid import UUID

import asyncpg
import click
import structlog
from advanced_alchemy.alembic.commands import AlembicCommands
from advanced_alchemy.extensions.litestar import SQLAlchemyAsyncConfig
from alembic.script import ScriptDirectory
from litestar import Litestar
from litestar.plugins import CLIPluginProtocol
from sqlalchemy import text

from app.config import Settings
from app.database import MIGRATIONS_DIR
from app.security import passwords
from app.validation import InvalidEmail, normalize_email
from db.adopt import ADOPTED_REVISION, AdoptionError, Plan, plan, rename_user_email
from db.seed import ensure_first_superuser

log = structlog.get_logger("app.cli")

# The database does not exist, or the role or its password is wrong: waiting longer changes nothing.
_NO_RETRY_FIXES = (asyncpg.InvalidCatalogNameError, asyncpg.InvalidAuthorizationSpecificationError)


async def wait_for_database(config: SQLAlchemyAsyncConfig, attempts: int = 10, first_delay: float = 0.5) -> None:
    """Containers often start before their database: retry with exponential backoff, then give up loudly."""
    engine = config.get_engine()
    delay = first_delay
    for attempt in range(1, attempts + 1):
        try:
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except _NO_RETRY_FIXES as exc:
            raise click.ClickException(f"database refused the connection: {exc}") from exc
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
    hashed_password = await passwords(settings.PASSWORD_HASH_PROFILE).hash(settings.FIRST_SUPERUSER_PASSWORD)
    async with config.get_session() as session:
        created = await ensure_first_superuser(session, settings.FIRST_SUPERUSER, hashed_password)
    await config.get_engine().dispose()
    log.info("first superuser " + ("created" if created else "already exists"), email=settings.FIRST_SUPERUSER)
    return created


def prestart(config: SQLAlchemyAsyncConfig, settings: Settings) -> None:
    asyncio.run(wait_for_database(config))
    migrate(config)
    asyncio.run(create_first_superuser(config, settings))


async def adoption_plan(config: SQLAlchemyAsyncConfig) -> Plan | None:
    """What adopting the database would do, read in a read-only transaction; None when it is not the template's."""
    engine = config.get_engine()
    try:
        async with engine.connect() as connection:
            if connection.dialect.name == "postgresql":
                await connection.exec_driver_sql("SET TRANSACTION READ ONLY")
            return await connection.run_sync(plan)
    except AdoptionError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        await engine.dispose()


def describe(adoption: Plan) -> str:
    later = [
        script.revision for script in ScriptDirectory(str(MIGRATIONS_DIR)).iterate_revisions("head", ADOPTED_REVISION)
    ]
    lines = [
        f"This database was created by the full-stack-fastapi-template (its revision {adoption.revision}).",
        "Adopting it does, in one transaction:",
        *(f"  {number}. {step.description}" for number, step in enumerate(adoption.steps, 1)),
    ]
    if later:
        lines.append(f"  then this service's migrations after {ADOPTED_REVISION}: {', '.join(reversed(later))}")
    return "\n".join(lines)


def adopt(config: SQLAlchemyAsyncConfig, check: bool) -> None:
    adoption = asyncio.run(adoption_plan(config))
    if adoption is None:
        click.echo("Nothing to adopt: the template did not create this database, or it is adopted already.")
        return
    click.echo(describe(adoption))
    if check:
        click.echo("Nothing was changed (--check).")
        return
    # The very path prestart takes: the migration environment adopts, then applies the later revisions.
    migrate(config)
    click.echo("Adopted.")


async def rename_email(config: SQLAlchemyAsyncConfig, user_id: UUID, new_email: str) -> str:
    engine = config.get_engine()
    try:
        async with engine.begin() as connection:
            return await connection.run_sync(rename_user_email, user_id, new_email)
    except AdoptionError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        await engine.dispose()


@contextmanager
def plain_errors() -> Iterator[None]:
    """rich-click draws an error in a box wrapped at the terminal's width: an operator (and a log collector) gets
    the message as it is instead, one line when it is one line."""
    try:
        yield
    except click.ClickException as exc:
        click.echo(f"Error: {exc.format_message()}", err=True)
        raise click.exceptions.Exit(exc.exit_code) from None


def _config(app: Litestar) -> tuple[SQLAlchemyAsyncConfig, Settings]:
    settings: Settings = app.state.settings
    return app.state.db_config, settings


class AdminCLIPlugin(CLIPluginProtocol):
    def on_cli_init(self, cli: click.Group) -> None:
        @cli.command(name="prestart", help="Wait for the database, migrate it, create the first superuser.")
        def prestart_command(app: Litestar) -> None:
            with plain_errors():
                prestart(*_config(app))

        @cli.command(name="create-superuser", help="Create FIRST_SUPERUSER unless that email exists.")
        def create_superuser_command(app: Litestar) -> None:
            db_config, settings = _config(app)
            asyncio.run(create_first_superuser(db_config, settings))

        @cli.command(
            name="adopt",
            help="Adopt a database created by the full-stack-fastapi-template, as prestart does (--check: only "
            "show the steps).",
        )
        @click.option("--check", is_flag=True, help="Show what would change; change nothing.")
        def adopt_command(app: Litestar, check: bool) -> None:
            with plain_errors():
                adopt(_config(app)[0], check)

        @cli.command(
            name="rename-user-email",
            help="Give a user another email (to resolve emails that differ only in case before adoption).",
        )
        @click.argument("user_id", type=click.UUID)
        @click.argument("new_email")
        def rename_user_email_command(app: Litestar, user_id: UUID, new_email: str) -> None:
            with plain_errors():
                try:
                    new_email = normalize_email(new_email)  # what the API would store for it
                except InvalidEmail as exc:
                    raise click.ClickException(f"{exc}: {new_email}") from None
                old = asyncio.run(rename_email(_config(app)[0], user_id, new_email))
            click.echo(f"User {user_id}: email {old} is now {new_email}.")
