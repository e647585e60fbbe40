"""Beyond the template: token revocation, rate limits, body size limits, legacy hashes, CORS, error hygiene."""

import asyncio
import logging
import socket
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import bcrypt
import httpx
import pytest
from litestar import get
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from app import security
from app.config import Settings
from app.database import sqlalchemy_config
from app.main import create_app
from tests.conftest import Account, LiveServer, Records, Served, login, make_settings, random_email, seed_account
from tests.test_login import post_login

UserFactory = Callable[..., Account]


# ------------------------------------------------------------ revocation


def test_password_change_keeps_its_own_session_and_ends_the_others(client: httpx.Client, user: Account) -> None:
    other_session = login(client, user.email, user.password)
    response = client.patch(
        "/users/me/password",
        json={"current_password": user.password, "new_password": "a-new-password-1"},
        headers=user.headers,
    )
    assert response.status_code == 200
    # The template's frontend keeps using the token that made the change: it must not be signed out.
    assert client.get("/users/me", headers=user.headers).status_code == 200
    stale = client.get("/users/me", headers=other_session)
    assert stale.status_code == 403
    assert stale.json() == {"detail": "Could not validate credentials"}
    fresh = login(client, user.email, "a-new-password-1")
    assert client.get("/users/me", headers=fresh).status_code == 200
    # A second change from the kept session keeps it again and ends the fresh one.
    again = client.patch(
        "/users/me/password",
        json={"current_password": "a-new-password-1", "new_password": "a-new-password-2"},
        headers=user.headers,
    )
    assert again.status_code == 200
    assert client.get("/users/me", headers=user.headers).status_code == 200
    assert client.get("/users/me", headers=fresh).status_code == 403


def test_a_change_from_another_session_ends_the_session_kept_before(client: httpx.Client, user: Account) -> None:
    second = login(client, user.email, user.password)
    body = {"current_password": user.password, "new_password": "a-new-password-1"}
    assert client.patch("/users/me/password", json=body, headers=user.headers).status_code == 200
    third = login(client, user.email, "a-new-password-1")
    body = {"current_password": "a-new-password-1", "new_password": "a-new-password-2"}
    assert client.patch("/users/me/password", json=body, headers=third).status_code == 200
    assert [client.get("/users/me", headers=h).status_code for h in (user.headers, second, third)] == [403, 403, 200]


@pytest.mark.parametrize("how", ["superuser sets it", "deactivation"])
def test_the_kept_session_ends_with_a_later_revocation(
    client: httpx.Client, user: Account, superuser_headers: dict[str, str], how: str
) -> None:
    body = {"current_password": user.password, "new_password": "a-new-password-1"}
    assert client.patch("/users/me/password", json=body, headers=user.headers).status_code == 200
    change = {"password": "set-by-admin-1"} if how == "superuser sets it" else {"is_active": False}
    assert client.patch(f"/users/{user.id}", json=change, headers=superuser_headers).status_code == 200
    client.patch(f"/users/{user.id}", json={"is_active": True}, headers=superuser_headers)
    assert client.get("/users/me", headers=user.headers).status_code == 403


def test_superuser_password_reset_revokes_the_users_tokens(
    client: httpx.Client, user: Account, superuser_headers: dict[str, str]
) -> None:
    client.patch(f"/users/{user.id}", json={"password": "set-by-admin-1"}, headers=superuser_headers)
    assert client.get("/users/me", headers=user.headers).status_code == 403


def test_deactivation_stops_tokens_and_reactivation_does_not_revive_them(
    client: httpx.Client, user: Account, superuser_headers: dict[str, str]
) -> None:
    client.patch(f"/users/{user.id}", json={"is_active": False}, headers=superuser_headers)
    inactive = client.get("/users/me", headers=user.headers)
    assert inactive.status_code == 400
    assert inactive.json() == {"detail": "Inactive user"}
    client.patch(f"/users/{user.id}", json={"is_active": True}, headers=superuser_headers)
    assert client.get("/users/me", headers=user.headers).status_code == 403
    assert client.get("/users/me", headers=login(client, user.email, user.password)).status_code == 200


