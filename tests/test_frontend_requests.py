"""Every operation, requested as the template's React frontend and its generated axios client send it from
Chromium, answered as the template's backend answers it.

What the browser sends, read from the template's frontend: axios's `Accept: application/json, text/plain, */*`;
`Content-Type: application/json` (no charset) on JSON bodies, which `JSON.stringify` writes compactly with raw
UTF-8; no Content-Type on a bodiless POST/DELETE; the login form urlencoded as `URLSearchParams` writes it (older
clients sent a `FormData`, which Chromium sends as multipart with a `----WebKitFormBoundary…` boundary); path
parameters through `encodeURIComponent` (older clients: `encodeURI`, which keeps `@` and `+`); the forms' empty
optional fields as `""`, untouched ones left out, and `confirm_password` where a form has one. Every request comes
from the frontend's origin, so a preflight precedes each one carrying a token or a JSON body, and every answer,
errors included, must carry the CORS headers or the frontend cannot read it (it shows `detail` from error bodies).

The template serves each path either with or without a trailing slash and redirects the other form (307), which
the browser follows; we answer both forms directly, with the same answer."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.conftest import SUPERUSER_EMAIL, Account, Mailbox, Served, create_account, random_email

FRONTEND = "http://localhost:5173"  # FRONTEND_HOST of the served app
OTHER_ALLOWED_ORIGIN = "https://app.example.com"  # one of its BACKEND_CORS_ORIGINS
AXIOS_ACCEPT = "application/json, text/plain, */*"


@dataclass(frozen=True)
class Sdk:
    """What differs between the generated clients the template has shipped."""

    accept: str
    encode_path: Callable[[str], str]


# hey-api's axios client: axios's default Accept, path parameters through encodeURIComponent.
CURRENT_SDK = Sdk(accept=AXIOS_ACCEPT, encode_path=lambda value: quote(value, safe=""))
# The openapi-ts `core/request.ts` client the template's Playwright suite runs: its own Accept, encodeURI paths
# (`@` and `+` left as they are).
OLDER_SDK = Sdk(accept="application/json", encode_path=lambda value: quote(value, safe="@+;,/?:&=$#!'()*~"))
CHROMIUM = {
    "Origin": FRONTEND,
    "Referer": f"{FRONTEND}/",
    "Accept-Language": "en-US,en;q=0.9",
    "Sec-Fetch-Dest": "empty",
    "Sec-Fetch-Mode": "cors",
    "Sec-Fetch-Site": "same-site",
    "User-Agent": (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
    ),
}
API = "/api/v1"
USER_PUBLIC = {"email", "is_active", "is_superuser", "full_name", "id", "created_at"}
ITEM_PUBLIC = {"title", "description", "id", "owner_id", "created_at"}
RECOVERY_SENT = "If that email is registered, we sent a password recovery link"
RESET_LINK = re.compile(re.escape(FRONTEND) + r"/reset-password\?token=([A-Za-z0-9_.-]+)")
# Appended to a path the SDK writes without one, removed from one it writes with one: both must answer the same.
SLASH = pytest.mark.parametrize("slash", ["", "/"], ids=["bare", "trailing-slash"])
ABSENT = object()

UserFactory = Callable[..., Account]


# ---------------------------------------------------------------- the browser


def url_search_params(pairs: dict[str, str]) -> str:
    """`new URLSearchParams(pairs).toString()`: application/x-www-form-urlencoded with `*` kept and `~` escaped."""
    return "&".join(
        f"{quote(key, safe='*').replace('%20', '+')}={quote(value, safe='*').replace('%20', '+')}".replace("~", "%7E")
        for key, value in pairs.items()
    )


def chromium_form_data(fields: dict[str, str]) -> tuple[str, bytes]:
    """A `FormData` of strings as Chromium sends it: its boundary and the multipart body."""
    boundary = "----WebKitFormBoundary" + uuid.uuid4().hex[:16]
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + value.encode() + b"\r\n"
        for name, value in fields.items()
    )
    return boundary, body + f"--{boundary}--\r\n".encode()


def token_of(account: Account | dict[str, str]) -> str:
    headers = account.headers if isinstance(account, Account) else account
    return headers["Authorization"].removeprefix("Bearer ")


def assert_cors(response: httpx.Response, origin: str = FRONTEND) -> None:
    """What the browser checks before it lets the frontend read a credentialed answer."""
    assert response.headers.get("access-control-allow-origin") == origin, dict(response.headers)
    assert response.headers.get("access-control-allow-credentials") == "true"
    assert "origin" in response.headers.get("vary", "").lower()


class Browser:
    """Chromium running the frontend served from FRONTEND_HOST, talking to the app."""

    def __init__(self, http: httpx.Client) -> None:
        self.http = http

    def send(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        json_body: Any = ABSENT,
        content: bytes | None = None,
        content_type: str | None = None,
        sdk: Sdk = CURRENT_SDK,
    ) -> httpx.Response:
        headers = {**CHROMIUM, "Accept": sdk.accept}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if json_body is not ABSENT:
            content = json.dumps(json_body, separators=(",", ":"), ensure_ascii=False).encode()
            content_type = content_type or "application/json"
        if content_type is not None:
            headers["Content-Type"] = content_type
        if content is None and method in ("POST", "PUT", "PATCH"):
            content = b""  # Chromium sends `Content-Length: 0` on a bodiless POST
        response = self.http.request(method, path, headers=headers, content=content)
        assert not response.is_redirect, "answered directly, not through the template's 307"
        assert_cors(response)
        return response


@pytest.fixture
def browser(served: Served) -> Iterator[Browser]:
    with httpx.Client(base_url=served.url, timeout=30) as http:
        yield Browser(http)


@pytest.fixture(scope="module")
def reader(served: Served, superuser_headers: dict[str, str]) -> Account:
    """An account the read-only tests share (module-wide, one per database)."""
    with served.client() as http:
        return create_account(http, superuser_headers, full_name="Reader")


def wait_for_mail(mailbox: Mailbox, to: str, subject_contains: str, timeout: float = 5.0) -> EmailMessage:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in mailbox.to(to):
            if subject_contains in str(message["Subject"]):
                return message
        time.sleep(0.02)
    raise AssertionError(f"no mail to {to} with {subject_contains!r}: {[m['Subject'] for m in mailbox.messages]}")


def can_log_in(client: httpx.Client, email: str, password: str) -> bool:
    return client.post("/login/access-token", data={"username": email, "password": password}).status_code == 200


SDKS = pytest.mark.parametrize(
    "sdk", [pytest.param(CURRENT_SDK, id="sdk"), pytest.param(OLDER_SDK, id="older-sdk-encodeURI")]
)


# ---------------------------------------------------------------- docs


def test_redoc_beside_swagger_reads_the_served_document(browser: Browser) -> None:
    redoc = browser.http.get("/redoc")
    assert redoc.status_code == 200
    assert redoc.headers["content-type"].startswith("text/html")
    assert "redoc.standalone.js" in redoc.text
    assert 'Redoc.init("/api/v1/openapi.json"' in redoc.text
    document = browser.http.get(f"{API}/openapi.json")
    assert (document.status_code, document.json()["info"]["title"]) == (200, "Test Project")
    docs = browser.http.get("/docs")
    assert (docs.status_code, docs.headers["content-type"].startswith("text/html")) == (200, True)
    # Unknown paths stay JSON 404s, not HTML pages of a docs catch-all.
    for path in ("/redoc/nope", "/nope", f"{API}/nope"):
        missing = browser.http.get(path)
        assert (missing.status_code, missing.json()) == (404, {"detail": "Not Found"})


# ---------------------------------------------------------------- login


LOGIN_PASSWORD = "pä ss+w&rd=1%~*"  # every character URLSearchParams and multipart encode differently


def login_request(variant: str, email: str, password: str) -> tuple[bytes, str]:
    """Body and Content-Type of a login as each client sends it."""
    fields = {"username": email, "password": password}
    if variant == "sdk-urlencoded":  # the current SDK: a URLSearchParams string, its own Content-Type
        return url_search_params(fields).encode(), "application/x-www-form-urlencoded"
    if variant == "axios-urlsearchparams":  # axios given a URLSearchParams object sets this Content-Type
        return url_search_params(fields).encode(), "application/x-www-form-urlencoded;charset=utf-8"
    if variant == "swagger-try-it-out":
        swagger = {"grant_type": "password", **fields, "scope": "", "client_id": "string", "client_secret": "string"}
        return url_search_params(swagger).encode(), "application/x-www-form-urlencoded"
    if variant == "empty-optional-fields":
        empty = {"grant_type": "", **fields, "scope": "", "client_id": "", "client_secret": ""}
        return url_search_params(empty).encode(), "application/x-www-form-urlencoded"
    boundary, body = chromium_form_data(fields)  # the older SDK: axios hands a FormData to Chromium
    charset = "; charset=utf-8" if variant == "chromium-formdata-charset" else ""
    return body, f"multipart/form-data; boundary={boundary}{charset}"


LOGIN_VARIANTS = [
    "sdk-urlencoded",
    "axios-urlsearchparams",
    "chromium-formdata",
    "chromium-formdata-charset",
    "swagger-try-it-out",
    "empty-optional-fields",
]


@SLASH
@pytest.mark.parametrize("variant", LOGIN_VARIANTS)
def test_login(browser: Browser, new_account: UserFactory, variant: str, slash: str) -> None:
    account = new_account(password=LOGIN_PASSWORD)
    body, content_type = login_request(variant, account.email, LOGIN_PASSWORD)
    sdk = OLDER_SDK if variant.startswith("chromium-formdata") else CURRENT_SDK
    path = f"{API}/login/access-token{slash}"
    response = browser.send("POST", path, content=body, content_type=content_type, sdk=sdk)
    assert response.status_code == 200, response.text
    token = response.json()
    assert set(token) == {"access_token", "token_type"}
    assert token["token_type"] == "bearer"
    me = browser.send("GET", f"{API}/users/me", token=token["access_token"])
    assert me.json()["email"] == account.email


@pytest.mark.parametrize("variant", ["sdk-urlencoded", "chromium-formdata"])
def test_login_with_a_wrong_password_is_a_readable_400(browser: Browser, reader: Account, variant: str) -> None:
    body, content_type = login_request(variant, reader.email, "not-the-password")
    response = browser.send("POST", f"{API}/login/access-token", content=body, content_type=content_type)
    assert (response.status_code, response.json()) == (400, {"detail": "Incorrect email or password"})


@SLASH
def test_test_token(browser: Browser, reader: Account, slash: str) -> None:
    response = browser.send("POST", f"{API}/login/test-token{slash}", token=token_of(reader))
    assert response.status_code == 200
    assert set(response.json()) == USER_PUBLIC
    assert (response.json()["id"], response.json()["email"]) == (reader.id, reader.email)


# ---------------------------------------------------------------- password recovery


@SLASH
@SDKS
def test_recover_password_mails_the_user(
    browser: Browser, new_account: UserFactory, mailbox: Mailbox, sdk: Sdk, slash: str
) -> None:
    email = f"user+{uuid.uuid4().hex[:8]}@example.com"  # a `+` that encodeURI keeps and encodeURIComponent escapes
    new_account(email=email)
    response = browser.send("POST", f"{API}/password-recovery/{sdk.encode_path(email)}{slash}", sdk=sdk)
    assert (response.status_code, response.json()) == (200, {"message": RECOVERY_SENT})
    assert RESET_LINK.search(str(wait_for_mail(mailbox, email, "Password recovery")))


@SDKS
def test_recover_password_of_an_unknown_address_answers_the_same(browser: Browser, sdk: Sdk) -> None:
    response = browser.send("POST", f"{API}/password-recovery/{sdk.encode_path(random_email())}", sdk=sdk)
    assert (response.status_code, response.json()) == (200, {"message": RECOVERY_SENT})


def reset_token(browser: Browser, superuser_headers: dict[str, str], email: str) -> str:
    html = browser.send(
        "POST", f"{API}/password-recovery-html-content/{quote(email, safe='')}", token=token_of(superuser_headers)
    )
    match = RESET_LINK.search(html.text)
    assert match, html.text
    return match.group(1)


@SLASH
def test_reset_password(
    browser: Browser,
    client: httpx.Client,
    new_account: UserFactory,
    superuser_headers: dict[str, str],
    slash: str,
) -> None:
    account = new_account()
    token = reset_token(browser, superuser_headers, account.email)
    # The reset page sends only these two; its confirm_password stays in the form.
    body = {"new_password": "a-brand-new-password", "token": token}
    response = browser.send("POST", f"{API}/reset-password{slash}", json_body=body)
    assert (response.status_code, response.json()) == (200, {"message": "Password updated successfully"})
    assert can_log_in(client, account.email, "a-brand-new-password")
    assert not can_log_in(client, account.email, account.password)


@SLASH
def test_reset_password_with_a_bad_token(browser: Browser, slash: str) -> None:
    body = {"new_password": "a-brand-new-password", "token": "not-a-token"}
    response = browser.send("POST", f"{API}/reset-password{slash}", json_body=body)
    assert (response.status_code, response.json()) == (400, {"detail": "Invalid token"})


@SLASH
@SDKS
def test_recover_password_html_content(
    browser: Browser,
    new_account: UserFactory,
    superuser_headers: dict[str, str],
    sdk: Sdk,
    slash: str,
) -> None:
    email = f"user+{uuid.uuid4().hex[:8]}@example.com"
    new_account(email=email)
    path = f"{API}/password-recovery-html-content/{sdk.encode_path(email)}{slash}"
    response = browser.send("POST", path, token=token_of(superuser_headers), sdk=sdk)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert RESET_LINK.search(response.text)
    unknown = f"{API}/password-recovery-html-content/{sdk.encode_path(random_email())}{slash}"
    missing = browser.send("POST", unknown, token=token_of(superuser_headers), sdk=sdk)
    assert (missing.status_code, missing.json()) == (
        404,
        {"detail": "The user with this username does not exist in the system."},
    )


# ---------------------------------------------------------------- users

# How the pages and the SDK ask for a page: the admin and items pages ask for ?skip=0&limit=100.
PAGE_QUERIES = pytest.mark.parametrize(
    ("query", "limit"), [("?skip=0&limit=100", 100), ("?skip=0&limit=5", 5), ("", 100)], ids=["page", "small", "none"]
)


@SLASH
@PAGE_QUERIES
def test_read_users(
    browser: Browser, superuser_headers: dict[str, str], reader: Account, query: str, limit: int, slash: str
) -> None:
    response = browser.send("GET", f"{API}/users{slash}{query}", token=token_of(superuser_headers))
    assert response.status_code == 200
    page = response.json()
    assert set(page) == {"data", "count"}
    assert len(page["data"]) == min(limit, page["count"])
    assert all(set(row) == USER_PUBLIC for row in page["data"])


def add_user_form(email: str, **fields: Any) -> dict[str, Any]:
    """The admin's Add User dialog: its defaults (empty name, inactive, not superuser) and confirm_password."""
    return {
        "email": email,
        "full_name": "",
        "password": "a-good-password",
        "confirm_password": "a-good-password",
        "is_superuser": False,
        "is_active": False,
        **fields,
    }


