"""The audit trail (README "Audit trail"): audit events stored after the answers, read by superusers over HTTP."""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import insert, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from uuid_utils.compat import uuid7

from app.audit import AuditEvent
from app.audit_store import PRUNE_BATCH
from app.config import Settings
from app.main import create_app
from db.models import AuditRecord, utc_now
from tests.conftest import (
    ROOT,
    SECRET_KEY,
    SUPERUSER_EMAIL,
    SUPERUSER_PASSWORD,
    Account,
    LiveServer,
    Mailbox,
    Served,
    free_port,
    login,
    make_settings,
    random_email,
)
from tests.test_email_verification import mailed_token
from tests.test_totp import TOTP_KEY, enrol, log_in, wrong_code

UserFactory = Callable[..., Account]


def trail_settings(served: Served, **overrides: str) -> Settings:
    """The served app's settings (its mail server too), storing its audit events, flushed every 0.1 s, with refresh
    tokens on (the session.refreshed and session.refresh_reused events)."""
    mail = {name: str(getattr(served.settings, name)) for name in ("SMTP_HOST", "SMTP_PORT", "EMAILS_FROM_EMAIL")}
    trail = {"AUDIT_STORE_ENABLED": "true", "AUDIT_FLUSH_SECONDS": "0.1", "REFRESH_TOKEN_EXPIRE_MINUTES": "60"}
    return make_settings(served.database.url, **mail, SMTP_TLS="false", **{**trail, **overrides})


@contextmanager
def trail_client(settings: Settings) -> Iterator[httpx.Client]:
    with LiveServer(create_app(settings)) as server, httpx.Client(base_url=server.url + "/api/v1", timeout=30) as http:
        yield http


@pytest.fixture
def trail(served: Served) -> Iterator[httpx.Client]:
    """A client of a server of its own that stores its audit events (trail_settings)."""
    with trail_client(trail_settings(served)) as http:
        yield http