def test_other_changes_keep_tokens_valid(client: httpx.Client, user: Account) -> None:
    client.patch("/users/me", json={"full_name": "Still Me"}, headers=user.headers)
    assert client.get("/users/me", headers=user.headers).status_code == 200


# ------------------------------------------------------------ legacy hashes and email case


def test_template_bcrypt_hash_logs_in_and_is_rehashed_to_argon2(
    client: httpx.Client, user: Account, served: Served
) -> None:
    legacy = bcrypt.hashpw(b"legacy-password", bcrypt.gensalt(rounds=4)).decode()
    database_id = served.database.id(user.id)
    served.database.run('UPDATE "user" SET hashed_password = :h WHERE id = :id', h=legacy, id=database_id)
    login(client, user.email, "legacy-password")
    stored = served.database.scalar('SELECT hashed_password FROM "user" WHERE id = :id', id=database_id)
    assert stored.startswith("$argon2id$")
    login(client, user.email, "legacy-password")
    wrong = client.post("/login/access-token", data={"username": user.email, "password": "not-legacy"})
    assert wrong.status_code == 400


def test_passwords_are_hashed_with_rfc_9106_and_a_cheaper_hash_is_replaced_at_login(served: Served) -> None:
    """The suite hashes with CHEAPEST (conftest); the default profile is RFC 9106's low-memory one, and a stored
    hash of a weaker profile is replaced by one of it when its owner logs in."""
    weak, strong = "$argon2id$v=19$m=8,t=1,p=1$", "$argon2id$v=19$m=65536,t=3,p=4$"
    settings = make_settings(served.database.url, PASSWORD_HASH_PROFILE="RFC_9106_LOW_MEMORY")
    assert settings.PASSWORD_HASH_PROFILE == Settings().PASSWORD_HASH_PROFILE

    def stored(email: str) -> str:
        return str(served.database.scalar('SELECT hashed_password FROM "user" WHERE email = :email', email=email))

    with LiveServer(create_app(settings)) as server, httpx.Client(base_url=server.url + "/api/v1") as http:
        email = random_email()
        assert http.post("/users/signup", json={"email": email, "password": "signed-up-here"}).status_code == 200
        assert stored(email).startswith(strong)
        account = seed_account(served)
        assert stored(account.email).startswith(weak)
        login(http, account.email, account.password)
        assert stored(account.email).startswith(strong)
        login(http, account.email, account.password)


def test_template_argon2_hash_logs_in(client: httpx.Client, user: Account, served: Served) -> None:
    from argon2 import PasswordHasher

    template_style = PasswordHasher().hash("argon-password")  # the template's pwdlib argon2 default
    database_id = served.database.id(user.id)
    served.database.run('UPDATE "user" SET hashed_password = :h WHERE id = :id', h=template_style, id=database_id)
    login(client, user.email, "argon-password")


@pytest.mark.parametrize("stored", ["$2b$12$not-a-bcrypt-hash", "$argon2id$v=19$garbage", ""])
def test_a_corrupt_stored_hash_is_a_failed_login_not_an_error(
    client: httpx.Client, user: Account, served: Served, stored: str
) -> None:
    database_id = served.database.id(user.id)
    served.database.run('UPDATE "user" SET hashed_password = :h WHERE id = :id', h=stored, id=database_id)
    response = client.post("/login/access-token", data={"username": user.email, "password": user.password})
    assert (response.status_code, response.json()) == (400, {"detail": "Incorrect email or password"})


def test_emails_are_unique_regardless_of_case(client: httpx.Client) -> None:
    email = random_email()
    assert client.post("/users/signup", json={"email": email, "password": "password123"}).status_code == 200
    assert client.post("/users/signup", json={"email": email.upper(), "password": "password123"}).status_code == 400


# ------------------------------------------------------------ body size, CORS, errors


