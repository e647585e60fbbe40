"""Settings parsing: template names and defaults, .env overlay, one clear error per bad value."""

from pathlib import Path

import pytest

from app.config import SQLITE_DEFAULT_URL, SettingsError, load_settings, read_dotenv

LONG_SECRET = "a-secret-key-of-at-least-32-bytes!"
FIRST_PASSWORD = "a-first-superuser-password"


def settings_from(environ: dict[str, str], env_file: Path | None = None):
    return load_settings(environ=environ, env_file=env_file)


def test_defaults_match_the_template() -> None:
    with pytest.warns(UserWarning, match="changethis"):
        settings = settings_from({"FASTAPI_ENV": "development"})
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
            "FIRST_SUPERUSER_PASSWORD": FIRST_PASSWORD,
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
        {"BACKEND_CORS_ORIGINS": value, "SECRET_KEY": LONG_SECRET, "FIRST_SUPERUSER_PASSWORD": FIRST_PASSWORD}
    )
    assert settings.all_cors_origins == [*expected, settings.FRONTEND_HOST]


def test_postgres_parts_build_the_url_and_database_url_wins() -> None:
    parts = {
        "POSTGRES_SERVER": "db",
        "POSTGRES_USER": "app",
        "POSTGRES_PASSWORD": "pw",
        "POSTGRES_DB": "appdb",
        "SECRET_KEY": LONG_SECRET,
        "FIRST_SUPERUSER_PASSWORD": FIRST_PASSWORD,
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
        settings_from({name: value, "SECRET_KEY": LONG_SECRET, "FIRST_SUPERUSER_PASSWORD": FIRST_PASSWORD})
    assert str(error.value).startswith(f"{name}:")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("name", ["SECRET_KEY", "POSTGRES_PASSWORD", "FIRST_SUPERUSER_PASSWORD"])
def test_changethis_is_fatal_outside_local(name: str) -> None:
    environ = {
        "SECRET_KEY": LONG_SECRET,
        "FIRST_SUPERUSER_PASSWORD": FIRST_PASSWORD,
        "ENVIRONMENT": "production",
        name: "changethis",
    }
    with pytest.raises(SettingsError, match=name):
        settings_from(environ)


def test_changethis_only_warns_in_local() -> None:
    with pytest.warns(UserWarning, match="SECRET_KEY"):
        settings = settings_from(
            {"SECRET_KEY": "changethis", "FIRST_SUPERUSER_PASSWORD": FIRST_PASSWORD, "ENVIRONMENT": "local"}
        )
    assert settings.SECRET_KEY == "changethis"


def test_dotenv_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "# comment\nENVIRONMENT=local  # inline comment\nPROJECT_NAME='From Dotenv'\n"
        "export SMTP_PORT=2525\nSECRET_KEY=file-secret\nFIRST_SUPERUSER_PASSWORD=first-password\n"
    )
    settings = settings_from({"SECRET_KEY": "env-secret"}, env_file)
    assert settings.PROJECT_NAME == "From Dotenv"
    assert settings.ENVIRONMENT == "local"
    assert settings.SMTP_PORT == 2525
    assert settings.SECRET_KEY == "env-secret"


def test_empty_optional_values_mean_unset() -> None:
    settings = settings_from(
        {"SENTRY_DSN": "", "SMTP_HOST": "", "SECRET_KEY": LONG_SECRET, "FIRST_SUPERUSER_PASSWORD": FIRST_PASSWORD}
    )
    assert settings.SENTRY_DSN is None
    assert settings.SMTP_HOST is None


@pytest.mark.system
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
    environ = {"SECRET_KEY": "x" * 31, "FIRST_SUPERUSER_PASSWORD": FIRST_PASSWORD, "ENVIRONMENT": environment}
    with pytest.raises(SettingsError, match=r"^SECRET_KEY: 31 bytes is too short") as error:
        settings_from(environ)
    assert "\n" not in str(error.value)
    assert settings_from({**environ, "SECRET_KEY": "x" * 32}).SECRET_KEY == "x" * 32