@SLASH
@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param({}, {"full_name": "", "is_active": False, "is_superuser": False}, id="add-user-form-defaults"),
        pytest.param(
            {"full_name": "Ana Lima", "is_active": True, "is_superuser": True},
            {"full_name": "Ana Lima", "is_active": True, "is_superuser": True},
            id="add-user-form-filled",
        ),
        pytest.param(
            {"full_name": None, "confirm_password": ABSENT, "is_active": ABSENT, "is_superuser": ABSENT},
            {"full_name": None, "is_active": True, "is_superuser": False},
            id="sdk-null-name-defaults",
        ),
    ],
)
def test_create_user(
    browser: Browser,
    superuser_headers: dict[str, str],
    fields: dict[str, Any],
    expected: dict[str, Any],
    slash: str,
) -> None:
    email = random_email()
    body = {key: value for key, value in add_user_form(email, **fields).items() if value is not ABSENT}
    response = browser.send("POST", f"{API}/users{slash}", token=token_of(superuser_headers), json_body=body)
    assert response.status_code == 200, response.text
    user = response.json()
    assert set(user) == USER_PUBLIC
    assert {key: user[key] for key in ("email", *expected)} == {"email": email, **expected}


def test_create_user_twice_is_a_readable_400(
    browser: Browser, superuser_headers: dict[str, str], reader: Account
) -> None:
    body = add_user_form(reader.email)
    response = browser.send("POST", f"{API}/users/", token=token_of(superuser_headers), json_body=body)
    assert (response.status_code, response.json()) == (
        400,
        {"detail": "The user with this email already exists in the system."},
    )


