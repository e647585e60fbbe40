"""Settings: read once from the environment (and a `.env` file), validated, immutable."""

from __future__ import annotations

import json
import os
import sys
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

DEV_SECRET = "changethis"
SQLITE_DEFAULT_URL = "sqlite+aiosqlite:///data/app.db"
DEFAULT_FRONTEND_DIR = Path(__file__).parent / "frontend"


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    # --- the template's settings, same names and defaults ---
    PROJECT_NAME: str = "Full Stack FastAPI Project"
    API_V1_STR: str = "/api/v1"
    SECRET_KEY: str = DEV_SECRET
    ACCESS_TOKEN_EXPIRE_MINUTES: int = 60 * 24 * 8
    FRONTEND_HOST: str = "http://localhost:5173"
    ENVIRONMENT: Literal["local", "staging", "production"] = "local"
    BACKEND_CORS_ORIGINS: list[str] = []
    SENTRY_DSN: str | None = None
    POSTGRES_SERVER: str = ""
    POSTGRES_PORT: int = 5432
    POSTGRES_USER: str = "postgres"
    POSTGRES_PASSWORD: str = ""
    POSTGRES_DB: str = ""
    SMTP_TLS: bool = True
    SMTP_SSL: bool = False
    SMTP_PORT: int = 587
    SMTP_HOST: str | None = None
    SMTP_USER: str | None = None
    SMTP_PASSWORD: str | None = None
    EMAILS_FROM_EMAIL: str | None = None
    EMAILS_FROM_NAME: str | None = None
    EMAIL_RESET_TOKEN_EXPIRE_HOURS: int = 48
    EMAIL_TEST_USER: str = "test@example.com"
    FIRST_SUPERUSER: str = "admin@example.com"
    FIRST_SUPERUSER_PASSWORD: str = DEV_SECRET
    # --- ours ---
    DATABASE_URL: str | None = None
    DB_POOL_SIZE: int = 20
    DB_CONNECT_TIMEOUT: float = 3.0
    DB_COMMAND_TIMEOUT: float = 5.0
    DB_TRANSACTION_POOLING: bool = False
    LOG_LEVEL: str = "INFO"
    LOG_JSON: bool | None = None
    MAX_REQUEST_BODY_BYTES: int = 1024 * 1024
    MAX_REQUEST_HEADER_BYTES: Annotated[int, msgspec.Meta(ge=1024)] = 32 * 1024
    REQUEST_READ_TIMEOUT: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    REDIS_URL: str | None = None
    REDIS_NAMESPACE: str = "accounts-api"
    RATE_LIMIT_ENABLED: bool = True
    LOGIN_FAILURES_PER_ACCOUNT_PER_MINUTE: int = 5
    LOGIN_FAILURES_PER_CLIENT_PER_MINUTE: int = 100
    RECOVERY_PER_EMAIL_PER_HOUR: int = 3
    RECOVERY_PER_CLIENT_PER_HOUR: int = 30
    SIGNUP_PER_CLIENT_PER_HOUR: int = 0
    # Prometheus metrics at /metrics (README "Operating"): off unless asked for, as they name routes and counts.
    METRICS_ENABLED: bool = False
    # Where uvicorn's worker processes keep their metric files (a folder per server start is made in it).
    METRICS_DIR: str | None = None
    BUILD_COMMIT: str | None = None
    # OpenTelemetry traces, exported over OTLP/HTTP when the endpoint is set (the standard OTEL_* variable names;
    # the exporter reads its other OTEL_EXPORTER_OTLP_* variables, headers say, itself).
    OTEL_EXPORTER_OTLP_ENDPOINT: str | None = None
    OTEL_SERVICE_NAME: str = "accounts-api"
    # argon2's parameters for new password hashes (app/security.py). CHEAPEST makes a test suite's thousands of
    # logins cheap, and makes hashes cheap to crack: a warning in local, refused elsewhere.
    PASSWORD_HASH_PROFILE: Literal["RFC_9106_LOW_MEMORY", "CHEAPEST"] = "RFC_9106_LOW_MEMORY"
    # The built frontend served at `/` (the template's Vite build writes it to app/frontend). Unset: app/frontend
    # when it is there, else no frontend; set: it must exist.
    FRONTEND_DIR: str | None = None

    @property
    def database_url(self) -> str:
        """`DATABASE_URL` wins; then the template's `POSTGRES_*` parts; then the embedded SQLite file."""
        if self.DATABASE_URL:
            return self.DATABASE_URL
        if self.POSTGRES_SERVER:
            auth = self.POSTGRES_USER + (f":{self.POSTGRES_PASSWORD}" if self.POSTGRES_PASSWORD else "")
            return f"postgresql+asyncpg://{auth}@{self.POSTGRES_SERVER}:{self.POSTGRES_PORT}/{self.POSTGRES_DB}"
        return SQLITE_DEFAULT_URL

    @property
    def emails_enabled(self) -> bool:
        return bool(self.SMTP_HOST and self.EMAILS_FROM_EMAIL)

    @property
    def emails_from_name(self) -> str:
        return self.EMAILS_FROM_NAME or self.PROJECT_NAME

    @property
    def all_cors_origins(self) -> list[str]:
        return [origin.rstrip("/") for origin in self.BACKEND_CORS_ORIGINS] + [self.FRONTEND_HOST]

    @property
    def frontend_dir(self) -> Path | None:
        """The folder of the built frontend to serve, or None when there is none."""
        if self.FRONTEND_DIR:
            return Path(self.FRONTEND_DIR)
        return DEFAULT_FRONTEND_DIR if DEFAULT_FRONTEND_DIR.is_dir() else None

    @property
    def log_json(self) -> bool:
        return self.LOG_JSON if self.LOG_JSON is not None else self.ENVIRONMENT != "local"