def test_a_short_secret_key_only_warns_in_local() -> None:
    with pytest.warns(UserWarning, match="SECRET_KEY: 5 bytes is too short"):
        settings_from({"SECRET_KEY": "short", "FIRST_SUPERUSER_PASSWORD": FIRST_PASSWORD, "FASTAPI_ENV": "development"})


@pytest.mark.parametrize("environment", ["staging", "production"])
def test_the_cheapest_password_hashes_are_fatal_outside_local(environment: str) -> None:
    environ = {"SECRET_KEY": "x" * 32, "FIRST_SUPERUSER_PASSWORD": FIRST_PASSWORD, "ENVIRONMENT": environment}
    with pytest.raises(SettingsError, match=r"^PASSWORD_HASH_PROFILE: CHEAPEST hashes passwords"):
        settings_from({**environ, "PASSWORD_HASH_PROFILE": "CHEAPEST"})
    assert settings_from(environ).PASSWORD_HASH_PROFILE == "RFC_9106_LOW_MEMORY"


def test_the_cheapest_password_hashes_only_warn_in_local() -> None:
    with pytest.warns(UserWarning, match="PASSWORD_HASH_PROFILE: CHEAPEST hashes passwords"):
        settings_from(
            {
                "SECRET_KEY": "x" * 32,
                "FIRST_SUPERUSER_PASSWORD": FIRST_PASSWORD,
                "PASSWORD_HASH_PROFILE": "CHEAPEST",
                "ENVIRONMENT": "local",
            }
        )


def env_file_values(path: Path) -> dict[str, str]:
    """What `podman run --env-file` / `docker run --env-file` pass: `KEY=VALUE` verbatim (quotes and `#` included),
    blank lines and lines starting with `#` skipped."""
    lines = [line for line in path.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return dict(line.partition("=")[::2] for line in lines)


def test_env_example_reads_the_same_as_a_dotenv_and_as_a_container_env_file() -> None:
    example = Path(__file__).resolve().parent.parent / ".env.example"
    verbatim = env_file_values(example)
    assert verbatim == read_dotenv(example)
    with pytest.warns(UserWarning, match="changethis"):  # its dev secrets, as in development they only warn
        settings = settings_from(verbatim)
    assert settings.ENVIRONMENT == "local"
    assert settings.PROJECT_NAME == "Full Stack FastAPI Project"
    assert settings.all_cors_origins == ["http://localhost:5173"]
    assert settings.database_url == SQLITE_DEFAULT_URL
    # Without its first line it is a production configuration, which its dev secrets stop.
    without_development = {key: value for key, value in verbatim.items() if key != "FASTAPI_ENV"}
    with pytest.raises(SettingsError, match="changethis"):
        settings_from(without_development)


# ---------------------------------------------------------------- both generations of the template

SAFE = {"SECRET_KEY": LONG_SECRET, "FIRST_SUPERUSER_PASSWORD": FIRST_PASSWORD}


def test_with_no_environment_named_the_service_is_production() -> None:
    settings = settings_from(SAFE)
    assert settings.ENVIRONMENT == "production"
    assert settings.private_routes_enabled is False
    assert settings.log_json is True


@pytest.mark.parametrize("name", ["SECRET_KEY", "FIRST_SUPERUSER_PASSWORD"])
def test_with_no_environment_named_the_dev_secrets_are_fatal(name: str) -> None:
    with pytest.raises(SettingsError, match=f'^The value of {name} is "changethis"'):
        settings_from({**SAFE, name: "changethis"})


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"FASTAPI_ENV": "development"}, "local"),
        ({"FASTAPI_ENV": "development", "ENVIRONMENT": "local"}, "local"),
        ({"ENVIRONMENT": "local"}, "local"),
        ({"ENVIRONMENT": "staging"}, "staging"),
        ({"ENVIRONMENT": "production"}, "production"),
        ({"FASTAPI_ENV": ""}, "production"),  # empty is unset, as the template reads it
    ],
)
def test_fastapi_env_development_means_environment_local(environ: dict[str, str], expected: str) -> None:
    settings = settings_from({**SAFE, **environ})
    assert (settings.ENVIRONMENT, settings.private_routes_enabled) == (expected, expected == "local")


