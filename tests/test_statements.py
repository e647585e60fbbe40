"""How many statements each route sends to the database, counted where they reach it (tests/conftest.py's
`counted`), the same on PostgreSQL and SQLite. The caller's token is checked in the statement that reads the caller,
and a route about one row reads that row in the same statement (ReadWithCaller); a change is then one INSERT,
UPDATE or DELETE … RETURNING. No BEGIN or COMMIT: one statement needs no transaction around it."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from tests.conftest import Account, Counted, Served, login, random_email, seed_account, sent_by

UserFactory = Callable[..., Account]


def test_reads(counted: Counted, served: Served, new_account: UserFactory) -> None:
    http, statements = counted
    admin = new_account(is_superuser=True)
    user = new_account()
    for method, path, headers, expected in (
        ("GET", "/users/me", user.headers, 1),  # the caller is the answer
        ("GET", f"/users/{user.id}", user.headers, 1),
        ("GET", f"/users/{user.id}", admin.headers, 2),
        ("GET", "/users/", admin.headers, 2),  # the caller, then the page with its total
        ("GET", "/users/?skip=1000000", admin.headers, 3),  # an empty page counts the rows on its own
        ("GET", "/items/", admin.headers, 2),
    ):
        response, sent = sent_by(http, statements, method, path, headers=headers)
        assert response.status_code == 200, (path, response.text)
        assert len(sent) == expected, (method, path, sent)


@pytest.mark.parametrize(
    ("method", "body", "status"),
    [("PUT", {"title": "renamed"}, 200), ("DELETE", None, 200)],
)
def test_item_changes_are_one_statement_with_their_caller(
    counted: Counted, new_account: UserFactory, method: str, body: dict[str, str] | None, status: int
) -> None:
    """The change checks its caller itself (app/services.py `admitted_caller`): one statement when it is allowed; a
    refusal reads the caller and the item after it changed nothing, for the contract's answer."""
    http, statements = counted
    owner, stranger, admin = new_account(), new_account(), new_account(is_superuser=True)
    item = http.post("/items/", json={"title": "mine"}, headers=owner.headers).json()
    for account, item_id, expected_status, expected in (
        (stranger, item["id"], 403, 2),
        (owner, str(uuid.uuid4()), 404, 2),
        (owner, item["id"], status, 1),
    ):
        response, sent = sent_by(http, statements, method, f"/items/{item_id}", json=body, headers=account.headers)
        assert response.status_code == expected_status, response.text
        assert len(sent) == expected, sent
    other = http.post("/items/", json={"title": "another"}, headers=owner.headers).json()
    response, sent = sent_by(http, statements, method, f"/items/{other['id']}", json=body, headers=admin.headers)
    assert (response.status_code, len(sent)) == (status, 1), sent
    response, sent = sent_by(http, statements, "POST", "/items/", json={"title": "new"}, headers=owner.headers)
    assert (response.status_code, len(sent)) == (200, 1), sent


def test_a_refused_change_answers_for_its_caller_first(
    counted: Counted, served: Served, new_account: UserFactory
) -> None:
    """Auth before validation, as the contract orders it: on a route whose change checks its caller, a malformed
    body of a caller that is gone, inactive or whose session ended answers for the caller, not 422; a good caller's
    malformed body costs one statement (the caller's check) before its 422."""
    http, statements = counted
    owner = new_account()
    item = http.post("/items/", json={"title": "mine"}, headers=owner.headers).json()
    malformed = {"title": ""}
    for method, path in (("POST", "/items/"), ("PUT", f"/items/{item['id']}")):
        response, sent = sent_by(http, statements, method, path, json=malformed, headers=owner.headers)
        assert (response.status_code, len(sent)) == (422, 1), (response.text, sent)
    gone, inactive, ended = new_account(), new_account(), new_account()
    admin = new_account(is_superuser=True)
    assert http.patch(f"/users/{inactive.id}", json={"is_active": False}, headers=admin.headers).status_code == 200
    assert http.delete(f"/users/{gone.id}", headers=admin.headers).status_code == 200
    assert http.delete("/users/me/sessions", headers=ended.headers).status_code == 200  # all but this one
    ended_elsewhere = login(http, ended.email, ended.password)
    assert http.delete("/users/me/sessions", headers=ended_elsewhere).status_code == 200  # ends the first
    for account_headers, status, detail in (
        (gone.headers, 404, "User not found"),
        (inactive.headers, 400, "Inactive user"),
        (ended.headers, 403, "Could not validate credentials"),
    ):
        for method, path, body in (
            ("POST", "/items/", malformed),
            ("PUT", f"/items/{item['id']}", malformed),
            ("PUT", f"/items/{item['id']}", {"title": "fine"}),
            ("DELETE", f"/items/{item['id']}", None),
            ("PUT", "/items/not-a-uuid", {"title": "fine"}),
        ):
            response = http.request(method, path, json=body, headers=account_headers)
            assert (response.status_code, response.json()) == (status, {"detail": detail}), (method, path)
    assert http.get(f"/items/{item['id']}", headers=owner.headers).json()["title"] == "mine"


