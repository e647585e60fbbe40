"""Breached passwords (README "Breached passwords"): new passwords looked up in a range API of the test's own, over
HTTP, on both engines."""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.breach import BREACHED, CHECK_UNAVAILABLE
from app.config import SettingsError
from app.main import create_app
from tests.conftest import (
    SUPERUSER_EMAIL,
    SUPERUSER_PASSWORD,
    Account,
    LiveServer,
    Mailbox,
    Records,
    Served,
    counting,
    free_port,
    login,
    make_settings,
    random_email,
    sent_by,
)
from tests.test_emails import recovery_subject, token_from, wait_for_mail

BREACHED_PASSWORD = "seen-in-a-breach-2024"
PADDED_PASSWORD = "listed-as-padding-only"  # its suffix is on a padding line (count 0)
CLEAN_PASSWORD = "never-seen-anywhere-8317"
SEEN = 7  # how often the range API says the breached password was seen
UNAVAILABLE = {"detail": CHECK_UNAVAILABLE}
SETTINGS_ONLY = "sqlite+aiosqlite:///unused.db"  # settings read, no app built


def sha1(password: str) -> str:
    return hashlib.sha1(password.encode()).hexdigest().upper()


def refused(field_name: str) -> dict[str, Any]:
    return {"detail": [{"type": "password_breached", "loc": ["body", field_name], "msg": BREACHED}]}


# ---------------------------------------------------------------- the range API


@dataclass
class RangeApi:
    """Serves `/range/{prefix}` as Have I Been Pwned does (CRLF-separated `SUFFIX:COUNT` lines, padded), or fails
    as `mode` says; records each request's path and Add-Padding header."""

    url: str
    mode: str = "ok"
    paths: list[str] = field(default_factory=list)
    padding_headers: list[str | None] = field(default_factory=list)
    known: dict[str, int] = field(default_factory=lambda: {sha1(BREACHED_PASSWORD): SEEN, sha1(PADDED_PASSWORD): 0})

    def answer(self, prefix: str) -> bytes:
        lines = [f"{digest[5:]}:{count}" for digest, count in self.known.items() if digest.startswith(prefix)]
        lines += [f"{secrets.token_hex(18)[:35].upper()}:0" for _ in range(3)]  # padding
        lines.append(f"{'0' * 35}:12")  # another password of the range
        return "\r\n".join(lines).encode()