@pytest.mark.parametrize("environment", ["staging", "production"])
def test_contradicting_environments_are_one_line_naming_both(environment: str) -> None:
    with pytest.raises(SettingsError) as error:
        settings_from({**SAFE, "FASTAPI_ENV": "development", "ENVIRONMENT": environment})
    message = str(error.value)
    assert message.startswith(f"FASTAPI_ENV=development and ENVIRONMENT={environment} contradict each other")
    assert "\n" not in message


def test_fastapi_env_takes_only_development() -> None:
    with pytest.raises(SettingsError, match=r"^FASTAPI_ENV: 'development' or unset \(got 'production'\)$"):
        settings_from({**SAFE, "FASTAPI_ENV": "production"})


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://app:pw@db.example:6432/app",
        "postgres://app:pw@db.example:6432/app",
        "postgresql+psycopg://app:pw@db.example:6432/app",
        "postgresql+psycopg2://app:pw@db.example:6432/app",
        "postgresql+asyncpg://app:pw@db.example:6432/app",
    ],
)
def test_the_template_s_postgres_urls_map_to_asyncpg(url: str) -> None:
    settings = settings_from({**SAFE, "DATABASE_URL": url})
    assert settings.database_url == "postgresql+asyncpg://app:pw@db.example:6432/app"
    assert settings.database_connect_args == {}


def test_libpq_options_become_asyncpg_arguments() -> None:
    url = (
        "postgresql://app:pw@db.example/app?sslmode=require&application_name=accounts&connect_timeout=7"
        "&target_session_attrs=read-write&options=-c%20search_path%3Dapp%20-c%20statement_timeout%3D5000"
    )
    settings = settings_from({**SAFE, "DATABASE_URL": url})
    assert settings.database_url == "postgresql+asyncpg://app:pw@db.example/app"
    assert settings.database_connect_args == {
        "ssl": "require",
        "timeout": 7.0,
        "target_session_attrs": "read-write",
        "server_settings": {"application_name": "accounts", "search_path": "app", "statement_timeout": "5000"},
    }


def test_verifying_modes_make_an_ssl_context_that_verifies() -> None:
    import ssl

    url = "postgresql://app@db.example/app?sslmode=verify-full&sslrootcert=system"
    context = settings_from({**SAFE, "DATABASE_URL": url}).database_connect_args["ssl"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    url = "postgresql://app@db.example/app?sslmode=verify-ca&sslrootcert=system"
    context = settings_from({**SAFE, "DATABASE_URL": url}).database_connect_args["ssl"]
    assert (context.verify_mode, context.check_hostname) == (ssl.CERT_REQUIRED, False)


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("channel_binding=require", "DATABASE_URL: the option 'channel_binding' is not supported"),
        ("gssencmode=disable", "DATABASE_URL: the option 'gssencmode' is not supported"),
        ("sslmode=sometimes", "DATABASE_URL: sslmode must be one of"),
        ("connect_timeout=soon", "DATABASE_URL: connect_timeout must be a number of seconds (got 'soon')"),
        ("sslmode=require&sslrootcert=/no/such/ca.pem", "DATABASE_URL: cannot use the certificate files"),
        ("sslmode=prefer&sslrootcert=/no/such/ca.pem", "DATABASE_URL: certificate files need sslmode=require"),
        ("options=--search_path", "DATABASE_URL: options: only -c name=value settings are supported"),
    ],
)
def test_an_option_we_cannot_honour_is_one_line_naming_it(query: str, says: str) -> None:
    with pytest.raises(SettingsError) as error:
        settings_from({**SAFE, "DATABASE_URL": f"postgresql://app:secret-pw@db.example/app?{query}"})
    message = str(error.value)
    assert message.startswith(says), message
    assert "\n" not in message
    assert "secret-pw" not in message


