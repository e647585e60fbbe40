"""Settings parsing: template names and defaults, .env overlay, one clear error per bad value."""

from pathlib import Path

import pytest

from app.config import SQLITE_DEFAULT_URL, SettingsError, load_settings, read_dotenv

LONG_SECRET = "a-secret-key-of-at-least-32-bytes!"


def settings_from(environ: dict[str, str], env_file: Path | None = None):
    return load_settings(environ=environ, env_file=env_file)


def test_defaults_match_the_template() -> None:
    with pytest.warns(UserWarning, match="changethis"):
        settings = settings_from({})
    assert settings.API_V1_STR == "/api/v1"
    assert settings.ACCESS_TOKEN_EXPIRE_MINUTES == 11520
    assert settings.FRONTEND_HOST == "http://localhost:5173"
    assert settings.ENVIRONMENT == "local"
    assert settings.SMTP_TLS is True
    assert settings.SMTP_SSL is False
    assert settings.SMTP_PORT == 587
    assert settings.EMAIL_RESET_TOKEN_EXPIRE_HOURS == 48
    assert settings.database_url == SQLITE_DEFAULT_URL
    assert settings.emails_enabled is False


def test_values_are_converted_from_strings() -> None:
    settings = settings_from(
        {
            "SECRET_KEY": LONG_SECRET,
            "FIRST_SUPERUSER_PASSWORD": "p",
            "ACCESS_TOKEN_EXPIRE_MINUTES": "5",
            "SMTP_TLS": "false",
            "SMTP_HOST": "mail.example.com",
            "EMAILS_FROM_EMAIL": "noreply@example.com",
            "ENVIRONMENT": "staging",
        }
    )
    assert settings.ACCESS_TOKEN_EXPIRE_MINUTES == 5
    assert settings.SMTP_TLS is False
    assert settings.emails_enabled is True
    assert settings.emails_from_name == settings.PROJECT_NAME


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("http://a.example,http://b.example/", ["http://a.example", "http://b.example"]),
        ('["http://a.example", "http://b.example"]', ["http://a.example", "http://b.example"]),
        ("", []),
    ],
)
def test_cors_origins_accept_comma_separated_or_json(value: str, expected: list[str]) -> None:
    settings = settings_from(
        {"BACKEND_CORS_ORIGINS": value, "SECRET_KEY": LONG_SECRET, "FIRST_SUPERUSER_PASSWORD": "p"}
    )
    assert settings.all_cors_origins == [*expected, settings.FRONTEND_HOST]


def test_postgres_parts_build_the_url_and_database_url_wins() -> None:
    parts = {
        "POSTGRES_SERVER": "db",
        "POSTGRES_USER": "app",
        "POSTGRES_PASSWORD": "pw",
        "POSTGRES_DB": "appdb",
        "SECRET_KEY": LONG_SECRET,
        "FIRST_SUPERUSER_PASSWORD": "p",
    }
    assert settings_from(parts).database_url == "postgresql+asyncpg://app:pw@db:5432/appdb"
    explicit = "sqlite+aiosqlite:///elsewhere.db"
    assert settings_from({**parts, "DATABASE_URL": explicit}).database_url == explicit


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ACCESS_TOKEN_EXPIRE_MINUTES", "soon"),
        ("ENVIRONMENT", "prod"),
        ("SMTP_PORT", "25x"),
        ("BACKEND_CORS_ORIGINS", "[not json"),
        ("BACKEND_CORS_ORIGINS", "[1, 2]"),
        ("SMTP_TLS", "maybe"),
    ],
)
def test_a_malformed_value_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as error:
        settings_from({name: value, "SECRET_KEY": LONG_SECRET, "FIRST_SUPERUSER_PASSWORD": "p"})
    assert str(error.value).startswith(f"{name}:")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("name", ["SECRET_KEY", "POSTGRES_PASSWORD", "FIRST_SUPERUSER_PASSWORD"])
def test_changethis_is_fatal_outside_local(name: str) -> None:
    environ = {
        "SECRET_KEY": LONG_SECRET,
        "FIRST_SUPERUSER_PASSWORD": "p",
        "ENVIRONMENT": "production",
        name: "changethis",
    }
    with pytest.raises(SettingsError, match=name):
        settings_from(environ)


