"""POST /login/access-token and /login/test-token, and the contract's authentication answers."""

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import httpx
import jwt
import pytest

from app import security
from tests.conftest import SECRET_KEY, SUPERUSER_EMAIL, SUPERUSER_PASSWORD, Account, Served, random_email


def token_for(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "bearer"
    return str(body["access_token"])


def test_login_returns_a_bearer_access_token(client: httpx.Client, served: Served) -> None:
    response = client.post("/login/access-token", data={"username": SUPERUSER_EMAIL, "password": SUPERUSER_PASSWORD})
    claims = jwt.decode(token_for(response), SECRET_KEY, algorithms=["HS256"])
    assert set(claims) >= {"sub", "exp", "iat", "typ"}
    assert claims["typ"] == "access"
    lifetime = claims["exp"] - claims["iat"]
    assert lifetime == served.settings.ACCESS_TOKEN_EXPIRE_MINUTES * 60


def test_login_accepts_the_full_oauth2_form(client: httpx.Client) -> None:
    form = {
        "grant_type": "password",
        "username": SUPERUSER_EMAIL,
        "password": SUPERUSER_PASSWORD,
        "scope": "",
        "client_id": "x",
        "client_secret": "y",
    }
    token_for(client.post("/login/access-token", data=form))


def test_login_email_is_case_insensitive(client: httpx.Client, user: Account) -> None:
    token_for(client.post("/login/access-token", data={"username": user.email.upper(), "password": user.password}))


@pytest.mark.parametrize("who", ["wrong password", "unknown email"])
def test_bad_credentials_are_one_400(client: httpx.Client, user: Account, who: str) -> None:
    form = (
        {"username": user.email, "password": "not-the-password"}
        if who == "wrong password"
        else {"username": random_email(), "password": user.password}
    )
    response = client.post("/login/access-token", data=form)
    assert response.status_code == 400
    assert response.json() == {"detail": "Incorrect email or password"}


def test_inactive_user_cannot_log_in(client: httpx.Client, new_account: Callable[..., Account]) -> None:
    account = new_account()
    # deactivate via the superuser route
    response = client.post("/login/access-token", data={"username": account.email, "password": account.password})
    token_for(response)
    admin = token_for(
        client.post("/login/access-token", data={"username": SUPERUSER_EMAIL, "password": SUPERUSER_PASSWORD})
    )
    patched = client.patch(
        f"/users/{account.id}", json={"is_active": False}, headers={"Authorization": f"Bearer {admin}"}
    )
    assert patched.status_code == 200
    right = client.post("/login/access-token", data={"username": account.email, "password": account.password})
    assert right.status_code == 400
    assert right.json() == {"detail": "Inactive user"}
    wrong = client.post("/login/access-token", data={"username": account.email, "password": "wrong-password"})
    assert wrong.json() == {"detail": "Incorrect email or password"}


@pytest.mark.parametrize(
    "form",
    [
        {"username": SUPERUSER_EMAIL},
        {"password": SUPERUSER_PASSWORD},
        {"username": SUPERUSER_EMAIL, "password": SUPERUSER_PASSWORD, "grant_type": "client_credentials"},
    ],
)
def test_login_form_errors_are_422(client: httpx.Client, form: dict[str, str]) -> None:
    response = client.post("/login/access-token", data=form)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][0] == "body"


def test_login_with_a_json_body_is_422(client: httpx.Client) -> None:
    response = client.post("/login/access-token", json={"username": SUPERUSER_EMAIL, "password": SUPERUSER_PASSWORD})
    assert response.status_code == 422


def test_test_token_returns_the_caller(client: httpx.Client, user: Account) -> None:
    response = client.post("/login/test-token", headers=user.headers)
    assert response.status_code == 200
    assert response.json()["email"] == user.email
    assert "hashed_password" not in response.json()


# ------------------------------------------------------------ authentication answers