def test_a_large_body_is_413_without_being_read(client: httpx.Client, user: Account) -> None:
    body = b'{"title": "' + b"x" * (5 * 1024 * 1024) + b'"}'
    response = client.post("/items/", content=body, headers={**user.headers, "content-type": "application/json"})
    assert response.status_code == 413
    assert set(response.json()) == {"detail"}


def test_a_large_chunked_body_is_413(client: httpx.Client, user: Account) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"title": "'
        for _ in range(40):
            yield b"x" * 65536
        yield b'"}'

    response = client.post("/items/", content=chunks(), headers={**user.headers, "content-type": "application/json"})
    assert response.status_code == 413


def test_cors_preflight_and_credentials(client: httpx.Client) -> None:
    preflight = client.options(
        "/items/",
        headers={
            "Origin": "http://localhost:5173",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert preflight.status_code in (200, 204)
    assert preflight.headers["access-control-allow-origin"] == "http://localhost:5173"
    assert preflight.headers["access-control-allow-credentials"] == "true"
    simple = client.get("/utils/health-check/", headers={"Origin": "https://app.example.com"})
    assert simple.headers["access-control-allow-origin"] == "https://app.example.com"
    stranger = client.get("/utils/health-check/", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in stranger.headers


def test_private_route_is_absent_outside_local(served: Served) -> None:
    settings = make_settings(served.database.url, ENVIRONMENT="staging", PASSWORD_HASH_PROFILE="RFC_9106_LOW_MEMORY")
    with LiveServer(create_app(settings)) as server, httpx.Client(base_url=server.url + "/api/v1") as http:
        response = http.post("/private/users/", json={"email": random_email(), "password": "x" * 8, "full_name": "x"})
        assert response.status_code == 404


def test_an_unexpected_error_is_a_generic_500_and_logged_with_traceback(served: Served) -> None:
    @get("/boom", opt={"exclude_from_auth": True}, sync_to_thread=False)
    def boom() -> None:
        raise RuntimeError("secret internals")

    app = create_app(make_settings(served.database.url))
    app.register(boom)
    records = Records()
    logging.getLogger().addHandler(records)
    try:
        with LiveServer(app) as server:
            response = httpx.get(server.url + "/boom")
    finally:
        logging.getLogger().removeHandler(records)
    assert response.status_code == 500
    assert response.json() == {"detail": "Internal Server Error"}
    assert "secret" not in response.text
    errors = [r for r in records.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    rendered = logging.getLogger().handlers[0].format(errors[0])
    assert "Traceback" in rendered
    assert "RuntimeError: secret internals" in rendered


def test_request_log_line_has_the_fields_and_no_secrets(served: Served, user: Account) -> None:
    app = create_app(make_settings(served.database.url, LOG_LEVEL="INFO"))
    records = Records()
    logging.getLogger().addHandler(records)
    try:
        with LiveServer(app) as server:
            httpx.patch(
                server.url + "/api/v1/users/me/password",
                json={"current_password": "wrong-password-1", "new_password": "another-password"},
                headers={**user.headers, "X-Request-ID": "trace-me"},
            )
    finally:
        logging.getLogger().removeHandler(records)
    lines = [r for r in records.records if r.name == "app.request"]
    assert len(lines) == 1
    event = lines[0].msg
    assert isinstance(event, dict)
    assert event["method"] == "PATCH"
    assert event["path"] == "/api/v1/users/me/password"
    assert event["status"] == 400
    assert event["request_id"] == "trace-me"
    assert event["user_id"] == user.id
    assert isinstance(event["duration_ms"], float)
    rendered = str(event)
    assert "wrong-password-1" not in rendered
    assert user.headers["Authorization"].split()[1] not in rendered


def test_answers_given_before_any_handler_are_logged_with_their_status_and_request_id(served: Served) -> None:
    """The auth middleware's answers (401, and 503 when the database is down) are sent by the app-level error
    handling, outside the middleware stack: the log line and the echoed request id must still be theirs."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    down = f"postgresql+asyncpg://postgres@127.0.0.1:{closed_port}/nothing"
    app = create_app(make_settings(down, LOG_LEVEL="INFO", DB_CONNECT_TIMEOUT="1"))
    token = security.create_access_token(uuid.uuid4(), 0, served.settings.SECRET_KEY, timedelta(minutes=5))
    records = Records()
    logging.getLogger().addHandler(records)
    try:
        with LiveServer(app) as server, httpx.Client(base_url=server.url + "/api/v1") as http:
            unauthenticated = http.get("/users/me", headers={"X-Request-ID": "no-token"})
            unavailable = http.get("/users/me", headers={"Authorization": f"Bearer {token}", "X-Request-ID": "db-down"})
    finally:
        logging.getLogger().removeHandler(records)
    assert (unauthenticated.status_code, unauthenticated.headers["x-request-id"]) == (401, "no-token")
    assert (unavailable.status_code, unavailable.headers["x-request-id"]) == (503, "db-down")
    lines = [r.msg for r in records.records if r.name == "app.request" and isinstance(r.msg, dict)]
    assert [(line["request_id"], line["status"]) for line in lines] == [("no-token", 401), ("db-down", 503)]


@pytest.mark.parametrize("route", ["/password-recovery/{}", "/password-recovery-html-content/{}"])
def test_request_log_lines_hide_the_addresses_in_paths(
    served: Served, superuser_headers: dict[str, str], route: str
) -> None:
    app = create_app(make_settings(served.database.url, LOG_LEVEL="INFO"))
    records = Records()
    logging.getLogger().addHandler(records)
    try:
        with LiveServer(app) as server:
            for address in ("jane.doe@example.com", "jane.doe%40example.com"):
                httpx.post(server.url + "/api/v1" + route.format(address), headers=superuser_headers)
    finally:
        logging.getLogger().removeHandler(records)
    paths = [r.msg["path"] for r in records.records if r.name == "app.request" and isinstance(r.msg, dict)]
    assert paths == ["/api/v1" + route.format("***@example.com")] * 2
    assert not [r for r in records.records if "jane.doe" in str(r.msg)]


# ------------------------------------------------------------ rate limits


@pytest.fixture(scope="session")
def hanging_redis() -> Iterator[str]:
    """A port that accepts connections and never answers, like a Redis stuck or behind a dead network path."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"


def unreachable_redis() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"  # nothing listens there any more: connection refused


@pytest.fixture(params=["memory", "redis", "redis unreachable", "redis hanging"])
def limited(request: pytest.FixtureRequest, served: Served) -> Iterator[httpx.Client]:
    """A service with the limits on: in memory, shared through Redis, or with Redis down (limits per process)."""
    overrides = {
        "RATE_LIMIT_ENABLED": "true",
        "LOGIN_FAILURES_PER_ACCOUNT_PER_MINUTE": "5",
        "LOGIN_FAILURES_PER_CLIENT_PER_MINUTE": "100",
        "RECOVERY_PER_EMAIL_PER_HOUR": "3",
        "SIGNUP_PER_CLIENT_PER_HOUR": "2",
        "REDIS_NAMESPACE": f"test-{uuid.uuid4().hex}",  # runs sharing this Redis never collide
    }
    redis_urls = {
        "redis": "redis://127.0.0.1:6379/0",
        "redis unreachable": unreachable_redis(),
        "redis hanging": request.getfixturevalue("hanging_redis") if request.param == "redis hanging" else "",
    }
    if request.param in redis_urls:
        overrides["REDIS_URL"] = redis_urls[request.param]
    with (
        LiveServer(create_app(make_settings(served.database.url, **overrides))) as server,
        httpx.Client(base_url=server.url + "/api/v1", timeout=10) as http,
    ):
        yield http


def test_concurrent_guesses_never_pass_the_limit(limited: httpx.Client, new_account: UserFactory) -> None:
    victim = new_account()
    wrong = {"username": victim.email, "password": "wrong-guess"}
    with ThreadPoolExecutor(max_workers=30) as pool:
        statuses = sorted(pool.map(lambda _: limited.post("/login/access-token", data=wrong).status_code, range(30)))
    assert statuses == [400] * 5 + [429] * 25, statuses


def test_sixth_wrong_password_is_429_while_others_still_log_in(limited: httpx.Client, new_account: UserFactory) -> None:
    victim, bystander = new_account(), new_account()
    for _ in range(5):
        response = limited.post("/login/access-token", data={"username": victim.email, "password": "wrong-guess"})
        assert response.status_code == 400
    blocked = limited.post("/login/access-token", data={"username": victim.email, "password": "wrong-guess"})
    assert blocked.status_code == 429
    assert int(blocked.headers["retry-after"]) >= 1
    assert set(blocked.json()) == {"detail"}
    # The right password is not tried either while blocked: no oracle for a guesser.
    assert (
        limited.post("/login/access-token", data={"username": victim.email, "password": victim.password}).status_code
        == 429
    )
    login(limited, bystander.email, bystander.password)


def test_failed_logins_count_the_same_in_both_form_encodings(limited: httpx.Client, new_account: UserFactory) -> None:
    victim = new_account()
    wrong = {"username": victim.email, "password": "wrong-guess"}
    statuses = [post_login(limited, encoding, wrong).status_code for encoding in ["multipart", "urlencoded"] * 3]
    assert statuses == [400, 400, 400, 400, 400, 429]
    right = {"username": victim.email, "password": victim.password}
    assert post_login(limited, "multipart with charset", right).status_code == 429


def test_successful_logins_are_not_counted(limited: httpx.Client, user: Account) -> None:
    for _ in range(8):
        login(limited, user.email, user.password)


def test_recovery_is_limited_per_target_address_the_same_for_unknown_addresses(
    limited: httpx.Client, user: Account
) -> None:
    for address in (user.email, random_email()):
        statuses = [limited.post(f"/password-recovery/{address}").status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]


def test_signup_limit_per_client_when_enabled(limited: httpx.Client) -> None:
    statuses = [
        limited.post("/users/signup", json={"email": random_email(), "password": "password123"}).status_code
        for _ in range(3)
    ]
    assert statuses == [200, 200, 429]


def test_rate_limit_window_uses_retry_after_within_the_window(limited: httpx.Client) -> None:
    email = random_email()
    for _ in range(5):
        limited.post("/login/access-token", data={"username": email, "password": "wrong-guess"})
    blocked = limited.post("/login/access-token", data={"username": email, "password": "wrong-guess"})
    assert blocked.status_code == 429
    assert 1 <= int(blocked.headers["retry-after"]) <= 60


def test_a_write_completes_when_the_client_disconnects_right_after_sending(
    served: Served, client: httpx.Client
) -> None:
    import json
    import socket
    import time
    from urllib.parse import urlsplit

    email = random_email()
    body = json.dumps({"email": email, "password": "password123"}).encode()
    target = urlsplit(served.api)
    request = (
        f"POST {target.path}/users/signup HTTP/1.1\r\nHost: {target.netloc}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    with socket.create_connection((target.hostname, target.port)) as sock:
        sock.sendall(request)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        response = client.post("/login/access-token", data={"username": email, "password": "password123"})
        if response.status_code == 200:
            break
        time.sleep(0.1)
    assert response.status_code == 200


def test_database_errors_never_carry_the_statement_values(served: Served) -> None:
    """What reaches a log line or Sentry from a failed statement: the SQL, not the hash or address in it."""
    # An engine of the test's own, configured as the app's: the served app's engine belongs to its event loop.
    engine = sqlalchemy_config(served.settings).get_engine()

    async def fail() -> str:
        async with engine.connect() as connection:
            try:
                await connection.execute(
                    text("SELECT CAST(:value AS text) FROM no_such_table"), {"value": "$argon2id$secret-hash"}
                )
            except DBAPIError as exc:
                return str(exc)
        return ""

    async def fail_and_dispose() -> str:
        try:
            return await fail()
        finally:
            await engine.dispose()

    message = asyncio.run(fail_and_dispose())
    assert "no_such_table" in message
    assert "secret-hash" not in message


@pytest.mark.parametrize(
    ("redis", "mode"), [("redis", "redis"), ("redis unreachable", "process (redis unavailable)"), ("", "process")]
)
def test_readiness_tells_where_the_limits_are_kept(
    served: Served, new_account: UserFactory, redis: str, mode: str
) -> None:
    url = {"redis": "redis://127.0.0.1:6379/0", "redis unreachable": unreachable_redis(), "": ""}[redis]
    settings = make_settings(served.database.url, RATE_LIMIT_ENABLED="true", REDIS_URL=url)
    account = new_account()
    with LiveServer(create_app(settings)) as server, httpx.Client(base_url=server.url + "/api/v1") as http:
        login(http, account.email, account.password)  # the first use of the limiter finds Redis down
        ready = http.get("/utils/ready")
    assert (ready.status_code, ready.json()) == (200, {"status": "ready", "rate_limits": mode})


# ------------------------------------------------------------ hostile input


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("/users/signup", b'{"email": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"),
        ("/users/signup", b"[" * 100_000),
        ("/users/signup", b'{"email": "\xff\xfe@example.com", "password": "a-good-password"}'),
        ("/items/", b'{"title": "\xc3"}'),
    ],
    ids=["nested 10,000 deep", "unclosed 100,000 deep", "not utf-8", "truncated utf-8"],
)
def test_undecodable_json_is_422_not_500(
    client: httpx.Client, user: Account, route: str, body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    response = client.post(route, content=body, headers={**user.headers, "Content-Type": "application/json"})
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert (error["type"], error["loc"][0], error["msg"]) == ("json_invalid", "body", "JSON decode error")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


NUL_REQUESTS = {
    "item title": ("POST", "/items/", {"json": {"title": "a\u0000b"}}),
    "item description": ("PUT", "/items/{item}", {"json": {"description": "\u0000"}}),
    "full name": ("PATCH", "/users/me", {"json": {"full_name": "Jane\u0000"}}),
    "signup email": ("POST", "/users/signup", {"json": {"email": "a\u0000@example.com", "password": "x" * 10}}),
    "login username": ("POST", "/login/access-token", {"data": {"username": "a\u0000@example.com", "password": "x"}}),
    "recovery path": ("POST", "/password-recovery/a%00@example.com", {}),
    "query": ("GET", "/items/?skip=%00", {}),
}


@pytest.mark.parametrize("case", list(NUL_REQUESTS))
def test_nul_characters_are_422_and_never_reach_the_database(
    served: Served, client: httpx.Client, user: Account, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    item = client.post("/items/", json={"title": "kept"}, headers=user.headers).json()
    method, path, kwargs = NUL_REQUESTS[case]
    response = client.request(method, path.format(item=item["id"]), headers=user.headers, **kwargs)
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["msg"] == "Value error, text must not contain NUL characters"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert client.get(f"/items/{item['id']}", headers=user.headers).json()["title"] == "kept"
    assert served.database.scalar("SELECT count(*) FROM item WHERE title LIKE 'a%b'") == 0


def test_redis_shares_the_limits_between_workers(served: Served, new_account: UserFactory) -> None:
    victim = new_account()
    settings = make_settings(
        served.database.url,
        RATE_LIMIT_ENABLED="true",
        REDIS_URL="redis://127.0.0.1:6379/0",
        REDIS_NAMESPACE=f"test-{uuid.uuid4().hex}",
    )
    wrong = {"username": victim.email, "password": "wrong-guess"}
    with LiveServer(create_app(settings)) as first, LiveServer(create_app(settings)) as second:
        statuses = [httpx.post(f"{first.url}/api/v1/login/access-token", data=wrong).status_code for _ in range(3)]
        statuses += [httpx.post(f"{second.url}/api/v1/login/access-token", data=wrong).status_code for _ in range(3)]
        right = {"username": victim.email, "password": victim.password}
        blocked = httpx.post(f"{second.url}/api/v1/login/access-token", data=right)
    assert statuses == [400, 400, 400, 400, 400, 429]
    assert blocked.status_code == 429
