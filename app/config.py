"""Settings: read once from the environment (and a `.env` file), validated, immutable."""

from __future__ import annotations

import json
import os
import shlex
import ssl
import sys
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec
from dotenv import dotenv_values
from sqlalchemy.engine import URL, make_url
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
    # Resolved from ENVIRONMENT and the current template's FASTAPI_ENV (see `_resolve_environment`): with neither
    # set, production.
    ENVIRONMENT: Literal["local", "staging", "production"] = "production"
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
    # Email verification (README "Email verification"): off, optional (a mail with a link, logins unaffected) or
    # required (an unverified account's login is refused 403). The link lives this many hours.
    EMAIL_VERIFICATION: Literal["off", "optional", "required"] = "off"
    EMAIL_VERIFY_TOKEN_EXPIRE_HOURS: Annotated[int, msgspec.Meta(ge=1)] = 48
    EMAIL_TEST_USER: str = "test@example.com"
    FIRST_SUPERUSER: str = "admin@example.com"
    FIRST_SUPERUSER_PASSWORD: str = DEV_SECRET
    # --- ours ---
    # Refresh tokens (README "Sessions and tokens"): off at 0; else a login also answers a refresh token, each
    # refresh extends its session by this much, and the session outlives its first access token by as much.
    REFRESH_TOKEN_EXPIRE_MINUTES: Annotated[int, msgspec.Meta(ge=0)] = 0
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
    # The longest lifetime, in days, a personal access token may be given when it is made (README "Personal access
    # tokens"); lowering it does not shorten the tokens already made.
    PAT_MAX_DAYS: Annotated[int, msgspec.Meta(ge=1)] = 365
    # Audit events also stored in the database (README "Audit trail"): off unless asked for. Written in batches after
    # the answers, every AUDIT_FLUSH_SECONDS; kept AUDIT_RETENTION_DAYS days (0: for ever).
    AUDIT_STORE_ENABLED: bool = False
    AUDIT_RETENTION_DAYS: Annotated[int, msgspec.Meta(ge=0)] = 365
    AUDIT_FLUSH_SECONDS: Annotated[float, msgspec.Meta(gt=0, le=60)] = 1.0
    # New passwords looked up in a Have I Been Pwned style range API (README "Breached passwords"): off when unset.
    # The base URL, e.g. https://api.pwnedpasswords.com/range; refused from MIN_COUNT sightings on; a range API that
    # does not answer in TIMEOUT_SECONDS lets the password through, unless FAIL_CLOSED (then 503).
    PASSWORD_BREACH_CHECK_URL: str | None = None
    PASSWORD_BREACH_MIN_COUNT: Annotated[int, msgspec.Meta(ge=1)] = 1
    PASSWORD_BREACH_TIMEOUT_SECONDS: Annotated[float, msgspec.Meta(gt=0, le=30)] = 2.0
    PASSWORD_BREACH_FAIL_CLOSED: bool = False
    # TOTP second factor (README "Two-factor authentication (TOTP)"): the key its secrets are encrypted with at
    # rest, at least MIN_TOTP_KEY_CHARS characters; unset, enrolment answers 503. No default: a key known to all
    # would encrypt nothing.
    TOTP_ENCRYPTION_KEY: str | None = None
    # Wrong one-time or recovery codes a signed-in password may try per account per minute (0: no limit).
    OTP_FAILURES_PER_ACCOUNT_PER_MINUTE: Annotated[int, msgspec.Meta(ge=0)] = 5
    # The built frontend served at `/` (the template's Vite build writes it to app/frontend). Unset: app/frontend
    # when it is there, else no frontend; set: it must exist.
    FRONTEND_DIR: str | None = None

    @property
    def refresh_tokens_enabled(self) -> bool:
        return self.REFRESH_TOKEN_EXPIRE_MINUTES > 0

    @property
    def database_url(self) -> str:
        """The SQLAlchemy URL to connect with: `DATABASE_URL` (its scheme mapped to our driver and its libpq
        options taken out, see `connect_args`); else the template's `POSTGRES_*` parts; else the embedded SQLite
        file."""
        return _database(self)[0].render_as_string(hide_password=False)

    @property
    def database_connect_args(self) -> dict[str, Any]:
        """asyncpg's arguments for the libpq options that `DATABASE_URL` carried (`sslmode=require`, …)."""
        return _database(self)[1]

    @property
    def database_source(self) -> str:
        """The setting the database comes from, for messages."""
        return "DATABASE_URL" if self.DATABASE_URL else "POSTGRES_SERVER" if self.POSTGRES_SERVER else "default"

    @property
    def emails_enabled(self) -> bool:
        return bool(self.SMTP_HOST and self.EMAILS_FROM_EMAIL)

    @property
    def email_verification_enabled(self) -> bool:
        return self.EMAIL_VERIFICATION != "off"

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
    def private_routes_enabled(self) -> bool:
        """`/api/v1/private/users/` creates accounts without a token: development only."""
        return self.ENVIRONMENT == "local"

    @property
    def sentry_enabled(self) -> bool:
        return bool(self.SENTRY_DSN) and self.ENVIRONMENT != "local"

    @property
    def log_json(self) -> bool:
        return self.LOG_JSON if self.LOG_JSON is not None else self.ENVIRONMENT != "local"