@SLASH
def test_read_user_me(browser: Browser, reader: Account, slash: str) -> None:
    response = browser.send("GET", f"{API}/users/me{slash}", token=token_of(reader))
    assert response.status_code == 200
    assert set(response.json()) == USER_PUBLIC
    assert (response.json()["email"], response.json()["full_name"]) == (reader.email, "Reader")


# The settings form sends only what changed: nothing, a cleared name (""), a new name, a new address, or both.
UPDATE_ME = [
    pytest.param(lambda: {}, id="nothing-changed"),
    pytest.param(lambda: {"full_name": ""}, id="name-cleared"),
    pytest.param(lambda: {"full_name": "Bea Costa"}, id="name"),
    pytest.param(lambda: {"email": random_email()}, id="email"),
    pytest.param(lambda: {"full_name": "Bea Costa", "email": random_email()}, id="name-and-email"),
]


@SLASH
@pytest.mark.parametrize("make_body", UPDATE_ME)
def test_update_user_me(
    browser: Browser, new_account: UserFactory, make_body: Callable[[], dict[str, str]], slash: str
) -> None:
    account = new_account(full_name="Ana Lima")
    before = browser.send("GET", f"{API}/users/me", token=token_of(account)).json()
    body = make_body()
    response = browser.send("PATCH", f"{API}/users/me{slash}", token=token_of(account), json_body=body)
    assert response.status_code == 200, response.text
    assert response.json() == {**before, **body}


