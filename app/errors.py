"""The one place that shapes error bodies: `{"detail": "..."}`, and 422 `{"detail": [{type, loc, msg, input, ctx}]}`."""

from __future__ import annotations

import re
from typing import Any

import asyncpg
import structlog
from advanced_alchemy.exceptions import DuplicateKeyError, NotFoundError, RepositoryError
from litestar import MediaType, Request, Response
from litestar.datastructures import UploadFile
from litestar.enums import RequestEncodingType
from litestar.exceptions import ClientException, HTTPException, ValidationException
from litestar.params import BodyKwarg
from litestar.status_codes import (
    HTTP_400_BAD_REQUEST,
    HTTP_401_UNAUTHORIZED,
    HTTP_403_FORBIDDEN,
    HTTP_404_NOT_FOUND,
    HTTP_409_CONFLICT,
    HTTP_422_UNPROCESSABLE_ENTITY,
    HTTP_500_INTERNAL_SERVER_ERROR,
    HTTP_503_SERVICE_UNAVAILABLE,
)
from litestar.types import Empty, ExceptionHandlersMap
from litestar.utils.scope.state import ScopeState
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from app import validation
from app.validation import Error
from db.executor import REFUSED

log = structlog.get_logger("app.errors")

DATABASE_UNAVAILABLE = "Service temporarily unavailable, please retry shortly"
# The contract's `detail` messages.
NOT_AUTHENTICATED = "Not authenticated"
INVALID_CREDENTIALS = "Could not validate credentials"
USER_NOT_FOUND = "User not found"
INACTIVE_USER = "Inactive user"
NOT_ENOUGH_PRIVILEGES = "The user doesn't have enough privileges"
USER_EXISTS = "The user with this email already exists in the system"
EMAIL_TAKEN = "User with this email already exists"
INCORRECT_PASSWORD = "Incorrect password"
INCORRECT_LOGIN = "Incorrect email or password"
INVALID_TOKEN = "Invalid token"
INVALID_REFRESH_TOKEN = "Invalid refresh token"
UNKNOWN_USERNAME = "The user with this username does not exist in the system."
UNKNOWN_USER_ID = "The user with this id does not exist in the system"
SAME_PASSWORD = "New password cannot be the same as the current one"
SUPERUSER_SELF_DELETE = "Super users are not allowed to delete themselves"
ITEM_NOT_FOUND = "Item not found"
NOT_ENOUGH_PERMISSIONS = "Not enough permissions"
# Personal access tokens (ours, issue 25).
READ_ONLY_TOKEN = "This token may only read"
NOT_WITH_PAT = "Not allowed with a personal access token"
TOKEN_NOT_FOUND = "Token not found"
TOKEN_REVOKED = "Token revoked"
# Email verification (ours, issue 26).
EMAIL_NOT_VERIFIED = (
    "Email not verified: check your inbox, or ask for a new link at /api/v1/users/verify-email/resend/{email}"
)
EMAIL_VERIFICATION_OFF = "Email verification is off"

# The TOTP second factor (ours, issue 26).
TOTP_NOT_CONFIGURED = "Two-factor authentication is not configured"
TOTP_ALREADY_ENABLED = "Two-factor authentication is already enabled"
TOTP_NOT_ENROLLED = "No two-factor enrolment to confirm: start one first"
TOTP_NOT_ENABLED = "Two-factor authentication is not enabled"
OTP_REQUIRED = "A one-time code is required"
INVALID_OTP = "Invalid, expired or already used one-time code"
INVALID_RECOVERY_CODE = "Invalid or already used recovery code"


class BadRequest(HTTPException):
    status_code = HTTP_400_BAD_REQUEST


class DomainError(Exception):
    """A rule of a service refused the request; `detail` is the contract's message (answered by `on_domain_error`)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class Rejected(DomainError):
    """The request contradicts a rule (400)."""


class Unauthorized(DomainError):
    """The credentials given are not enough (401): a login's second factor is missing or wrong."""


class Forbidden(DomainError):
    """The caller may not do this (403)."""


