"""Prometheus metrics at /metrics: a real uvicorn with 2 worker processes on a migrated PostgreSQL database, a known
load over HTTP, and scrapes that count exactly what was sent, per route template and status, whichever worker
answers them. Off by default; never in the OpenAPI document; no token needed."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.main import create_app
from tests.conftest import (
    ROOT,
    SECRET_KEY,
    SUPERUSER_EMAIL,
    SUPERUSER_PASSWORD,
    LiveServer,
    Mailbox,
    Served,
    children_of,
    create_postgres_database,
    drop_postgres_database,
    free_port,
    make_settings,
    prepare,
)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    response = httpx.get(url + "/metrics", timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def requests_counted(samples: Samples) -> Counter[tuple[str, str, str]]:
    counted: Counter[tuple[str, str, str]] = Counter()
    for (name, labels), value in samples.items():
        if name == "http_requests_total":
            found = dict(labels)
            if found["route"] != "/metrics":
                counted[(found["method"], found["route"], found["status"])] += int(value)
    return counted


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@dataclass
class TwoWorkers:
    url: str
    folder: Path
    master: int


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory, smtp_server: Mailbox) -> Iterator[TwoWorkers]:
    """`uvicorn --workers 2` as `just serve` and the image run it, with metrics on, on a fresh migrated database."""
    database = create_postgres_database()
    try:
        prepare(database)
        yield from serve_two_workers(tmp_path_factory, smtp_server, database)
    finally:
        drop_postgres_database(database)


def serve_two_workers(
    tmp_path_factory: pytest.TempPathFactory, smtp_server: Mailbox, database: str
) -> Iterator[TwoWorkers]:
    metrics_dir = tmp_path_factory.mktemp("metrics")
    port = free_port()
    environ = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("COV_", "PYTEST"))},
        "DATABASE_URL": database,
        "SECRET_KEY": SECRET_KEY,
        "FIRST_SUPERUSER": SUPERUSER_EMAIL,
        "FIRST_SUPERUSER_PASSWORD": SUPERUSER_PASSWORD,
        "ENVIRONMENT": "staging",
        "POSTGRES_PASSWORD": "unused-but-not-changethis",
        "LOG_LEVEL": "WARNING",
        "METRICS_ENABLED": "true",
        "METRICS_DIR": str(metrics_dir),
        "BUILD_COMMIT": "0123abc",
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "REDIS_NAMESPACE": f"test-metrics-{uuid.uuid4().hex[:8]}",
        "LOGIN_FAILURES_PER_ACCOUNT_PER_MINUTE": "2",
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(smtp_server.port),
        "SMTP_TLS": "false",
        "EMAILS_FROM_EMAIL": "noreply@example.com",
    }
    command = [
        sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory", "--host", "127.0.0.1",
        "--port", str(port), "--workers", "2", "--http", "app.server:HttpProtocol", "--no-access-log",
    ]  # fmt: skip
    log = tmp_path_factory.mktemp("log") / "uvicorn.log"
    with log.open("wb") as output:
        process = subprocess.Popen(command, cwd=ROOT, env=environ, stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(url + "/api/v1/utils/health-check/", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        # Both workers up: each wrote its files to the folder of this server.
        folders = list(metrics_dir.glob("accounts-api-metrics-*"))
        assert len(folders) == 1, folders
        while len(children_of(process.pid)) < 2 or len(list(folders[0].glob("gauge_livesum_*.db"))) < 2:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        yield TwoWorkers(url=url, folder=folders[0], master=process.pid)
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.system
def test_requests_counted_are_the_requests_sent_across_two_workers(two_workers: TwoWorkers) -> None:
    api = two_workers.url + "/api/v1"
    before = requests_counted(scrape(two_workers.url))
    sent: Counter[tuple[str, str, str]] = Counter()
    item_ids = [str(uuid.uuid4()) for _ in range(10)]
    unknown_paths = [f"/no-such-page/{uuid.uuid4().hex}" for _ in range(10)]

    def send(method: str, path: str, route: str, status: int, **kwargs: object) -> httpx.Response:
        # A new connection each time: the kernel spreads them over both workers' accepts.
        with httpx.Client(timeout=30, headers={"Connection": "close"}) as http:
            response = http.request(method, path, **kwargs)  # type: ignore[arg-type]
        assert response.status_code == status, (path, response.text)
        sent[(method, route, str(status))] += 1
        return response

    token = send(
        "POST",
        api + "/login/access-token",
        "/api/v1/login/access-token",
        200,
        data={"username": SUPERUSER_EMAIL, "password": SUPERUSER_PASSWORD},
    ).json()["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    for _ in range(30):
        send("GET", api + "/utils/health-check/", "/api/v1/utils/health-check", 200)
        send("GET", api + "/users/me", "/api/v1/users/me", 401)
        send("GET", api + "/users/me", "/api/v1/users/me", 200, headers=auth)
    for item_id in item_ids:
        send("GET", f"{api}/items/{item_id}", "/api/v1/items/{id}", 404, headers=auth)
        send("GET", f"{api}/items/{item_id}-not-a-uuid", "/api/v1/items/{id}", 422, headers=auth)
    for path in unknown_paths:
        send("GET", two_workers.url + path, "unmatched", 404)
    send("POST", api + "/items/", "/api/v1/items", 200, headers=auth, json={"title": "counted"})

    # Whichever worker answers a scrape, it counts both workers' requests: several scrapes, one answer.
    for _ in range(6):
        samples = scrape(two_workers.url)
        counted = requests_counted(samples)
        assert counted - before == sent
        histogram = {
            dict(labels)["route"]: found
            for (name, labels), found in samples.items()
            if name == "http_request_duration_seconds_count"
        }
        assert histogram["unmatched"] >= 10
        assert histogram["/api/v1/users/me"] >= 60

    # Both workers served: each one's counter file holds some of the counts.
    assert len(list(two_workers.folder.glob("counter_*.db"))) == 2
    # Never a raw id or path as a label value.
    labels = {label for (_, found), _ in samples.items() for _, label in found}
    for raw in [*item_ids, *unknown_paths]:
        assert not any(raw in label or raw.split("/")[-1] in label for label in labels), raw
    routes = {dict(found)["route"] for (name, found), _ in samples.items() if name == "http_requests_total"}
    assert all(route == "unmatched" or route.startswith("/") for route in routes)
    assert not any(re.search(r"[0-9a-f]{8}-[0-9a-f]{4}", route) for route in routes)


@pytest.mark.system
def test_logins_refusals_mails_pool_and_build_across_two_workers(two_workers: TwoWorkers, smtp_server: Mailbox) -> None:
    api = two_workers.url + "/api/v1"
    before = scrape(two_workers.url)
    victim = f"nobody-{uuid.uuid4().hex[:8]}@example.com"
    statuses = []
    for _ in range(3):  # the account's limit is 2 failures a minute, shared by both workers through Redis
        with httpx.Client(timeout=30, headers={"Connection": "close"}) as http:
            response = http.post(api + "/login/access-token", data={"username": victim, "password": "wrong-password"})
        statuses.append(response.status_code)
    assert statuses == [400, 400, 429]
    smtp_server.messages.clear()
    assert httpx.post(f"{api}/password-recovery/{SUPERUSER_EMAIL}", timeout=30).status_code == 200
    assert smtp_server.wait_for(1)

    deadline = time.monotonic() + 10
    while True:
        # The mail's counter moves when the SMTP server has answered, after the HTTP answer; the pool's gauges are
        # sampled once a second, so the last sample may be from while a request held a connection.
        after = scrape(two_workers.url)
        sent = value(after, "emails_total", kind="reset_password", outcome="sent")
        settled = sent - value(before, "emails_total", kind="reset_password", outcome="sent") == 1
        if (settled and value(after, "db_pool_checked_out") == 0) or time.monotonic() > deadline:
            break
        time.sleep(0.1)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("logins_total", outcome="failed") == 2
    assert delta("logins_total", outcome="refused") == 1
    assert delta("logins_total", outcome="succeeded") == 0
    assert delta("emails_total", kind="reset_password", outcome="queued") == 1
    assert delta("emails_total", kind="reset_password", outcome="sent") == 1
    assert delta("emails_total", kind="reset_password", outcome="failed") == 0
    # Each worker's pool of DB_POOL_SIZE (20), summed; nothing checked out between requests.
    assert value(after, "db_pool_size") == 40
    assert value(after, "db_pool_checked_out") == 0
    assert value(after, "db_pool_waiting") == 0
    assert value(after, "rate_limit_redis_fallback") == 0
    assert value(after, "build_info", version="0.1.0", commit="0123abc") == 1
    assert value(after, "http_requests_in_flight") >= 1  # the scrape itself


@pytest.mark.system
def test_metrics_need_no_token_and_are_not_in_the_openapi_document(two_workers: TwoWorkers) -> None:
    assert httpx.get(two_workers.url + "/metrics", headers={"Authorization": "Bearer nonsense"}).status_code == 200
    document = httpx.get(two_workers.url + "/api/v1/openapi.json").json()
    assert not [path for path in document["paths"] if "metrics" in path]


def test_the_openapi_document_is_the_same_with_metrics_on(served: Served) -> None:
    on = create_app(make_settings(served.database.url, METRICS_ENABLED="true"))
    off = create_app(make_settings(served.database.url))
    assert on.state.openapi_document == off.state.openapi_document


def test_metrics_are_off_by_default(served: Served) -> None:
    assert not served.settings.METRICS_ENABLED
    response = httpx.get(served.url + "/metrics")
    assert response.status_code == 404
    assert "http_requests_total" not in response.text


# ---------------------------------------------------------------- the dashboard

DASHBOARD = ROOT / "deploy" / "grafana" / "accounts-api.json"
# PromQL's words that are not metric names: aggregations, functions (followed by "(") and keywords.
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"}


def metric_names(expression: str) -> set[str]:
    """The metric names a PromQL expression selects: its words once strings, label matchers, ranges and
    `by (...)` groupings are taken out, but for functions and aggregations (a word before "(") and keywords."""
    expression = re.sub(r'"(?:[^"\\]|\\.)*"', " ", expression)
    expression = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", expression)
    expression = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expression)
    names = set()
    for word in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expression):
        if word[0] not in PROMQL_WORDS and not expression[word.end() :].lstrip().startswith("("):
            names.add(word[0])
    return names


def test_metric_names_are_found_in_promql() -> None:
    assert metric_names('histogram_quantile(0.95, sum by (le, route) (rate(a_bucket{job=~"$job"}[5m])))') == {
        "a_bucket"
    }
    assert metric_names('sum(rate(b_total{status=~"5.."}[1m])) / sum(c)') == {"b_total", "c"}


@pytest.mark.system
def test_the_dashboard_uses_only_metrics_the_app_exports_and_shows_each(two_workers: TwoWorkers) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            expressions.append(variable["query"]["query"].removeprefix("label_values(").split(",")[0])
    used = set().union(*(metric_names(expression) for expression in expressions))
    # Scraped after traffic (the fixture's own requests and the other tests'), so every series exists.
    httpx.get(two_workers.url + "/api/v1/utils/health-check/")
    response = httpx.get(two_workers.url + "/metrics", timeout=10)
    families = list(text_string_to_metric_families(response.text))
    exported = {sample.name for family in families for sample in family.samples}
    assert used, expressions
    assert used <= exported, used - exported
    # Every metric family the app exports has a panel.
    suffixes = ("", "_total", "_bucket", "_count", "_sum")
    unshown = {family.name for family in families if not any(family.name + end in used for end in suffixes)}
    assert not unshown
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])


def test_the_redis_fallback_shows_while_redis_does_not_answer(served: Served) -> None:
    """One process serving alone (metrics in memory), with a Redis that is not there: the first limited request
    falls back to per-process limits, and the gauge says so."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        redis_url = f"redis://127.0.0.1:{closed.getsockname()[1]}/0"
    settings = make_settings(
        served.database.url, METRICS_ENABLED="true", RATE_LIMIT_ENABLED="true", REDIS_URL=redis_url
    )
    with LiveServer(create_app(settings)) as server:
        assert value(scrape(server.url), "rate_limit_redis_fallback") == 0
        response = httpx.post(
            server.url + "/api/v1/login/access-token", data={"username": "nobody@example.com", "password": "wrong"}
        )
        assert response.status_code == 400
        samples = scrape(server.url)
        assert value(samples, "rate_limit_redis_fallback") == 1
        assert value(samples, "logins_total", outcome="failed") == 1
