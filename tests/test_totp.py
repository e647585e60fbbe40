"""The TOTP second factor (README "Two-factor authentication (TOTP)"): RFC 6238 codes, enrolment and confirmation, the
login's second step, recovery codes, turning it off, a superuser's removal, its rate limit; over HTTP, on both
engines. The codes are computed by app/totp.py from the secret the API handed out, as an authenticator app would."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pytest
from advanced_alchemy.types.encrypted_string import FernetBackend
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app import totp
from app.config import SettingsError
from tests.conftest import (
    SECRET_KEY,
    Account,
    LiveServer,
    Records,
    Served,
    audit_events,
    create_app,
    make_settings,
    named,
)

UserFactory = Callable[..., Account]
TOTP_KEY = "a-totp-encryption-key-for-the-tests-only-0123456789"
REDIS_URL = "redis://127.0.0.1:6379/0"
NOT_CONFIGURED = {"detail": "Two-factor authentication is not configured"}
OTP_REQUIRED = {"detail": "A one-time code is required"}
INVALID_OTP = {"detail": "Invalid, expired or already used one-time code"}
INVALID_RECOVERY_CODE = {"detail": "Invalid or already used recovery code"}
NOT_WITH_PAT = {"detail": "Not allowed with a personal access token"}


# ---------------------------------------------------------------- RFC 6238, unit

# RFC 6238 appendix B, the SHA-1 rows: the secret "12345678901234567890" (ASCII), 8 digits.
RFC_SECRET = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"  # base32 of it
RFC_VECTORS = [
    (59, "94287082"),
    (1111111109, "07081804"),
    (1111111111, "14050471"),
    (1234567890, "89005924"),
    (2000000000, "69279037"),
    (20000000000, "65353130"),
]


@pytest.mark.parametrize(("timestamp", "expected"), RFC_VECTORS)
def test_the_rfc_6238_test_vectors(timestamp: int, expected: str) -> None:
    assert totp.hotp(b"12345678901234567890", totp.step_at(timestamp), digits=8) == expected
    # Our 6 digits are the same number modulo 10^6.
    assert totp.code_at(RFC_SECRET, timestamp) == expected[-6:]


def test_a_code_is_accepted_one_step_either_side_and_no_further() -> None:
    now = 1234567890.0
    for offset in (-1, 0, 1):
        code = totp.code_at(RFC_SECRET, now + offset * totp.STEP_SECONDS)
        assert totp.matching_step(RFC_SECRET, code, now) == totp.step_at(now) + offset
    for offset in (-2, 2):
        code = totp.code_at(RFC_SECRET, now + offset * totp.STEP_SECONDS)
        assert totp.matching_step(RFC_SECRET, code, now) is None
    assert totp.matching_step(RFC_SECRET, "not a code", now) is None
    assert totp.matching_step(RFC_SECRET, "", now) is None


def test_the_otpauth_uri_and_a_new_secret() -> None:
    secret = totp.new_secret()
    assert len(secret) == 32
    assert set(secret) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
    assert totp.new_secret() != secret
    uri = totp.otpauth_uri(secret, "My Project", "someone@example.com")
    assert uri == f"otpauth://totp/My%20Project:someone@example.com?secret={secret}&issuer=My%20Project"


def test_recovery_codes_are_random_and_normalised() -> None:
    codes = {totp.new_recovery_code() for _ in range(100)}
    assert len(codes) == 100
    code = codes.pop()
    assert len(code) == 11
    assert code[5] == "-"
    assert totp.normalize_recovery_code(f" {code.upper()} ") == code.replace("-", "")
    assert not totp.looks_like_otp(code)
    assert totp.looks_like_otp("123456")


# ---------------------------------------------------------------- settings


def test_the_encryption_key_is_validated() -> None:
    settings = make_settings("sqlite+aiosqlite:///:memory:")
    assert settings.TOTP_ENCRYPTION_KEY is None
    assert settings.OTP_FAILURES_PER_ACCOUNT_PER_MINUTE == 5
    with pytest.raises(SettingsError, match=r"^TOTP_ENCRYPTION_KEY: 31 characters is too short"):
        make_settings("sqlite+aiosqlite:///:memory:", TOTP_ENCRYPTION_KEY="k" * 31)
    with pytest.raises(SettingsError, match=r"^TOTP_ENCRYPTION_KEY: must differ from SECRET_KEY"):
        make_settings("sqlite+aiosqlite:///:memory:", TOTP_ENCRYPTION_KEY=SECRET_KEY)
    assert make_settings("sqlite+aiosqlite:///:memory:", TOTP_ENCRYPTION_KEY=TOTP_KEY).TOTP_ENCRYPTION_KEY == TOTP_KEY


# ---------------------------------------------------------------- over HTTP


@dataclass
class Server:
    http: httpx.Client
    served: Served


@pytest.fixture(scope="module")
def with_totp(served: Served) -> Iterator[Server]:
    """The app with TOTP_ENCRYPTION_KEY set, on the session's database (its seeded accounts are there too)."""
    app = create_app(make_settings(served.database.url, TOTP_ENCRYPTION_KEY=TOTP_KEY))
    with LiveServer(app) as server, httpx.Client(base_url=server.url + "/api/v1") as http:
        yield Server(http, served)


