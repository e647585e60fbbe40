"""Email over real HTTP with a real SMTP server (aiosmtpd in this process): password recovery and reset, the
recovery email's HTML, the test email, the new-account email, and a mail server that is dead or hangs."""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from email.header import decode_header, make_header
from email.message import EmailMessage
from functools import partial
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from aiosmtpd.controller import Controller

from app import emails, security
from app.main import create_app
from tests.conftest import (
    SECRET_KEY,
    SUPERUSER_EMAIL,
    Account,
    LiveServer,
    Mailbox,
    Served,
    free_port,
    make_settings,
    random_email,
)

PROJECT = "Test Project"
FRONTEND = "http://localhost:5173"
RECOVERY_SENT = {"message": "If that email is registered, we sent a password recovery link"}
PASSWORD_UPDATED = {"message": "Password updated successfully"}
INVALID_TOKEN = {"detail": "Invalid token"}
TEST_EMAIL_NOT_SENT = "Test email not sent: the mail server could not be reached or refused it"
LINK = re.compile(re.escape(FRONTEND) + r"/reset-password\?token=([A-Za-z0-9_.-]+)")


# ---------------------------------------------------------------- helpers


def recovery_subject(email: str) -> str:
    return f"{PROJECT} - Password recovery for user {email}"


def wait_for_mail(mailbox: Mailbox, to: str, subject: str, timeout: float = 5.0) -> EmailMessage:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in mailbox.to(to):
            if message["Subject"] == subject:
                return message
        time.sleep(0.02)
    seen = [(str(m["To"]), str(m["Subject"])) for m in mailbox.messages]
    raise AssertionError(f"no mail {subject!r} to {to} within {timeout}s; got {seen}")


def assert_no_mail(mailbox: Mailbox, to: str, settle: float = 0.5) -> None:
    """Nothing for `to` arrives (the sending happens after the response, so give it time to show up)."""
    time.sleep(settle)
    assert [str(m["Subject"]) for m in mailbox.to(to)] == []


def parts(message: EmailMessage) -> tuple[str, str]:
    """The plain-text and HTML alternatives of a received message."""
    assert message.get_content_type() == "multipart/alternative"
    text, body = message.get_body(preferencelist=("plain",)), message.get_body(preferencelist=("html",))
    assert text is not None
    assert text.get_content_type() == "text/plain"
    assert body is not None
    assert body.get_content_type() == "text/html"
    return str(text.get_content()), str(body.get_content())


def token_from(message: EmailMessage) -> str:
    """The reset token of a recovery email; the text and HTML parts carry the same link."""
    text, body = parts(message)
    text_tokens, html_tokens = set(LINK.findall(text)), set(LINK.findall(body))
    assert len(text_tokens) == 1, text
    assert html_tokens == text_tokens
    return str(text_tokens.pop())


def recover(client: httpx.Client, mailbox: Mailbox, email: str) -> str:
    """Ask for a recovery email and return the token from the delivered mail."""
    response = client.post(f"/password-recovery/{email}")
    assert response.status_code == 200, response.text
    return token_from(wait_for_mail(mailbox, email, recovery_subject(email)))


def reset(client: httpx.Client, token: str, new_password: str) -> httpx.Response:
    return client.post("/reset-password/", json={"token": token, "new_password": new_password})


def can_log_in(client: httpx.Client, email: str, password: str) -> bool:
    response = client.post("/login/access-token", data={"username": email, "password": password})
    assert response.status_code in (200, 400), response.text
    return response.status_code == 200


def hashed_password(served: Served, email: str) -> str:
    value = served.database.scalar('SELECT hashed_password FROM "user" WHERE email = :email', email=email)
    assert isinstance(value, str)
    return value