def test_update_user_me_to_a_taken_address_is_a_readable_409(
    browser: Browser, new_account: UserFactory, reader: Account
) -> None:
    account = new_account()
    response = browser.send("PATCH", f"{API}/users/me", token=token_of(account), json_body={"email": reader.email})
    assert (response.status_code, response.json()) == (409, {"detail": "User with this email already exists"})


@SLASH
def test_delete_user_me(browser: Browser, new_account: UserFactory, slash: str) -> None:
    account = new_account()
    response = browser.send("DELETE", f"{API}/users/me{slash}", token=token_of(account))
    assert (response.status_code, response.json()) == (200, {"message": "User deleted successfully"})
    gone = browser.send("GET", f"{API}/users/me", token=token_of(account))
    assert (gone.status_code, gone.json()) == (404, {"detail": "User not found"})


@SLASH
def test_update_password_me(browser: Browser, client: httpx.Client, new_account: UserFactory, slash: str) -> None:
    account = new_account()
    body = {
        "current_password": account.password,
        "new_password": "another-password",
        "confirm_password": "another-password",
    }
    response = browser.send("PATCH", f"{API}/users/me/password{slash}", token=token_of(account), json_body=body)
    assert (response.status_code, response.json()) == (200, {"message": "Password updated successfully"})
    assert can_log_in(client, account.email, "another-password")