def fresh_step() -> int:
    """The current step, once at least 8 s of it are left: a test's codes for steps around it are then the same
    steps for the server, whatever the requests' latency."""
    while totp.STEP_SECONDS - time.time() % totp.STEP_SECONDS < 8:
        time.sleep(0.5)
    return totp.step_at(time.time())


def code(secret: str, step: int) -> str:
    return totp.code_at(secret, step * totp.STEP_SECONDS)


def wrong_code(secret: str, step: int, skip: int = 0) -> str:
    """A 6-digit code that is none of the codes within reach of `step` (the `skip`-th such)."""
    near = {code(secret, near) for near in range(step - 2, step + 3)}
    return [candidate for n in range(100) if (candidate := str(n).zfill(6)) not in near][skip]


@dataclass
class Enrolled:
    account: Account
    secret: str
    recovery_codes: list[str]
    step: int  # the step the confirmation used up


def enrol(http: httpx.Client, account: Account) -> Enrolled:
    started = http.post("/users/me/totp", headers=account.headers)
    assert started.status_code == 200, started.text
    secret = started.json()["secret"]
    step = fresh_step()
    confirmed = http.post("/users/me/totp/confirm", json={"code": code(secret, step)}, headers=account.headers)
    assert confirmed.status_code == 200, confirmed.text
    return Enrolled(account, secret, confirmed.json()["recovery_codes"], step)


def log_in(http: httpx.Client, account: Account, **second: str) -> httpx.Response:
    return http.post("/login/access-token", data={"username": account.email, "password": account.password, **second})


def test_enrolment_without_a_key_answers_that_it_is_not_configured(
    client: httpx.Client, user: Account, served: Served
) -> None:
    response = client.post("/users/me/totp", headers=user.headers)
    assert (response.status_code, response.json()) == (503, NOT_CONFIGURED)
    assert client.post("/users/me/totp/confirm", json={"code": "123456"}, headers=user.headers).json() == (
        NOT_CONFIGURED
    )
    # ... and nothing was written, nor does the login change.
    assert (
        served.database.scalar("SELECT count(*) FROM user_totp WHERE user_id = :id", id=served.database.id(user.id))
        == 0
    )
    assert log_in(client, user).status_code == 200