def test_the_database_url_password_is_checked_like_the_other_secrets() -> None:
    url = "postgresql://postgres:changethis@localhost:5432/app"
    with pytest.raises(SettingsError, match=r'^The value of DATABASE_URL password is "changethis"'):
        settings_from({**SAFE, "DATABASE_URL": url})
    with pytest.warns(UserWarning, match="DATABASE_URL password"):
        settings_from({**SAFE, "DATABASE_URL": url, "FASTAPI_ENV": "development"})
    # The URL's password is the one in use: POSTGRES_PASSWORD (the database container's) is not checked beside it.
    settings_from({**SAFE, "DATABASE_URL": "postgresql://postgres:long-enough@localhost/app"})


def test_dotenv_values_expand_references_as_the_template_s_reader_does(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "POSTGRES_PASSWORD=s3cret-password\n"
        "DATABASE_URL=postgresql://postgres:${POSTGRES_PASSWORD}@localhost:5432/app\n"
        "SMTP_PASSWORD=pa$word\n"
        "SMTP_HOST=${UNSET_VARIABLE:-mail.example.com}\n"
    )
    values = read_dotenv(env_file)
    assert values["DATABASE_URL"] == "postgresql://postgres:s3cret-password@localhost:5432/app"
    # Only `${…}` is a reference, as python-dotenv (the template's reader) has it: a `$` in a password stays.
    assert values["SMTP_PASSWORD"] == "pa$word"
    assert values["SMTP_HOST"] == "mail.example.com"
    settings = settings_from(SAFE, env_file)
    assert settings.database_url == "postgresql+asyncpg://postgres:s3cret-password@localhost:5432/app"


# The variables of the template's own `.env` at 68adb40d (after 0.12.0) and at the June commit f459c20a, as a new
# user has them; the comments are left out.
CURRENT_TEMPLATE_ENV = """\
FASTAPI_ENV=development
PROJECT_NAME="Full Stack FastAPI Project"
SECRET_KEY=changethis
FIRST_SUPERUSER=admin@example.com
FIRST_SUPERUSER_PASSWORD=changethis
SMTP_HOST=localhost
EMAILS_FROM_EMAIL=info@example.com
SMTP_TLS=False
SMTP_PORT=1025
POSTGRES_PASSWORD=changethis
DATABASE_URL=postgresql://postgres:${POSTGRES_PASSWORD}@localhost:5432/app
"""
JUNE_TEMPLATE_ENV = """\
DOMAIN=localhost
FRONTEND_HOST=http://localhost:5173
ENVIRONMENT=local
PROJECT_NAME="Full Stack FastAPI Project"
STACK_NAME=full-stack-fastapi-project
BACKEND_CORS_ORIGINS="http://localhost,http://localhost:5173,https://localhost,https://localhost:5173,http://localhost.tiangolo.com"
SECRET_KEY=changethis
FIRST_SUPERUSER=admin@example.com
FIRST_SUPERUSER_PASSWORD=changethis
SMTP_HOST=
SMTP_USER=
SMTP_PASSWORD=
EMAILS_FROM_EMAIL=info@example.com
SMTP_TLS=True
SMTP_SSL=False
SMTP_PORT=587
POSTGRES_SERVER=localhost
POSTGRES_PORT=5432
POSTGRES_DB=app
POSTGRES_USER=postgres
POSTGRES_PASSWORD=changethis
SENTRY_DSN=
DOCKER_IMAGE_BACKEND=backend
DOCKER_IMAGE_FRONTEND=frontend
"""