def test_update_password_me_with_a_wrong_current_one_is_a_readable_400(
    browser: Browser, new_account: UserFactory
) -> None:
    account = new_account()
    body = {"current_password": "wrong-password", "new_password": "another-one", "confirm_password": "another-one"}
    response = browser.send("PATCH", f"{API}/users/me/password", token=token_of(account), json_body=body)
    assert (response.status_code, response.json()) == (400, {"detail": "Incorrect password"})


@SLASH
@pytest.mark.parametrize(
    ("fields", "full_name"),
    [
        pytest.param({"full_name": "Ana Lima"}, "Ana Lima", id="signup-form"),
        pytest.param({"full_name": "Ana Lima", "confirm_password": "a-good-password"}, "Ana Lima", id="with-confirm"),
        pytest.param({"full_name": ""}, "", id="sdk-empty-name"),
        pytest.param({}, None, id="sdk-no-name"),
    ],
)
def test_register_user(
    browser: Browser, client: httpx.Client, fields: dict[str, str], full_name: str | None, slash: str
) -> None:
    email = random_email()
    body = {"email": email, **fields, "password": "a-good-password"}
    response = browser.send("POST", f"{API}/users/signup{slash}", json_body=body)
    assert response.status_code == 200, response.text
    user = response.json()
    assert set(user) == USER_PUBLIC
    assert (user["email"], user["full_name"], user["is_active"], user["is_superuser"]) == (
        email,
        full_name,
        True,
        False,
    )
    assert can_log_in(client, email, "a-good-password")
    again = browser.send("POST", f"{API}/users/signup{slash}", json_body=body)
    assert (again.status_code, again.json()) == (
        400,
        {"detail": "The user with this email already exists in the system"},
    )


def test_register_user_with_a_capitalized_domain(browser: Browser) -> None:
    """The template's EmailStr answers (and stores) the address as email-validator normalizes it."""
    local = f"Ana.{uuid.uuid4().hex[:8]}"
    body = {"email": f"{local}@EXAMPLE.com", "full_name": "Ana", "password": "a-good-password"}
    response = browser.send("POST", f"{API}/users/signup", json_body=body)
    assert (response.status_code, response.json()["email"]) == (200, f"{local}@example.com")


@SLASH
def test_read_user_by_id(browser: Browser, reader: Account, superuser_headers: dict[str, str], slash: str) -> None:
    own = browser.send("GET", f"{API}/users/{reader.id}{slash}", token=token_of(reader))
    assert own.status_code == 200
    assert set(own.json()) == USER_PUBLIC
    assert (
        own.json() == browser.send("GET", f"{API}/users/{reader.id}{slash}", token=token_of(superuser_headers)).json()
    )


def edit_user_form(account: Account, **fields: Any) -> dict[str, Any]:
    """The admin's Edit User dialog: email and the two flags always; a name only once it has been typed in
    (a user without one starts undefined); a password only when filled in, confirm_password removed."""
    return {"email": account.email, "is_superuser": False, "is_active": True, **fields}