def test_enrol_confirm_and_log_in_with_a_code(with_totp: Server, new_account: UserFactory) -> None:
    http, account = with_totp.http, new_account()
    started = http.post("/users/me/totp", headers=account.headers)
    assert started.status_code == 200, started.text
    body = started.json()
    assert set(body) == {"secret", "otpauth_uri"}
    assert body["otpauth_uri"] == (
        f"otpauth://totp/Test%20Project:{account.email}?secret={body['secret']}&issuer=Test%20Project"
    )
    # Pending: the login does not ask for a code yet; enrolling again replaces the secret.
    assert log_in(http, account).status_code == 200
    again = http.post("/users/me/totp", headers=account.headers).json()
    assert again["secret"] != body["secret"]
    step = fresh_step()
    stale = http.post("/users/me/totp/confirm", json={"code": code(body["secret"], step)}, headers=account.headers)
    assert (stale.status_code, stale.json()) == (400, INVALID_OTP)
    confirmed = http.post("/users/me/totp/confirm", json={"code": code(again["secret"], step)}, headers=account.headers)
    assert confirmed.status_code == 200, confirmed.text
    codes = confirmed.json()["recovery_codes"]
    assert len(codes) == len(set(codes)) == 10
    # Confirmed: no second enrolment, no second confirmation.
    assert http.post("/users/me/totp", headers=account.headers).status_code == 409
    assert http.post("/users/me/totp/confirm", json={"code": "123456"}, headers=account.headers).status_code == 409

    missing = log_in(http, account)
    assert (missing.status_code, missing.json()) == (401, OTP_REQUIRED)
    # The confirmation used its code's step up: the next step's code logs in, once.
    reused = log_in(http, account, otp=code(again["secret"], step))
    assert (reused.status_code, reused.json()) == (401, INVALID_OTP)
    signed_in = log_in(http, account, otp=code(again["secret"], step + 1))
    assert signed_in.status_code == 200, signed_in.text
    token = {"Authorization": f"Bearer {signed_in.json()['access_token']}"}
    assert http.get("/users/me", headers=token).json()["email"] == account.email


def test_wrong_reused_and_out_of_window_codes_are_refused(with_totp: Server, new_account: UserFactory) -> None:
    http = with_totp.http
    enrolled = enrol(http, new_account())
    account, secret, step = enrolled.account, enrolled.secret, enrolled.step
    for otp in (wrong_code(secret, step), "abcdef", "1" * 64, code(secret, step - 2), code(secret, step + 2)):
        response = log_in(http, account, otp=otp)
        assert (response.status_code, response.json()) == (401, INVALID_OTP), otp
    too_long = log_in(http, account, otp="1" * 65)
    assert too_long.status_code == 422
    # The wrong password is still the password's answer, before any code is looked at.
    wrong_password = http.post(
        "/login/access-token", data={"username": account.email, "password": "not-the-password", "otp": "123456"}
    )
    assert wrong_password.status_code == 400
    assert log_in(http, account, otp=code(secret, step + 1)).status_code == 200
    # Each code works once; an older step's code after a newer one was accepted is refused too.
    for otp in (code(secret, step + 1), code(secret, step), code(secret, step - 1)):
        response = log_in(http, account, otp=otp)
        assert (response.status_code, response.json()) == (401, INVALID_OTP), otp


def test_concurrent_logins_with_one_code_sign_in_once(with_totp: Server, new_account: UserFactory) -> None:
    http = with_totp.http
    enrolled = enrol(http, new_account())
    otp = code(enrolled.secret, enrolled.step + 1)
    with ThreadPoolExecutor(6) as pool:
        statuses = sorted(pool.map(lambda _: log_in(http, enrolled.account, otp=otp).status_code, range(6)))
    assert statuses == [200, 401, 401, 401, 401, 401]


def test_a_recovery_code_works_once(with_totp: Server, new_account: UserFactory, audit_records: Records) -> None:
    http = with_totp.http
    enrolled = enrol(http, new_account())
    first, second = enrolled.recovery_codes[:2]
    signed_in = log_in(http, enrolled.account, recovery_code=first)
    assert signed_in.status_code == 200, signed_in.text
    again = log_in(http, enrolled.account, recovery_code=first)
    assert (again.status_code, again.json()) == (401, INVALID_RECOVERY_CODE)
    # Typed in capitals, without its dash: the same code.
    assert log_in(http, enrolled.account, recovery_code=second.upper().replace("-", "")).status_code == 200
    unknown = log_in(http, enrolled.account, recovery_code="abcde-fghjk")
    assert (unknown.status_code, unknown.json()) == (401, INVALID_RECOVERY_CODE)
    used = named(audit_records, "recovery_code.used")
    assert [entry["subject_id"] for entry in used] == [enrolled.account.id] * 2
    failed = named(audit_records, "login.otp_failed")
    assert [(entry["subject_id"], entry["reason"]) for entry in failed] == [(enrolled.account.id, "recovery_code")] * 2
    rendered = str(audit_events(audit_records))
    assert all(recovery not in rendered for recovery in enrolled.recovery_codes)