def test_changethis_only_warns_in_local() -> None:
    with pytest.warns(UserWarning, match="SECRET_KEY"):
        settings = settings_from({"SECRET_KEY": "changethis", "FIRST_SUPERUSER_PASSWORD": "p"})
    assert settings.SECRET_KEY == "changethis"


def test_dotenv_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "# comment\nENVIRONMENT=local  # inline comment\nPROJECT_NAME='From Dotenv'\n"
        "export SMTP_PORT=2525\nSECRET_KEY=file-secret\nFIRST_SUPERUSER_PASSWORD=p\n"
    )
    settings = settings_from({"SECRET_KEY": "env-secret"}, env_file)
    assert settings.PROJECT_NAME == "From Dotenv"
    assert settings.ENVIRONMENT == "local"
    assert settings.SMTP_PORT == 2525
    assert settings.SECRET_KEY == "env-secret"


def test_empty_optional_values_mean_unset() -> None:
    settings = settings_from(
        {"SENTRY_DSN": "", "SMTP_HOST": "", "SECRET_KEY": LONG_SECRET, "FIRST_SUPERUSER_PASSWORD": "p"}
    )
    assert settings.SENTRY_DSN is None
    assert settings.SMTP_HOST is None


def test_startup_stops_with_one_line_naming_the_variable() -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", "from app.config import get_settings; get_settings()"],
        env={"PATH": "/usr/bin:/bin", "ACCESS_TOKEN_EXPIRE_MINUTES": "soon", "PYTHONPATH": "."},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("Configuration error: ACCESS_TOKEN_EXPIRE_MINUTES:")


@pytest.mark.parametrize("environment", ["staging", "production"])
def test_a_short_secret_key_is_fatal_outside_local(environment: str) -> None:
    environ = {"SECRET_KEY": "x" * 31, "FIRST_SUPERUSER_PASSWORD": "p", "ENVIRONMENT": environment}
    with pytest.raises(SettingsError, match=r"^SECRET_KEY: 31 bytes is too short") as error:
        settings_from(environ)
    assert "\n" not in str(error.value)
    assert settings_from({**environ, "SECRET_KEY": "x" * 32}).SECRET_KEY == "x" * 32


def test_a_short_secret_key_only_warns_in_local() -> None:
    with pytest.warns(UserWarning, match="SECRET_KEY: 5 bytes is too short"):
        settings_from({"SECRET_KEY": "short", "FIRST_SUPERUSER_PASSWORD": "p"})


@pytest.mark.parametrize("environment", ["staging", "production"])
def test_the_cheapest_password_hashes_are_fatal_outside_local(environment: str) -> None:
    environ = {"SECRET_KEY": "x" * 32, "FIRST_SUPERUSER_PASSWORD": "p", "ENVIRONMENT": environment}
    with pytest.raises(SettingsError, match=r"^PASSWORD_HASH_PROFILE: CHEAPEST hashes passwords"):
        settings_from({**environ, "PASSWORD_HASH_PROFILE": "CHEAPEST"})
    assert settings_from(environ).PASSWORD_HASH_PROFILE == "RFC_9106_LOW_MEMORY"


def test_the_cheapest_password_hashes_only_warn_in_local() -> None:
    with pytest.warns(UserWarning, match="PASSWORD_HASH_PROFILE: CHEAPEST hashes passwords"):
        settings_from({"SECRET_KEY": "x" * 32, "FIRST_SUPERUSER_PASSWORD": "p", "PASSWORD_HASH_PROFILE": "CHEAPEST"})


def env_file_values(path: Path) -> dict[str, str]:
    """What `podman run --env-file` / `docker run --env-file` pass: `KEY=VALUE` verbatim (quotes and `#` included),
    blank lines and lines starting with `#` skipped."""
    lines = [line for line in path.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return dict(line.partition("=")[::2] for line in lines)


def test_env_example_reads_the_same_as_a_dotenv_and_as_a_container_env_file() -> None:
    example = Path(__file__).resolve().parent.parent / ".env.example"
    verbatim = env_file_values(example)
    assert verbatim == read_dotenv(example)
    with pytest.warns(UserWarning, match="changethis"):  # its dev secrets, as in `local` they only warn
        settings = settings_from(verbatim)
    assert settings.ENVIRONMENT == "local"
    assert settings.PROJECT_NAME == "Full Stack FastAPI Project"
    assert settings.BACKEND_CORS_ORIGINS == ["http://localhost", "http://localhost:5173"]