@SLASH
@pytest.mark.parametrize(
    ("fields", "expected", "new_password"),
    [
        pytest.param({}, {"full_name": None}, None, id="untouched"),
        pytest.param({"full_name": ""}, {"full_name": ""}, None, id="name-typed-and-cleared"),
        pytest.param({"full_name": "Ana Lima"}, {"full_name": "Ana Lima"}, None, id="name"),
        pytest.param({"is_active": False}, {"is_active": False}, None, id="deactivate"),
        pytest.param({"is_superuser": True}, {"is_superuser": True}, None, id="promote"),
        pytest.param({"password": "a-new-password"}, {}, "a-new-password", id="new-password"),
        # Older frontends sent the whole form, confirm_password included.
        pytest.param(
            {"full_name": "Ana", "password": "a-new-password", "confirm_password": "a-new-password"},
            {"full_name": "Ana"},
            "a-new-password",
            id="older-form-with-confirm",
        ),
    ],
)
def test_update_user(
    browser: Browser,
    client: httpx.Client,
    new_account: UserFactory,
    superuser_headers: dict[str, str],
    fields: dict[str, Any],
    expected: dict[str, Any],
    new_password: str | None,
    slash: str,
) -> None:
    account = new_account()
    before = browser.send("GET", f"{API}/users/{account.id}", token=token_of(superuser_headers)).json()
    body = edit_user_form(account, **fields)
    response = browser.send(
        "PATCH", f"{API}/users/{account.id}{slash}", token=token_of(superuser_headers), json_body=body
    )
    assert response.status_code == 200, response.text
    assert response.json() == {**before, **expected}
    if new_password is None:
        assert can_log_in(client, account.email, account.password) is response.json()["is_active"]
    else:
        assert can_log_in(client, account.email, new_password)
        assert not can_log_in(client, account.email, account.password)


def test_update_user_with_a_new_address(
    browser: Browser, new_account: UserFactory, superuser_headers: dict[str, str]
) -> None:
    account = new_account()
    email = random_email()
    body = edit_user_form(account, email=email)
    response = browser.send("PATCH", f"{API}/users/{account.id}", token=token_of(superuser_headers), json_body=body)
    assert (response.status_code, response.json()["email"]) == (200, email)


@SLASH
def test_delete_user(browser: Browser, new_account: UserFactory, superuser_headers: dict[str, str], slash: str) -> None:
    account = new_account()
    response = browser.send("DELETE", f"{API}/users/{account.id}{slash}", token=token_of(superuser_headers))
    assert (response.status_code, response.json()) == (200, {"message": "User deleted successfully"})
    gone = browser.send("GET", f"{API}/users/{account.id}", token=token_of(superuser_headers))
    assert (gone.status_code, gone.json()) == (404, {"detail": "User not found"})


# ---------------------------------------------------------------- items


def add_item(browser: Browser, account: Account, body: dict[str, Any]) -> dict[str, Any]:
    response = browser.send("POST", f"{API}/items/", token=token_of(account), json_body=body)
    assert response.status_code == 200, response.text
    item: dict[str, Any] = response.json()
    return item


@SLASH
@PAGE_QUERIES
def test_read_items(browser: Browser, new_account: UserFactory, query: str, limit: int, slash: str) -> None:
    account = new_account()
    made = [add_item(browser, account, {"title": f"item {n}", "description": ""}) for n in range(6)]
    response = browser.send("GET", f"{API}/items{slash}{query}", token=token_of(account))
    assert response.status_code == 200
    page = response.json()
    assert page["count"] == 6
    assert page["data"] == made[::-1][: min(limit, 6)]


@SLASH
@pytest.mark.parametrize(
    ("body", "description"),
    [
        pytest.param({"title": "Groceries", "description": ""}, "", id="add-item-form-defaults"),
        pytest.param({"title": "Groceries", "description": "Milk, eggs"}, "Milk, eggs", id="add-item-form-filled"),
        pytest.param({"title": "Café ☕ crème"}, None, id="sdk-no-description-utf8"),
    ],
)
def test_create_item(
    browser: Browser, reader: Account, body: dict[str, str], description: str | None, slash: str
) -> None:
    response = browser.send("POST", f"{API}/items{slash}", token=token_of(reader), json_body=body)
    assert response.status_code == 200, response.text
    item = response.json()
    assert set(item) == ITEM_PUBLIC
    assert (item["title"], item["description"], item["owner_id"]) == (body["title"], description, reader.id)


@SLASH
def test_read_item(browser: Browser, reader: Account, slash: str) -> None:
    item = add_item(browser, reader, {"title": "Mine", "description": ""})
    response = browser.send("GET", f"{API}/items/{item['id']}{slash}", token=token_of(reader))
    assert (response.status_code, response.json()) == (200, item)


# The Edit Item dialog sends the title and the description as they stand in the form; a description that was
# null starts undefined and is left out unless typed in.
@SLASH
@pytest.mark.parametrize(
    ("created", "body", "changed"),
    [
        pytest.param({"description": "Old"}, {"title": "New", "description": "Old"}, {"title": "New"}, id="title"),
        pytest.param(
            {"description": "Old"}, {"title": "Mine", "description": ""}, {"description": ""}, id="description-cleared"
        ),
        pytest.param({}, {"title": "New"}, {"title": "New"}, id="null-description-untouched"),
        pytest.param(
            {}, {"title": "Mine", "description": "Now one"}, {"description": "Now one"}, id="description-typed"
        ),
    ],
)
def test_update_item(
    browser: Browser,
    reader: Account,
    created: dict[str, str],
    body: dict[str, str],
    changed: dict[str, str],
    slash: str,
) -> None:
    item = add_item(browser, reader, {"title": "Mine", **created})
    response = browser.send("PUT", f"{API}/items/{item['id']}{slash}", token=token_of(reader), json_body=body)
    assert (response.status_code, response.json()) == (200, {**item, **changed})