def test_the_current_template_s_env_reads_as_development_on_postgresql(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(CURRENT_TEMPLATE_ENV)
    with pytest.warns(UserWarning, match="changethis") as warned:
        settings = settings_from({}, env_file)
    assert {str(warning.message).split(" is ")[0] for warning in warned} == {
        "The value of SECRET_KEY",
        "The value of DATABASE_URL password",
        "The value of FIRST_SUPERUSER_PASSWORD",
    }
    assert settings.ENVIRONMENT == "local"
    assert settings.database_url == "postgresql+asyncpg://postgres:changethis@localhost:5432/app"
    assert (settings.SMTP_HOST, settings.SMTP_PORT, settings.SMTP_TLS) == ("localhost", 1025, False)
    assert settings.all_cors_origins == ["http://localhost:5173"]


def test_the_current_template_s_env_deployed_without_fastapi_env_stops_at_its_dev_secret(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(CURRENT_TEMPLATE_ENV.replace("FASTAPI_ENV=development\n", ""))
    with pytest.raises(SettingsError, match=r'^The value of SECRET_KEY is "changethis"'):
        settings_from({}, env_file)


def test_the_june_template_s_env_reads_as_before(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(JUNE_TEMPLATE_ENV)
    with pytest.warns(UserWarning, match="changethis"):
        settings = settings_from({}, env_file)
    assert settings.ENVIRONMENT == "local"
    assert settings.database_url == "postgresql+asyncpg://postgres:changethis@localhost:5432/app"
    assert settings.SMTP_HOST is None
    assert settings.all_cors_origins[-1] == "http://localhost:5173"
    assert "http://localhost.tiangolo.com" in settings.all_cors_origins


def test_a_frontend_dir_that_does_not_exist_is_one_line(tmp_path: Path) -> None:
    missing = str(tmp_path / "dist")
    with pytest.raises(SettingsError, match=r"^FRONTEND_DIR: '.*dist' is not a folder"):
        settings_from({**SAFE, "FRONTEND_DIR": missing})
    with pytest.warns(UserWarning, match=r"^FRONTEND_DIR: '.*dist' is not a folder"):
        settings_from({**SAFE, "FRONTEND_DIR": missing, "FASTAPI_ENV": "development"})
    (tmp_path / "dist").mkdir()
    assert settings_from({**SAFE, "FRONTEND_DIR": missing}).frontend_dir == Path(missing)


@pytest.mark.parametrize("environment", ["staging", "production"])
@pytest.mark.parametrize(
    ("password", "says"), [("x", "1 characters is too short"), ("y" * 129, "129 characters is too long")]
)
def test_a_first_superuser_password_the_api_would_refuse_is_fatal_outside_local(
    environment: str, password: str, says: str
) -> None:
    environ = {**SAFE, "ENVIRONMENT": environment}
    with pytest.raises(SettingsError) as error:
        settings_from({**environ, "FIRST_SUPERUSER_PASSWORD": password})
    assert str(error.value) == (f"FIRST_SUPERUSER_PASSWORD: {says}: the API takes passwords of 8 to 128 characters")
    assert password not in str(error.value)
    for fine in ("z" * 8, "z" * 128):  # the bounds themselves are passwords the API takes
        settings = settings_from({**environ, "FIRST_SUPERUSER_PASSWORD": fine})
        assert fine == settings.FIRST_SUPERUSER_PASSWORD


def test_a_short_first_superuser_password_only_warns_in_local() -> None:
    with pytest.warns(UserWarning, match="^FIRST_SUPERUSER_PASSWORD: 7 characters is too short"):
        settings = settings_from({**SAFE, "FIRST_SUPERUSER_PASSWORD": "short-7", "FASTAPI_ENV": "development"})
    assert settings.FIRST_SUPERUSER_PASSWORD == "short-7"


def test_the_first_superuser_password_rule_is_the_api_s() -> None:
    from msgspec import inspect

    from app.config import PASSWORD_MAX_LENGTH, PASSWORD_MIN_LENGTH
    from app.schemas import Password

    info = inspect.type_info(Password)
    assert isinstance(info, inspect.StrType)
    assert (info.min_length, info.max_length) == (PASSWORD_MIN_LENGTH, PASSWORD_MAX_LENGTH)