def stored(http: httpx.Client, headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    response = http.get("/audit/", params={"limit": 1000, **params}, headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["count"] >= len(body["data"])
    return list(body["data"])


def wait_for(http: httpx.Client, headers: dict[str, str], event: str, **params: Any) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while True:
        found = stored(http, headers, event=event, **params)
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_a_login_is_stored_and_filtered_by_user(trail: httpx.Client, new_account: UserFactory) -> None:
    admin = login(trail, SUPERUSER_EMAIL, SUPERUSER_PASSWORD)
    user = new_account()
    login(trail, user.email, user.password)
    rows = wait_for(trail, admin, "login.succeeded", user_id=user.id)
    assert len(rows) == 1
    assert rows[0]["subject_id"] == user.id
    assert user.password not in str(rows[0])
    other = new_account()
    assert stored(trail, admin, user_id=other.id) == []


def test_failed_login_stores_the_domain_only(trail: httpx.Client) -> None:
    admin = login(trail, SUPERUSER_EMAIL, SUPERUSER_PASSWORD)
    unknown = "nobody-here-1234@unknown-domain.example"
    response = trail.post("/login/access-token", data={"username": unknown, "password": "not-the-password"})
    assert response.status_code == 400
    rows = wait_for(trail, admin, "login.failed")
    assert rows
    assert all(unknown not in str(row) and "not-the-password" not in str(row) for row in stored(trail, admin))
    assert any(row["details"].get("email_domain") == "unknown-domain.example" for row in rows)


def test_newest_first_and_paged(trail: httpx.Client, new_account: UserFactory) -> None:
    admin = login(trail, SUPERUSER_EMAIL, SUPERUSER_PASSWORD)
    user = new_account()
    for _ in range(3):
        login(trail, user.email, user.password)
    deadline = time.monotonic() + 10
    while len(stored(trail, admin, user_id=user.id, event="login.succeeded")) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    rows = stored(trail, admin, user_id=user.id, event="login.succeeded")
    assert len(rows) == 3
    assert [row["created_at"] for row in rows] == sorted((row["created_at"] for row in rows), reverse=True)
    params = {"user_id": user.id, "event": "login.succeeded", "skip": 1, "limit": 1}
    page = trail.get("/audit/", params=params, headers=admin).json()
    assert page["count"] == 3
    assert [row["id"] for row in page["data"]] == [rows[1]["id"]]
    assert stored(trail, admin, user_id=user.id, since="2999-01-01T00:00:00Z") == []
    assert len(stored(trail, admin, user_id=user.id, event="login.succeeded", until="2999-01-01T00:00:00")) == 3


def test_refusals(trail: httpx.Client, new_account: UserFactory) -> None:
    assert trail.get("/audit/").status_code == 401
    response = trail.get("/audit/", headers=new_account().headers)
    assert (response.status_code, response.json()) == (403, {"detail": "The user doesn't have enough privileges"})
    admin = login(trail, SUPERUSER_EMAIL, SUPERUSER_PASSWORD)
    for params in ({"since": "yesterday"}, {"until": "2026-13-01"}, {"until": "0.5"}, {"user_id": "not-a-uuid"}):
        response = trail.get("/audit/", params=params, headers=admin)
        assert response.status_code == 422, (params, response.text)
        assert isinstance(response.json()["detail"], list)


def test_off_by_default_stores_nothing(client: httpx.Client, superuser_headers: dict[str, str]) -> None:
    before = client.get("/audit/", headers=superuser_headers).json()["count"]
    login(client, SUPERUSER_EMAIL, SUPERUSER_PASSWORD)
    time.sleep(0.3)
    assert client.get("/audit/", headers=superuser_headers).json()["count"] == before


# ---------------------------------------------------------------- every event, stored

# The events the test below drives over HTTP, each checked stored with its subject. An event added to AuditEvent is
# added here with the requests that produce it (or to NOT_DRIVEN, with the reason it cannot be driven here).
DRIVEN_EVENTS = (
    "login.succeeded",
    "login.failed",
    "login.locked_out",
    "password.changed",
    "password.reset",
    "tokens.revoked",
    "session.created",
    "session.ended",
    "session.refreshed",
    "session.refresh_reused",
    "user.created",
    "user.updated",
    "user.deleted",
    "superuser.granted",
    "superuser.revoked",
    "pat.created",
    "pat.first_used",
    "pat.revoked",
)
# ... and by the test after it, with email verification and a second factor on.
DRIVEN_SECURITY_EVENTS = (
    "email.verification_sent",
    "email.verified",
    "totp.enabled",
    "totp.disabled",
    "totp.removed",
    "login.otp_failed",
    "recovery_code.used",
)
NOT_DRIVEN: dict[str, str] = {}


def readme_events() -> list[str]:
    """The event names of README's "Audit events" table (a row may name several), in its order."""
    lines = (ROOT / "README.md").read_text().splitlines()
    start = lines.index("| event | when | fields |") + 2
    names: list[str] = []
    for line in itertools.takewhile(lambda line: line.startswith("|"), lines[start:]):
        names.extend(re.findall(r"`([^`]+)`", line.split("|")[1]))
    return names


def test_the_readme_lists_exactly_the_audit_events() -> None:
    listed = readme_events()
    assert len(listed) == len(set(listed)), listed
    assert set(listed) == {event.value for event in AuditEvent}


def test_every_event_is_driven_below() -> None:
    driven = set(DRIVEN_EVENTS) | set(DRIVEN_SECURITY_EVENTS)
    assert not driven & set(NOT_DRIVEN)
    assert driven | set(NOT_DRIVEN) == {event.value for event in AuditEvent}


def recovered_token(http: httpx.Client, mailbox: Mailbox, email: str) -> str:
    """Asks for a recovery mail and reads the reset token from its link."""
    mailbox.messages.clear()
    assert http.post(f"/password-recovery/{email}").status_code == 200
    deadline = time.monotonic() + 10
    while not mailbox.to(email) and time.monotonic() < deadline:
        time.sleep(0.02)
    (message,) = mailbox.to(email)
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    (token,) = set(re.findall(r"/reset-password\?token=([A-Za-z0-9_.-]+)", str(body.get_content())))
    return str(token)


def refresh(http: httpx.Client, token: str) -> httpx.Response:
    return http.post("/login/refresh", data={"grant_type": "refresh_token", "refresh_token": token})


def test_every_event_is_stored_with_its_subject(served: Served, mailbox: Mailbox, new_account: UserFactory) -> None:
    settings = trail_settings(served, RATE_LIMIT_ENABLED="true", LOGIN_FAILURES_PER_ACCOUNT_PER_MINUTE="2")
    since = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()  # this test's rows only
    # (event, subject, actor, details the row has): each of DRIVEN_EVENTS at least once, as the requests left it.
    expected: list[tuple[str, str | None, str | None, dict[str, Any]]] = []
    with trail_client(settings) as http:
        admin = login(http, SUPERUSER_EMAIL, SUPERUSER_PASSWORD)
        admin_id = http.get("/users/me", headers=admin).json()["id"]
        user = new_account()

        # Logins, refreshes, sessions.
        pairs = []
        for _ in range(2):
            response = http.post("/login/access-token", data={"username": user.email, "password": user.password})
            assert response.status_code == 200, response.text
            pairs.append(response.json())
        assert refresh(http, pairs[0]["refresh_token"]).status_code == 200
        assert refresh(http, pairs[0]["refresh_token"]).status_code == 400  # the older one again: reused
        other_session = pairs[1]["refresh_token"].split(".")[0]
        ended = http.delete(f"/users/me/sessions/{other_session}", headers=user.headers)
        assert ended.status_code == 200, ended.text
        expected += [
            ("login.succeeded", user.id, None, {}),
            ("session.created", user.id, None, {}),
            ("session.refreshed", user.id, None, {}),
            ("session.refresh_reused", user.id, None, {}),
            ("session.ended", user.id, None, {"session_id": other_session, "reason": "user"}),
        ]

        # Failed logins: an inactive account (named), then an unknown address locked out (its domain only).
        inactive = new_account(is_active=False)
        response = http.post("/login/access-token", data={"username": inactive.email, "password": inactive.password})
        assert response.status_code == 400
        domain = f"{uuid.uuid4().hex}.example.org"
        statuses = [
            http.post("/login/access-token", data={"username": f"nobody@{domain}", "password": "guess"}).status_code
            for _ in range(3)
        ]
        assert statuses == [400, 400, 429]
        expected += [
            ("login.failed", inactive.id, None, {"reason": "inactive"}),
            ("login.failed", None, None, {"email_domain": domain, "reason": "credentials"}),
            ("login.locked_out", None, None, {"email_domain": domain}),
        ]

        # A personal access token made, used, revoked (its first use is written after the answer).
        made = http.post("/users/me/tokens", json={"name": "ci", "expires_in_days": 1}, headers=user.headers)
        assert made.status_code == 200, made.text
        pat = made.json()
        assert http.get("/users/me", headers={"Authorization": f"Bearer {pat['token']}"}).status_code == 200
        assert wait_for(http, admin, "pat.first_used", user_id=user.id)
        assert http.delete(f"/users/me/tokens/{pat['id']}", headers=user.headers).status_code == 200
        expected += [
            ("pat.created", user.id, None, {"token_id": pat["id"], "scope": "read"}),
            ("pat.first_used", user.id, None, {"token_id": pat["id"]}),
            ("pat.revoked", user.id, None, {"token_id": pat["id"]}),
        ]

        # A superuser creates a superuser, demotes and deletes them.
        body = {"email": random_email(), "password": "a-good-password", "is_superuser": True}
        created = http.post("/users/", json=body, headers=admin)
        assert created.status_code == 200, created.text
        other = created.json()["id"]
        assert http.patch(f"/users/{other}", json={"is_superuser": False}, headers=admin).status_code == 200
        assert http.delete(f"/users/{other}", headers=admin).status_code == 200
        expected += [
            ("user.created", other, admin_id, {"is_superuser": True}),
            ("superuser.granted", other, admin_id, {}),
            ("user.updated", other, admin_id, {"fields": ["is_superuser"]}),
            ("superuser.revoked", other, admin_id, {}),
            ("user.deleted", other, admin_id, {}),
        ]

        # The password changed by its owner, then reset by a recovery link.
        change = {"current_password": user.password, "new_password": "a-changed-password"}
        assert http.patch("/users/me/password", json=change, headers=user.headers).status_code == 200
        token = recovered_token(http, mailbox, user.email)
        reset = http.post("/reset-password/", json={"token": token, "new_password": "a-recovered-password"})
        assert reset.status_code == 200, reset.text
        expected += [
            ("password.changed", user.id, user.id, {}),
            ("tokens.revoked", user.id, user.id, {"reason": "password", "kept_one": True}),
            ("password.reset", user.id, None, {}),
            ("tokens.revoked", user.id, None, {"reason": "password", "kept_one": False}),
        ]

        assert {event for event, *_ in expected} == set(DRIVEN_EVENTS)
        assert_stored(http, admin, since, expected)


Expected = list[tuple[str, str | None, str | None, dict[str, Any]]]


def assert_stored(http: httpx.Client, admin: dict[str, str], since: str, expected: Expected) -> None:
    """Each (event, subject, actor, details) has a stored row since `since` (written after the answers)."""
    for event, subject, actor, details in expected:
        params = {"since": since, **({"user_id": subject} if subject else {})}
        deadline = time.monotonic() + 10
        while True:
            rows = stored(http, admin, event=event, **params)
            matching = [
                row
                for row in rows
                if (row["subject_id"], row["actor_id"]) == (subject, actor)
                and details.items() <= row["details"].items()
            ]
            if matching or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert matching, (event, subject, actor, details, rows)


def test_every_account_security_event_is_stored(served: Served, mailbox: Mailbox, new_account: UserFactory) -> None:
    """Email verification and the second factor, on: their events stored with their subjects."""
    settings = trail_settings(served, EMAIL_VERIFICATION="optional", TOTP_ENCRYPTION_KEY=TOTP_KEY)
    since = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    expected: Expected = []
    with trail_client(settings) as http:
        admin = login(http, SUPERUSER_EMAIL, SUPERUSER_PASSWORD)
        admin_id = http.get("/users/me", headers=admin).json()["id"]

        # A signup's link, then the address verified by it.
        email = random_email()
        signed_up = http.post("/users/signup", json={"email": email, "password": "a-good-password"})
        assert signed_up.status_code == 200, signed_up.text
        account = signed_up.json()["id"]
        link_token = mailed_token(mailbox, email)
        verified = http.post("/users/verify-email", json={"token": link_token})
        assert verified.status_code == 200, verified.text
        expected += [
            ("email.verification_sent", account, None, {"reason": "signup"}),
            ("email.verified", account, None, {}),
        ]

        # A second factor enrolled; a wrong code at login; a recovery code; turned off; again, removed by a superuser.
        user = new_account()
        enrolled = enrol(http, user)
        wrong = {"otp": wrong_code(enrolled.secret, enrolled.step)}
        assert log_in(http, user, **wrong).status_code == 401
        assert log_in(http, user, recovery_code=enrolled.recovery_codes[0]).status_code == 200
        off = {"password": user.password, "code": enrolled.recovery_codes[1]}
        assert http.post("/users/me/totp/disable", json=off, headers=user.headers).status_code == 200
        second = enrol(http, user)
        removed = http.delete(f"/users/{user.id}/totp", headers=admin)
        assert removed.status_code == 200, removed.text
        expected += [
            ("totp.enabled", user.id, None, {}),
            ("login.otp_failed", user.id, None, {"reason": "otp"}),
            ("recovery_code.used", user.id, None, {}),
            ("totp.disabled", user.id, None, {}),
            ("totp.removed", user.id, admin_id, {}),
        ]

        assert {event for event, *_ in expected} == set(DRIVEN_SECURITY_EVENTS)
        assert_stored(http, admin, since, expected)
    table = all_stored_text(served)
    for secret in (link_token, enrolled.secret, second.secret, *enrolled.recovery_codes, *second.recovery_codes):
        assert secret not in table


# ---------------------------------------------------------------- no secret stored


def all_stored_text(served: Served) -> str:
    """Every row of audit_event, every column, as text: read straight from the database."""

    async def go(engine: AsyncEngine) -> str:
        async with engine.connect() as connection:
            rows = (await connection.execute(text("SELECT * FROM audit_event"))).all()
        return "\n".join(repr(tuple(row)) for row in rows)

    found: str = served.database.execute(go)
    return found


def test_no_secret_is_stored(trail: httpx.Client, served: Served, mailbox: Mailbox, new_account: UserFactory) -> None:
    """After a refresh, a token made and used, a password change, failed logins and a recovery, no row of the table
    holds a password, token, hash or the address of an unknown account."""
    admin = login(trail, SUPERUSER_EMAIL, SUPERUSER_PASSWORD)
    user = new_account()
    hidden = [user.password, user.email, SUPERUSER_PASSWORD, admin["Authorization"].split()[1]]
    hidden.append(served.database.scalar('SELECT hashed_password FROM "user" WHERE email = :email', email=user.email))
    response = trail.post("/login/access-token", data={"username": user.email, "password": user.password})
    assert response.status_code == 200, response.text
    pair = response.json()
    refreshed = refresh(trail, pair["refresh_token"])
    assert refreshed.status_code == 200, refreshed.text
    hidden += [pair["access_token"], pair["refresh_token"]]
    hidden += [refreshed.json()["access_token"], refreshed.json()["refresh_token"]]
    made = trail.post("/users/me/tokens", json={"name": "ci", "expires_in_days": 1}, headers=user.headers)
    assert made.status_code == 200, made.text
    hidden.append(made.json()["token"])
    assert trail.get("/users/me", headers={"Authorization": f"Bearer {made.json()['token']}"}).status_code == 200
    assert wait_for(trail, admin, "pat.first_used", user_id=user.id)
    # An address that names no account, in a login and a recovery; a password typed in the username field.
    unknown = f"nobody-{uuid.uuid4().hex[:8]}@unknown-{uuid.uuid4().hex[:8]}.example"
    typed = "my secret password typed here"
    for username in (unknown, typed):
        failed = trail.post("/login/access-token", data={"username": username, "password": "wrong-one"})
        assert failed.status_code == 400
    assert trail.post(f"/password-recovery/{unknown}").status_code == 200
    hidden += [unknown, typed, "wrong-one"]
    change = {"current_password": user.password, "new_password": "the-changed-password"}
    assert trail.patch("/users/me/password", json=change, headers=user.headers).status_code == 200
    token = recovered_token(trail, mailbox, user.email)
    reset = trail.post("/reset-password/", json={"token": token, "new_password": "the-recovered-password"})
    assert reset.status_code == 200, reset.text
    hidden += ["the-changed-password", "the-recovered-password", token]
    hidden.append(served.database.scalar('SELECT hashed_password FROM "user" WHERE email = :email', email=user.email))
    # The process stores its events in order: once the reset's is there, all the earlier ones are.
    assert wait_for(trail, admin, "password.reset", user_id=user.id)

    stored_text = all_stored_text(served)
    for secret in hidden:
        assert secret not in stored_text, secret
    assert "$argon2" not in stored_text
    assert unknown.rpartition("@")[2] in stored_text  # its domain only


# ---------------------------------------------------------------- a graceful stop loses nothing


def count_stored(served: Served, event: str, subject: str) -> int:
    found = served.database.scalar(
        "SELECT count(*) FROM audit_event WHERE event = :event AND subject_id = :subject",
        event=event,
        subject=served.database.id(subject),
    )
    return int(found)


@pytest.mark.system
def test_a_sigterm_stores_every_buffered_event(served: Served, new_account: UserFactory) -> None:
    """The service as deployed (uvicorn, two workers), flushing only every 30 s: the events still buffered when it is
    told to stop (SIGTERM, as a container runtime stops it) are written before it exits."""
    port, logins = free_port(), 10
    environ = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("COV_", "PYTEST"))},
        "ENV_FILE": os.devnull,
        "DATABASE_URL": served.database.url,
        "SECRET_KEY": SECRET_KEY,
        "ENVIRONMENT": "local",
        "FIRST_SUPERUSER": SUPERUSER_EMAIL,
        "FIRST_SUPERUSER_PASSWORD": SUPERUSER_PASSWORD,
        "PASSWORD_HASH_PROFILE": "CHEAPEST",
        "RATE_LIMIT_ENABLED": "false",
        "LOG_LEVEL": "WARNING",
        "AUDIT_STORE_ENABLED": "true",
        "AUDIT_FLUSH_SECONDS": "30",
    }
    command = [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", "2", "--loop", "uvloop", "--http", "app.server:HttpProtocol"]
    command += ["--timeout-graceful-shutdown", "20"]
    user = new_account()
    process = subprocess.Popen(command, cwd=ROOT, env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
            try:
                if httpx.get(url + "/api/v1/utils/health-check/", timeout=1).json() is True:
                    break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "the service did not start"
                time.sleep(0.2)
        with httpx.Client(base_url=url + "/api/v1") as http:
            for _ in range(logins):
                login(http, user.email, user.password)
        assert count_stored(served, "login.succeeded", user.id) == 0  # still buffered
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output.decode()
    assert count_stored(served, "login.succeeded", user.id) == logins
    assert count_stored(served, "session.created", user.id) == logins


def test_a_write_under_way_when_the_service_stops_is_finished(served: Served, new_account: UserFactory) -> None:
    """A batch being written when the service is told to stop (the table locked, or the database slow) is written,
    not cancelled half-way and lost: the stop waits for it (within the statement's own timeouts)."""
    user = new_account()
    locked, release = threading.Event(), threading.Event()

    async def hold_lock(engine: AsyncEngine) -> None:
        async with engine.begin() as connection:
            if engine.dialect.name == "postgresql":
                await connection.exec_driver_sql("LOCK TABLE audit_event IN ACCESS EXCLUSIVE MODE")
            else:  # a write transaction: SQLite's one writer is this connection until it ends
                await connection.exec_driver_sql("DELETE FROM audit_event WHERE 0 = 1")
            locked.set()
            await asyncio.to_thread(release.wait, 30)

    flush_seconds = 3.0
    server = LiveServer(create_app(trail_settings(served, AUDIT_FLUSH_SECONDS=str(flush_seconds))))
    holder = threading.Thread(target=served.database.execute, args=(hold_lock,))
    stopper = threading.Thread(target=server.__exit__, args=(None, None, None))
    with server:
        first_flush = time.monotonic()  # at start-up; the next one comes flush_seconds later
        with httpx.Client(base_url=server.url + "/api/v1") as http:
            login(http, user.email, user.password)  # its events wait in the buffer
        holder.start()
        try:
            assert locked.wait(10)
            time.sleep(max(0.0, first_flush + flush_seconds + 0.5 - time.monotonic()))  # that flush now waits
            stopper.start()
            time.sleep(0.5)  # the stop has begun
        finally:
            release.set()
            holder.join(30)
        stopper.join(30)
    assert count_stored(served, "login.succeeded", user.id) == 1


# ---------------------------------------------------------------- retention and the append-only table


def insert_events(served: Served, *rows: tuple[str, timedelta]) -> None:
    """Audit rows written straight into the table: (event, age) each."""
    now = utc_now()
    values = [
        {"id": uuid7(), "created_at": now - age, "event": event, "subject_id": None, "actor_id": None, "details": "{}"}
        for event, age in rows
    ]

    async def go(engine: AsyncEngine) -> None:
        async with engine.begin() as connection:
            await connection.execute(insert(AuditRecord), values)

    served.database.execute(go)


def count_event(served: Served, event: str) -> int:
    return int(served.database.scalar("SELECT count(*) FROM audit_event WHERE event = :event", event=event))


def test_the_service_prunes_what_is_older_than_the_retention_a_batch_a_run(served: Served) -> None:
    old, young = f"test.old-{uuid.uuid4().hex[:8]}", f"test.young-{uuid.uuid4().hex[:8]}"
    insert_events(served, *[(old, timedelta(days=31))] * (PRUNE_BATCH + 5), *[(young, timedelta(days=29))] * 3)
    try:
        # The first run, at start-up, deletes a batch; the next one (10 minutes later) would take the rest.
        with trail_client(trail_settings(served, AUDIT_RETENTION_DAYS="30")):
            deadline = time.monotonic() + 10
            while count_event(served, old) > 5 and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.3)
            assert count_event(served, old) == 5
            assert count_event(served, young) == 3
    finally:
        served.database.run("DELETE FROM audit_event WHERE event IN (:old, :young)", old=old, young=young)


def test_no_retention_prunes_nothing(served: Served) -> None:
    old = f"test.old-{uuid.uuid4().hex[:8]}"
    insert_events(served, (old, timedelta(days=3650)))
    try:
        with trail_client(trail_settings(served, AUDIT_RETENTION_DAYS="0")) as http:
            login(http, SUPERUSER_EMAIL, SUPERUSER_PASSWORD)
            time.sleep(0.3)
            assert count_event(served, old) == 1
    finally:
        served.database.run("DELETE FROM audit_event WHERE event = :old", old=old)


def test_an_update_of_the_table_is_refused(served: Served) -> None:
    event = f"test.kept-{uuid.uuid4().hex[:8]}"
    insert_events(served, (event, timedelta(0)))
    with pytest.raises(DBAPIError, match="append-only"):
        served.database.run("UPDATE audit_event SET event = 'test.changed' WHERE event = :event", event=event)
    assert count_event(served, event) == 1
    with pytest.raises(DBAPIError, match="append-only"):
        served.database.run("UPDATE audit_event SET created_at = created_at")  # every row, whoever asks
    served.database.run("DELETE FROM audit_event WHERE event = :event", event=event)  # the pruning's DELETE stays
    assert count_event(served, event) == 0