def test_user_changes_are_one_statement_with_their_caller_or_two_after_it(
    counted: Counted, served: Served, new_account: UserFactory
) -> None:
    """A rename and a deletion check their caller in their own statement; a change with rules on the user as they
    were (a new email, a password, a deactivation, a promotion) reads them with the caller first; an account's
    creation and a password change check the caller before the hash they cost."""
    http, statements = counted
    admin = new_account(is_superuser=True)
    user, other, third = new_account(), new_account(), new_account()
    password_change = {"current_password": user.password, "new_password": "another-good-password"}
    for method, path, body, headers, expected in (
        ("PATCH", "/users/me", {"full_name": "New Name"}, user.headers, 1),
        ("PATCH", f"/users/{other.id}", {"full_name": "By Admin"}, admin.headers, 1),
        ("PATCH", "/users/me", {"email": random_email()}, user.headers, 2),
        ("PATCH", f"/users/{other.id}", {"full_name": "By Admin", "is_active": False}, admin.headers, 2),
        ("PATCH", f"/users/{other.id}", {"password": "a-new-good-password"}, admin.headers, 2),
        ("POST", "/users/", {"email": random_email(), "password": "a-good-password"}, admin.headers, 2),
        ("PATCH", "/users/me/password", password_change, user.headers, 2),
        ("DELETE", f"/users/{other.id}", None, admin.headers, 1),
        ("DELETE", "/users/me", None, third.headers, 1),
    ):
        response, sent = sent_by(http, statements, method, path, json=body, headers=headers)
        assert response.status_code == 200, (path, response.text)
        assert len(sent) == expected, (method, path, sent)
    taken = seed_account(served)
    response, sent = sent_by(http, statements, "PATCH", "/users/me", json={"email": taken.email}, headers=admin.headers)
    assert (response.status_code, len(sent)) == (409, 2), sent  # the unique index refuses it: no lookup first
    # Refusals: the change that changed nothing, then the caller (and the user) read for the contract's answer.
    for method, path, body, headers, status in (
        ("PATCH", f"/users/{uuid.uuid4()}", {"full_name": "x"}, admin.headers, 404),
        ("DELETE", f"/users/{uuid.uuid4()}", None, admin.headers, 404),
        ("PATCH", f"/users/{admin.id}", {"full_name": "x"}, user.headers, 403),
        ("DELETE", f"/users/{admin.id}", None, user.headers, 403),
        ("DELETE", "/users/me", None, admin.headers, 403),
        ("DELETE", f"/users/{admin.id}", None, admin.headers, 403),
    ):
        response, sent = sent_by(http, statements, method, path, json=body, headers=headers)
        assert (response.status_code, len(sent)) == (status, 2), (method, path, response.text, sent)


def test_superuser_changes_answer_for_their_caller_first(counted: Counted, new_account: UserFactory) -> None:
    """Auth, then privileges, then validation, as the contract orders them, on the superusers' changes that check
    their caller in their own statement; and a rename to the name a user has already is answered as before, in three
    statements (the rename that matched no row, the caller and the user, the UPDATE)."""
    http, statements = counted
    admin, user, other = new_account(is_superuser=True), new_account(), new_account()
    for method, path, body in (
        ("PATCH", f"/users/{other.id}", {"full_name": "x"}),
        ("PATCH", f"/users/{other.id}", {"is_superuser": "not a boolean"}),
        ("PATCH", "/users/not-a-uuid", {"full_name": "x"}),
        ("DELETE", f"/users/{other.id}", None),
        ("DELETE", "/users/not-a-uuid", None),
    ):
        response = http.request(method, path, json=body, headers=user.headers)
        assert (response.status_code, response.json()) == (403, {"detail": "The user doesn't have enough privileges"})
    response = http.patch(f"/users/{other.id}", json={"is_superuser": "not a boolean"}, headers=admin.headers)
    assert response.status_code == 422
    assert http.get(f"/users/{other.id}", headers=admin.headers).json()["full_name"] is None
    assert http.patch(f"/users/{other.id}", json={"full_name": "Same"}, headers=admin.headers).status_code == 200
    again, sent = sent_by(
        http, statements, "PATCH", f"/users/{other.id}", json={"full_name": "Same"}, headers=admin.headers
    )
    assert (again.status_code, again.json()["full_name"], len(sent)) == (200, "Same", 3), sent


def test_signup_is_one_insert(counted: Counted) -> None:
    http, statements = counted
    email = random_email()
    body = {"email": email, "password": "a-good-password"}
    response, sent = sent_by(http, statements, "POST", "/users/signup", json=body)
    assert (response.status_code, len(sent)) == (200, 1), sent
    response, sent = sent_by(http, statements, "POST", "/users/signup", json=body)
    assert response.status_code == 400
    assert len(sent) == 1, sent
    assert http.get("/users/me", headers=login(http, email, "a-good-password")).json()["email"] == email
