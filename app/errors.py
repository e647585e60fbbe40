"""The one place that shapes error bodies: `{"detail": "..."}`, and 422 `{"detail": [{loc, msg, type}]}`."""

from __future__ import annotations

import re
from typing import Any

import structlog
from advanced_alchemy.exceptions import DuplicateKeyError, NotFoundError, RepositoryError
from litestar import MediaType, Request, Response
from litestar.exceptions import ClientException, HTTPException, ValidationException
from litestar.status_codes import (
    HTTP_404_NOT_FOUND,
    HTTP_409_CONFLICT,
    HTTP_422_UNPROCESSABLE_ENTITY,
    HTTP_500_INTERNAL_SERVER_ERROR,
    HTTP_503_SERVICE_UNAVAILABLE,
)
from litestar.types import ExceptionHandlersMap
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

log = structlog.get_logger("app.errors")

DATABASE_UNAVAILABLE = "Service temporarily unavailable, please retry shortly"


def _detail(status_code: int, detail: Any, headers: dict[str, str] | None = None) -> Response[Any]:
    return Response({"detail": detail}, status_code=status_code, headers=headers, media_type=MediaType.JSON)


def _error_type(message: str) -> str:
    lowered = message.lower()
    if "missing required" in lowered:
        return "missing"
    if "expected" in lowered:
        return "type_error"
    return "value_error"


_MISSING_FIELD = re.compile(r"missing required field `([^`]+)`")
_MISSING_PARAMETER = re.compile(r"Missing required (query|path|header|cookie) parameter '([^']+)'")


def _entry(message: str, source: str, key: str) -> dict[str, Any]:
    # Litestar passes msgspec's message without its "- at `$...`" part, and the field's path as `key`.
    missing = _MISSING_FIELD.search(message) if source == "body" else None
    if source == "body" and key == "data" and missing is None:
        # The body as a whole: absent (Litestar reports the missing `data` argument, or msgspec a null)...
        if message == "'data'" or message.endswith("got `null`"):
            return {"type": "missing", "loc": ["body"], "msg": "Field required"}
        # ...or of the wrong kind, such as a list where an object belongs.
        return {"type": _error_type(message), "loc": ["body"], "msg": message}
    loc: list[str | int] = [source]
    if source == "body" and key != "data":
        loc.extend(int(part) if part.isdigit() else part for part in key.split(".") if part)
    elif source != "body" and key:
        loc.append(key)
    if missing:
        loc.append(missing.group(1))
    return {"type": _error_type(message), "loc": loc, "msg": message}


def validation_errors(exc: ValidationException) -> list[dict[str, Any]]:
    """Litestar's `extra` list (message/key/source) in FastAPI's shape (loc/msg/type)."""
    errors: list[dict[str, Any]] = []
    for entry in exc.extra if isinstance(exc.extra, list) else []:
        if isinstance(entry, dict):
            source = entry.get("source") or "body"
            errors.append(
                _entry(
                    str(entry.get("message", "Invalid value")),
                    str(getattr(source, "value", source)),
                    str(entry.get("key") or ""),
                )
            )
    if errors:
        return errors
    missing = _MISSING_PARAMETER.search(str(exc.detail))
    if missing:
        return [{"type": "missing", "loc": [missing.group(1), missing.group(2)], "msg": "Field required"}]
    return [_entry(str(exc.detail), "body", "")]


def on_validation_error(_: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    return _detail(HTTP_422_UNPROCESSABLE_ENTITY, validation_errors(exc))


def on_http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    if exc.status_code >= HTTP_500_INTERNAL_SERVER_ERROR:
        return on_unexpected_error(_, exc)
    if type(exc) is ClientException:
        # Litestar's own 400s are bodies it could not decode (malformed JSON or form): a 422 here.
        return _detail(HTTP_422_UNPROCESSABLE_ENTITY, [{"type": "json_invalid", "loc": ["body"], "msg": exc.detail}])
    return _detail(exc.status_code, exc.detail, exc.headers)


def on_repository_error(request: Request[Any, Any, Any], exc: RepositoryError) -> Response[Any]:
    if isinstance(exc, NotFoundError):
        return _detail(HTTP_404_NOT_FOUND, "Not Found")
    if isinstance(exc, DuplicateKeyError):
        return _detail(HTTP_409_CONFLICT, "Conflict")
    cause = exc.__cause__
    if isinstance(cause, Exception) and _is_database_unavailable(cause):
        return on_database_unavailable(request, cause)
    return on_unexpected_error(request, exc)


def _is_database_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, PoolTimeoutError | OSError | TimeoutError):
        return True
    if isinstance(exc, InterfaceError | OperationalError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def on_database_unavailable(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    if not _is_database_unavailable(exc):
        return on_unexpected_error(_, exc)
    # A timeout's message is empty: the reason is then its type alone.
    reason = next(iter(str(exc).splitlines()), "")[:200]
    log.warning("database unavailable", error=type(exc).__name__, reason=reason)
    return _detail(HTTP_503_SERVICE_UNAVAILABLE, DATABASE_UNAVAILABLE, {"Retry-After": "5"})


def on_unexpected_error(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.error("unhandled exception", exc_info=exc)
    return _detail(HTTP_500_INTERNAL_SERVER_ERROR, "Internal Server Error")


exception_handlers: ExceptionHandlersMap = {
    ValidationException: on_validation_error,
    HTTPException: on_http_error,
    RepositoryError: on_repository_error,
    DBAPIError: on_database_unavailable,
    PoolTimeoutError: on_database_unavailable,
    OSError: on_database_unavailable,
    TimeoutError: on_database_unavailable,
    HTTP_500_INTERNAL_SERVER_ERROR: on_unexpected_error,
}