def test_secrets_are_encrypted_and_recovery_codes_are_digests(with_totp: Server, new_account: UserFactory) -> None:
    database = with_totp.served.database
    enrolled = enrol(with_totp.http, new_account())
    user_id = database.id(enrolled.account.id)
    stored = database.scalar("SELECT secret FROM user_totp WHERE user_id = :id", id=user_id)
    assert enrolled.secret not in stored
    fernet = FernetBackend()
    fernet.mount_vault(TOTP_KEY)
    assert fernet.decrypt(stored) == enrolled.secret  # encrypted with TOTP_ENCRYPTION_KEY, by advanced-alchemy
    assert database.scalar('SELECT totp_enabled FROM "user" WHERE id = :id', id=user_id) in (True, 1)

    async def digests(engine: AsyncEngine) -> set[str]:
        async with engine.connect() as connection:
            rows = await connection.execute(
                text("SELECT digest FROM user_recovery_code WHERE user_id = :id"), {"id": user_id}
            )
            return {row[0] for row in rows}

    kept = database.execute(digests)
    expected = {hashlib.sha256(c.replace("-", "").encode()).hexdigest() for c in enrolled.recovery_codes}
    assert kept == expected
    assert not any(c in digest or c.replace("-", "") in digest for c in enrolled.recovery_codes for digest in kept)


def test_disabling_needs_the_password_and_a_code(
    with_totp: Server, new_account: UserFactory, audit_records: Records
) -> None:
    http, database = with_totp.http, with_totp.served.database
    enrolled = enrol(http, new_account())
    account, secret, step = enrolled.account, enrolled.secret, enrolled.step
    refused = {"detail": "Incorrect password or one-time code"}
    for body in (
        {"password": "not-the-password", "code": code(secret, step + 1)},
        {"password": account.password, "code": wrong_code(secret, step)},
        {"password": account.password, "code": code(secret, step)},  # used up by the confirmation
        {"password": account.password, "code": "abcde-fghjk"},
    ):
        response = http.post("/users/me/totp/disable", json=body, headers=account.headers)
        assert (response.status_code, response.json()) == (400, refused), body
    assert http.post("/users/me/totp/disable", json={"code": "123456"}, headers=account.headers).status_code == 422
    assert log_in(http, account).status_code == 401  # still on

    body = {"password": account.password, "code": enrolled.recovery_codes[0]}  # a recovery code does too
    response = http.post("/users/me/totp/disable", json=body, headers=account.headers)
    assert (response.status_code, response.json()) == (200, {"message": "Two-factor authentication disabled"})
    assert log_in(http, account).status_code == 200
    user_id = database.id(account.id)
    assert database.scalar("SELECT count(*) FROM user_totp WHERE user_id = :id", id=user_id) == 0
    assert database.scalar("SELECT count(*) FROM user_recovery_code WHERE user_id = :id", id=user_id) == 0
    again = http.post("/users/me/totp/disable", json=body, headers=account.headers)
    assert (again.status_code, again.json()) == (400, {"detail": "Two-factor authentication is not enabled"})
    (disabled,) = named(audit_records, "totp.disabled")
    assert (disabled["subject_id"], disabled["with_code"]) == (account.id, "recovery_code")
    (enabled,) = named(audit_records, "totp.enabled")
    assert enabled["subject_id"] == account.id
    # It can be set up again, with a new secret.
    assert enrol(http, account).secret != secret


def test_disabling_with_a_current_code(with_totp: Server, new_account: UserFactory) -> None:
    http = with_totp.http
    enrolled = enrol(http, new_account())
    body = {"password": enrolled.account.password, "code": code(enrolled.secret, enrolled.step + 1)}
    assert http.post("/users/me/totp/disable", json=body, headers=enrolled.account.headers).status_code == 200
    assert log_in(http, enrolled.account).status_code == 200