class Records(logging.Handler):
    """The structured events logged by `app.emails` (from the server's thread)."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.events: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.events.append(dict(record.msg) if isinstance(record.msg, dict) else {"event": record.getMessage()})

    def wait_for(self, event: str, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [e for e in self.events if e.get("event") == event]
            if len(found) >= count:
                return found
            time.sleep(0.02)
        raise AssertionError(f"{count} x {event!r} not logged; got {self.events}")


@contextmanager
def email_logs() -> Iterator[Records]:
    logger = logging.getLogger("app.emails")
    records, level = Records(), logger.level
    logger.addHandler(records)
    logger.setLevel(logging.INFO)
    try:
        yield records
    finally:
        logger.removeHandler(records)
        logger.setLevel(level)


@contextmanager
def other_server(served: Served, **overrides: str) -> Iterator[httpx.Client]:
    """The app again, on the same database, with other mail settings."""
    app = create_app(make_settings(served.database.url, **overrides))
    with LiveServer(app) as server, httpx.Client(base_url=server.url + served.settings.API_V1_STR, timeout=30) as http:
        yield http


def mail_settings(port: int) -> dict[str, str]:
    return {
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(port),
        "SMTP_TLS": "false",
        "EMAILS_FROM_EMAIL": "noreply@example.com",
    }


# ---------------------------------------------------------------- password recovery


def test_recovery_mails_an_existing_user(client: httpx.Client, mailbox: Mailbox, user: Account) -> None:
    response = client.post(f"/password-recovery/{user.email}")
    assert response.status_code == 200
    assert response.json() == RECOVERY_SENT

    message = wait_for_mail(mailbox, user.email, recovery_subject(user.email))
    assert message["From"] == f"{PROJECT} <noreply@example.com>"
    assert message["Message-ID"]
    assert message["Date"]
    text, body = parts(message)
    token = token_from(message)
    link = f"{FRONTEND}/reset-password?token={token}"
    # The link is literal in the HTML source, as the button's target and as a copyable fallback.
    assert body.count(f'href="{link}"') == 2
    assert f">{link}</a>" in body
    for part in (text, body):
        assert PROJECT in part
        assert user.email in part
        assert "48 hours" in part
    # Responsive: a viewport and a media query from the MJML build; nothing left for a template engine.
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in body
    assert "@media only screen" in body
    assert "{{" not in body
    assert "{{" not in text
    assert user.password not in message.as_string()


def test_recovery_address_is_matched_case_insensitively(client: httpx.Client, mailbox: Mailbox, user: Account) -> None:
    assert client.post(f"/password-recovery/{user.email.upper()}").json() == RECOVERY_SENT
    wait_for_mail(mailbox, user.email, recovery_subject(user.email))


def test_recovery_for_an_unknown_address_answers_the_same_and_sends_nothing(
    client: httpx.Client, mailbox: Mailbox, user: Account
) -> None:
    unknown = random_email()
    missing = client.post(f"/password-recovery/{unknown}")
    known = client.post(f"/password-recovery/{user.email}")
    assert (missing.status_code, missing.json()) == (known.status_code, known.json()) == (200, RECOVERY_SENT)
    assert missing.headers["content-type"] == known.headers["content-type"]
    wait_for_mail(mailbox, user.email, recovery_subject(user.email))
    assert_no_mail(mailbox, unknown)


def test_recovery_of_a_not_an_address_path_is_the_generic_answer(client: httpx.Client) -> None:
    response = client.post("/password-recovery/not-an-email")
    assert (response.status_code, response.json()) == (200, RECOVERY_SENT)


# ---------------------------------------------------------------- reset


def test_reset_link_from_the_email_works_once_and_only_once(
    client: httpx.Client, mailbox: Mailbox, user: Account
) -> None:
    token = recover(client, mailbox, user.email)

    response = reset(client, token, "a-brand-new-password")
    assert response.status_code == 200
    assert response.json() == PASSWORD_UPDATED
    assert can_log_in(client, user.email, "a-brand-new-password")
    assert not can_log_in(client, user.email, user.password)

    again = reset(client, token, "yet-another-password")
    assert again.status_code == 400
    assert again.json() == INVALID_TOKEN
    assert can_log_in(client, user.email, "a-brand-new-password")


def test_a_reset_ends_every_session_also_one_kept_by_a_password_change(
    client: httpx.Client, mailbox: Mailbox, user: Account
) -> None:
    change = {"current_password": user.password, "new_password": "a-changed-password"}
    assert client.patch("/users/me/password", json=change, headers=user.headers).status_code == 200
    assert client.get("/users/me", headers=user.headers).status_code == 200
    assert reset(client, recover(client, mailbox, user.email), "a-brand-new-password").status_code == 200
    assert client.get("/users/me", headers=user.headers).status_code == 403


def test_an_older_link_dies_when_the_password_changes(client: httpx.Client, mailbox: Mailbox, user: Account) -> None:
    first = recover(client, mailbox, user.email)
    mailbox.messages.clear()
    time.sleep(1.1)  # a different `iat`, so the second token differs from the first
    second = recover(client, mailbox, user.email)
    assert first != second
    assert reset(client, second, "a-brand-new-password").status_code == 200
    assert reset(client, first, "yet-another-password").json() == INVALID_TOKEN


def test_reset_with_an_expired_token_is_rejected(client: httpx.Client, served: Served, user: Account) -> None:
    stored = hashed_password(served, user.email)
    expired = security.create_reset_token(user.email, stored, SECRET_KEY, timedelta(seconds=-5))
    response = reset(client, expired, "a-brand-new-password")
    assert response.status_code == 400
    assert response.json() == INVALID_TOKEN
    assert can_log_in(client, user.email, user.password)
    # The same token, unexpired, is accepted: expiry alone was the reason.
    fresh = security.create_reset_token(user.email, stored, SECRET_KEY, timedelta(minutes=5))
    assert reset(client, fresh, "a-brand-new-password").json() == PASSWORD_UPDATED


@pytest.mark.parametrize(
    "token",
    ["", "garbage", "a.b.c", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4QGV4YW1wbGUuY29tIiwidHlwIjoicmVzZXQifQ."],
)
def test_reset_with_a_bad_token_is_rejected(client: httpx.Client, token: str) -> None:
    response = reset(client, token, "a-brand-new-password")
    assert response.status_code == 400
    assert response.json() == INVALID_TOKEN


def test_reset_with_a_token_signed_by_another_key_is_rejected(
    client: httpx.Client, served: Served, user: Account
) -> None:
    stored = hashed_password(served, user.email)
    forged = security.create_reset_token(user.email, stored, "not-the-server-secret-key-at-all", timedelta(hours=1))
    assert reset(client, forged, "a-brand-new-password").json() == INVALID_TOKEN
    assert can_log_in(client, user.email, user.password)


def test_an_access_token_is_not_a_reset_token(client: httpx.Client, user: Account) -> None:
    access_token = user.headers["Authorization"].removeprefix("Bearer ")
    response = reset(client, access_token, "a-brand-new-password")
    assert response.status_code == 400
    assert response.json() == INVALID_TOKEN
    assert can_log_in(client, user.email, user.password)


def test_a_reset_token_is_not_an_access_token(client: httpx.Client, mailbox: Mailbox, user: Account) -> None:
    token = recover(client, mailbox, user.email)
    response = client.get("/users/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 403
    assert response.json() == {"detail": "Could not validate credentials"}


def test_reset_for_an_inactive_user(client: httpx.Client, mailbox: Mailbox, superuser_headers: dict[str, str]) -> None:
    email = random_email()
    created = client.post(
        "/users/", json={"email": email, "password": "a-good-password", "is_active": False}, headers=superuser_headers
    )
    assert created.status_code == 200, created.text
    token = recover(client, mailbox, email)
    response = reset(client, token, "a-brand-new-password")
    assert response.status_code == 400
    assert response.json() == {"detail": "Inactive user"}
    response = client.post("/login/access-token", data={"username": email, "password": "a-good-password"})
    assert response.json() == {"detail": "Inactive user"}  # the old password still stands


def test_a_token_dies_when_the_email_changes(client: httpx.Client, mailbox: Mailbox, user: Account) -> None:
    token = recover(client, mailbox, user.email)
    new_email = random_email()
    assert client.patch("/users/me", json={"email": new_email}, headers=user.headers).status_code == 200
    assert reset(client, token, "a-brand-new-password").json() == INVALID_TOKEN
    assert can_log_in(client, new_email, user.password)


def test_a_token_of_a_deleted_user_is_rejected(
    client: httpx.Client, mailbox: Mailbox, user: Account, superuser_headers: dict[str, str]
) -> None:
    token = recover(client, mailbox, user.email)
    assert client.delete(f"/users/{user.id}", headers=superuser_headers).status_code == 200
    assert reset(client, token, "a-brand-new-password").json() == INVALID_TOKEN


@pytest.mark.parametrize(
    ("body", "field"),
    [({"new_password": "a-brand-new-password"}, "token"), ({"token": "x", "new_password": "short"}, "new_password")],
)
def test_reset_validation(client: httpx.Client, body: dict[str, str], field: str) -> None:
    response = client.post("/reset-password/", json=body)
    assert response.status_code == 422
    assert [error["loc"] for error in response.json()["detail"]] == [["body", field]]


# ---------------------------------------------------------------- the recovery email's HTML


def test_html_content_is_the_recovery_email_with_a_working_link(
    client: httpx.Client, mailbox: Mailbox, superuser_headers: dict[str, str], user: Account
) -> None:
    response = client.post(f"/password-recovery-html-content/{user.email}", headers=superuser_headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["x-email-subject"] == recovery_subject(user.email)
    body = response.text
    assert body.lstrip().lower().startswith("<!doctype html>")
    assert PROJECT in body
    assert "48 hours" in body
    tokens = set(LINK.findall(body))
    assert len(tokens) == 1
    token = tokens.pop()
    assert f'href="{FRONTEND}/reset-password?token={token}"' in body
    # It only shows the mail: nothing is sent.
    time.sleep(0.3)
    assert all(m["Subject"] != recovery_subject(user.email) for m in mailbox.to(user.email))
    # ... and its link works, once.
    assert reset(client, token, "a-brand-new-password").json() == PASSWORD_UPDATED
    assert reset(client, token, "yet-another-password").json() == INVALID_TOKEN


def test_html_content_for_an_unknown_user_is_404(client: httpx.Client, superuser_headers: dict[str, str]) -> None:
    response = client.post(f"/password-recovery-html-content/{random_email()}", headers=superuser_headers)
    assert response.status_code == 404
    assert response.json() == {"detail": "The user with this username does not exist in the system."}


def test_html_content_needs_a_superuser(client: httpx.Client, user: Account) -> None:
    anonymous = client.post(f"/password-recovery-html-content/{user.email}")
    assert anonymous.status_code == 401
    assert anonymous.json() == {"detail": "Not authenticated"}
    normal = client.post(f"/password-recovery-html-content/{user.email}", headers=user.headers)
    assert normal.status_code == 403
    assert normal.json() == {"detail": "The user doesn't have enough privileges"}


def test_an_internationalized_address_gets_its_mail_and_its_subject_header(
    client: httpx.Client, mailbox: Mailbox, superuser_headers: dict[str, str]
) -> None:
    email = f"用户-{uuid.uuid4().hex[:8]}@example.com"
    created = client.post("/users/", json={"email": email, "password": "a-good-password"}, headers=superuser_headers)
    assert created.status_code == 200, created.text
    token = recover(client, mailbox, email)  # delivered with SMTPUTF8
    response = client.post(f"/password-recovery-html-content/{email}", headers=superuser_headers)
    assert response.status_code == 200
    header = response.headers["x-email-subject"]
    assert header.isascii()
    assert str(make_header(decode_header(header))) == recovery_subject(email)
    assert reset(client, token, "a-brand-new-password").json() == PASSWORD_UPDATED


# ---------------------------------------------------------------- test email


def test_test_email_is_sent(client: httpx.Client, mailbox: Mailbox, superuser_headers: dict[str, str]) -> None:
    address = random_email()
    response = client.post("/utils/test-email/", params={"email_to": address}, headers=superuser_headers)
    assert response.status_code == 201
    assert response.json() == {"message": "Test email sent"}
    message = wait_for_mail(mailbox, address, f"{PROJECT} - Test email")
    text, body = parts(message)
    assert PROJECT in text
    assert address in text
    assert PROJECT in body
    assert address in body


def test_test_email_the_mail_server_refuses_is_502(
    served: Served, superuser_headers: dict[str, str], mailbox: Mailbox
) -> None:
    with other_server(served, **mail_settings(free_port())) as http, email_logs() as logs:  # nothing listens there
        response = http.post("/utils/test-email/", params={"email_to": SUPERUSER_EMAIL}, headers=superuser_headers)
        assert response.status_code == 502
        assert response.json() == {"detail": TEST_EMAIL_NOT_SENT}
        (failure,) = logs.wait_for("email not sent", 1)
    assert "Connect" in failure["reason"]  # why, for the operator: in the log, not the answer
    assert SUPERUSER_EMAIL not in str(logs.events)
    # The served app's mail server takes it: 201, and the mail is there when the answer is.
    address = random_email()
    response = httpx.post(
        f"{served.api}/utils/test-email/", params={"email_to": address}, headers=superuser_headers, timeout=30
    )
    assert (response.status_code, response.json()) == (201, {"message": "Test email sent"})
    assert [str(message["Subject"]) for message in mailbox.to(address)] == [f"{PROJECT} - Test email"]


def test_test_email_without_an_address_is_422(client: httpx.Client, superuser_headers: dict[str, str]) -> None:
    response = client.post("/utils/test-email/", headers=superuser_headers)
    assert response.status_code == 422
    assert len(response.json()["detail"]) == 1


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"email_to": ""},
        {"email_to": "not-an-email"},
        {"email_to": "a@b"},
    ],
)
def test_test_email_needs_a_valid_address(
    client: httpx.Client, superuser_headers: dict[str, str], params: dict[str, str]
) -> None:
    response = client.post("/utils/test-email/", params=params, headers=superuser_headers)
    assert response.status_code == 422
    assert [error["loc"] for error in response.json()["detail"]] == [["query", "email_to"]]


def test_test_email_needs_a_superuser(client: httpx.Client, mailbox: Mailbox, user: Account) -> None:
    address = random_email()
    normal = client.post("/utils/test-email/", params={"email_to": address}, headers=user.headers)
    assert normal.status_code == 403
    assert normal.json() == {"detail": "The user doesn't have enough privileges"}
    assert client.post("/utils/test-email/", params={"email_to": address}).status_code == 401
    assert_no_mail(mailbox, address)


# ---------------------------------------------------------------- new account


def test_new_account_mail_has_no_password(
    client: httpx.Client, mailbox: Mailbox, superuser_headers: dict[str, str]
) -> None:
    email, password = random_email(), "Secret-Pa55word-4-new-account"
    response = client.post(
        "/users/", json={"email": email, "password": password, "full_name": "New Person"}, headers=superuser_headers
    )
    assert response.status_code == 200
    message = wait_for_mail(mailbox, email, f"{PROJECT} - New account for user {email}")
    text, body = parts(message)
    for part in (text, body):
        assert PROJECT in part
        assert email in part
        assert FRONTEND in part
    assert f'href="{FRONTEND}"' in body
    raw = message.as_string()
    assert password not in raw
    assert password not in text
    assert password not in body


def test_signup_sends_no_mail(client: httpx.Client, mailbox: Mailbox) -> None:
    email = random_email()
    response = client.post("/users/signup", json={"email": email, "password": "a-good-password"})
    assert response.status_code == 200
    assert_no_mail(mailbox, email)


# ---------------------------------------------------------------- rendering (pure)


def test_rendering_escapes_html_but_not_the_text_part() -> None:
    settings = make_settings("sqlite+aiosqlite://", PROJECT_NAME="Tom & Jerry's <App>")
    mail = emails.reset_password_email(settings, '<script>alert("x")</script>@example.com', "a.b-c_d")
    assert "<script>" not in mail.html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;@example.com" in mail.html
    assert "Tom &amp; Jerry&#x27;s &lt;App&gt;" in mail.html
    assert '<script>alert("x")</script>@example.com' in mail.text
    assert "Tom & Jerry's <App>" in mail.text
    assert f"{FRONTEND}/reset-password?token=a.b-c_d" in mail.text
    assert mail.subject == 'Tom & Jerry\'s <App> - Password recovery for user <script>alert("x")</script>@example.com'


@pytest.mark.parametrize("template", ["new_account", "reset_password", "test_email", "verify_email"])
def test_templates_have_both_parts_and_no_leftover_placeholders(template: str) -> None:
    settings = make_settings("sqlite+aiosqlite://")
    mail = {
        "new_account": lambda: emails.new_account_email(settings, "x@example.com"),
        "reset_password": lambda: emails.reset_password_email(settings, "x@example.com", "tok"),
        "test_email": lambda: emails.test_email(settings, "x@example.com"),
        "verify_email": lambda: emails.verify_email_email(settings, "x@example.com", "tok"),
    }[template]()
    for part in (mail.html, mail.text):
        assert "{{" not in part
        assert "}}" not in part
        assert PROJECT in part
        assert "x@example.com" in part
    assert f"<title>{PROJECT} - " in mail.html


# ---------------------------------------------------------------- mail not configured, dead or hanging


def test_without_mail_configured_the_answers_are_unchanged_and_the_skip_is_logged(
    served: Served, superuser_headers: dict[str, str], user: Account
) -> None:
    with other_server(served) as http, email_logs() as logs:
        response = http.post(f"/password-recovery/{user.email}")
        assert (response.status_code, response.json()) == (200, RECOVERY_SENT)
        response = http.post("/utils/test-email/", params={"email_to": user.email}, headers=superuser_headers)
        assert (response.status_code, response.json()) == (201, {"message": "Test email sent"})
        new_user = {"email": random_email(), "password": "a-good-password"}
        response = http.post("/users/", json=new_user, headers=superuser_headers)
        assert response.status_code == 200
        skipped = logs.wait_for("email not sent: mail is not configured", 2)
    assert {event["recipient_domain"] for event in skipped} == {"example.com"}
    assert not any(user.email in str(event) for event in logs.events)


def test_a_dead_mail_server_changes_no_answer(served: Served, superuser_headers: dict[str, str], user: Account) -> None:
    closed_port = free_port()  # nothing listens there: connections are refused
    with other_server(served, **mail_settings(closed_port)) as http, email_logs() as logs:
        started = time.monotonic()
        response = http.post(f"/password-recovery/{user.email}")
        assert (response.status_code, response.json()) == (200, RECOVERY_SENT)
        email = random_email()
        response = http.post("/users/", json={"email": email, "password": "a-good-password"}, headers=superuser_headers)
        assert response.status_code == 200
        assert response.json()["email"] == email
        # But for the test email, which exists to say whether mail goes out: it is answered 502 (the template: 500).
        response = http.post("/utils/test-email/", params={"email_to": user.email}, headers=superuser_headers)
        assert (response.status_code, response.json()) == (502, {"detail": TEST_EMAIL_NOT_SENT})
        assert time.monotonic() - started < 5
        failures = logs.wait_for("email not sent", 3)
    for event in failures:
        assert event["recipient_domain"] == "example.com"
        assert event["reason"]
    assert not any(address in str(event) for event in logs.events for address in (user.email, email))


@contextmanager
def hanging_smtp_server() -> Iterator[socket.socket]:
    """A listener whose connections the kernel completes but nobody ever greets, like a hung mail server."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield listener


