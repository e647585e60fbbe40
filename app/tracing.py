"""OpenTelemetry traces, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (README "Operating").

A server span per request (Litestar's OpenTelemetry plugin), renamed after routing to the route *template*
(`GET /api/v1/items/{id}`; a path no route matches keeps the bare method, as the semantic conventions ask), with
the request id as `request.id`; a client span per database statement, on the ORM path (SQLAlchemy's
instrumentation of the engine, on either database) and on the fast path (db/executor.py's statements on asyncpg,
which SQLAlchemy does not see); a span per SMTP send. Every log line of a traced request carries its `trace_id`.

Off, nothing of this is installed: no middleware, no listener, no processor. Spans go to the OTLP/HTTP exporter
in batches; the exporter reads the other standard variables (`OTEL_EXPORTER_OTLP_HEADERS`, ...) itself."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Iterator
from typing import Any

from litestar.middleware.base import DefineMiddleware
from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin
from litestar.types import ASGIApp, Receive, Scope, Send
from opentelemetry import trace
from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
from opentelemetry.metrics import NoOpMeter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.semconv.attributes.http_attributes import HTTP_ROUTE
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.observability import current_request
from db.executor import Executor

REQUEST_ID_ATTRIBUTE = "request.id"
_ADDRESS_LOCAL_PART = re.compile(r"[^/@?&=]+@")

# The tracer of this process's app, for the SMTP sends (None: tracing is off).
_tracer: trace.Tracer | None = None


def tracing_enabled(settings: Settings) -> bool:
    return bool(settings.OTEL_EXPORTER_OTLP_ENDPOINT)


@contextlib.contextmanager
def span(name: str, attributes: dict[str, Any]) -> Iterator[None]:
    """A client span around a block (an SMTP send) when tracing is on; nothing otherwise."""
    if _tracer is None:
        yield
        return
    with _tracer.start_as_current_span(name, kind=trace.SpanKind.CLIENT, attributes=attributes):
        yield


def _span_details(scope: Scope) -> tuple[str, dict[str, Any]]:
    """The server span's first name: the bare method. Routing has not run yet; `route_span` renames it."""
    return str(scope.get("method", "HTTP")), {}


_URL_ATTRIBUTES = ("http.target", "http.url", "url.path", "url.full", "url.query")


def _mask_addresses(span: trace.Span, scope: dict[str, Any]) -> None:
    """The server span's URL attributes with the local part of any address hidden, as in the request log line
    (`/password-recovery/***@example.com`)."""
    found = getattr(span, "attributes", None) or {}
    for key in _URL_ATTRIBUTES:
        value = found.get(key)
        if isinstance(value, str) and "@" in value:
            span.set_attribute(key, _ADDRESS_LOCAL_PART.sub("***@", value))


def route_span(app: ASGIApp) -> ASGIApp:
    """Inside routing (and inside the request-logging middleware): names the server span by the route template,
    gives it the request id, and binds the trace id to the request's log lines."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        current = trace.get_current_span()
        context = current.get_span_context()
        if context.is_valid:
            template = scope.get("path_template", "")
            current.update_name(f"{scope.get('method', 'HTTP')} {template}")
            current.set_attribute(HTTP_ROUTE, template)
            request = current_request()
            if request is not None:
                current.set_attribute(REQUEST_ID_ATTRIBUTE, request.request_id)
                request.trace_id = format(context.trace_id, "032x")
        await app(scope, receive, send)

    return middleware


class Tracing:
    """What `create_app` installs when tracing is on: the plugin, the middleware, the database spans."""

    def __init__(self, settings: Settings, provider: TracerProvider | None = None) -> None:
        if provider is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            from app.metrics import build_commit, build_version

            provider = TracerProvider(
                resource=Resource.create(
                    {
                        "service.name": settings.OTEL_SERVICE_NAME,
                        "service.version": build_version(),
                        "service.commit": build_commit(settings),
                        "deployment.environment": settings.ENVIRONMENT,
                    }
                )
            )
            endpoint = (settings.OTEL_EXPORTER_OTLP_ENDPOINT or "").rstrip("/")
            # The generic endpoint names the collector; traces go to its /v1/traces (as the SDK would do).
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces")))
        self.provider = provider
        self.tracer = provider.get_tracer("app")
        self.plugin = OpenTelemetryPlugin(
            OpenTelemetryConfig(
                tracer_provider=provider,
                meter=NoOpMeter("app"),
                scope_span_details_extractor=_span_details,
                server_request_hook_handler=_mask_addresses,
                exclude_spans=["receive", "send"],
            )
        )
        self.middleware = DefineMiddleware(route_span)

    def instrument(self, engine: AsyncEngine, executor: Executor) -> None:
        """Spans for the engine's statements (the ORM's, and the fast path's on SQLite) and the fast path's
        statements on asyncpg."""
        EngineTracer(  # type: ignore[no-untyped-call]
            self.tracer,
            engine.sync_engine,
            NoOpMeter("app").create_up_down_counter("db.client.connections.usage"),
        )
        database = engine.url.database or ""
        tracer = self.tracer

        def statement_span(sql: str) -> contextlib.AbstractContextManager[Any]:
            operation = sql.split(None, 1)[0].upper() if sql else "SQL"
            return tracer.start_as_current_span(
                f"{operation} {database}".strip(),
                kind=trace.SpanKind.CLIENT,
                attributes={"db.system": "postgresql", "db.name": database, "db.statement": sql},
            )

        executor.span = statement_span

    async def start(self) -> None:
        global _tracer
        _tracer = self.tracer

    async def stop(self) -> None:
        global _tracer
        if _tracer is self.tracer:
            _tracer = None
        # What the batch holds, sent before the process ends; a collector that does not answer costs 2 s at most.
        await asyncio.to_thread(self.provider.force_flush, 2000)