def test_a_superuser_removes_a_users_second_factor(
    with_totp: Server, new_account: UserFactory, audit_records: Records
) -> None:
    http = with_totp.http
    admin = new_account(is_superuser=True)
    enrolled = enrol(http, new_account())
    other = new_account()
    path = f"/users/{enrolled.account.id}/totp"
    assert http.delete(path, headers=other.headers).status_code == 403
    assert http.delete(path, headers=enrolled.account.headers).status_code == 403
    assert http.delete(path).status_code == 401
    assert http.delete("/users/not-a-uuid/totp", headers=admin.headers).status_code == 422
    unknown = http.delete(f"/users/{uuid.uuid4()}/totp", headers=admin.headers)
    assert (unknown.status_code, unknown.json()) == (404, {"detail": "User not found"})
    none = http.delete(f"/users/{other.id}/totp", headers=admin.headers)
    assert (none.status_code, none.json()) == (404, {"detail": "Two-factor authentication is not enabled"})

    removed = http.delete(path, headers=admin.headers)
    assert (removed.status_code, removed.json()) == (200, {"message": "Two-factor authentication removed"})
    assert log_in(http, enrolled.account).status_code == 200
    assert http.delete(path, headers=admin.headers).status_code == 404
    (event,) = named(audit_records, "totp.removed")
    assert (event["subject_id"], event["actor_id"]) == (enrolled.account.id, admin.id)


def test_personal_access_tokens_are_refused_on_every_totp_route(with_totp: Server, new_account: UserFactory) -> None:
    http = with_totp.http
    account, admin = new_account(), new_account(is_superuser=True)
    pats = {}
    for owner in (account, admin):
        created = http.post(
            "/users/me/tokens", json={"name": "ci", "expires_in_days": 1, "scope": "read-write"}, headers=owner.headers
        )
        assert created.status_code == 200, created.text
        pats[owner.id] = {"Authorization": f"Bearer {created.json()['token']}"}
    for method, path, body, owner in (
        ("POST", "/users/me/totp", None, account),
        ("POST", "/users/me/totp/confirm", {"code": "123456"}, account),
        ("POST", "/users/me/totp/disable", {"password": account.password, "code": "123456"}, account),
        ("DELETE", f"/users/{account.id}/totp", None, admin),
    ):
        response = http.request(method, path, json=body, headers=pats[owner.id])
        assert (response.status_code, response.json()) == (403, NOT_WITH_PAT), path
    assert (
        with_totp.served.database.scalar(
            "SELECT count(*) FROM user_totp WHERE user_id = :id", id=with_totp.served.database.id(account.id)
        )
        == 0
    )


def test_the_routes_need_a_caller_and_valid_bodies(with_totp: Server, new_account: UserFactory) -> None:
    http, account = with_totp.http, new_account()
    for path in ("/users/me/totp", "/users/me/totp/confirm", "/users/me/totp/disable"):
        assert http.post(path).status_code == 401
    assert http.post("/users/me/totp/confirm", json={"code": ""}, headers=account.headers).status_code == 422
    assert http.post("/users/me/totp/confirm", json={"code": "1" * 65}, headers=account.headers).status_code == 422
    assert http.post("/users/me/totp/confirm", json=[], headers=account.headers).status_code == 422
    not_started = http.post("/users/me/totp/confirm", json={"code": "123456"}, headers=account.headers)
    assert (not_started.status_code, not_started.json()) == (
        400,
        {"detail": "No two-factor enrolment to confirm: start one first"},
    )


def test_a_user_without_a_second_factor_logs_in_as_before(with_totp: Server, new_account: UserFactory) -> None:
    account = new_account()
    assert log_in(with_totp.http, account, otp="123456", recovery_code="abcde-fghjk").status_code == 200
    # A multipart form (what the template's frontend sends) carries the fields too.
    enrolled = enrol(with_totp.http, new_account())
    form = {"username": (None, enrolled.account.email), "password": (None, enrolled.account.password)}
    missing = with_totp.http.post("/login/access-token", files=form)
    assert (missing.status_code, missing.json()) == (401, OTP_REQUIRED)
    otp = {"otp": (None, code(enrolled.secret, enrolled.step + 1))}
    assert with_totp.http.post("/login/access-token", files={**form, **otp}).status_code == 200