@SLASH
def test_delete_item(browser: Browser, reader: Account, slash: str) -> None:
    item = add_item(browser, reader, {"title": "Doomed", "description": ""})
    response = browser.send("DELETE", f"{API}/items/{item['id']}{slash}", token=token_of(reader))
    assert (response.status_code, response.json()) == (200, {"message": "Item deleted successfully"})
    gone = browser.send("GET", f"{API}/items/{item['id']}", token=token_of(reader))
    assert (gone.status_code, gone.json()) == (404, {"detail": "Item not found"})


# ---------------------------------------------------------------- utils and private


@SLASH
@pytest.mark.parametrize(
    ("local", "encode"),
    [
        pytest.param("ops+{}", lambda email: quote(email, safe=""), id="encodeURIComponent"),
        pytest.param("ops.{}", lambda email: email, id="raw"),
    ],
)
def test_test_email(
    browser: Browser,
    superuser_headers: dict[str, str],
    mailbox: Mailbox,
    local: str,
    encode: Callable[[str], str],
    slash: str,
) -> None:
    email = local.format(uuid.uuid4().hex[:8]) + "@example.com"
    path = f"{API}/utils/test-email{slash}?email_to={encode(email)}"
    response = browser.send("POST", path, token=token_of(superuser_headers))
    assert (response.status_code, response.json()) == (201, {"message": "Test email sent"})
    wait_for_mail(mailbox, email, "Test email")


@pytest.mark.parametrize("query", ["?email_to=", "?email_to=ops+x@example.com"], ids=["empty", "unescaped-plus"])
def test_test_email_to_a_bad_address_is_422(browser: Browser, superuser_headers: dict[str, str], query: str) -> None:
    """An unescaped `+` in a query string is a space, so that address is not one, for the template too."""
    response = browser.send("POST", f"{API}/utils/test-email/{query}", token=token_of(superuser_headers))
    assert response.status_code == 422
    assert [error["loc"] for error in response.json()["detail"]] == [["query", "email_to"]]


@SLASH
def test_health_check(browser: Browser, slash: str) -> None:
    response = browser.send("GET", f"{API}/utils/health-check{slash}")
    assert (response.status_code, response.json()) == (200, True)


@SLASH
def test_private_create_user(browser: Browser, client: httpx.Client, slash: str) -> None:
    """As the template's Playwright suite creates its users (tests/utils/privateApi.ts)."""
    email = random_email()
    body = {"email": email, "password": "a-good-password", "is_verified": True, "full_name": "Test User"}
    response = browser.send("POST", f"{API}/private/users{slash}", json_body=body)
    assert response.status_code == 200, response.text
    user = response.json()
    assert set(user) == USER_PUBLIC
    assert (user["email"], user["full_name"], user["is_active"], user["is_superuser"]) == (
        email,
        "Test User",
        True,
        False,
    )
    assert can_log_in(client, email, "a-good-password")


# ---------------------------------------------------------------- CORS

ID = "3f1c6f8e-2f7a-4c55-9a43-0c6a1f8b2d10"
EMAIL = quote(SUPERUSER_EMAIL, safe="")
# Every operation as the SDK requests it, with the request headers Chromium lists in its preflight.
OPERATIONS = [
    ("login-login_access_token", "POST", "/login/access-token", ""),
    ("login-test_token", "POST", "/login/test-token", "authorization"),
    ("login-recover_password", "POST", f"/password-recovery/{EMAIL}", ""),
    ("login-reset_password", "POST", "/reset-password/", "content-type"),
    ("login-recover_password_html_content", "POST", f"/password-recovery-html-content/{EMAIL}", "authorization"),
    ("users-read_users", "GET", "/users/", "authorization"),
    ("users-create_user", "POST", "/users/", "authorization,content-type"),
    ("users-read_user_me", "GET", "/users/me", "authorization"),
    ("users-update_user_me", "PATCH", "/users/me", "authorization,content-type"),
    ("users-delete_user_me", "DELETE", "/users/me", "authorization"),
    ("users-update_password_me", "PATCH", "/users/me/password", "authorization,content-type"),
    ("users-register_user", "POST", "/users/signup", "content-type"),
    ("users-read_user_by_id", "GET", f"/users/{ID}", "authorization"),
    ("users-update_user", "PATCH", f"/users/{ID}", "authorization,content-type"),
    ("users-delete_user", "DELETE", f"/users/{ID}", "authorization"),
    ("items-read_items", "GET", "/items/", "authorization"),
    ("items-create_item", "POST", "/items/", "authorization,content-type"),
    ("items-read_item", "GET", f"/items/{ID}", "authorization"),
    ("items-update_item", "PUT", f"/items/{ID}", "authorization,content-type"),
    ("items-delete_item", "DELETE", f"/items/{ID}", "authorization"),
    ("utils-test_email", "POST", f"/utils/test-email/?email_to={EMAIL}", "authorization"),
    ("utils-health_check", "GET", "/utils/health-check/", ""),
    ("private-create_user", "POST", "/private/users/", "content-type"),
]


