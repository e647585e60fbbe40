"""Email verification (EMAIL_VERIFICATION, README "Email verification") over real HTTP, with the mails received by a
real SMTP server: links on signup and email change, the token's rules, the resend route, the refused login under
`required`, who counts as verified, and nothing of it with the default (off)."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any
from uuid import UUID

import httpx
import msgspec
import pytest

from app import security
from app.config import SettingsError
from app.main import create_app
from app.schemas import Caller, UserPublic
from db.executor import from_row
from tests.conftest import (
    SECRET_KEY,
    SUPERUSER_EMAIL,
    SUPERUSER_PASSWORD,
    Account,
    LiveServer,
    Mailbox,
    Records,
    Served,
    make_settings,
    named,
    random_email,
)

PROJECT = "Test Project"
FRONTEND = "http://localhost:5173"
LINK = re.compile(re.escape(FRONTEND) + r"/verify-email\?token=([A-Za-z0-9_.-]+)")
VERIFIED = {"message": "Email verified"}
RESENT = {"message": "If that email is registered and not verified yet, we sent a verification link"}
INVALID_TOKEN = {"detail": "Invalid token"}
OFF = {"detail": "Email verification is off"}
NOT_VERIFIED = {
    "detail": "Email not verified: check your inbox, or ask for a new link at /api/v1/users/verify-email/resend/{email}"
}
# What a user answer carries with the default settings: the template's fields, no more.
TEMPLATE_USER_FIELDS = {"email", "is_active", "is_superuser", "full_name", "id", "created_at"}
PASSWORD = "a-good-password"


# ---------------------------------------------------------------- helpers


@contextmanager
def server(served: Served, port: int, **overrides: str) -> Iterator[httpx.Client]:
    """The app again, on the same database, sending mail to the test's SMTP server, with `overrides`."""
    mail = {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(port), "SMTP_TLS": "false", "EMAILS_FROM_EMAIL": "noreply@x.org"}
    app = create_app(make_settings(served.database.url, **mail, **overrides))
    with LiveServer(app) as live, httpx.Client(base_url=live.url + served.settings.API_V1_STR, timeout=30) as http:
        yield http


@pytest.fixture(scope="module")
def optional(served: Served, smtp_server: Mailbox) -> Iterator[httpx.Client]:
    with server(served, smtp_server.port, EMAIL_VERIFICATION="optional") as http:
        yield http


@pytest.fixture(scope="module")
def required(served: Served, smtp_server: Mailbox) -> Iterator[httpx.Client]:
    with server(served, smtp_server.port, EMAIL_VERIFICATION="required") as http:
        yield http


def subject(email: str) -> str:
    return f"{PROJECT} - Email verification for user {email}"


