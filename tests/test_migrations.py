"""The migrations build the schema the models describe, on both engines, and nothing else."""

from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import AsyncEngine

from app.cli import create_first_superuser, migrate
from app.database import sqlalchemy_config
from db.engine import compare_type
from db.models import metadata
from tests.conftest import MIGRATIONS_HEAD, Database, make_settings, run


def autogenerate_diff(database: Database) -> list[Any]:
    async def go(engine: AsyncEngine) -> list[Any]:
        async with engine.connect() as connection:
            return await connection.run_sync(
                lambda sync: compare_metadata(
                    MigrationContext.configure(sync, opts={"compare_type": compare_type}), metadata
                )
            )

    return database.execute(go)


def table_names(database: Database) -> set[str]:
    async def go(engine: AsyncEngine) -> set[str]:
        async with engine.connect() as connection:
            return await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))

    return database.execute(go)


@pytest.mark.filterwarnings("ignore:.*expression-based index:UserWarning", "ignore:.*expression-based index")
def test_migrations_reach_head_with_no_diff_against_the_models(database: Database) -> None:
    assert {"user", "item", "alembic_version"} <= table_names(database)
    assert database.scalar("SELECT version_num FROM alembic_version") == MIGRATIONS_HEAD
    assert autogenerate_diff(database) == []


@pytest.mark.filterwarnings("ignore:.*expression-based index:UserWarning", "ignore:.*expression-based index")
def test_a_model_change_without_a_migration_is_detected(database: Database) -> None:
    from sqlalchemy import Column, String

    extra = Column("nickname", String(50), nullable=True)
    table = metadata.tables["user"]
    table.append_column(extra)
    try:
        diff = autogenerate_diff(database)
    finally:
        table._columns.remove(extra)
    assert any(entry[0] == "add_column" and entry[3].name == "nickname" for entry in diff)


def test_upgrading_twice_and_seeding_twice_is_harmless(database: Database) -> None:
    settings = make_settings(database.url)
    config = sqlalchemy_config(settings)
    users_before = database.scalar('SELECT count(*) FROM "user"')
    migrate(config)
    assert run(create_first_superuser(config, settings)) is False
    assert database.scalar('SELECT count(*) FROM "user"') == users_before
    assert database.scalar("SELECT count(*) FROM \"user\" WHERE is_superuser AND email = 'admin@example.com'") == 1
