from __future__ import annotations

from collections.abc import Coroutine
from datetime import timedelta
from functools import partial
from typing import Annotated, Any, TypeVar
from uuid import UUID

from litestar import Controller, MediaType, Request, Response, post
from litestar._parsers import parse_url_encoded_form_data
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.exceptions import NotFoundException
from litestar.params import Body, JSONBody, Parameter
from litestar.utils.scope.state import ScopeState

from app import emails, security
from app.audit import AuditEvent, audit, email_domain
from app.auth import EXCLUDE_FROM_AUTH, requires_superuser
from app.config import Settings
from app.errors import (
    EMAIL_NOT_VERIFIED,
    INACTIVE_USER,
    INCORRECT_LOGIN,
    INVALID_OTP,
    INVALID_RECOVERY_CODE,
    INVALID_REFRESH_TOKEN,
    INVALID_TOKEN,
    OTP_REQUIRED,
    UNKNOWN_USERNAME,
    BadRequest,
    Forbidden,
    Unauthorized,
)
from app.metrics import count_email, count_login
from app.openapi import error_responses
from app.ratelimit import Quota, RateLimiter, TooManyRequests, identity_key
from app.schemas import ADDRESS_MAX, Caller, LoginForm, Message, NewPassword, RefreshForm, Token, TokenPair, UserPublic
from app.services import TotpService, UserService
from app.sessions import client_network, session_label
from app.validation import reject_nul_characters
from db.identity import email_identity

RECOVERY_SENT = "If that email is registered, we sent a password recovery link"
MINUTE, HOUR = 60, 3600
# An address in a path: bounded before any lookup, rate-limit key or token is made of it (422 beyond). No registered
# address is longer (email-validator refuses more than 254 characters).
PathAddress = Annotated[str, Parameter(max_length=ADDRESS_MAX)]


def client_address(request: Request[Any, Any, Any]) -> str:
    return request.client.host if request.client else "unknown"


async def read_form_in_either_encoding(request: Request[Any, Any, Any]) -> None:
    """Parse the login form by its content type before Litestar's urlencoded extractor runs (it reuses what is
    parsed here): browsers send the template frontend's `FormData` as multipart, which that extractor would
    otherwise read as urlencoded and find empty. An empty field counts as absent, as in the template (OAuth2
    clients send `scope=&client_id=`)."""
    # The app's own hook, which this route's hook replaces; first, since it reads (and keeps) the whole body,
    # which the multipart parser would otherwise consume as a stream.
    await reject_nul_characters(request)
    state = ScopeState.from_scope(request.scope)
    if request.content_type[0] == RequestEncodingType.URL_ENCODED:
        # Litestar's parser keeps its last 1,024 results (an `lru_cache` keyed by the whole body): every login's
        # body, its password in clear, stayed in the worker's memory, up to 2 GiB of them near the body limit. Its
        # uncached function, for the same result.
        state.form = {**parse_url_encoded_form_data.__wrapped__(await request.body())}
    await request.form()
    if isinstance(state.form, dict):
        state.form = {name: value for name, value in state.form.items() if value != ""}


def reset_token_for(settings: Settings, email: str, hashed_password: str) -> str:
    expires = timedelta(hours=settings.EMAIL_RESET_TOKEN_EXPIRE_HOURS)
    return security.create_reset_token(email, hashed_password, settings.SECRET_KEY, expires)


async def send_recovery_email(settings: Settings, email: str, hashed_password: str) -> None:
    mail = emails.reset_password_email(settings, email, reset_token_for(settings, email, hashed_password))
    await emails.send_email(settings, email, mail)