def read_dotenv(path: Path) -> dict[str, str]:
    """A `.env` file read as the template's settings reader (pydantic-settings, through python-dotenv) reads it:
    quotes, `export`, comments, and `${VAR}` references to the file's earlier values or the environment."""
    if not path.is_file():
        return {}
    return {key: value for key, value in dotenv_values(path).items() if value is not None}


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
    """Build settings from a `.env` file overlaid by the real environment (the environment wins). An empty value
    counts as unset, in either, as in the template (`env_ignore_empty`)."""
    raw = {key: value for key, value in (read_dotenv(env_file) if env_file else {}).items() if value != ""}
    raw.update((key, value) for key, value in (os.environ if environ is None else environ).items() if value != "")
    _resolve_environment(raw)
    fields = set(Settings.__struct_fields__)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in fields:
            continue
        values[key] = _parse_cors(value) if key == "BACKEND_CORS_ORIGINS" else value
    try:
        settings = msgspec.convert(values, Settings, strict=False)
    except msgspec.ValidationError as exc:
        message = str(exc)
        name = message.rsplit("$.", 1)[-1].split("[")[0].rstrip("`") if "$." in message else "settings"
        reason = message.split(" - at ")[0]
        raise SettingsError(f"{name}: {reason} (got {raw.get(name, '')!r})") from None
    _database(settings)
    _check_secrets(settings)
    _check_frontend_dir(settings)
    _check_breach_url(settings)
    _check_email_verification(settings)
    _check_totp_key(settings)
    return settings