def other_slash(path: str) -> str:
    route, _, query = path.partition("?")
    route = route.removesuffix("/") if route.endswith("/") else route + "/"
    return f"{route}?{query}" if query else route


def preflight(http: httpx.Client, method: str, path: str, headers: str, origin: str = FRONTEND) -> httpx.Response:
    request_headers = {**CHROMIUM, "Origin": origin, "Accept": "*/*", "Access-Control-Request-Method": method}
    if headers:
        request_headers["Access-Control-Request-Headers"] = headers
    return http.options(path, headers=request_headers)


@pytest.mark.parametrize("as_sent", [True, False], ids=["sdk-path", "other-slash"])
@pytest.mark.parametrize(
    "requested", ["browser", "authorization,content-type"], ids=["browser-headers", "authorization-content-type"]
)
@pytest.mark.parametrize(
    ("method", "path", "browser_headers"), [op[1:] for op in OPERATIONS], ids=[op[0] for op in OPERATIONS]
)
def test_preflight(
    browser: Browser, method: str, path: str, browser_headers: str, requested: str, as_sent: bool
) -> None:
    asked = browser_headers if requested == "browser" else requested
    response = preflight(browser.http, method, API + (path if as_sent else other_slash(path)), asked)
    assert response.status_code == 200
    assert_cors(response)
    assert method in {m.strip() for m in response.headers["access-control-allow-methods"].split(",")}
    allowed = {h.strip().lower() for h in response.headers.get("access-control-allow-headers", "").split(",")}
    assert {h for h in asked.split(",") if h} <= allowed


def test_preflight_from_another_configured_origin(browser: Browser) -> None:
    response = preflight(browser.http, "POST", f"{API}/items/", "authorization,content-type", OTHER_ALLOWED_ORIGIN)
    assert response.status_code == 200
    assert_cors(response, OTHER_ALLOWED_ORIGIN)


def test_preflight_from_a_disallowed_origin_is_refused(browser: Browser) -> None:
    response = preflight(browser.http, "POST", f"{API}/items/", "authorization,content-type", "https://evil.example")
    assert response.status_code == 400
    assert "access-control-allow-origin" not in response.headers


@pytest.mark.parametrize("path", ["/utils/health-check/", "/users/me"])
def test_an_answer_to_a_disallowed_origin_is_not_readable(browser: Browser, reader: Account, path: str) -> None:
    headers = {**CHROMIUM, "Origin": "https://evil.example", "Accept": AXIOS_ACCEPT, **reader.headers}
    response = browser.http.get(API + path, headers=headers)
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers


# Errors the frontend reads (a toast with `detail`, or a 401/403 that sends it to the login page).
@pytest.mark.parametrize(
    ("method", "path", "token", "body", "status"),
    [
        pytest.param("GET", "/users/me", None, ABSENT, 401, id="no-token"),
        pytest.param("GET", "/users/me", "not-a-jwt", ABSENT, 403, id="bad-token"),
        pytest.param("GET", f"/items/{ID}", "reader", ABSENT, 404, id="missing-item"),
        pytest.param("POST", "/items/", "reader", {"title": "", "description": ""}, 422, id="empty-title"),
        pytest.param("GET", "/users/", "reader", ABSENT, 403, id="not-a-superuser"),
        pytest.param("POST", "/users/signup", None, {"email": "a@b", "password": "short"}, 422, id="bad-signup"),
    ],
)
def test_errors_are_readable_by_the_frontend(
    browser: Browser, reader: Account, method: str, path: str, token: str | None, body: Any, status: int
) -> None:
    response = browser.send(method, API + path, token=token_of(reader) if token == "reader" else token, json_body=body)
    assert response.status_code == status
    detail = response.json()["detail"]
    if status == 422:
        assert all(error["loc"][0] == "body" for error in detail)
    else:
        assert isinstance(detail, str)
    if status == 401:
        assert response.headers["www-authenticate"] == "Bearer"
