"""Structured logs (pretty in `local`, JSON lines elsewhere), one log line per request, and Sentry."""

from __future__ import annotations

import logging
import re
import secrets
import sys
import time
from typing import Any

import sentry_sdk
import structlog
from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from app.config import Settings

REQUEST_ID_HEADER = "x-request-id"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
access_log = structlog.get_logger("app.request")


def configure_logging(settings: Settings) -> None:
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer() if settings.log_json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        # Level filtering first: a line below LOG_LEVEL costs nothing else.
        processors=[structlog.stdlib.filter_by_level, *shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(settings.LOG_LEVEL.upper())
    # uvicorn's own lines (start-up, shutdown, errors) go through the same renderer; its access log would
    # duplicate ours (and has no request id).
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    # Libraries' warnings (PyJWT's, SQLAlchemy's, ours about dev defaults) become log lines like any other,
    # instead of raw text on stderr beside the JSON lines.
    logging.captureWarnings(True)


def init_sentry(settings: Settings) -> None:
    """Must run before the Litestar app is built: the integration patches `Litestar.__init__`."""
    if settings.SENTRY_DSN and settings.ENVIRONMENT != "local":
        sentry_sdk.init(
            dsn=settings.SENTRY_DSN,
            environment=settings.ENVIRONMENT,
            send_default_pii=False,
            # Frames' local variables hold the raw ASGI scope (headers as byte pairs, which the default scrubber
            # does not recognise: the bearer token), request bodies (passwords) and reset links.
            include_local_variables=False,
            max_request_body_size="never",
            before_send=without_credentials,
        )


_CREDENTIAL_HEADERS = {"authorization", "cookie", "proxy-authorization", "x-api-key"}


def without_credentials(event: Any, _hint: Any) -> Any:
    """Drop what could carry a credential from an event's request, whatever an integration put there."""
    request = event.get("request")
    if isinstance(request, dict):
        request.pop("cookies", None)
        request.pop("data", None)
        headers = request.get("headers")
        if isinstance(headers, dict):
            request["headers"] = {k: v for k, v in headers.items() if k.lower() not in _CREDENTIAL_HEADERS}
    return event


_ADDRESS_LOCAL_PART = re.compile(r"[^/@]+@")


def masked_path(path: str) -> str:
    """The path with the local part of any email address in it hidden (`/password-recovery/***@example.com`):
    the domain is enough to follow a problem, as in the mailer's own log lines."""
    return _ADDRESS_LOCAL_PART.sub("***@", path) if "@" in path else path


def request_logging(app: ASGIApp) -> ASGIApp:
    """One line per HTTP request: method, path, status, duration_ms, request_id, user_id (bound by the auth
    middleware). Never bodies or credentials. The request id comes from `X-Request-ID` (when sane) or is
    generated, and is echoed back."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        incoming = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), "")
        request_id = incoming if _VALID_REQUEST_ID.match(incoming) else secrets.token_hex(16)
        started = time.perf_counter()
        status = 500

        async def send_with_request_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableScopeHeaders.from_message(message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        structlog.contextvars.bind_contextvars(request_id=request_id, user_id=None)
        try:
            await app(scope, receive, send_with_request_id)
        except Exception as exc:
            # Answered by the app-level exception handler after this middleware: log the status it will use.
            status = getattr(exc, "status_code", 500)
            raise
        finally:
            # No unbinding: each request runs in a task of its own, with its own copy of the context, and the
            # app-level exception handler (outside this middleware) still logs with the request id.
            access_log.info(
                "request",
                method=scope.get("method"),
                path=masked_path(scope["path"]),
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
            )

    return middleware