def read_dotenv(path: Path) -> dict[str, str]:
    """Minimal `.env` reader: KEY=VALUE lines, `#` comments (also after unquoted values), optional quotes,
    optional `export`."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        else:
            value = value.split(" #", 1)[0].strip()
        values[key.strip()] = value
    return values


def _parse_cors(value: str) -> list[str]:
    value = value.strip()
    if value.startswith("["):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as exc:
            raise SettingsError(f"BACKEND_CORS_ORIGINS: not a valid JSON list ({exc.msg})") from None
        if not isinstance(parsed, list) or not all(isinstance(item, str) for item in parsed):
            raise SettingsError("BACKEND_CORS_ORIGINS: the JSON value must be a list of strings")
        return parsed
    return [item.strip() for item in value.split(",") if item.strip()]


def load_settings(environ: dict[str, str] | None = None, env_file: Path | None = Path(".env")) -> Settings:
    """Build settings from a `.env` file overlaid by the real environment (the environment wins)."""
    raw: dict[str, str] = read_dotenv(env_file) if env_file else {}
    raw.update(os.environ if environ is None else environ)
    fields = set(Settings.__struct_fields__)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in fields:
            continue
        if key == "BACKEND_CORS_ORIGINS":
            values[key] = _parse_cors(value)
        elif value == "" and key in _OPTIONAL_FIELDS:
            values[key] = None
        else:
            values[key] = value
    try:
        settings = msgspec.convert(values, Settings, strict=False)
    except msgspec.ValidationError as exc:
        message = str(exc)
        name = message.rsplit("$.", 1)[-1].split("[")[0].rstrip("`") if "$." in message else "settings"
        reason = message.split(" - at ")[0]
        raise SettingsError(f"{name}: {reason} (got {raw.get(name, '')!r})") from None
    _check_database_url(settings)
    _check_secrets(settings)
    _check_frontend_dir(settings)
    return settings


def _check_frontend_dir(settings: Settings) -> None:
    if settings.FRONTEND_DIR and not Path(settings.FRONTEND_DIR).is_dir():
        message = f"FRONTEND_DIR: {settings.FRONTEND_DIR!r} is not a folder (unset it to serve no frontend)"
        if settings.ENVIRONMENT == "local":
            warnings.warn(message, stacklevel=3)
        else:
            raise SettingsError(message)


def _check_database_url(settings: Settings) -> None:
    """A URL SQLAlchemy cannot parse, or whose driver is unknown or not async, fails here in one line, not as a
    traceback from the first connection. The message never repeats the URL: it may hold a password."""
    name = "DATABASE_URL" if settings.DATABASE_URL else "POSTGRES_SERVER/POSTGRES_PORT"
    url = settings.database_url
    scheme = url.split(":", 1)[0]
    try:
        dialect = make_url(url).get_dialect()
    except NoSuchModuleError:
        raise SettingsError(f"{name}: unknown database driver {scheme!r}") from None
    except (ArgumentError, ValueError):
        raise SettingsError(f"{name}: not a database URL (e.g. postgresql+asyncpg://user@host:5432/app)") from None
    if not dialect.is_async:
        raise SettingsError(
            f"{name}: {scheme!r} is not an async driver, use postgresql+asyncpg:// or sqlite+aiosqlite://"
        )


_OPTIONAL_FIELDS = {
    name
    for name, default in zip(Settings.__struct_fields__, Settings.__struct_defaults__, strict=False)
    if default is None
}


# HS256 keys shorter than its 32-byte output make the signature easier to brute-force (RFC 7518 3.2).
MIN_SECRET_KEY_BYTES = 32


def _check_secrets(settings: Settings) -> None:
    problems = [
        f'The value of {name} is "{DEV_SECRET}", for security, please change it.'
        for name in ("SECRET_KEY", "POSTGRES_PASSWORD", "FIRST_SUPERUSER_PASSWORD")
        if getattr(settings, name) == DEV_SECRET
    ]
    key_bytes = len(settings.SECRET_KEY.encode())
    if settings.SECRET_KEY != DEV_SECRET and key_bytes < MIN_SECRET_KEY_BYTES:
        problems.append(
            f"SECRET_KEY: {key_bytes} bytes is too short to sign tokens, use at least {MIN_SECRET_KEY_BYTES} "
            "(e.g. the output of `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
        )
    if settings.PASSWORD_HASH_PROFILE == "CHEAPEST":
        problems.append("PASSWORD_HASH_PROFILE: CHEAPEST hashes passwords with argon2's minimum, for tests only")
    for message in problems:
        if settings.ENVIRONMENT == "local":
            warnings.warn(message, stacklevel=3)
        else:
            raise SettingsError(message)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings. A bad value stops start-up with one line naming the variable."""
    try:
        return load_settings()
    except SettingsError as exc:
        sys.exit(f"Configuration error: {exc}")
