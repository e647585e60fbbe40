"""The audit trail (README "Audit trail"): audit events stored after the answers, read by superusers over HTTP."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from app.main import create_app
from tests.conftest import SUPERUSER_EMAIL, SUPERUSER_PASSWORD, Account, LiveServer, Served, login, make_settings

UserFactory = Callable[..., Account]


@pytest.fixture
def trail(served: Served) -> Iterator[httpx.Client]:
    """A client of a server of its own that stores its audit events, flushed every 0.1 s."""
    app = create_app(make_settings(served.database.url, AUDIT_STORE_ENABLED="true", AUDIT_FLUSH_SECONDS="0.1"))
    with LiveServer(app) as server, httpx.Client(base_url=server.url + "/api/v1", timeout=30) as http:
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