class NotFound(DomainError):
    """What the request names does not exist (404)."""


class Conflict(DomainError):
    """The change would collide with existing data (409)."""


class Unprocessable(DomainError):
    """A body that its declarations accept but a rule of the service refuses (422), with its validation errors
    (app/validation.py's `error`) as the detail."""

    def __init__(self, errors: list[Error]) -> None:
        super().__init__(str(errors))
        self.errors = errors


class Unavailable(DomainError):
    """A service this one relies on for the request did not answer, or a feature it needs is not configured on this
    server, and the request may not go on without it (503, with Retry-After as the database's 503)."""


_DOMAIN_STATUS: dict[type[DomainError], int] = {
    Rejected: HTTP_400_BAD_REQUEST,
    Unauthorized: HTTP_401_UNAUTHORIZED,
    Forbidden: HTTP_403_FORBIDDEN,
    NotFound: HTTP_404_NOT_FOUND,
    Conflict: HTTP_409_CONFLICT,
    Unavailable: HTTP_503_SERVICE_UNAVAILABLE,
}


def _detail(status_code: int, detail: Any, headers: dict[str, str] | None = None) -> Response[Any]:
    return Response({"detail": detail}, status_code=status_code, headers=headers, media_type=MediaType.JSON)


_SOURCES = ("path", "query", "header", "cookie", "body")  # the order FastAPI reports them in
_MISSING_PARAMETER = re.compile(r"Missing required (query|path|header|cookie) parameter '([^']+)'")
_FORM_ENCODINGS = (RequestEncodingType.URL_ENCODED, RequestEncodingType.MULTI_PART)


def validation_errors(request: Request[Any, Any, Any], exc: ValidationException) -> list[Error]:
    """Every failing input of the request, as the template's pydantic reports it.

    Litestar names the failing parameters (and only the first failure inside a body); each is checked again from
    the raw request against the handler's declarations (see app/validation.py).
    """
    missing = _MISSING_PARAMETER.search(str(exc.detail))
    if missing:
        return [validation.missing([missing.group(1), missing.group(2)], None)]
    failed: dict[str, tuple[str, str, str]] = {}  # handler parameter -> (source, key, msgspec's message)
    for entry in exc.extra if isinstance(exc.extra, list) else []:
        if isinstance(entry, dict):
            source = str(getattr(entry.get("source"), "value", entry.get("source") or "body"))
            key = str(entry.get("key") or "")
            name = "data" if source == "body" else key
            failed.setdefault(name, (source, key, str(entry.get("message", "Invalid value"))))
    if not failed:
        # An unreadable form (multipart without its boundary, say) is one that sent nothing.
        failed["data"] = ("body", "", str(exc.detail))
    fields = validation.signature_fields(request.route_handler.signature_model)
    errors: list[Error] = []
    for name, (source, key, message) in sorted(failed.items(), key=lambda item: _SOURCES.index(item[1][0])):
        if source == "body":
            found = validation.body_errors(_raw_body(request), fields[name], form=_is_form(request))
            loc: validation.Loc = ["body"] if key in ("", "data") else ["body", *key.split(".")]
            raw = None
        else:
            loc, raw = [source, name], _raw_parameter(request, source, name)
            found = [error] if name in fields and (error := validation.check(raw, fields[name], loc)) else []
        # msgspec refused something the pydantic-style checks accept: still a 422, in msgspec's words.
        errors.extend(found or [validation.error("value_error", loc, message, raw)])
    return errors


def _is_form(request: Request[Any, Any, Any]) -> bool:
    data = request.route_handler.parsed_fn_signature.parameters.get("data")
    kwarg = data.kwarg_definition if data is not None else None
    return isinstance(kwarg, BodyKwarg) and kwarg.media_type in _FORM_ENCODINGS


def _raw_body(request: Request[Any, Any, Any]) -> Any:
    # Litestar keeps what it decoded (or tried to) in the connection's scope state.
    state = ScopeState.from_scope(request.scope)
    if _is_form(request):
        return {} if state.form is Empty else state.form
    return None if state.json is Empty else state.json