def test_a_hanging_mail_server_slows_no_request(served: Served, user: Account) -> None:
    """No request but the test email's, which waits for the mail server's answer by design (up to its timeout)."""
    timings: list[float] = []

    def timed(call: Callable[[], httpx.Response]) -> httpx.Response:
        started = time.monotonic()
        response = call()
        timings.append(time.monotonic() - started)
        return response

    with email_logs() as logs, hanging_smtp_server() as listener:
        port = int(listener.getsockname()[1])
        with other_server(served, **mail_settings(port)) as http:
            for _ in range(3):  # one keep-alive connection: each request follows one whose mail still hangs
                response = timed(lambda: http.post(f"/password-recovery/{user.email}"))
                assert (response.status_code, response.json()) == (200, RECOVERY_SENT)
            response = timed(lambda: http.get("/utils/health-check/"))
            assert response.json() is True
            # The three mails are still waiting for a greeting: the answers above did not wait for them.
            assert [event for event in logs.events if "sent" in str(event.get("event"))] == []
            # Closing the listener resets the waiting connections: the senders give up now, not at their timeout.
            listener.close()
            failures = logs.wait_for("email not sent", 3)
    assert max(timings) < emails.SMTP_TIMEOUT_SECONDS / 2, timings
    assert {event["recipient_domain"] for event in failures} == {"example.com"}


