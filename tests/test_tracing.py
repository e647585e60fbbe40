"""OpenTelemetry traces over HTTP against the served app and a real database (PostgreSQL and SQLite), spans caught
by an in-memory exporter: a server span per request named by its route template with the request id, database
statements (the ORM's and the fast path's) and SMTP sends as its children, the trace id in the request's log line.
Off by default, and then nothing of it is installed."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from app.main import create_app
from app.tracing import REQUEST_ID_ATTRIBUTE
from tests.conftest import (
    SUPERUSER_EMAIL,
    Database,
    LiveServer,
    Mailbox,
    Records,
    Served,
    make_settings,
    seed_account,
)


class Traced:
    def __init__(self, served: Served, exporter: InMemorySpanExporter) -> None:
        self.served = served
        self.exporter = exporter

    def trace_of(self, response: httpx.Response, timeout: float = 5.0) -> tuple[ReadableSpan, list[ReadableSpan]]:
        """The request's server span (found by its request id) and every span of its trace, once it ended."""
        request_id = response.headers["x-request-id"]
        deadline = time.monotonic() + timeout
        while True:
            spans = self.exporter.get_finished_spans()
            servers = [
                span
                for span in spans
                if span.kind == SpanKind.SERVER and (span.attributes or {}).get(REQUEST_ID_ATTRIBUTE) == request_id
            ]
            if servers or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert len(servers) == 1, [span.name for span in spans]
        server = servers[0]
        assert server.context is not None
        trace_id = server.context.trace_id
        return server, [span for span in spans if span.context is not None and span.context.trace_id == trace_id]


@pytest.fixture(scope="module")
def traced(database: Database, smtp_server: Mailbox) -> Iterator[Traced]:
    settings = make_settings(
        database.url,
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:4318",  # never reached: the spans go to the test's exporter
        LOG_LEVEL="INFO",
        SMTP_HOST="127.0.0.1",
        SMTP_PORT=str(smtp_server.port),
        SMTP_TLS="false",
        EMAILS_FROM_EMAIL="noreply@example.com",
    )
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    level = logging.getLogger().level
    app = create_app(settings, tracer_provider=provider)
    try:
        with LiveServer(app) as server:
            yield Traced(Served(url=server.url, settings=settings, database=database, app=app), exporter)
    finally:
        logging.getLogger().setLevel(level)  # the session's other servers log at WARNING


def children(parent: ReadableSpan, spans: list[ReadableSpan]) -> list[ReadableSpan]:
    assert parent.context is not None
    return [span for span in spans if span.parent is not None and span.parent.span_id == parent.context.span_id]


def attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def statement_text(span: ReadableSpan) -> str:
    """The SQL of a statement span (the attribute's name depends on the semantic conventions' version)."""
    return str(attributes(span).get("db.statement") or attributes(span).get("db.query.text") or "")


def test_a_request_is_a_server_span_named_by_its_route_with_statement_spans(traced: Traced) -> None:
    account = seed_account(traced.served)
    with traced.served.client() as http:
        created = http.post("/items/", json={"title": "traced"}, headers=account.headers)
        assert created.status_code == 200
        item_id = created.json()["id"]
        response = http.get(f"/items/{item_id}", headers=account.headers)
    assert response.status_code == 200
    server, spans = traced.trace_of(response)
    assert server.name == "GET /api/v1/items/{id}"
    assert item_id not in server.name
    assert attributes(server)["http.route"] == "/api/v1/items/{id}"
    assert attributes(server)[REQUEST_ID_ATTRIBUTE] == response.headers["x-request-id"]
    # The caller's row (auth) and the item, read by the fast path (one statement for both), a child of the server span.
    statements = [span for span in children(server, spans) if span.kind == SpanKind.CLIENT]
    assert statements, [span.name for span in spans]
    texts = [statement_text(span) for span in statements]
    assert all(text.lstrip().upper().startswith("SELECT") for text in texts), texts
    assert any("item" in text for text in texts), texts
    # The creation's insert is a statement span of its own request's trace.
    _, created_spans = traced.trace_of(created)
    texts = [statement_text(span) for span in created_spans if span.kind == SpanKind.CLIENT]
    assert any(text.lstrip().upper().startswith("INSERT") for text in texts), texts


def test_the_orm_path_is_traced(traced: Traced) -> None:
    with traced.served.client() as http:
        response = http.get("/utils/ready")
    assert response.status_code == 200
    server, spans = traced.trace_of(response)
    assert server.name.startswith("GET /api/v1/utils/ready")
    statements = [span for span in children(server, spans) if span.kind == SpanKind.CLIENT]
    texts = [statement_text(span) for span in statements]
    assert "SELECT 1" in texts, texts  # the readiness ping, in the request's ORM session


def test_a_recovery_mail_is_an_smtp_span_of_its_request(traced: Traced, smtp_server: Mailbox) -> None:
    smtp_server.messages.clear()
    with traced.served.client() as http:
        response = http.post(f"/password-recovery/{SUPERUSER_EMAIL}")
    assert response.status_code == 200
    assert smtp_server.wait_for(1)
    deadline = time.monotonic() + 5
    while True:
        server, spans = traced.trace_of(response)
        smtp = [span for span in spans if span.name == "smtp send"]
        if smtp or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert server.name == "POST /api/v1/password-recovery/{email}"
    assert SUPERUSER_EMAIL not in server.name
    assert not any(SUPERUSER_EMAIL in str(value) for value in attributes(server).values()), attributes(server)
    assert any("/password-recovery/***@example.com" in str(value) for value in attributes(server).values())
    assert len(smtp) == 1
    assert smtp[0] in children(server, spans)
    assert attributes(smtp[0])["server.port"] == traced.served.settings.SMTP_PORT
    assert attributes(smtp[0])["email.kind"] == "reset_password"
    assert not any(SUPERUSER_EMAIL in str(value) for value in attributes(smtp[0]).values())


def test_the_trace_id_is_in_the_requests_log_line(traced: Traced) -> None:
    records = Records()
    request_log = logging.getLogger("app.request")
    request_log.addHandler(records)
    try:
        with traced.served.client() as http:
            response = http.get("/utils/health-check/", headers={"X-Request-ID": "trace-me-123"})
    finally:
        request_log.removeHandler(records)
    assert response.status_code == 200
    server, _ = traced.trace_of(response)
    assert server.context is not None
    lines = [record for record in records.records if isinstance(record.msg, dict)]
    mine = [record for record in lines if record.msg.get("request_id") == "trace-me-123"]  # type: ignore[union-attr]
    assert len(mine) == 1
    trace_id = format(server.context.trace_id, "032x")
    assert mine[0].msg["trace_id"] == trace_id  # type: ignore[index]
    assert trace_id in logging.getLogger().handlers[0].format(mine[0])  # the line as written


def test_an_unmatched_path_keeps_the_bare_method_as_its_name(traced: Traced) -> None:
    response = httpx.get(traced.served.url + "/no-such-page/12345")
    assert response.status_code == 404
    deadline = time.monotonic() + 5
    while True:
        spans = [
            span
            for span in traced.exporter.get_finished_spans()
            if span.kind == SpanKind.SERVER and any("/no-such-page/12345" in str(v) for v in attributes(span).values())
        ]
        if spans or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert [span.name for span in spans] == ["GET"]


def test_tracing_is_off_by_default(served: Served) -> None:
    assert not served.settings.OTEL_EXPORTER_OTLP_ENDPOINT
    assert not any("OpenTelemetry" in type(plugin).__name__ for plugin in served.app.plugins)
    assert served.app.state.executor.span is None