def _check_breach_url(settings: Settings) -> None:
    """The range API's base: the prefix is appended as a path segment, so a query or fragment would swallow it."""
    url = settings.PASSWORD_BREACH_CHECK_URL
    if url is None:
        return
    try:
        parts = urlsplit(url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # an unclosed [IPv6] host, a port that is no number
        valid = False
    # Not repeated in the message: a URL may carry credentials.
    if not valid or parts.query or parts.fragment:
        raise SettingsError(
            "PASSWORD_BREACH_CHECK_URL: must be an http(s) URL with a host and no query or fragment, e.g. "
            "https://api.pwnedpasswords.com/range"
        )


def _check_email_verification(settings: Settings) -> None:
    # Without mail no verification link goes out, and `required` would lock every new account out.
    if settings.EMAIL_VERIFICATION == "required" and not settings.emails_enabled:
        message = "EMAIL_VERIFICATION: required needs mail (SMTP_HOST and EMAILS_FROM_EMAIL) to send its links"
        if settings.ENVIRONMENT == "local":
            warnings.warn(message, stacklevel=3)
        else:
            raise SettingsError(message)


# Fernet's key is derived from it by SHA-256: a short one would be guessable offline from a copy of the table.
MIN_TOTP_KEY_CHARS = 32


def _check_totp_key(settings: Settings) -> None:
    """Refused in every environment: the feature is opt-in, so there is no deploy this would break."""
    key = settings.TOTP_ENCRYPTION_KEY
    if key is None:
        return
    if len(key) < MIN_TOTP_KEY_CHARS:
        raise SettingsError(
            f"TOTP_ENCRYPTION_KEY: {len(key)} characters is too short, use at least {MIN_TOTP_KEY_CHARS} "
            "(e.g. the output of `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
        )
    if key == settings.SECRET_KEY:
        raise SettingsError("TOTP_ENCRYPTION_KEY: must differ from SECRET_KEY (one leaked key should not give both)")


def _check_frontend_dir(settings: Settings) -> None:
    if settings.FRONTEND_DIR and not Path(settings.FRONTEND_DIR).is_dir():
        message = f"FRONTEND_DIR: {settings.FRONTEND_DIR!r} is not a folder (unset it to serve no frontend)"
        if settings.ENVIRONMENT == "local":
            warnings.warn(message, stacklevel=3)
        else:
            raise SettingsError(message)


def _resolve_environment(raw: dict[str, str]) -> None:
    """Both generations of the template name the environment: `ENVIRONMENT` (`local`, `staging`, `production`;
    until 0.11) and `FASTAPI_ENV` (`development` or unset; since). Development is `local`; with neither set the
    service runs as production, so that a deploy that says nothing gets the safe side."""
    fastapi_env, environment = raw.get("FASTAPI_ENV"), raw.get("ENVIRONMENT")
    if fastapi_env is None:
        return
    if fastapi_env != "development":
        raise SettingsError(f"FASTAPI_ENV: 'development' or unset (got {fastapi_env!r})")
    if environment not in (None, "local"):
        raise SettingsError(
            f"FASTAPI_ENV=development and ENVIRONMENT={environment} contradict each other: set only one of them"
        )
    raw["ENVIRONMENT"] = "local"


# The schemes the template's DATABASE_URL may use for PostgreSQL (it rewrites them to its own driver; we to ours).
POSTGRES_SCHEMES = {"postgres", "postgresql", "postgresql+psycopg", "postgresql+psycopg2", "postgresql+asyncpg"}
# libpq's sslmode values, which asyncpg's `ssl` argument also takes.
SSL_MODES = {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}
# Query options asyncpg itself takes through SQLAlchemy's URL; anything else must be a libpq option translated below.
ASYNCPG_OPTIONS = {"ssl", "direct_tls", "prepared_statement_cache_size", "statement_cache_size"}
# The libpq options translated to asyncpg's arguments by `_libpq_options`.
LIBPQ_OPTIONS = [
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "connect_timeout",
    "application_name",
    "target_session_attrs",
    "options",
]


def _database(settings: Settings) -> tuple[URL, dict[str, Any]]:
    """The URL to connect to and asyncpg's arguments from its libpq options. A URL SQLAlchemy cannot parse, a driver
    that is unknown or not async, or an option we cannot honour fails here in one line, not as a traceback from the
    first connection. Messages never repeat the URL: it may hold a password."""
    name = settings.database_source
    if settings.DATABASE_URL:
        text = settings.DATABASE_URL
    elif settings.POSTGRES_SERVER:
        return URL.create(
            "postgresql+asyncpg",
            username=settings.POSTGRES_USER,
            password=settings.POSTGRES_PASSWORD or None,
            host=settings.POSTGRES_SERVER,
            port=settings.POSTGRES_PORT,
            database=settings.POSTGRES_DB,
        ), {}
    else:
        text = SQLITE_DEFAULT_URL
    scheme = text.split(":", 1)[0]
    try:
        url = make_url(text)
        if url.drivername in POSTGRES_SCHEMES:
            url = url.set(drivername="postgresql+asyncpg")
        dialect = url.get_dialect()
    except NoSuchModuleError:
        raise SettingsError(f"{name}: unknown database driver {scheme!r}") from None
    except (ArgumentError, ValueError):
        raise SettingsError(f"{name}: not a database URL (e.g. postgresql://user@host:5432/app)") from None
    if not dialect.is_async:
        raise SettingsError(f"{name}: {scheme!r} is not an async driver, use postgresql:// or sqlite+aiosqlite://")
    if url.get_backend_name() != "postgresql":
        return url, {}
    return _libpq_options(url, name)


def _libpq_options(url: URL, name: str) -> tuple[URL, dict[str, Any]]:
    """What a hosted database's URL carries for libpq (`?sslmode=require&application_name=…`) as asyncpg's connect
    arguments; an option with no asyncpg equivalent is refused rather than silently dropped."""
    options = {key: value if isinstance(value, str) else value[-1] for key, value in url.query.items()}
    args: dict[str, Any] = {}
    server_settings: dict[str, str] = {}
    mode = options.pop("sslmode", None)
    certificates: dict[str, str] = {k: options.pop(k) for k in ("sslrootcert", "sslcert", "sslkey") if k in options}
    if mode is not None and mode not in SSL_MODES:
        raise SettingsError(f"{name}: sslmode must be one of {', '.join(sorted(SSL_MODES))} (got {mode!r})")
    if certificates:
        args["ssl"] = _ssl_context(mode or "prefer", certificates, name)
    elif mode is not None:
        args["ssl"] = mode
    if "connect_timeout" in options:
        value = options.pop("connect_timeout")
        try:
            args["timeout"] = float(value)
        except ValueError:
            raise SettingsError(f"{name}: connect_timeout must be a number of seconds (got {value!r})") from None
    if "application_name" in options:
        server_settings["application_name"] = options.pop("application_name")
    if "target_session_attrs" in options:
        args["target_session_attrs"] = options.pop("target_session_attrs")
    if "options" in options:
        server_settings.update(_server_options(options.pop("options"), name))
    if server_settings:
        args["server_settings"] = server_settings
    unknown = sorted(set(options) - ASYNCPG_OPTIONS)
    if unknown:
        raise SettingsError(
            f"{name}: the option {unknown[0]!r} is not supported (supported: {', '.join(LIBPQ_OPTIONS)})"
        )
    return url.difference_update_query(LIBPQ_OPTIONS), args


def _ssl_context(mode: str, certificates: dict[str, str], name: str) -> ssl.SSLContext:
    """libpq's meaning of the modes when certificate files are named: `verify-full` checks the chain and the host
    name, `verify-ca` the chain only, and so does `require` when a root certificate is given."""
    if mode in ("disable", "allow", "prefer"):
        raise SettingsError(f"{name}: certificate files need sslmode=require, verify-ca or verify-full")
    root = certificates.get("sslrootcert")
    try:
        context = ssl.create_default_context(cafile=None if root in (None, "system") else root)
        if "sslcert" in certificates:
            context.load_cert_chain(certificates["sslcert"], certificates.get("sslkey"))
    except (OSError, ssl.SSLError) as exc:
        raise SettingsError(f"{name}: cannot use the certificate files ({exc.strerror or exc})") from None
    context.check_hostname = mode == "verify-full"
    if mode == "require" and root is None:
        context.verify_mode = ssl.CERT_NONE
    return context


def _server_options(value: str, name: str) -> dict[str, str]:
    """libpq's `options` (`-c search_path=app -c statement_timeout=5000`) as server settings."""
    words = shlex.split(value)
    settings: dict[str, str] = {}
    while words:
        word = words.pop(0)
        if word == "-c" and words:
            word = words.pop(0)
        elif word.startswith(("--", "-c")):
            word = word[2:]
        else:
            raise SettingsError(f"{name}: options: only -c name=value settings are supported (got {word!r})")
        key, equals, setting = word.partition("=")
        if not equals:
            raise SettingsError(f"{name}: options: only -c name=value settings are supported (got {word!r})")
        settings[key.replace("-", "_")] = setting
    return settings


# HS256 keys shorter than its 32-byte output make the signature easier to brute-force (RFC 7518 3.2).
MIN_SECRET_KEY_BYTES = 32
# The API's rule for passwords (app/schemas.py's `Password`, in characters), which the first superuser's obeys too.
PASSWORD_MIN_LENGTH, PASSWORD_MAX_LENGTH = 8, 128


def _check_secrets(settings: Settings) -> None:
    # The database password that is in use: the URL's, as the current template checks it, or POSTGRES_PASSWORD.
    database_password = (
        ("DATABASE_URL password", make_url(settings.DATABASE_URL).password)
        if settings.DATABASE_URL
        else ("POSTGRES_PASSWORD", settings.POSTGRES_PASSWORD)
    )
    secrets = [
        ("SECRET_KEY", settings.SECRET_KEY),
        database_password,
        ("FIRST_SUPERUSER_PASSWORD", settings.FIRST_SUPERUSER_PASSWORD),
    ]
    problems = [
        f'The value of {name} is "{DEV_SECRET}", for security, please change it.'
        for name, value in secrets
        if value == DEV_SECRET
    ]
    key_bytes = len(settings.SECRET_KEY.encode())
    if settings.SECRET_KEY != DEV_SECRET and key_bytes < MIN_SECRET_KEY_BYTES:
        problems.append(
            f"SECRET_KEY: {key_bytes} bytes is too short to sign tokens, use at least {MIN_SECRET_KEY_BYTES} "
            "(e.g. the output of `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
        )
    length = len(settings.FIRST_SUPERUSER_PASSWORD)
    if not PASSWORD_MIN_LENGTH <= length <= PASSWORD_MAX_LENGTH:
        bound = "short" if length < PASSWORD_MIN_LENGTH else "long"
        problems.append(
            f"FIRST_SUPERUSER_PASSWORD: {length} characters is too {bound}: the API takes passwords of "
            f"{PASSWORD_MIN_LENGTH} to {PASSWORD_MAX_LENGTH} characters"
        )
    if settings.PASSWORD_HASH_PROFILE == "CHEAPEST":
        problems.append("PASSWORD_HASH_PROFILE: CHEAPEST hashes passwords with argon2's minimum, for tests only")
    for message in problems:
        if settings.ENVIRONMENT == "local":
            warnings.warn(message, stacklevel=3)
        else:
            raise SettingsError(message)


# The warnings about dev defaults that reading the process-wide settings gave: logged as one line each when the
# server starts (app/main.py `announce`). Printed by Python they came first, each with a source line, unlike any
# other line.
STARTUP_WARNINGS: list[str] = []


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings. A bad value stops start-up with one line naming the variable."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            # ENV_FILE names another file than the working folder's `.env` (one checkout, several configurations).
            settings = load_settings(env_file=Path(os.environ.get("ENV_FILE") or ".env"))
    except SettingsError as exc:
        sys.exit(f"Configuration error: {exc}")
    STARTUP_WARNINGS.extend(str(warning.message) for warning in caught)
    return settings