# ---------------------------------------------------------------- headers written as stored


def raw_header(message: EmailMessage, name: str) -> list[str]:
    """The header's values as the server received them (the parsed view decodes RFC 2047 encoded words)."""
    return [str(value) for key, value in message.raw_items() if key.lower() == name.lower()]


def test_an_address_that_looks_like_an_encoded_word_is_written_as_stored(
    client: httpx.Client, mailbox: Mailbox, superuser_headers: dict[str, str]
) -> None:
    # Decoded, this local part reads `x, victim@evil.co, y`: a header written from the decoded form would name
    # three recipients. The envelope never did; the To header must not either. A long domain makes the header
    # longer than a line, which the email policy would otherwise refold from its (decoding) parse.
    word = "=?utf-8?b?" + base64.b64encode(b"x, victim@evil.co, y").decode() + "?="
    email = f"{word}@{uuid.uuid4().hex[:8]}-a-rather-long-subdomain-name.example.com"
    created = client.post("/users/", json={"email": email, "password": "a-good-password"}, headers=superuser_headers)
    assert created.status_code == 200, created.text
    assert created.json()["email"] == email
    assert client.post(f"/password-recovery/{quote(email)}").json() == RECOVERY_SENT
    subjects = {f"{PROJECT} - New account for user {email}", recovery_subject(email)}
    deadline = time.monotonic() + 5
    received: list[EmailMessage] = []
    while len(received) < 2 and time.monotonic() < deadline:
        received = [message for message in mailbox.messages if raw_header(message, "To") == [email]]
        time.sleep(0.02)
    assert len(received) == 2, [list(m.raw_items()) for m in mailbox.messages]
    for message in received:
        assert all("evil.co" not in value for key, value in message.raw_items() if key.lower() != "subject")
        # The subject, which names the address, is encoded words that decode to it as stored.
        assert "evil.co" not in raw_header(message, "Subject")[0]
        assert str(make_header(decode_header(raw_header(message, "Subject")[0].replace("\r\n", "")))) in subjects
    assert {str(message["Subject"]) for message in received} == subjects