class LoginController(Controller):
    tags = ["login"]

    @post(
        "/login/access-token",
        status_code=200,
        opt={EXCLUDE_FROM_AUTH: True},
        before_request=read_form_in_either_encoding,
        responses=error_responses(
            {
                400: [INCORRECT_LOGIN, INACTIVE_USER],
                401: [OTP_REQUIRED, INVALID_OTP, INVALID_RECOVERY_CODE + " (an account with a second factor)"],
                429: ["Too many failed logins (or one-time codes) for this account or client"],
            }
        ),
    )
    async def login_access_token(
        self,
        request: Request[Any, Any, Any],
        users: NamedDependency[UserService],
        settings: NamedDependency[Settings],
        rate_limiter: NamedDependency[RateLimiter],
        totp: NamedDependency[TotpService],
        data: Annotated[LoginForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
    ) -> Token:
        """OAuth2 password login: an access token for future requests. An account with a second factor also needs
        `otp` (the authenticator's current code) or `recovery_code` (401 without)."""
        # Every attempt is counted as a failure before the password is checked, and refunded when it was right:
        # concurrent guesses cannot all pass a check made before any of them is recorded.
        try:
            attempt = await rate_limiter.reserve(
                Quota(
                    identity_key("login-fail:account", email_identity(data.username)),
                    settings.LOGIN_FAILURES_PER_ACCOUNT_PER_MINUTE,
                    MINUTE,
                ),
                Quota(
                    identity_key("login-fail:client", client_address(request)),
                    settings.LOGIN_FAILURES_PER_CLIENT_PER_MINUTE,
                    MINUTE,
                ),
            )
        except TooManyRequests:
            audit(AuditEvent.LOGIN_LOCKED_OUT, email_domain=email_domain(data.username))
            count_login("refused")
            raise
        try:
            user = await users.authenticate(data.username, data.password)
        except Exception:
            await rate_limiter.refund(attempt)  # not a failed login: the service failed
            raise
        if user is None:
            audit(AuditEvent.LOGIN_FAILED, email_domain=email_domain(data.username), reason="credentials")
            count_login("failed")
            raise BadRequest(INCORRECT_LOGIN)
        await rate_limiter.refund(attempt)
        if not user.is_active:
            audit(AuditEvent.LOGIN_FAILED, user_id=user.id, reason="inactive")
            count_login("failed")
            raise BadRequest(INACTIVE_USER)
        if user.totp_enabled:
            await check_second_factor(totp, rate_limiter, settings, user.id, data)
        if settings.EMAIL_VERIFICATION == "required" and not user.is_verified:
            audit(AuditEvent.LOGIN_FAILED, user_id=user.id, reason="unverified")
            count_login("failed")
            raise Forbidden(EMAIL_NOT_VERIFIED)
        audit(AuditEvent.LOGIN_SUCCEEDED, user_id=user.id)
        count_login("succeeded")
        expires = timedelta(minutes=settings.ACCESS_TOKEN_EXPIRE_MINUTES)
        label = session_label(request.headers.get("user-agent", ""))
        network = client_network(client_address(request))
        if not settings.refresh_tokens_enabled:
            session_id, _ = await users.start_session(user, label, network, expires)
            access = security.create_access_token(user.id, user.token_version, settings.SECRET_KEY, expires, session_id)
            return Token(access_token=access)
        # A TokenPair, a Token with more (the login stays documented as the template's Token). The session lasts as
        # long as its refresh token, which can outlive the first access token.
        lifetime = max(expires, timedelta(minutes=settings.REFRESH_TOKEN_EXPIRE_MINUTES))
        session_id, refresh = await users.start_session(user, label, network, lifetime, settings.SECRET_KEY)
        access = security.create_access_token(user.id, user.token_version, settings.SECRET_KEY, expires, session_id)
        return TokenPair(access_token=access, refresh_token=str(refresh), expires_in=int(expires.total_seconds()))

    @post(
        "/login/refresh",
        status_code=200,
        opt={EXCLUDE_FROM_AUTH: True},
        before_request=read_form_in_either_encoding,
        responses=error_responses({400: [INVALID_REFRESH_TOKEN]}),
    )
    async def refresh_access_token(
        self,
        users: NamedDependency[UserService],
        settings: NamedDependency[Settings],
        data: Annotated[RefreshForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
    ) -> TokenPair:
        """OAuth2 refresh-token grant (when `REFRESH_TOKEN_EXPIRE_MINUTES` is set): a new access token and a new
        refresh token for the session of the one given, which is extended by `REFRESH_TOKEN_EXPIRE_MINUTES` (or the
        access token's lifetime, if longer). Each
        refresh token works once; presenting one that was already used ends its session (someone else holds a
        copy). 400 for a token that is not valid (malformed, used, or its session ended, expired or revoked)."""
        if not settings.refresh_tokens_enabled:
            raise BadRequest(INVALID_REFRESH_TOKEN)
        expires = timedelta(minutes=settings.ACCESS_TOKEN_EXPIRE_MINUTES)
        # As at login: the session lasts as long as the longer of the tokens it hands out.
        lifetime = max(expires, timedelta(minutes=settings.REFRESH_TOKEN_EXPIRE_MINUTES))
        session, refresh = await users.refresh(data.refresh_token, settings.SECRET_KEY, lifetime)
        access = security.create_access_token(
            session.user_id, session.token_version, settings.SECRET_KEY, expires, refresh.session_id
        )
        return TokenPair(access_token=access, refresh_token=str(refresh), expires_in=int(expires.total_seconds()))

    @post("/login/test-token", status_code=200)
    async def test_token(self, current_user: NamedDependency[Caller]) -> UserPublic:
        """Test access token."""
        return current_user.public()

    @post(
        "/password-recovery/{email:str}",
        status_code=200,
        opt={EXCLUDE_FROM_AUTH: True},
        responses=error_responses({429: ["Too many recovery requests for this address or client"]}),
    )
    async def recover_password(
        self,
        request: Request[Any, Any, Any],
        users: NamedDependency[UserService],
        settings: NamedDependency[Settings],
        rate_limiter: NamedDependency[RateLimiter],
        outbox: NamedDependency[emails.Outbox],
        email: PathAddress,
    ) -> Message:
        """Password recovery. The answer is the same whether or not the address is registered."""
        await rate_limiter.reserve(
            Quota(identity_key("recovery:email", email_identity(email)), settings.RECOVERY_PER_EMAIL_PER_HOUR, HOUR),
            Quota(
                identity_key("recovery:client", client_address(request)), settings.RECOVERY_PER_CLIENT_PER_HOUR, HOUR
            ),
        )
        user = await users.get_by_email(email)
        # The token and the mail are made by the outbox, after the answer and apart from this connection's next
        # request, so that a known address is answered neither later nor followed by a slower answer.
        if user is not None and outbox.post(
            "reset_password", partial(send_recovery_email, settings, user.email, user.hashed_password)
        ):
            count_email("reset_password", "queued")
        return Message(message=RECOVERY_SENT)

    @post(
        "/reset-password",
        status_code=200,
        opt={EXCLUDE_FROM_AUTH: True},
        responses=error_responses({400: [INVALID_TOKEN, INACTIVE_USER]}),
    )
    async def reset_password(
        self, users: NamedDependency[UserService], settings: NamedDependency[Settings], data: JSONBody[NewPassword]
    ) -> Message:
        """Set a new password with a token from a recovery email. Each token works once."""
        try:
            email, fingerprint = security.decode_reset_token(data.token, settings.SECRET_KEY)
        except security.InvalidTokenError:
            raise BadRequest(INVALID_TOKEN) from None
        user = await users.get_by_email(email)
        if user is None or fingerprint != security.password_fingerprint(user.hashed_password, settings.SECRET_KEY):
            raise BadRequest(INVALID_TOKEN)
        if not user.is_active:
            raise BadRequest(INACTIVE_USER)
        await users.reset_password(user, data.new_password)
        return Message(message="Password updated successfully")

    @post(
        "/password-recovery-html-content/{email:str}",
        status_code=200,
        guards=[requires_superuser],
        media_type=MediaType.HTML,
        responses=error_responses({404: [UNKNOWN_USERNAME]}),
    )
    async def recover_password_html_content(
        self, users: NamedDependency[UserService], settings: NamedDependency[Settings], email: PathAddress
    ) -> Response[str]:
        """The HTML of the password recovery email (its subject in the `X-Email-Subject` header)."""
        user = await users.get_by_email(email)
        if user is None:
            raise NotFoundException(UNKNOWN_USERNAME)
        mail = emails.reset_password_email(
            settings, user.email, reset_token_for(settings, user.email, user.hashed_password)
        )
        return Response(
            mail.html, media_type=MediaType.HTML, headers={"X-Email-Subject": emails.http_header_value(mail.subject)}
        )


T = TypeVar("T")


async def counted_as_guess(
    rate_limiter: RateLimiter, settings: Settings, user_id: UUID, attempt: Coroutine[Any, Any, T]
) -> T:
    """A check of a one-time or recovery code (`attempt`), counted against the account's OTP_FAILURES quota: as at
    login, reserved before the check and refunded when it passed (a truthy result), so that concurrent guesses
    cannot all pass a check made before any of them is recorded. 429 when the quota is full (`attempt` not run)."""
    quota = Quota(identity_key("otp-fail:account", str(user_id)), settings.OTP_FAILURES_PER_ACCOUNT_PER_MINUTE, MINUTE)
    try:
        reservation = await rate_limiter.reserve(quota)
    except TooManyRequests:
        attempt.close()
        raise
    try:
        result = await attempt
    except Exception:
        await rate_limiter.refund(reservation)  # not a guess: the request was refused otherwise, or failed
        raise
    if result:
        await rate_limiter.refund(reservation)
    return result


async def check_second_factor(
    totp: TotpService, rate_limiter: RateLimiter, settings: Settings, user_id: UUID, data: LoginForm
) -> None:
    """A login's second factor, for an account that has one: 401 when it is missing or refused."""
    if data.otp is None and data.recovery_code is None:
        raise Unauthorized(OTP_REQUIRED)
    try:
        attempt = totp.verify(user_id, data.otp, data.recovery_code)
        used = await counted_as_guess(rate_limiter, settings, user_id, attempt)
    except TooManyRequests:
        audit(AuditEvent.LOGIN_OTP_FAILED, user_id=user_id, reason="locked_out")
        count_login("refused")
        raise
    if used is None:
        kind = "otp" if data.otp is not None else "recovery_code"
        audit(AuditEvent.LOGIN_OTP_FAILED, user_id=user_id, reason=kind)
        count_login("failed")
        raise Unauthorized(INVALID_OTP if kind == "otp" else INVALID_RECOVERY_CODE)