def _raw_parameter(request: Request[Any, Any, Any], source: str, name: str) -> Any:
    if source == "path":
        return request.path_params.get(name)
    if source == "header":
        return request.headers.get(name)
    if source == "cookie":
        return request.cookies.get(name)
    return request.query_params.get(name)


def on_validation_error(request: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    return Response(
        {"detail": validation_errors(request, exc)},
        status_code=HTTP_422_UNPROCESSABLE_ENTITY,
        media_type=MediaType.JSON,
        # A file sent where a form expects text is the `input` of its error: shown by its name.
        type_encoders={UploadFile: lambda upload: upload.filename},
    )


def on_nul_character(_: Request[Any, Any, Any], exc: validation.NulCharacter) -> Response[Any]:
    return _detail(HTTP_422_UNPROCESSABLE_ENTITY, [validation.error("value_error", exc.loc, str(exc), None)])


def on_undecodable_body(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """JSON nested beyond the decoder's depth, or strings that are not UTF-8: the body is at fault, not the
    service (Litestar lets these through undecoded; anywhere else they are errors of ours)."""
    state = ScopeState.from_scope(request.scope)
    if not isinstance(state.body, bytes) or state.json is not Empty:
        return on_unexpected_error(request, exc)
    found = validation.json_invalid(state.body)
    ctx = {"error": "Nesting too deep" if isinstance(exc, RecursionError) else str(exc)}
    errors = [found or validation.error("json_invalid", ["body", 0], "JSON decode error", {}, ctx)]
    return _detail(HTTP_422_UNPROCESSABLE_ENTITY, errors)


# Litestar's words when the connection ends before the body does: the client left (or the server timed its read
# out), which is no error of ours. Answered with nginx's 499 "client closed request", which only the access log sees.
_CLIENT_DISCONNECTED = "client disconnected prematurely"
CLIENT_CLOSED_REQUEST = 499


def on_http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    if exc.status_code >= HTTP_500_INTERNAL_SERVER_ERROR:
        return on_unexpected_error(request, exc)
    if type(exc) is ClientException:
        # Litestar's own 400s are bodies it could not decode: a 422 with Python's json account of where it broke.
        body = ScopeState.from_scope(request.scope).body
        found = validation.json_invalid(body) if isinstance(body, bytes) else None
        ctx = {"error": exc.detail}
        errors = [found or validation.error("json_invalid", ["body", 0], "JSON decode error", {}, ctx)]
        return _detail(HTTP_422_UNPROCESSABLE_ENTITY, errors)
    headers = exc.headers
    if headers and "allow" in headers:
        # Litestar lists a 405's methods in the order its handlers were registered: sorted, as OPTIONS lists them.
        headers = {**headers, "allow": ", ".join(sorted(headers["allow"].split(", ")))}
    return _detail(exc.status_code, exc.detail, headers)


def on_domain_error(_: Request[Any, Any, Any], exc: DomainError) -> Response[Any]:
    if isinstance(exc, Unprocessable):
        return _detail(HTTP_422_UNPROCESSABLE_ENTITY, exc.errors)
    if isinstance(exc, Unavailable):
        return _detail(HTTP_503_SERVICE_UNAVAILABLE, exc.detail, {"Retry-After": "5"})
    return _detail(_DOMAIN_STATUS[type(exc)], exc.detail)


def on_repository_error(request: Request[Any, Any, Any], exc: RepositoryError) -> Response[Any]:
    if isinstance(exc, NotFoundError):
        return _detail(HTTP_404_NOT_FOUND, "Not Found")
    if isinstance(exc, DuplicateKeyError):
        return _detail(HTTP_409_CONFLICT, "Conflict")
    cause = exc.__cause__
    if isinstance(cause, Exception) and _is_database_unavailable(cause):
        return on_database_unavailable(request, cause)
    return on_unexpected_error(request, exc)


# What means "the database cannot serve this now": answered 503 with Retry-After, never 500. SQLSTATEs (five
# characters) and SQLSTATE classes (two), as the server sends them: asyncpg raises them natively on the fast path
# (db/executor.py), SQLAlchemy wraps them in a DBAPIError (`.orig.sqlstate`, caused by asyncpg's) on the ORM path,
# and advanced-alchemy wraps that in a RepositoryError (`__cause__`).
UNAVAILABLE_SQLSTATES: dict[str, str] = {
    "55P03": "lock_not_available (lock_timeout)",
    "57014": "query_canceled (statement_timeout)",
    "40001": "serialization_failure",
    "40P01": "deadlock_detected",
    "25006": "read_only_sql_transaction (a standby, a failover under way)",
    "57P01": "admin_shutdown",
    "57P02": "crash_shutdown",
    "57P03": "cannot_connect_now (starting up, shutting down)",
    "08": "connection exception (class)",
    "53": "insufficient resources (class): too_many_connections 53300, out_of_memory, disk_full",
}
# ... and what says so without a SQLSTATE: no free connection in time, a lost or silent connection, a client-side
# timeout (asyncpg's `command_timeout` and connect timeout raise TimeoutError), a refused connection (db/executor.py).
_UNAVAILABLE_TYPES: tuple[type[BaseException], ...] = (
    PoolTimeoutError,
    OSError,
    TimeoutError,
    InterfaceError,
    OperationalError,
    *REFUSED,
)


def _chain(exc: BaseException) -> list[BaseException]:
    """The error and what it wraps: a DBAPIError's driver error (`orig`), any error's cause."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        orig = current.orig if isinstance(current, DBAPIError) else None
        current = orig if isinstance(orig, BaseException) else current.__cause__
    return chain


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE an error carries, looked for through its wrappers."""
    for error in _chain(exc):
        code = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
        if isinstance(code, str) and code:
            return code
    return None


def _is_database_unavailable(exc: BaseException) -> bool:
    """The one classification of "the database cannot serve this now" (see UNAVAILABLE_SQLSTATES)."""
    for error in _chain(exc):
        if isinstance(error, _UNAVAILABLE_TYPES):
            return True
        if isinstance(error, DBAPIError) and error.connection_invalidated:
            return True
    code = sqlstate(exc)
    return code is not None and (code in UNAVAILABLE_SQLSTATES or code[:2] in UNAVAILABLE_SQLSTATES)


def on_database_unavailable(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    if not _is_database_unavailable(exc):
        return on_unexpected_error(_, exc)
    # A timeout's message is empty: the reason is then its type alone.
    reason = next(iter(str(exc).splitlines()), "")[:200]
    log.warning("database unavailable", error=type(exc).__name__, reason=reason)
    return _detail(HTTP_503_SERVICE_UNAVAILABLE, DATABASE_UNAVAILABLE, {"Retry-After": "5"})


def on_unexpected_error(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    if isinstance(exc, HTTPException) and exc.detail == _CLIENT_DISCONNECTED:
        log.info("client disconnected before the end of its body")
        return _detail(CLIENT_CLOSED_REQUEST, "Client Closed Request")
    log.error("unhandled exception", exc_info=exc)
    return _detail(HTTP_500_INTERNAL_SERVER_ERROR, "Internal Server Error")


exception_handlers: ExceptionHandlersMap = {
    ValidationException: on_validation_error,
    validation.NulCharacter: on_nul_character,
    RecursionError: on_undecodable_body,
    UnicodeDecodeError: on_undecodable_body,
    HTTPException: on_http_error,
    DomainError: on_domain_error,
    RepositoryError: on_repository_error,
    DBAPIError: on_database_unavailable,
    asyncpg.PostgresError: on_database_unavailable,  # the fast path raises the driver's own (db/executor.py)
    PoolTimeoutError: on_database_unavailable,
    OSError: on_database_unavailable,
    TimeoutError: on_database_unavailable,
    **dict.fromkeys(REFUSED, on_database_unavailable),
    HTTP_500_INTERNAL_SERVER_ERROR: on_unexpected_error,
}
