"""Structured logs (pretty in `local`, JSON lines elsewhere), one log line per request, and Sentry."""

from __future__ import annotations

import logging
import re
import secrets
import sys
import threading
import time
import warnings
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any
from uuid import UUID

import msgspec
import sentry_sdk
import structlog
from jwt.warnings import InsecureKeyLengthWarning
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from sentry_sdk.integrations.httpx import HttpxIntegration
from structlog.typing import EventDict

from app.config import Settings

REQUEST_ID_HEADER = b"x-request-id"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# Written by hand, not through structlog's chain: the one line every request costs (see LogLine).
access_log = logging.getLogger("app.request")


class LogLine(logging.Formatter):
    """One line per record: structlog's event dict (the record's `msg`) or a library's message with the request's
    context, plus level, logger name, time and any exception, rendered by `render`.

    In place of structlog's ProcessorFormatter, which copies every record and runs a processor chain on it, and of
    its JSONRenderer's `json.dumps`: the request line costs ~9 µs instead of ~27 (a loop of 30,000 lines)."""

    def __init__(self, render: Callable[[EventDict], str]) -> None:
        super().__init__()
        self.render = render

    def format(self, record: logging.LogRecord) -> str:
        event: EventDict
        if isinstance(record.msg, dict):
            event = {**record.msg}
        else:
            event = add_request_context(None, "", {"event": record.getMessage()})
            if record.exc_info:
                event["exception"] = self.formatException(record.exc_info)
        event["level"] = record.levelname.lower()
        event["logger"] = record.name
        event["timestamp"] = datetime.fromtimestamp(record.created, UTC).isoformat().replace("+00:00", "Z")
        if "exc_info" in event:
            event = structlog.processors.format_exc_info(None, "", event)
        return self.render(event)


class BufferedLines(logging.StreamHandler):  # type: ignore[type-arg]
    """Every line formatted at once (in the request's context); the request lines (`batched` loggers, below
    WARNING) written in batches: every `interval` seconds by a thread of its own, with the next other line, or at
    shutdown (the app's on_shutdown hook, logging's own at exit). A StreamHandler writes and flushes each record:
    a system call per request. Any other line is written at once, with those before it: uvicorn re-raises
    SIGTERM after its graceful shutdown, so its process ends without running exit handlers."""

    def __init__(
        self, stream: Any, batched: tuple[str, ...] = ("app.request",), interval: float = 0.2, capacity: int = 1000
    ) -> None:
        super().__init__(stream)
        self.batched = frozenset(batched)
        self.interval = interval
        self.capacity = capacity
        self.pending: list[str] = []
        self.writer: threading.Thread | None = None
        self.stopped = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        with self.lock:  # type: ignore[union-attr]
            self.pending.append(line)
            later = record.name in self.batched and record.levelno < logging.WARNING
            if later and len(self.pending) < self.capacity:
                if self.writer is None:
                    self.writer = threading.Thread(target=self._write_periodically, name="log-writer", daemon=True)
                    self.writer.start()
                return
        self.flush()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            if not self.pending:
                return
            text = "\n".join(self.pending) + "\n"
            self.pending.clear()
            try:
                self.stream.write(text)
                self.stream.flush()
            except (OSError, ValueError):  # a closed stream or pipe: nothing left to tell
                pass

    def close(self) -> None:
        self.stopped.set()
        self.flush()
        super().close()

    def _write_periodically(self) -> None:
        while not self.stopped.wait(self.interval):
            self.flush()


def flush_logs() -> None:
    """Write every buffered line now (the app's on_shutdown hook: before the process's last lines)."""
    for handler in logging.getLogger().handlers:
        handler.flush()


_json = msgspec.json.Encoder(enc_hook=str)


def json_line(event: EventDict) -> str:
    return _json.encode(event).decode()


