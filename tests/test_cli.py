"""Start-up resilience: `prestart` waits for the database with bounded, logged retries."""

import click
import pytest

from app.cli import wait_for_database
from app.database import sqlalchemy_config
from app.observability import configure_logging
from tests.conftest import Database, free_port, make_settings, run


def test_waiting_gives_up_after_the_attempts_and_logs_each(capsys: pytest.CaptureFixture[str]) -> None:
    dead = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nothing"
    settings = make_settings(dead)
    configure_logging(settings)  # as the CLI does when it builds the app
    config = sqlalchemy_config(settings)
    with pytest.raises(click.ClickException, match="after 3 attempts"):
        run(wait_for_database(config, attempts=3, first_delay=0.01))
    retries = [line for line in capsys.readouterr().out.splitlines() if "database not ready" in line]
    assert len(retries) == 2
    assert "attempt=1" in retries[0]
    assert "attempt=2" in retries[1]


def test_waiting_returns_once_the_database_answers(database: Database) -> None:
    run(wait_for_database(sqlalchemy_config(make_settings(database.url)), attempts=1))
