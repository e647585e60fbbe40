"""Audit events (app/audit.py): each security-relevant action over HTTP leaves its one event on `app.audit`, with the
account acted on and who acted, whatever LOG_LEVEL is; and no event carries a password, token, hash or address."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest

from app import security
from tests.conftest import (
    SUPERUSER_PASSWORD,
    Account,
    LiveServer,
    Records,
    Served,
    audit_events,
    create_app,
    login,
    make_settings,
    named,
    random_email,
)


def test_logins_succeeded_and_failed(client: httpx.Client, user: Account, audit_records: Records) -> None:
    login(client, user.email, user.password)
    wrong = client.post("/login/access-token", data={"username": user.email, "password": "not-the-password"})
    assert wrong.status_code == 400
    unknown = client.post("/login/access-token", data={"username": "nobody@elsewhere.org", "password": "x" * 8})
    assert unknown.status_code == 400
    (succeeded,) = named(audit_records, "login.succeeded")
    assert succeeded["subject_id"] == user.id
    failed = named(audit_records, "login.failed")
    # A failure names the address's domain only: the account may not exist, and the address is personal data.
    assert [(entry["email_domain"], entry["reason"], entry["subject_id"]) for entry in failed] == [
        ("example.com", "credentials", None),
        ("elsewhere.org", "credentials", None),
    ]
    assert user.email not in str(audit_events(audit_records))


@pytest.mark.parametrize(
    "username",
    ["a-name-without-at-sign", "my secret password", "someone@" + "d" * 254, "x" * 1024],
)
def test_a_username_without_a_domain_is_never_logged(
    client: httpx.Client, audit_records: Records, username: str
) -> None:
    """Only a domain is logged: a username with none (free text, up to the form's 1,024 characters) is not."""
    response = client.post("/login/access-token", data={"username": username, "password": "x" * 8})
    assert response.status_code == 400
    (failed,) = named(audit_records, "login.failed")
    assert failed["email_domain"] == ""
    assert username not in str(audit_events(audit_records))
    assert username.rpartition("@")[2] not in str(audit_events(audit_records))


def test_a_lockout_is_an_event(served: Served, audit_records: Records) -> None:
    settings = make_settings(served.database.url, RATE_LIMIT_ENABLED="true", LOGIN_FAILURES_PER_ACCOUNT_PER_MINUTE="2")
    with LiveServer(create_app(settings)) as server, httpx.Client(base_url=server.url + "/api/v1") as http:
        email = random_email()
        statuses = [
            http.post("/login/access-token", data={"username": email, "password": "wrong-guess"}).status_code
            for _ in range(3)
        ]
    assert statuses == [400, 400, 429]
    (locked,) = named(audit_records, "login.locked_out")
    assert locked["email_domain"] == "example.com"


def test_a_password_change_and_what_it_revokes(client: httpx.Client, user: Account, audit_records: Records) -> None:
    body = {"current_password": user.password, "new_password": "a-brand-new-password"}
    assert client.patch("/users/me/password", json=body, headers=user.headers).status_code == 200
    assert [entry["event"] for entry in audit_events(audit_records)] == [
        "user.updated",
        "password.changed",
        "tokens.revoked",
    ]
    updated, changed, revoked = audit_events(audit_records)
    assert updated["fields"] == ["password"]
    assert changed["subject_id"] == changed["actor_id"] == user.id
    assert (revoked["reason"], revoked["kept_one"]) == ("password", True)
    assert "a-brand-new-password" not in str(audit_events(audit_records))


def test_a_reset_by_recovery_link(client: httpx.Client, served: Served, user: Account, audit_records: Records) -> None:
    hashed = served.database.scalar('SELECT hashed_password FROM "user" WHERE email = :email', email=user.email)
    token = security.create_reset_token(user.email, hashed, served.settings.SECRET_KEY, timedelta(hours=1))
    answer = client.post("/reset-password/", json={"token": token, "new_password": "reset-to-this-one"})
    assert answer.status_code == 200, answer.text
    assert [(entry["event"], entry["subject_id"], entry["actor_id"]) for entry in audit_events(audit_records)] == [
        ("password.reset", user.id, None),
        ("tokens.revoked", user.id, None),
    ]
    rendered = str(audit_events(audit_records))
    assert token not in rendered
    assert hashed not in rendered


def test_a_superuser_creates_promotes_demotes_deactivates_and_deletes(
    client: httpx.Client, superuser_headers: dict[str, str], audit_records: Records
) -> None:
    admin = client.get("/users/me", headers=superuser_headers).json()["id"]
    created = client.post(
        "/users/",
        json={"email": random_email(), "password": SUPERUSER_PASSWORD, "is_superuser": True},
        headers=superuser_headers,
    )
    assert created.status_code == 200
    user_id = created.json()["id"]
    for change in ({"is_superuser": False}, {"is_active": False}, {"full_name": "Renamed"}):
        assert client.patch(f"/users/{user_id}", json=change, headers=superuser_headers).status_code == 200
    assert client.delete(f"/users/{user_id}", headers=superuser_headers).status_code == 200
    logged = [(entry["event"], entry.get("fields")) for entry in audit_events(audit_records)]
    assert logged == [
        ("user.created", None),
        ("superuser.granted", None),
        ("user.updated", ["is_superuser"]),
        ("superuser.revoked", None),
        ("user.updated", ["is_active"]),
        ("tokens.revoked", None),
        ("user.updated", ["full_name"]),
        ("user.deleted", None),
    ]
    for entry in audit_events(audit_records):
        assert (entry["subject_id"], entry["actor_id"]) == (user_id, admin)
    assert SUPERUSER_PASSWORD not in str(audit_events(audit_records))


def test_a_signup_has_no_actor(client: httpx.Client, audit_records: Records) -> None:
    signed_up = client.post("/users/signup", json={"email": random_email(), "password": "a-good-password"})
    assert signed_up.status_code == 200
    (created,) = audit_events(audit_records)
    assert (created["event"], created["subject_id"], created["actor_id"]) == (
        "user.created",
        signed_up.json()["id"],
        None,
    )
    assert created["is_superuser"] is False
