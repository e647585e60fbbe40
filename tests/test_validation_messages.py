"""The 422 answers of /work/shared/spec/validation-messages.md, row by row: the template's pydantic errors, whole."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.conftest import Account, random_email

PASSWORD = "a-good-password"


def err(type_: str, loc: list[str | int], msg: str, input_: Any, ctx: dict[str, Any] | None = None) -> dict[str, Any]:
    error = {"type": type_, "loc": loc, "msg": msg, "input": input_}
    if ctx is not None:
        error["ctx"] = ctx
    return error


def email_error(value: Any, reason: str) -> dict[str, Any]:
    return err(
        "value_error", ["body", "email"], f"value is not a valid email address: {reason}", value, {"reason": reason}
    )


def missing(loc: list[str | int], input_: Any) -> dict[str, Any]:
    return err("missing", loc, "Field required", input_)


def too_short(loc: list[str | int], value: str, length: int) -> dict[str, Any]:
    unit = "character" if length == 1 else "characters"
    return err("string_too_short", loc, f"String should have at least {length} {unit}", value, {"min_length": length})


def too_long(loc: list[str | int], value: str, length: int) -> dict[str, Any]:
    return err("string_too_long", loc, f"String should have at most {length} characters", value, {"max_length": length})


def not_a_string(loc: list[str | int], value: Any) -> dict[str, Any]:
    return err("string_type", loc, "Input should be a valid string", value)


def not_a_uuid(loc: list[str | int], value: str, reason: str) -> dict[str, Any]:
    return err("uuid_parsing", loc, f"Input should be a valid UUID, {reason}", value, {"error": reason})


def not_an_int(loc: list[str | int], value: str) -> dict[str, Any]:
    return err("int_parsing", loc, "Input should be a valid integer, unable to parse string as an integer", value)


def not_a_bool(loc: list[str | int], value: Any) -> dict[str, Any]:
    return err("bool_parsing", loc, "Input should be a valid boolean, unable to interpret input", value)


@dataclass
class Row:
    """One request of the table and the whole `detail` it must answer."""

    method: str
    path: str
    errors: list[dict[str, Any]]
    auth: str | None = None  # "user" or "superuser"
    send: dict[str, Any] = field(default_factory=dict)  # httpx keyword arguments: json=, content=, data=, params=


def signup(body: Any, *errors: dict[str, Any]) -> Row:
    return Row("POST", "/users/signup", list(errors), send={"json": body})


def signup_email(value: Any, *errors: dict[str, Any]) -> Row:
    return signup({"email": value, "password": PASSWORD}, *errors)


LONG_EMAIL = "a" * 65 + "@" + "b" * 190 + ".com"
VALID = {"email": "someone@example.com", "password": PASSWORD}
LOGIN = {"username": "someone@example.com", "password": PASSWORD}

ROWS: dict[str, Row] = {
    "signup email missing": signup({"password": PASSWORD}, missing(["body", "email"], {"password": PASSWORD})),
    "signup email plainaddress": signup_email(
        "plainaddress", email_error("plainaddress", "An email address must have an @-sign.")
    ),
    "signup email without a dot in its domain": signup_email(
        "a@b", email_error("a@b", "The part after the @-sign is not valid. It should have a period.")
    ),
    "signup email with two @": signup_email(
        "a@@example.com",
        email_error("a@@example.com", "The part after the @-sign contains invalid characters: '@'."),
    ),
    "signup email with a space": signup_email(
        "a b@example.com",
        email_error("a b@example.com", "The email address contains invalid characters before the @-sign: SPACE."),
    ),
    "signup email with nothing before @": signup_email(
        "@example.com", email_error("@example.com", "There must be something before the @-sign.")
    ),
    "signup email empty": signup_email("", email_error("", "An email address must have an @-sign.")),
    "signup email a number": signup_email(123, not_a_string(["body", "email"], 123)),
    "signup email null": signup_email(None, not_a_string(["body", "email"], None)),
    "signup email of 260 chars": signup_email(
        LONG_EMAIL,
        email_error(
            LONG_EMAIL,
            "After the @-sign, periods cannot be separated by so many characters (127 characters too many).",
        ),
    ),
    "signup password short": signup({**VALID, "password": "short"}, too_short(["body", "password"], "short", 8)),
    "signup password of 129 chars": signup(
        {**VALID, "password": "p" * 129}, too_long(["body", "password"], "p" * 129, 128)
    ),
    "signup password a number": signup({**VALID, "password": 12345678}, not_a_string(["body", "password"], 12345678)),
    "signup full_name of 256 chars": signup(
        {**VALID, "full_name": "n" * 256}, too_long(["body", "full_name"], "n" * 256, 255)
    ),
    "signup body a list": signup(
        [VALID],
        err(
            "model_attributes_type",
            ["body"],
            "Input should be a valid dictionary or object to extract fields from",
            [VALID],
        ),
    ),
    "signup body invalid JSON": Row(
        "POST",
        "/users/signup",
        [err("json_invalid", ["body", 10], "JSON decode error", {}, {"error": "Expecting value"})],
        send={"content": b'{"email": }', "headers": {"content-type": "application/json"}},
    ),
    "signup no body": Row("POST", "/users/signup", [missing(["body"], None)]),
    "create user is_superuser maybe": Row(
        "POST",
        "/users/",
        [not_a_bool(["body", "is_superuser"], "maybe")],
        auth="superuser",
        send={"json": {**VALID, "is_superuser": "maybe"}},
    ),
    "create user is_active 2": Row(
        "POST",
        "/users/",
        [not_a_bool(["body", "is_active"], 2)],
        auth="superuser",
        send={"json": {**VALID, "is_active": 2}},
    ),
    "update me email nope": Row(
        "PATCH",
        "/users/me",
        [email_error("nope", "An email address must have an @-sign.")],
        auth="user",
        send={"json": {"email": "nope"}},
    ),
    "update password both missing": Row(
        "PATCH",
        "/users/me/password",
        [missing(["body", "current_password"], {}), missing(["body", "new_password"], {})],
        auth="user",
        send={"json": {}},
    ),
    "update password new_password short": Row(
        "PATCH",
        "/users/me/password",
        [too_short(["body", "new_password"], "short", 8)],
        auth="user",
        send={"json": {"current_password": PASSWORD, "new_password": "short"}},
    ),
    "read user id not-a-uuid": Row(
        "GET",
        "/users/not-a-uuid",
        [not_a_uuid(["path", "user_id"], "not-a-uuid", "invalid character: found `n` at 1")],
        auth="user",
    ),
    "read user id 123": Row(
        "GET",
        "/users/123",
        [not_a_uuid(["path", "user_id"], "123", "invalid length: expected length 32 for simple format, found 3")],
        auth="user",
    ),
    "read users skip x": Row(
        "GET", "/users/", [not_an_int(["query", "skip"], "x")], auth="superuser", send={"params": {"skip": "x"}}
    ),
    "read users limit 1.5": Row(
        "GET", "/users/", [not_an_int(["query", "limit"], "1.5")], auth="superuser", send={"params": {"limit": "1.5"}}
    ),
    "create item title missing": Row(
        "POST", "/items/", [missing(["body", "title"], {})], auth="user", send={"json": {}}
    ),
    "create item title empty": Row(
        "POST", "/items/", [too_short(["body", "title"], "", 1)], auth="user", send={"json": {"title": ""}}
    ),
    "create item title of 256 chars": Row(
        "POST",
        "/items/",
        [too_long(["body", "title"], "t" * 256, 255)],
        auth="user",
        send={"json": {"title": "t" * 256}},
    ),
    "create item title a number": Row(
        "POST", "/items/", [not_a_string(["body", "title"], 5)], auth="user", send={"json": {"title": 5}}
    ),
    "create item description of 256 chars": Row(
        "POST",
        "/items/",
        [too_long(["body", "description"], "d" * 256, 255)],
        auth="user",
        send={"json": {"title": "ok", "description": "d" * 256}},
    ),
    "update item id abc": Row(
        "PUT",
        "/items/abc",
        [not_a_uuid(["path", "id"], "abc", "invalid length: expected length 32 for simple format, found 3")],
        auth="user",
        send={"json": {"title": "x"}},
    ),
    "login no fields": Row(
        "POST", "/login/access-token", [missing(["body", "username"], None), missing(["body", "password"], None)]
    ),
    "login password missing": Row(
        "POST",
        "/login/access-token",
        [missing(["body", "password"], None)],
        send={"data": {"username": "someone@example.com"}},
    ),
    "login JSON body": Row(
        "POST",
        "/login/access-token",
        [missing(["body", "username"], None), missing(["body", "password"], None)],
        send={"json": LOGIN},
    ),
    "login grant_type foo": Row(
        "POST",
        "/login/access-token",
        [
            err(
                "string_pattern_mismatch",
                ["body", "grant_type"],
                "String should match pattern '^password$'",
                "foo",
                {"pattern": "^password$"},
            )
        ],
        send={"data": {**LOGIN, "grant_type": "foo"}},
    ),
    "reset password new_password short": Row(
        "POST",
        "/reset-password/",
        [too_short(["body", "new_password"], "short", 8)],
        send={"json": {"token": "x", "new_password": "short"}},
    ),
    "reset password token missing": Row(
        "POST",
        "/reset-password/",
        [missing(["body", "token"], {"new_password": "a-brand-new-password"})],
        send={"json": {"new_password": "a-brand-new-password"}},
    ),
}


@pytest.mark.parametrize("row", ROWS.values(), ids=ROWS.keys())
def test_validation_answer(client: httpx.Client, request: pytest.FixtureRequest, row: Row) -> None:
    # Only rows behind a bearer token pay for an account and a login.
    headers: dict[str, str] = {}
    if row.auth == "user":
        headers = request.getfixturevalue("user").headers
    elif row.auth == "superuser":
        headers = request.getfixturevalue("superuser_headers")
    send = {**row.send, "headers": {**headers, **row.send.get("headers", {})}}
    response = client.request(row.method, row.path, **send)
    assert response.status_code == 422, response.text
    assert response.json() == {"detail": row.errors}


def test_multipart_login_form_errors_too(client: httpx.Client) -> None:
    # What the template's frontend sends (axios + FormData).
    response = client.post("/login/access-token", files={"username": (None, "someone@example.com")})
    assert response.status_code == 422
    assert response.json() == {"detail": [missing(["body", "password"], None)]}


def test_every_failing_field_is_reported_in_the_templates_field_order(
    client: httpx.Client, superuser_headers: dict[str, str]
) -> None:
    body = {"password": "short", "is_active": "maybe", "full_name": 7}
    response = client.post("/users/", json=body, headers=superuser_headers)
    assert response.status_code == 422
    assert response.json()["detail"] == [
        missing(["body", "email"], body),
        not_a_bool(["body", "is_active"], "maybe"),
        not_a_string(["body", "full_name"], 7),
        too_short(["body", "password"], "short", 8),
    ]


def test_path_query_and_body_errors_come_together(client: httpx.Client, user: Account) -> None:
    response = client.put("/items/abc", json={"title": ""}, headers=user.headers)
    assert response.json()["detail"] == [
        not_a_uuid(["path", "id"], "abc", "invalid length: expected length 32 for simple format, found 3"),
        too_short(["body", "title"], "", 1),
    ]


# ---------------------------------------------------------------- not 422


def test_surrounding_whitespace_is_not_a_second_account(client: httpx.Client) -> None:
    address = random_email()
    first = client.post("/users/signup", json={"email": f"{address}\n", "password": PASSWORD})
    assert first.status_code == 200, first.text
    assert first.json()["email"] == address
    again = client.post("/users/signup", json={"email": f"  {address}", "password": PASSWORD})
    assert again.status_code == 400
    assert again.json() == {"detail": "The user with this email already exists in the system"}


def test_email_is_stored_as_pydantic_normalises_it(client: httpx.Client) -> None:
    local = f"Carol-{uuid.uuid4().hex[:8]}"
    response = client.post("/users/signup", json={"email": f"Carol <{local}@Example.COM>", "password": PASSWORD})
    assert response.status_code == 200, response.text
    assert response.json()["email"] == f"{local}@example.com"


def test_password_recovery_for_a_path_that_is_not_an_address_is_200(client: httpx.Client) -> None:
    response = client.post("/password-recovery/not-an-address")
    assert response.status_code == 200
    assert response.json() == {"message": "If that email is registered, we sent a password recovery link"}


def test_negative_skip_is_422_greater_than_equal(client: httpx.Client, user: Account) -> None:
    response = client.get("/items/", params={"skip": -1}, headers=user.headers)
    assert response.status_code == 422
    assert response.json() == {
        "detail": [
            err("greater_than_equal", ["query", "skip"], "Input should be greater than or equal to 0", "-1", {"ge": 0})
        ]
    }


# ---------------------------------------------------------------- the test email's address


def test_test_email_address_is_validated_as_an_email(client: httpx.Client, superuser_headers: dict[str, str]) -> None:
    response = client.post("/utils/test-email/", params={"email_to": "a@b"}, headers=superuser_headers)
    assert response.status_code == 422
    reason = "The part after the @-sign is not valid. It should have a period."
    assert response.json() == {
        "detail": [
            err(
                "value_error",
                ["query", "email_to"],
                f"value is not a valid email address: {reason}",
                "a@b",
                {"reason": reason},
            )
        ]
    }
    absent = client.post("/utils/test-email/", headers=superuser_headers)
    assert absent.json() == {"detail": [missing(["query", "email_to"], None)]}