# ---------------------------------------------------------------- the outbox: mail apart from the request


@dataclass
class StallingMailbox(Mailbox):
    """A mail server that takes `stall` seconds to accept each message, once it has it whole."""

    stall: float = 2.0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(self.stall)
        return await super().handle_DATA(server, session, envelope)


def test_neither_the_answer_nor_the_next_requests_on_its_connection_wait_for_the_mail(
    served: Served, user: Account
) -> None:
    stalling = StallingMailbox(port=free_port())
    controller = Controller(stalling, hostname="127.0.0.1", port=stalling.port)
    controller.start()
    try:
        with other_server(served, **mail_settings(stalling.port)) as http:
            assert http.get("/utils/health-check/").json() is True  # the keep-alive connection the rest reuses
            started = time.monotonic()
            response = http.post(f"/password-recovery/{user.email}")
            assert (response.status_code, response.json()) == (200, RECOVERY_SENT)
            timings = [time.monotonic() - started]
            # For a second, while the mail's SMTP conversation is under way and stalled, the same connection's
            # requests answer at once (a bound, not a benchmark: waiting for the mail would take 2 s).
            while time.monotonic() - started < 1.0:
                asked = time.monotonic()
                assert http.get("/users/me", headers=user.headers).status_code == 200
                timings.append(time.monotonic() - asked)
            assert stalling.messages == []  # the mail server has not accepted it yet
            assert max(timings) < 0.5, timings
            # ... and the mail goes out all the same.
            message = wait_for_mail(stalling, user.email, recovery_subject(user.email), timeout=10)
            assert reset(http, token_from(message), "a-brand-new-password").json() == PASSWORD_UPDATED
    finally:
        controller.stop()


def test_a_full_outbox_drops_a_mail_and_a_closing_one_sends_what_it_holds() -> None:
    async def scenario() -> list[int]:
        outbox = emails.Outbox(size=1, senders=1, delay=(0, 0))
        release, ran = asyncio.Event(), []

        async def job(number: int) -> None:
            ran.append(number)
            await release.wait()

        assert outbox.post("test_email", partial(job, 1))
        await asyncio.sleep(0.05)  # the sender has taken the first: it waits for `release`
        assert outbox.post("test_email", partial(job, 2))  # waits in the outbox
        assert not outbox.post("test_email", partial(job, 3))  # the outbox is full: dropped
        release.set()
        await outbox.close()  # sends the second before it stops
        return ran

    assert asyncio.run(scenario()) == [1, 2]