def range_handler(api: RangeApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            api.paths.append(self.path)
            api.padding_headers.append(self.headers.get("Add-Padding"))
            if api.mode == "status 500":
                self.reply(500, b"oops")
            elif api.mode == "garbage":
                self.reply(200, b"<html><body>Sign in to the hotel wifi</body></html>")
            elif api.mode == "huge":
                self.reply(200, b"A" * (2 * 1024 * 1024))
            else:
                if api.mode == "slow":
                    time.sleep(3)
                self.reply(200, api.answer(self.path.rsplit("/", 1)[-1]))

        def reply(self, status: int, body: bytes) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except OSError:  # the client gave up (a timeout, a body too large)
                pass

        def log_message(self, *_: Any) -> None:
            pass

    return Handler


@pytest.fixture(scope="module")
def range_server() -> Iterator[RangeApi]:
    api = RangeApi(url="")
    server = ThreadingHTTPServer(("127.0.0.1", 0), range_handler(api))
    server.daemon_threads = True
    server.block_on_close = False
    api.url = f"http://127.0.0.1:{server.server_address[1]}/range"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield api
    server.shutdown()
    server.server_close()


@pytest.fixture
def range_api(range_server: RangeApi) -> RangeApi:
    range_server.mode = "ok"
    range_server.paths.clear()
    range_server.padding_headers.clear()
    return range_server


# ---------------------------------------------------------------- apps that check


@dataclass
class Api:
    http: httpx.Client
    url: str

    def metric(self, outcome: str) -> float:
        text = self.http.get(self.url + "/metrics").text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "password_breach_checks_total" and sample.labels == {"outcome": outcome}:
                    return float(sample.value)
        raise AssertionError(f"no password_breach_checks_total{{outcome={outcome!r}}}")


Serve = Callable[..., AbstractContextManager[Api]]


@pytest.fixture
def serve(served: Served, smtp_server: Mailbox, range_api: RangeApi) -> Serve:
    """An app of its own with the check on (the range API's URL unless given), mail and metrics, and `overrides`."""

    @contextmanager
    def serve(**overrides: str) -> Iterator[Api]:
        settings = make_settings(
            served.database.url,
            SMTP_HOST="127.0.0.1",
            SMTP_PORT=str(smtp_server.port),
            SMTP_TLS="false",
            EMAILS_FROM_EMAIL="noreply@example.com",
            METRICS_ENABLED="true",
            **{"PASSWORD_BREACH_CHECK_URL": range_api.url, **overrides},
        )
        app = create_app(settings)
        with LiveServer(app) as server, httpx.Client(base_url=server.url + "/api/v1", timeout=30) as http:
            yield Api(http=http, url=server.url)

    return serve


def signup(http: httpx.Client, password: str, email: str | None = None) -> httpx.Response:
    return http.post("/users/signup", json={"email": email or random_email(), "password": password})


def can_log_in(http: httpx.Client, email: str, password: str) -> bool:
    response = http.post("/login/access-token", data={"username": email, "password": password})
    assert response.status_code in (200, 400), response.text
    return response.status_code == 200


def assert_only_prefixes_sent(api: RangeApi, *passwords: str) -> None:
    """Each request named the first 5 hex digits of a password's SHA-1, uppercase, asked for padding, and carried
    nothing more of it."""
    assert api.paths == [f"/range/{sha1(password)[:5]}" for password in passwords]
    assert all(re.fullmatch(r"/range/[0-9A-F]{5}", path) for path in api.paths)
    assert api.padding_headers == ["true"] * len(passwords)


# ---------------------------------------------------------------- refused where a password is set


def test_signup_refuses_a_breached_password_and_writes_nothing(serve: Serve, range_api: RangeApi) -> None:
    email = random_email()
    with serve() as api:
        response = signup(api.http, BREACHED_PASSWORD, email)
        assert response.status_code == 422, (range_api.paths, api.http.base_url)
        assert response.json() == refused("password")
        assert BREACHED_PASSWORD not in response.text
        assert_only_prefixes_sent(range_api, BREACHED_PASSWORD)
        assert api.metric("breached") == 1
        # Nothing was written: the address is free.
        assert not can_log_in(api.http, email, BREACHED_PASSWORD)
        assert signup(api.http, CLEAN_PASSWORD, email).status_code == 200
        assert api.metric("ok") == 1
        assert can_log_in(api.http, email, CLEAN_PASSWORD)
    assert_only_prefixes_sent(range_api, BREACHED_PASSWORD, CLEAN_PASSWORD)


def test_a_clean_password_is_accepted(serve: Serve, range_api: RangeApi) -> None:
    with serve() as api:
        response = signup(api.http, CLEAN_PASSWORD)
        assert response.status_code == 200, response.text
    assert_only_prefixes_sent(range_api, CLEAN_PASSWORD)


def test_a_padding_line_is_no_sighting(serve: Serve, range_api: RangeApi) -> None:
    with serve() as api:
        assert signup(api.http, PADDED_PASSWORD).status_code == 200
    assert_only_prefixes_sent(range_api, PADDED_PASSWORD)


def test_a_password_change_refuses_a_breached_password(
    serve: Serve, range_api: RangeApi, new_account: Callable[..., Account]
) -> None:
    account = new_account()
    body = {"current_password": account.password, "new_password": BREACHED_PASSWORD}
    with serve() as api:
        response = api.http.patch("/users/me/password", json=body, headers=account.headers)
        assert response.status_code == 422
        assert response.json() == refused("new_password")
        # The password is unchanged and the token still works: nothing was written.
        assert can_log_in(api.http, account.email, account.password)
        assert api.http.get("/users/me", headers=account.headers).status_code == 200
        body["new_password"] = CLEAN_PASSWORD
        assert api.http.patch("/users/me/password", json=body, headers=account.headers).status_code == 200
        assert can_log_in(api.http, account.email, CLEAN_PASSWORD)
    assert_only_prefixes_sent(range_api, BREACHED_PASSWORD, CLEAN_PASSWORD)


def test_a_wrong_current_password_is_refused_before_any_lookup(
    serve: Serve, range_api: RangeApi, new_account: Callable[..., Account]
) -> None:
    account = new_account()
    body = {"current_password": "not-the-password", "new_password": BREACHED_PASSWORD}
    with serve() as api:
        response = api.http.patch("/users/me/password", json=body, headers=account.headers)
        assert response.status_code == 400
    assert range_api.paths == []


def test_a_reset_refuses_a_breached_password(
    serve: Serve, range_api: RangeApi, mailbox: Mailbox, new_account: Callable[..., Account]
) -> None:
    account = new_account()
    with serve() as api:
        assert api.http.post(f"/password-recovery/{account.email}").status_code == 200
        token = token_from(wait_for_mail(mailbox, account.email, recovery_subject(account.email)))
        response = api.http.post("/reset-password/", json={"token": token, "new_password": BREACHED_PASSWORD})
        assert response.status_code == 422
        assert response.json() == refused("new_password")
        assert can_log_in(api.http, account.email, account.password)
        # The link still works: the password it was made for was not replaced.
        response = api.http.post("/reset-password/", json={"token": token, "new_password": CLEAN_PASSWORD})
        assert response.status_code == 200, response.text
        assert can_log_in(api.http, account.email, CLEAN_PASSWORD)
    assert_only_prefixes_sent(range_api, BREACHED_PASSWORD, CLEAN_PASSWORD)


def test_a_superuser_may_not_set_a_breached_password_either(
    serve: Serve, range_api: RangeApi, new_account: Callable[..., Account]
) -> None:
    account = new_account()
    email = random_email()
    with serve() as api:
        admin = login(api.http, SUPERUSER_EMAIL, SUPERUSER_PASSWORD)
        response = api.http.post("/users/", json={"email": email, "password": BREACHED_PASSWORD}, headers=admin)
        assert response.status_code == 422
        assert response.json() == refused("password")
        assert not can_log_in(api.http, email, BREACHED_PASSWORD)
        response = api.http.patch(f"/users/{account.id}", json={"password": BREACHED_PASSWORD}, headers=admin)
        assert response.status_code == 422
        assert response.json() == refused("password")
        assert can_log_in(api.http, account.email, account.password)
        # A change without a password looks nothing up.
        response = api.http.patch(f"/users/{account.id}", json={"full_name": "Renamed"}, headers=admin)
        assert response.status_code == 200
        response = api.http.post("/users/", json={"email": email, "password": CLEAN_PASSWORD}, headers=admin)
        assert response.status_code == 200, response.text
    assert_only_prefixes_sent(range_api, BREACHED_PASSWORD, BREACHED_PASSWORD, CLEAN_PASSWORD)


def test_a_refusal_sends_no_statement_and_a_signup_stays_one_insert(served: Served, range_api: RangeApi) -> None:
    """The check comes before anything is read or written; on, a signup still sends one statement (as off,
    tests/test_statements.py)."""
    app = create_app(make_settings(served.database.url, PASSWORD_BREACH_CHECK_URL=range_api.url))
    with counting(app) as (http, statements):
        body = {"email": random_email(), "password": BREACHED_PASSWORD}
        response, sent = sent_by(http, statements, "POST", "/users/signup", json=body)
        assert response.status_code == 422
        assert sent == []
        body["password"] = CLEAN_PASSWORD
        response, sent = sent_by(http, statements, "POST", "/users/signup", json=body)
        assert response.status_code == 200
        assert len(sent) == 1
        assert sent[0].lstrip().upper().startswith("INSERT")
    assert_only_prefixes_sent(range_api, BREACHED_PASSWORD, CLEAN_PASSWORD)


@pytest.mark.parametrize(("min_count", "status"), [(SEEN, 422), (SEEN + 1, 200)])
def test_min_count_is_the_threshold(serve: Serve, range_api: RangeApi, min_count: int, status: int) -> None:
    with serve(PASSWORD_BREACH_MIN_COUNT=str(min_count)) as api:
        assert signup(api.http, BREACHED_PASSWORD).status_code == status
    assert len(range_api.paths) == 1


# ---------------------------------------------------------------- a range API that fails


FAILURES = ["down", "status 500", "garbage", "huge", "slow"]


def failing(range_api: RangeApi, failure: str) -> str:
    """The URL to give the app for `failure`: a port nobody listens on, or the range API failing so."""
    if failure == "down":
        return f"http://127.0.0.1:{free_port()}/range"
    range_api.mode = failure
    return range_api.url


@pytest.mark.parametrize("failure", FAILURES)
def test_a_failing_range_api_lets_the_password_through(serve: Serve, range_api: RangeApi, failure: str) -> None:
    email = random_email()
    records = Records()
    check_log = logging.getLogger("app.breach")
    with serve(PASSWORD_BREACH_CHECK_URL=failing(range_api, failure), PASSWORD_BREACH_TIMEOUT_SECONDS="0.3") as api:
        check_log.addHandler(records)
        try:
            started = time.monotonic()
            response = signup(api.http, BREACHED_PASSWORD, email)
            elapsed = time.monotonic() - started
        finally:
            check_log.removeHandler(records)
        assert response.status_code == 200, response.text
        assert elapsed < 2.5  # the slow range API answers after 3 s: the timeout is the whole exchange's
        assert can_log_in(api.http, email, BREACHED_PASSWORD)  # the account IS created
        assert api.metric("error") == 1
        assert api.metric("ok") == api.metric("breached") == 0
    warnings = [record.msg for record in records.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert isinstance(warnings[0], dict)
    assert warnings[0]["event"] == "password breach check failed"
    digest = sha1(BREACHED_PASSWORD)
    for secret in (BREACHED_PASSWORD, digest[:5], digest[5:]):
        assert secret not in str(warnings[0])


@pytest.mark.parametrize("failure", FAILURES)
def test_failing_closed_answers_503_and_writes_nothing(serve: Serve, range_api: RangeApi, failure: str) -> None:
    email = random_email()
    url = failing(range_api, failure)
    with serve(
        PASSWORD_BREACH_CHECK_URL=url, PASSWORD_BREACH_TIMEOUT_SECONDS="0.3", PASSWORD_BREACH_FAIL_CLOSED="true"
    ) as api:
        response = signup(api.http, CLEAN_PASSWORD, email)
        assert response.status_code == 503
        assert response.json() == UNAVAILABLE
        assert response.headers["retry-after"] == "5"
        assert not can_log_in(api.http, email, CLEAN_PASSWORD)
        assert api.metric("error") == 1


def test_fail_closed_still_accepts_a_clean_password_when_the_range_api_answers(serve: Serve) -> None:
    with serve(PASSWORD_BREACH_FAIL_CLOSED="true") as api:
        assert signup(api.http, CLEAN_PASSWORD).status_code == 200
        assert signup(api.http, BREACHED_PASSWORD).status_code == 422


# ---------------------------------------------------------------- never logged, off by default


def test_no_log_line_shows_the_password_or_its_hash(serve: Serve, range_api: RangeApi) -> None:
    records = Records()
    root = logging.getLogger()
    with serve(LOG_LEVEL="DEBUG") as api:
        root.addHandler(records)
        try:
            assert signup(api.http, BREACHED_PASSWORD).status_code == 422
            range_api.mode = "status 500"
            assert signup(api.http, BREACHED_PASSWORD).status_code == 200
        finally:
            root.removeHandler(records)
    assert len(range_api.paths) == 2
    lines = [str(record.msg) + record.getMessage() for record in records.records]
    assert any("password breach check failed" in line for line in lines)
    digest = sha1(BREACHED_PASSWORD)
    for secret in (BREACHED_PASSWORD, digest[:5], digest[5:]):
        assert not [line for line in lines if secret in line]


def test_off_by_default(client: httpx.Client, served: Served, range_api: RangeApi) -> None:
    assert served.settings.PASSWORD_BREACH_CHECK_URL is None
    assert served.app.state.breach is None
    response = signup(client, BREACHED_PASSWORD)
    assert response.status_code == 200, response.text
    assert range_api.paths == []


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/range",
        "https://example.com/range?key=1",
        "https://example.com/range#x",
        "not a url",
        "http://[::1",
    ],
)
def test_the_url_must_be_http_with_a_host_and_no_query(url: str) -> None:
    with pytest.raises(SettingsError, match="PASSWORD_BREACH_CHECK_URL") as raised:
        make_settings(SETTINGS_ONLY, PASSWORD_BREACH_CHECK_URL=url)
    assert url not in str(raised.value)


def test_the_other_settings_are_bounded() -> None:
    for name, value in [
        ("PASSWORD_BREACH_MIN_COUNT", "0"),
        ("PASSWORD_BREACH_TIMEOUT_SECONDS", "0"),
        ("PASSWORD_BREACH_TIMEOUT_SECONDS", "31"),
    ]:
        with pytest.raises(SettingsError, match=name):
            make_settings(SETTINGS_ONLY, **{name: value})