def wait_for_mail(mailbox: Mailbox, to: str, count: int = 1, timeout: float = 5.0) -> list[EmailMessage]:
    """The first `count` verification mails to `to`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [message for message in mailbox.to(to) if str(message["Subject"]).strip() == subject(to)]
        if len(found) >= count:
            return found
        time.sleep(0.02)
    seen = [(str(m["To"]), str(m["Subject"])) for m in mailbox.messages]
    raise AssertionError(f"no {count} verification mail(s) to {to} within {timeout}s; got {seen}")


def assert_no_mail(mailbox: Mailbox, to: str, settle: float = 0.5) -> None:
    """No verification mail for `to`, whatever its case, arrives (mail goes out after the answer: give it time to
    show up)."""
    time.sleep(settle)
    assert [m for m in mailbox.messages if str(m["Subject"]).strip().lower() == subject(to).lower()] == []


def token_from(message: EmailMessage) -> str:
    """The token of a verification mail; its text and HTML parts carry the same link."""
    text, body = message.get_body(preferencelist=("plain",)), message.get_body(preferencelist=("html",))
    assert text is not None
    assert body is not None
    tokens = set(LINK.findall(str(text.get_content())))
    assert len(tokens) == 1, text
    assert set(LINK.findall(str(body.get_content()))) == tokens
    return tokens.pop()


def mailed_token(mailbox: Mailbox, to: str, count: int = 1) -> str:
    """The token of the `count`th verification mail to `to`."""
    return token_from(wait_for_mail(mailbox, to, count)[count - 1])


def sign_up(http: httpx.Client, email: str) -> dict[str, Any]:
    response = http.post("/users/signup", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def log_in(http: httpx.Client, email: str, password: str = PASSWORD) -> httpx.Response:
    return http.post("/login/access-token", data={"username": email, "password": password})


def bearer(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def verify(http: httpx.Client, token: str) -> httpx.Response:
    return http.post("/users/verify-email", json={"token": token})


def stored_verified(served: Served, email: str) -> bool:
    return bool(served.database.scalar('SELECT is_verified FROM "user" WHERE email = :email', email=email))


def user_id(served: Served, email: str) -> UUID:
    value = served.database.scalar('SELECT id FROM "user" WHERE email = :email', email=email)
    return UUID(bytes=value) if isinstance(value, bytes) else UUID(str(value))  # SQLite keeps its 16 bytes


def token_for(user: UUID, email: str, expires: timedelta = timedelta(hours=1), secret: str = SECRET_KEY) -> str:
    return security.create_verify_token(user, email, secret, expires)


# ---------------------------------------------------------------- off (the default)


def test_off_by_default_signup_sends_nothing_logs_in_and_shows_no_field(
    client: httpx.Client, served: Served, mailbox: Mailbox, superuser_headers: dict[str, str]
) -> None:
    email = random_email()
    created = sign_up(client, email)
    assert set(created) == TEMPLATE_USER_FIELDS
    assert stored_verified(served, email) is False  # truthful: nobody proved the address
    headers = bearer(log_in(client, email))
    assert set(client.get("/users/me", headers=headers).json()) == TEMPLATE_USER_FIELDS
    page = client.get("/users/", headers=superuser_headers).json()
    assert all(set(user) == TEMPLATE_USER_FIELDS for user in page["data"])
    changed = client.patch("/users/me", json={"email": random_email()}, headers=headers)
    assert changed.status_code == 200
    assert set(changed.json()) == TEMPLATE_USER_FIELDS
    assert_no_mail(mailbox, email)
    assert_no_mail(mailbox, changed.json()["email"], settle=0)


def test_off_by_default_the_routes_answer_that_it_is_off(client: httpx.Client, served: Served) -> None:
    email = random_email()
    sign_up(client, email)
    response = verify(client, token_for(user_id(served, email), email))
    assert (response.status_code, response.json()) == (400, OFF)
    assert stored_verified(served, email) is False
    response = client.post(f"/users/verify-email/resend/{email}")
    assert (response.status_code, response.json()) == (400, OFF)


def test_off_by_default_the_document_has_no_is_verified(client: httpx.Client, optional: httpx.Client) -> None:
    def user_public(http: httpx.Client) -> dict[str, Any]:
        schema: dict[str, Any] = http.get("/openapi.json").json()["components"]["schemas"]["UserPublic"]
        return schema

    assert set(user_public(client)["properties"]) == TEMPLATE_USER_FIELDS
    shown = user_public(optional)
    assert set(shown["properties"]) == {*TEMPLATE_USER_FIELDS, "is_verified"}
    assert "is_verified" not in shown["required"]


# ---------------------------------------------------------------- the link


def test_signup_mail_verify_then_log_in_under_required(
    required: httpx.Client, served: Served, mailbox: Mailbox, audit_records: Records
) -> None:
    email = random_email()
    created = sign_up(required, email)
    assert created["is_verified"] is False
    token = mailed_token(mailbox, email)
    refused = log_in(required, email)
    assert (refused.status_code, refused.json()) == (403, NOT_VERIFIED)
    response = verify(required, token)
    assert (response.status_code, response.json()) == (200, VERIFIED)
    assert stored_verified(served, email) is True
    me = required.get("/users/me", headers=bearer(log_in(required, email))).json()
    assert me["is_verified"] is True
    subject_id = str(created["id"])
    sent = named(audit_records, "email.verification_sent")
    assert [(e["subject_id"], e["reason"]) for e in sent] == [(subject_id, "signup")]
    assert [e["subject_id"] for e in named(audit_records, "email.verified")] == [subject_id]
    assert [e["reason"] for e in named(audit_records, "login.failed")] == ["unverified"]


def test_required_refuses_an_unverified_login_only_after_the_password(required: httpx.Client, mailbox: Mailbox) -> None:
    email = random_email()
    sign_up(required, email)
    wrong = log_in(required, email, "not-the-password")
    assert (wrong.status_code, wrong.json()) == (400, {"detail": "Incorrect email or password"})
    refused = log_in(required, email)
    assert (refused.status_code, refused.json()) == (403, NOT_VERIFIED)


def test_optional_lets_an_unverified_account_log_in(optional: httpx.Client, mailbox: Mailbox) -> None:
    email = random_email()
    assert sign_up(optional, email)["is_verified"] is False
    wait_for_mail(mailbox, email)
    me = optional.get("/users/me", headers=bearer(log_in(optional, email))).json()
    assert me["is_verified"] is False


def test_a_token_works_once(optional: httpx.Client, mailbox: Mailbox) -> None:
    email = random_email()
    sign_up(optional, email)
    token = mailed_token(mailbox, email)
    assert verify(optional, token).json() == VERIFIED
    again = verify(optional, token)
    assert (again.status_code, again.json()) == (400, INVALID_TOKEN)


def test_an_expired_token_is_refused(optional: httpx.Client, served: Served) -> None:
    email = random_email()
    sign_up(optional, email)
    user = user_id(served, email)
    expired = verify(optional, token_for(user, email, timedelta(seconds=-1)))
    assert (expired.status_code, expired.json()) == (400, INVALID_TOKEN)
    assert stored_verified(served, email) is False
    # The same function's token, unexpired, is good: the refusal above is for the expiry.
    assert verify(optional, token_for(user, email)).json() == VERIFIED


def test_foreign_and_malformed_tokens_are_refused(optional: httpx.Client, served: Served) -> None:
    email = random_email()
    sign_up(optional, email)
    user = user_id(served, email)
    other = random_email()
    sign_up(optional, other)
    refused = [
        token_for(user, other),  # another account's address
        token_for(user_id(served, other), email),  # another account, this address
        token_for(user, email, secret="another-secret-key-that-is-long-enough-for-hs256"),
        security.create_reset_token(email, "hash", SECRET_KEY, timedelta(hours=1)),  # another kind of token
        security.create_access_token(user, 0, SECRET_KEY, timedelta(hours=1)),
        token_for(uuid.uuid4(), email),  # no such account
        "not-a-token",
        "",
    ]
    for token in refused:
        response = verify(optional, token)
        assert (response.status_code, response.json()) == (400, INVALID_TOKEN), token
    assert stored_verified(served, email) is False
    assert stored_verified(served, other) is False
    too_long = verify(optional, "x" * 8193)
    assert too_long.status_code == 422
    assert too_long.json()["detail"][0]["type"] == "string_too_long"
    assert verify(optional, token_for(user, email)).json() == VERIFIED


# ---------------------------------------------------------------- email changes


def test_an_email_change_unverifies_and_mails_the_new_address(
    optional: httpx.Client, served: Served, mailbox: Mailbox, new_account: Callable[..., Account]
) -> None:
    account = new_account()
    old_token = token_for(UUID(account.id), account.email)  # a link sent to the old address
    new_email = random_email()
    changed = optional.patch("/users/me", json={"email": new_email}, headers=account.headers)
    assert changed.status_code == 200, changed.text
    assert changed.json()["is_verified"] is False
    token = mailed_token(mailbox, new_email)
    refused = verify(optional, old_token)
    assert (refused.status_code, refused.json()) == (400, INVALID_TOKEN)
    assert verify(optional, token).json() == VERIFIED
    assert optional.get("/users/me", headers=account.headers).json()["is_verified"] is True
    assert_no_mail(mailbox, account.email, settle=0)


def test_a_superusers_email_change_unverifies_and_mails_too(
    optional: httpx.Client, served: Served, mailbox: Mailbox, superuser_headers: dict[str, str], user: Account
) -> None:
    new_email = random_email()
    changed = optional.patch(f"/users/{user.id}", json={"email": new_email}, headers=superuser_headers)
    assert changed.status_code == 200, changed.text
    assert changed.json()["is_verified"] is False
    assert verify(optional, mailed_token(mailbox, new_email)).json() == VERIFIED
    assert stored_verified(served, new_email) is True


def test_the_same_address_spelt_otherwise_stays_verified(
    optional: httpx.Client, served: Served, mailbox: Mailbox, user: Account
) -> None:
    changed = optional.patch("/users/me", json={"email": user.email.upper()}, headers=user.headers)
    assert changed.status_code == 200, changed.text
    assert changed.json()["is_verified"] is True
    other = optional.patch("/users/me", json={"full_name": "Someone"}, headers=user.headers)
    assert other.json()["is_verified"] is True
    assert_no_mail(mailbox, user.email.upper())


# ---------------------------------------------------------------- resend


def test_resend_answers_the_same_and_mails_only_an_unverified_account(
    optional: httpx.Client, served: Served, mailbox: Mailbox, user: Account, audit_records: Records
) -> None:
    unverified, unknown = random_email(), random_email()
    sign_up(optional, unverified)
    first = mailed_token(mailbox, unverified)
    for email in (unknown, user.email, unverified):
        response = optional.post(f"/users/verify-email/resend/{email}")
        assert (response.status_code, response.json()) == (200, RESENT)
    second = mailed_token(mailbox, unverified, 2)
    assert_no_mail(mailbox, unknown)
    assert_no_mail(mailbox, user.email, settle=0)
    assert [e["reason"] for e in named(audit_records, "email.verification_sent")] == ["signup", "resend"]
    assert verify(optional, second).json() == VERIFIED
    assert verify(optional, first).json() == INVALID_TOKEN  # verified now: every link of the address is spent


def test_resend_is_rate_limited_and_bounded(served: Served, smtp_server: Mailbox) -> None:
    email = random_email()
    limits = {"RATE_LIMIT_ENABLED": "true", "RECOVERY_PER_EMAIL_PER_HOUR": "2", "EMAIL_VERIFICATION": "optional"}
    with server(served, smtp_server.port, **limits) as http:
        statuses = [http.post(f"/users/verify-email/resend/{email}").status_code for _ in range(3)]
        assert statuses == [200, 200, 429]
        assert http.post(f"/users/verify-email/resend/{email.upper()}").status_code == 429  # the same identity
        assert http.post(f"/users/verify-email/resend/{random_email()}").status_code == 200
        long = http.post(f"/users/verify-email/resend/{'a' * 250}@example.com")
        assert long.status_code == 422
        # Keys of its own: password recovery for the address is not limited by the resends.
        assert http.post(f"/password-recovery/{email}").status_code == 200


# ---------------------------------------------------------------- who is verified


def test_the_first_superuser_and_a_superusers_accounts_are_verified(
    required: httpx.Client, served: Served, mailbox: Mailbox, superuser_headers: dict[str, str]
) -> None:
    admin = bearer(log_in(required, SUPERUSER_EMAIL, SUPERUSER_PASSWORD))
    assert required.get("/users/me", headers=admin).json()["is_verified"] is True
    email = random_email()
    created = required.post("/users/", json={"email": email, "password": PASSWORD}, headers=superuser_headers)
    assert created.status_code == 200, created.text
    assert created.json()["is_verified"] is True
    assert log_in(required, email).status_code == 200
    page = required.get("/users/", headers=superuser_headers).json()
    assert all(isinstance(user["is_verified"], bool) for user in page["data"])
    shown = required.get(f"/users/{created.json()['id']}", headers=superuser_headers).json()
    assert shown["is_verified"] is True
    assert_no_mail(mailbox, email, settle=0.3)  # the welcome mail only, no verification link


def test_the_private_route_stores_the_bodys_is_verified(required: httpx.Client) -> None:
    verified, unverified = random_email(), random_email()
    for email, flag in ((verified, True), (unverified, False)):
        body = {"email": email, "password": PASSWORD, "full_name": "P", "is_verified": flag}
        response = required.post("/private/users/", json=body)
        assert response.status_code == 200, response.text
        assert response.json()["is_verified"] is flag
    assert log_in(required, verified).status_code == 200
    assert log_in(required, unverified).status_code == 403


# ---------------------------------------------------------------- settings and the row builder


def test_the_setting_is_validated() -> None:
    with pytest.raises(SettingsError, match="EMAIL_VERIFICATION"):
        make_settings("sqlite+aiosqlite://", EMAIL_VERIFICATION="maybe")
    with pytest.raises(SettingsError, match="EMAIL_VERIFY_TOKEN_EXPIRE_HOURS"):
        make_settings("sqlite+aiosqlite://", EMAIL_VERIFY_TOKEN_EXPIRE_HOURS="0")
    # `required` without mail would lock every new account out: fatal outside local.
    with pytest.raises(SettingsError, match="EMAIL_VERIFICATION: required needs mail"):
        make_settings(
            "sqlite+aiosqlite://",
            EMAIL_VERIFICATION="required",
            ENVIRONMENT="staging",
            PASSWORD_HASH_PROFILE="RFC_9106_LOW_MEMORY",
        )
    with_mail = {"SMTP_HOST": "127.0.0.1", "EMAILS_FROM_EMAIL": "noreply@x.org"}
    assert make_settings("sqlite+aiosqlite://", EMAIL_VERIFICATION="required", **with_mail).EMAIL_VERIFICATION
    assert make_settings("sqlite+aiosqlite://").EMAIL_VERIFICATION == "off"


def test_a_field_with_an_unset_default_is_filled_only_when_shown() -> None:
    row = {
        "email": "a@example.com",
        "is_active": True,
        "is_superuser": False,
        "full_name": None,
        "id": uuid.uuid4(),
        "created_at": datetime.now().astimezone(),
        "is_verified": False,
    }
    hidden = from_row(UserPublic, row)
    assert set(msgspec.to_builtins(hidden)) == TEMPLATE_USER_FIELDS
    shown = from_row(UserPublic, row, shown=frozenset({"is_verified"}))
    assert msgspec.to_builtins(shown)["is_verified"] is False
    caller = Caller(**{**row, "is_verified": True}, hashed_password="x", token_version=0, kept_token_digest=None)
    assert caller.public().is_verified is True
    assert set(msgspec.to_builtins(msgspec.structs.replace(caller, is_verified=msgspec.UNSET).public())) == set(
        TEMPLATE_USER_FIELDS
    )
