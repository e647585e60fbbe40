"""Start-up resilience: `prestart` waits for the database with bounded, logged retries."""

import os
import subprocess
import sys

import click
import pytest

from app.cli import wait_for_database
from app.database import sqlalchemy_config
from app.observability import configure_logging
from tests.conftest import ROOT, Database, free_port, make_settings, run, run_cli


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


def prestart_environment(**environ: str) -> dict[str, str]:
    """What `just serve` gives `litestar prestart` (ENVIRONMENT=staging: logs and errors as in production)."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("COV_", "PYTEST"))},
        "ENVIRONMENT": "staging",
        "SECRET_KEY": "cli-test-secret-key-that-is-long-enough",
        "FIRST_SUPERUSER_PASSWORD": "cli-test-password",
        "POSTGRES_PASSWORD": "unused-but-not-changethis",
        **environ,
    }


def prestart_command(**environ: str) -> subprocess.CompletedProcess[str]:
    """`litestar prestart` in a process of its own, as `just serve` runs it."""
    command = [sys.executable, "-m", "litestar", "--app", "app.main:create_app", "prestart"]
    return subprocess.run(
        command, cwd=ROOT, env=prestart_environment(**environ), capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("postgresql+asyncpg://postgres@127.0.0.1:5432/no_such_database", 'database "no_such_database" does not exist'),
        ("postgresql+asyncpg://no_such_role@127.0.0.1:5432/postgres", 'role "no_such_role" does not exist'),
    ],
)
@pytest.mark.system
def test_a_database_no_retry_can_fix_stops_at_once_with_one_line(url: str, says: str) -> None:
    done = prestart_command(DATABASE_URL=url)
    assert done.returncode != 0
    assert done.stderr.strip() == f"Error: database refused the connection: {says}", done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert "database not ready" not in done.stdout  # no retry (each logs this line; they took 36 s in all)


@pytest.mark.system
def test_prestart_stops_with_one_line_on_a_malformed_database_url_as_a_process() -> None:
    done = prestart_command(DATABASE_URL="postgresql+asyncpg://user:secret@host:port/app")
    (line,) = (done.stdout + done.stderr).strip().splitlines()
    assert done.returncode != 0
    assert line.startswith("Configuration error: DATABASE_URL: not a database URL"), line
    assert "secret" not in line


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("postgresql+asyncpg://user:secret@host:port/app", "DATABASE_URL: not a database URL"),
        ("not a url", "DATABASE_URL: not a database URL"),
        ("mysql+nodriver://user@host/app", "DATABASE_URL: unknown database driver 'mysql+nodriver'"),
        ("sqlite:///data/app.db", "DATABASE_URL: 'sqlite' is not an async driver"),
        ("postgresql://user@host/app?sslmode=sometimes", "DATABASE_URL: sslmode must be one of"),
    ],
)
def test_a_malformed_database_url_is_one_line_naming_the_variable(url: str, says: str) -> None:
    """The same command in this process (the process above shows the line is all it prints)."""
    done = run_cli(prestart_environment(DATABASE_URL=url), "prestart")
    lines = done.output.strip().splitlines()
    assert done.exit_code != 0
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"Configuration error: {says}"), lines
    assert "secret" not in lines[0]


@pytest.mark.system
def test_a_first_superuser_password_the_api_would_refuse_stops_prestart_with_one_line() -> None:
    done = prestart_command(FIRST_SUPERUSER_PASSWORD="x", DATABASE_URL=f"sqlite+aiosqlite:///{ROOT}/no-such.db")
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert done.returncode != 0
    assert lines == [
        "Configuration error: FIRST_SUPERUSER_PASSWORD: 1 characters is too short: the API takes passwords of 8 to "
        "128 characters"
    ], lines
    assert not (ROOT / "no-such.db").exists()  # stopped before any database work