def test_no_token_is_401_with_www_authenticate(client: httpx.Client) -> None:
    response = client.get("/users/me")
    assert response.status_code == 401
    assert response.json() == {"detail": "Not authenticated"}
    assert response.headers["www-authenticate"] == "Bearer"


def test_non_bearer_scheme_is_401(client: httpx.Client) -> None:
    response = client.get("/users/me", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert response.status_code == 401


def test_bearer_scheme_is_case_insensitive(client: httpx.Client, user: Account) -> None:
    token = user.headers["Authorization"].split()[1]
    assert client.get("/users/me", headers={"Authorization": f"bearer {token}"}).status_code == 200


def forged_tokens(user_id: str) -> dict[str, str]:
    now = datetime.now(UTC)
    claims = {"sub": user_id, "typ": "access", "ver": 0, "iat": now, "exp": now + timedelta(minutes=5)}
    return {
        "garbage": "not-a-jwt",
        "wrong key": jwt.encode(claims, "another-secret-key-of-enough-length!!", algorithm="HS256"),
        "expired": jwt.encode({**claims, "exp": now - timedelta(seconds=5)}, SECRET_KEY, algorithm="HS256"),
        "alg none": jwt.encode(claims, key=None, algorithm="none"),
        "no typ": jwt.encode({k: v for k, v in claims.items() if k != "typ"}, SECRET_KEY, algorithm="HS256"),
        "reset token": security.create_reset_token("x@example.com", "hash", SECRET_KEY, timedelta(hours=1)),
        "sub not a uuid": jwt.encode({**claims, "sub": "admin"}, SECRET_KEY, algorithm="HS256"),
    }


@pytest.mark.parametrize(
    "kind", ["garbage", "wrong key", "expired", "alg none", "no typ", "reset token", "sub not a uuid"]
)
def test_a_token_that_fails_verification_is_403(client: httpx.Client, user: Account, kind: str) -> None:
    token = forged_tokens(user.id)[kind]
    response = client.get("/users/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 403
    assert response.json() == {"detail": "Could not validate credentials"}


def test_a_token_of_a_deleted_user_is_404(client: httpx.Client, user: Account) -> None:
    assert client.delete("/users/me", headers=user.headers).status_code == 200
    response = client.get("/users/me", headers=user.headers)
    assert response.status_code == 404
    assert response.json() == {"detail": "User not found"}


def test_auth_is_checked_before_validation(client: httpx.Client) -> None:
    response = client.post("/items/", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 401


# ------------------------------------------------------------ the form as real clients encode it


def _multipart(fields: dict[str, str], boundary: str) -> bytes:
    """A body exactly as Chromium serialises a `FormData` of text fields."""
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in fields.items()
    ]
    return ("".join(parts) + f"--{boundary}--\r\n").encode()


def encoded_login(encoding: str, fields: dict[str, str]) -> tuple[bytes, str]:
    """(body, content type) of the login form in one of the encodings browsers and SDKs send."""
    if encoding.startswith("multipart"):
        boundary = "----WebKitFormBoundary7MA4YWxkTrZu0gW"
        charset = "; charset=utf-8" if encoding.endswith("charset") else ""
        return _multipart(fields, boundary), f"multipart/form-data{charset}; boundary={boundary}"
    charset = ";charset=utf-8" if encoding.endswith("charset") else ""
    return urlencode(fields).encode(), f"application/x-www-form-urlencoded{charset}"


LOGIN_ENCODINGS = ["urlencoded", "urlencoded with charset", "multipart", "multipart with charset"]


def post_login(http: httpx.Client, encoding: str, fields: dict[str, str]) -> httpx.Response:
    body, content_type = encoded_login(encoding, fields)
    return http.post("/login/access-token", content=body, headers={"Content-Type": content_type})


@pytest.mark.parametrize("encoding", LOGIN_ENCODINGS)
def test_login_form_in_every_encoding_gives_the_same_answers(
    client: httpx.Client, new_account: Callable[..., Account], superuser_headers: dict[str, str], encoding: str
) -> None:
    account = new_account()
    ok = post_login(client, encoding, {"username": account.email, "password": account.password})
    claims = jwt.decode(token_for(ok), SECRET_KEY, algorithms=["HS256"])
    assert claims["sub"] == account.id
    wrong = post_login(client, encoding, {"username": account.email, "password": "wrong-password"})
    assert (wrong.status_code, wrong.json()) == (400, {"detail": "Incorrect email or password"})
    full_form = {"grant_type": "password", "username": account.email, "password": account.password, "scope": ""}
    token_for(post_login(client, encoding, full_form))
    client.patch(f"/users/{account.id}", json={"is_active": False}, headers=superuser_headers)
    inactive = post_login(client, encoding, {"username": account.email, "password": account.password})
    assert (inactive.status_code, inactive.json()) == (400, {"detail": "Inactive user"})
    missing = post_login(client, encoding, {"username": account.email})
    assert missing.status_code == 422
    assert [error["loc"] for error in missing.json()["detail"]] == [["body", "password"]]


def test_multipart_login_with_a_file_part_is_422_not_500(client: httpx.Client) -> None:
    response = client.post(
        "/login/access-token",
        data={"password": "whatever-password"},
        files={"username": ("name.txt", b"admin@example.com", "text/plain")},
    )
    assert response.status_code == 422


def test_multipart_without_a_boundary_is_422(client: httpx.Client) -> None:
    response = client.post(
        "/login/access-token", content=b"username=a&password=b", headers={"Content-Type": "multipart/form-data"}
    )
    assert response.status_code == 422


# ------------------------------------------------------------ tokens the template issued (cutover)


def template_access_token(user_id: str, key: str = SECRET_KEY, minutes: int = 60) -> str:
    """An access token as the template signs it: HS256, `exp` and `sub` (the user id) only."""
    expires = datetime.now(UTC) + timedelta(minutes=minutes)
    return jwt.encode({"exp": expires, "sub": user_id}, key, algorithm="HS256")


def template_reset_token(email: str) -> str:
    """A password reset token as the template signs it: `sub` is the address, with `nbf`, no type."""
    now = datetime.now(UTC)
    return jwt.encode({"exp": (now + timedelta(hours=48)).timestamp(), "nbf": now, "sub": email}, SECRET_KEY, "HS256")


@pytest.fixture
def user(new_account: Callable[..., Account]) -> Account:
    """An account from before sessions (it has its legacy session): the tokens signed here without a session id,
    the template's and ours of before, are its."""
    return new_account(legacy_session=True)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_template_access_token_keeps_working_after_the_cutover(client: httpx.Client, user: Account) -> None:
    response = client.get("/users/me", headers=bearer(template_access_token(user.id)))
    assert response.status_code == 200
    assert response.json()["id"] == user.id
    assert client.post("/login/test-token", headers=bearer(template_access_token(user.id))).status_code == 200


@pytest.mark.parametrize(
    "kind",
    ["reset token with the user's email", "reset token with the user's id", "extra claim", "expired", "other key"],
)
def test_nothing_else_the_template_signed_is_an_access_token(client: httpx.Client, user: Account, kind: str) -> None:
    now = datetime.now(UTC)
    token = {
        "reset token with the user's email": template_reset_token(user.email),
        "reset token with the user's id": template_reset_token(user.id),
        "extra claim": jwt.encode(
            {"exp": now + timedelta(minutes=5), "sub": user.id, "nbf": now}, SECRET_KEY, algorithm="HS256"
        ),
        "expired": template_access_token(user.id, minutes=-1),
        "other key": template_access_token(user.id, key="another-secret-key-of-enough-length!!"),
    }[kind]
    response = client.get("/users/me", headers=bearer(token))
    assert (response.status_code, response.json()) == (403, {"detail": "Could not validate credentials"})


def test_a_template_reset_link_is_not_accepted(client: httpx.Client, user: Account) -> None:
    response = client.post(
        "/reset-password/", json={"token": template_reset_token(user.email), "new_password": "x" * 9}
    )
    assert (response.status_code, response.json()) == (400, {"detail": "Invalid token"})
    assert client.post("/login/access-token", data={"username": user.email, "password": user.password}).is_success


def test_a_template_token_is_revoked_like_ours(
    client: httpx.Client, new_account: Callable[..., Account], superuser_headers: dict[str, str]
) -> None:
    changed_by_other, changed_by_itself, deactivated = (new_account(legacy_session=True) for _ in range(3))
    change = {"current_password": "a-good-password", "new_password": "a-new-password-1"}

    stale = template_access_token(changed_by_other.id)
    assert client.patch("/users/me/password", json=change, headers=changed_by_other.headers).status_code == 200
    assert client.get("/users/me", headers=bearer(stale)).status_code == 403

    kept = template_access_token(changed_by_itself.id)
    assert client.patch("/users/me/password", json=change, headers=bearer(kept)).status_code == 200
    assert client.get("/users/me", headers=bearer(kept)).status_code == 200
    assert client.get("/users/me", headers=changed_by_itself.headers).status_code == 403

    gone = template_access_token(deactivated.id)
    client.patch(f"/users/{deactivated.id}", json={"is_active": False}, headers=superuser_headers)
    client.patch(f"/users/{deactivated.id}", json={"is_active": True}, headers=superuser_headers)
    assert client.get("/users/me", headers=bearer(gone)).status_code == 403


@pytest.mark.parametrize(("issued_in", "status"), [(2, 200), (20, 200), (300, 403)])
def test_a_token_issued_slightly_in_the_future_is_valid(
    client: httpx.Client, user: Account, issued_in: int, status: int
) -> None:
    """Another replica's clock may run a little ahead; minutes ahead is a forgery."""
    now = datetime.now(UTC)
    claims = {"sub": user.id, "typ": "access", "ver": 0, "jti": "x", "exp": now + timedelta(minutes=5)}
    token = jwt.encode({**claims, "iat": now + timedelta(seconds=issued_in)}, SECRET_KEY, algorithm="HS256")
    assert client.get("/users/me", headers=bearer(token)).status_code == status


LIFETIME = timedelta(minutes=11520)  # ACCESS_TOKEN_EXPIRE_MINUTES of the served app (the default)


@pytest.mark.parametrize(
    ("issued", "expires", "status"),
    [
        (timedelta(0), LIFETIME, 200),  # what a login mints
        (timedelta(0), LIFETIME + timedelta(seconds=20), 200),  # within the clock skew
        (timedelta(0), LIFETIME + timedelta(hours=1), 403),
        (timedelta(0), timedelta(days=36500), 403),  # a century
        (-LIFETIME, timedelta(minutes=5), 403),  # issued 8 days ago, still valid: it would live longer
        (None, LIFETIME, 200),  # the template's shape: no `iat`, bounded by now
        (None, timedelta(days=36500), 403),
    ],
)
def test_a_token_may_not_live_longer_than_access_token_expire_minutes(
    client: httpx.Client, served: Served, user: Account, issued: timedelta | None, expires: timedelta, status: int
) -> None:
    """Signed with the server's own key: only its lifetime can make it invalid."""
    assert timedelta(minutes=served.settings.ACCESS_TOKEN_EXPIRE_MINUTES) == LIFETIME
    now = datetime.now(UTC)
    if issued is None:
        claims: dict[str, object] = {"sub": user.id, "exp": now + expires}
    else:
        claims = {"sub": user.id, "typ": "access", "ver": 0, "jti": "x", "iat": now + issued, "exp": now + expires}
    token = jwt.encode(claims, served.settings.SECRET_KEY, algorithm="HS256")
    response = client.get("/users/me", headers=bearer(token))
    assert response.status_code == status, response.text
    if status == 403:
        assert response.json() == {"detail": "Could not validate credentials"}