def configure_logging(settings: Settings) -> None:
    console = structlog.dev.ConsoleRenderer(colors=False)
    render = json_line if settings.log_json else partial(console, None, "")
    structlog.configure(
        # Level filtering first: a line below LOG_LEVEL costs nothing else. LogLine adds level, logger and time.
        processors=[
            structlog.stdlib.filter_by_level,
            add_request_context,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = BufferedLines(sys.stdout)
    handler.setFormatter(LogLine(render))
    # What no line of ours shows, and what every record would otherwise compute: the caller's file and line (a
    # walk up the stack), thread and process names. The logging HOWTO's own advice ("Optimization"); it halves the
    # cost of the request line (~40 to ~20 µs).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    for replaced in root.handlers:
        if isinstance(replaced, BufferedLines):
            replaced.close()  # its lines written, its writer thread ended
    root.handlers = [handler]
    root.setLevel(settings.LOG_LEVEL.upper())
    # uvicorn's own lines (start-up, shutdown, errors) go through the same renderer; its access log would
    # duplicate ours (and has no request id).
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    # httpx logs each request's URL at INFO (httpcore its steps at DEBUG): the breached-password check's URL ends
    # with the first digits of a password's hash (app/breach.py), which no line may show.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    # Audit events (app/audit.py) are kept whatever LOG_LEVEL says: a quieter log must not hide who did what.
    logging.getLogger("app.audit").setLevel(min(logging.INFO, root.level))
    # Libraries' warnings (PyJWT's, SQLAlchemy's, ours about dev defaults) become log lines like any other,
    # instead of raw text on stderr beside the JSON lines.
    logging.captureWarnings(True)
    # PyJWT's own warning about a short HMAC key says what SECRET_KEY's check already said (and makes fatal outside
    # local), at every token: once is enough.
    warnings.filterwarnings("ignore", category=InsecureKeyLengthWarning)


def init_sentry(settings: Settings) -> None:
    """Must run before the Litestar app is built: the integration patches `Litestar.__init__`."""
    if settings.sentry_enabled:
        sentry_sdk.init(
            dsn=settings.SENTRY_DSN,
            environment=settings.ENVIRONMENT,
            send_default_pii=False,
            # Frames' local variables hold the raw ASGI scope (headers as byte pairs, which the default scrubber
            # does not recognise: the bearer token), request bodies (passwords) and reset links.
            include_local_variables=False,
            max_request_body_size="never",
            before_send=without_credentials,
            # Its breadcrumbs hold each outgoing URL (the breached-password check's ends with the first digits of
            # a password's hash) and it adds trace headers to requests bound for a third party.
            disabled_integrations=[HttpxIntegration],
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


@dataclass(slots=True)
class RequestContext:
    """What every log line of a request carries, and when the request started."""

    request_id: str
    started: float
    user_id: str | None = None
    trace_id: str | None = None  # when tracing is on (app/tracing.py)


# The request this task serves (uvicorn runs each request in a task of its own, with its own copy of the context).
# One variable holding one object, rather than structlog's variable per bound key: set once per request, read by
# every line.
_current_request: ContextVar[RequestContext | None] = ContextVar("current_request", default=None)


def add_request_context(_logger: Any, _name: str, event: EventDict) -> EventDict:
    """A structlog processor (and LogLine's, for libraries' lines): the request id and user id of the request
    being served, if any."""
    current = _current_request.get()
    if current is not None:
        event.setdefault("request_id", current.request_id)
        event.setdefault("user_id", current.user_id)
        if current.trace_id is not None:
            event.setdefault("trace_id", current.trace_id)
    return event


def current_request() -> RequestContext | None:
    """The log context of the request being served, if any."""
    return _current_request.get()


def bind_user(user_id: UUID) -> None:
    """The authenticated caller, for the request's remaining log lines."""
    current = _current_request.get()
    if current is not None:
        current.user_id = str(user_id)


def request_logging(app: ASGIApp) -> ASGIApp:
    """Starts the request's log context: its request id, from `X-Request-ID` (when sane) or generated, and its
    start time. The line itself is written by `log_response`, when the answer starts."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP:
            incoming = next((v.decode("latin-1") for k, v in scope["headers"] if k == REQUEST_ID_HEADER), "")
            request_id = incoming if _VALID_REQUEST_ID.match(incoming) else secrets.token_hex(16)
            _current_request.set(RequestContext(request_id, time.perf_counter()))
        await app(scope, receive, send)

    return middleware


async def log_response(message: Message, scope: Scope) -> None:
    """One line per HTTP request, when its answer starts: method, path (addresses masked), status, duration_ms,
    request_id, user_id (bound by the auth middleware). Never bodies or credentials. As a before-send hook it sees
    the status actually sent, also of errors answered outside the middleware stack (the auth middleware's 401,
    403 and 503), and echoes the request id on every answer."""
    if message["type"] != "http.response.start":
        return
    current = _current_request.get()
    if current is None:
        return  # no route matched, so no middleware ran: the 404 of an unknown path
    # Appended to the raw list Litestar sends: no header object built for one header no handler sets.
    message["headers"] = [*message.get("headers", ()), (REQUEST_ID_HEADER, current.request_id.encode())]
    if access_log.isEnabledFor(logging.INFO):
        line = {
            "event": "request",
            "method": scope.get("method"),
            "path": masked_path(scope["path"]),
            "status": message["status"],
            "duration_ms": round((time.perf_counter() - current.started) * 1000, 2),
        }
        access_log.info(add_request_context(None, "", line))