def test_wrong_codes_are_audited(with_totp: Server, new_account: UserFactory, audit_records: Records) -> None:
    enrolled = enrol(with_totp.http, new_account())
    assert log_in(with_totp.http, enrolled.account, otp=code(enrolled.secret, enrolled.step)).status_code == 401
    assert log_in(with_totp.http, enrolled.account).status_code == 401
    (failed,) = named(audit_records, "login.otp_failed")
    assert (failed["subject_id"], failed["reason"]) == (enrolled.account.id, "otp")
    assert not named(audit_records, "login.succeeded")


# ---------------------------------------------------------------- the rate limit on guesses


def test_concurrent_wrong_guesses_never_exceed_the_limit(
    served: Served, new_account: UserFactory, audit_records: Records
) -> None:
    settings = make_settings(
        served.database.url,
        TOTP_ENCRYPTION_KEY=TOTP_KEY,
        RATE_LIMIT_ENABLED="true",
        REDIS_URL=REDIS_URL,
        REDIS_NAMESPACE=f"test-totp-{uuid.uuid4().hex[:8]}",
        OTP_FAILURES_PER_ACCOUNT_PER_MINUTE="3",
        # The password is right every time: its own limit is refunded, but concurrent logins hold it a moment.
        LOGIN_FAILURES_PER_ACCOUNT_PER_MINUTE="100",
    )
    app = create_app(settings)
    with LiveServer(app) as server, httpx.Client(base_url=server.url + "/api/v1") as http:
        assert http.get("/utils/ready").json()["rate_limits"] == "redis"
        enrolled = enrol(http, new_account())
        right = code(enrolled.secret, enrolled.step + 1)
        wrong = [wrong_code(enrolled.secret, enrolled.step, n) for n in range(12)]

        def guess(otp: str) -> int:
            return log_in(http, enrolled.account, otp=otp).status_code

        with ThreadPoolExecutor(12) as pool:
            statuses = list(pool.map(guess, wrong))
        assert statuses.count(401) == 3, statuses
        assert set(statuses) == {401, 429}
        # Even the right code is refused while the window is full, and so is a recovery code.
        locked = log_in(http, enrolled.account, otp=right)
        assert locked.status_code == 429
        assert "Retry-After" in locked.headers
        assert log_in(http, enrolled.account, recovery_code=enrolled.recovery_codes[0]).status_code == 429
        # The same quota guards turning the factor off.
        body = {"password": enrolled.account.password, "code": right}
        assert http.post("/users/me/totp/disable", json=body, headers=enrolled.account.headers).status_code == 429
    assert [entry["reason"] for entry in named(audit_records, "login.otp_failed")].count("locked_out") >= 9


def test_right_codes_are_not_counted_as_guesses(served: Served, new_account: UserFactory) -> None:
    settings = make_settings(
        served.database.url,
        TOTP_ENCRYPTION_KEY=TOTP_KEY,
        RATE_LIMIT_ENABLED="true",
        REDIS_URL=REDIS_URL,
        REDIS_NAMESPACE=f"test-totp-{uuid.uuid4().hex[:8]}",
        OTP_FAILURES_PER_ACCOUNT_PER_MINUTE="2",
    )
    with LiveServer(create_app(settings)) as server, httpx.Client(base_url=server.url + "/api/v1") as http:
        # The confirmation's code, then recovery codes: each right, none counted, so a limit of 2 refuses none.
        enrolled = enrol(http, new_account())
        for recovery in enrolled.recovery_codes[:4]:
            assert log_in(http, enrolled.account, recovery_code=recovery).status_code == 200
        wrong = wrong_code(enrolled.secret, enrolled.step)
        statuses = [log_in(http, enrolled.account, otp=wrong).status_code for _ in range(3)]
        assert statuses == [401, 401, 429]
