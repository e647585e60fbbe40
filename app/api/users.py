from __future__ import annotations

from functools import partial
from typing import Any
from uuid import UUID

from litestar import Controller, Request, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from app import emails, security
from app.api.login import HOUR, PathAddress, client_address, counted_as_guess
from app.api.paging import Limit, Skip
from app.auth import CALLER, CHECKED_IN_WRITE, EXCLUDE_FROM_AUTH, NO_PAT, SUPERUSER, requires_superuser
from app.config import Settings
from app.errors import (
    EMAIL_TAKEN,
    EMAIL_VERIFICATION_OFF,
    INCORRECT_PASSWORD,
    INVALID_OTP,
    INVALID_TOKEN,
    NOT_ENOUGH_PRIVILEGES,
    NOT_WITH_PAT,
    SAME_PASSWORD,
    SUPERUSER_SELF_DELETE,
    TOKEN_NOT_FOUND,
    TOKEN_REVOKED,
    TOTP_ALREADY_ENABLED,
    TOTP_NOT_CONFIGURED,
    TOTP_NOT_ENABLED,
    TOTP_NOT_ENROLLED,
    UNKNOWN_USER_ID,
    USER_EXISTS,
    USER_NOT_FOUND,
    BadRequest,
    Rejected,
)
from app.openapi import error_responses
from app.ratelimit import Quota, RateLimiter, identity_key
from app.schemas import (
    Caller,
    Message,
    PersonalAccessTokenCreate,
    PersonalAccessTokenCreated,
    PersonalAccessTokensPublic,
    SessionsPublic,
    TotpConfirm,
    TotpDisable,
    TotpEnrolment,
    TotpRecoveryCodes,
    UpdatePassword,
    UserCreate,
    UserPublic,
    UserRegister,
    UsersPublic,
    UserUpdate,
    UserUpdateMe,
    VerifyEmail,
    changes,
)
from app.services import (
    READ_WITH_CALLER,
    SESSION_NOT_FOUND,
    SUPERUSER_SELF_DEACTIVATE,
    SUPERUSER_SELF_DEMOTE,
    USER_WITH_CALLER,
    PersonalAccessTokenService,
    SessionService,
    TotpService,
    UserService,
)
from db.identity import email_identity

USER_DELETED = "User deleted successfully"
EMAIL_VERIFIED = "Email verified"
VERIFICATION_SENT = "If that email is registered and not verified yet, we sent a verification link"
SESSION_ENDED = "Session ended"
OTHER_SESSIONS_ENDED = "Other sessions ended"
SESSIONS_ENDED = "Sessions ended"
# A superuser's routes about another user's sessions read that user with the caller (404 if there is none).
WITH_USER = {READ_WITH_CALLER: USER_WITH_CALLER}
# Changes that check their caller in their own statement (a rename, a deletion; app/services.py UserService).
CHANGE = {CHECKED_IN_WRITE: CALLER}
SUPERUSERS_CHANGE = {CHECKED_IN_WRITE: SUPERUSER}


class UsersController(Controller):
    path = "/users"
    tags = ["users"]

    @get("/", guards=[requires_superuser])
    async def read_users(self, users: NamedDependency[UserService], skip: Skip = 0, limit: Limit = 100) -> UsersPublic:
        """All users, newest first."""
        return await users.page(skip, limit)

    @post(
        "/",
        status_code=200,
        guards=[requires_superuser],
        responses=error_responses({400: [USER_EXISTS + "."]}),
    )
    async def create_user(
        self,
        users: NamedDependency[UserService],
        settings: NamedDependency[Settings],
        outbox: NamedDependency[emails.Outbox],
        data: JSONBody[UserCreate],
    ) -> UserPublic:
        """Create a user; they get a welcome email (never with their password) when mail is configured."""
        # The template's message here ends with a period; signup's does not.
        user = await users.create_account(changes(data), USER_EXISTS + ".")
        if settings.emails_enabled:
            mail = emails.new_account_email(settings, user.email)
            outbox.post("new_account", partial(emails.send_email, settings, user.email, mail))
        return user

    @get("/me")
    async def read_user_me(self, current_user: NamedDependency[Caller]) -> UserPublic:
        """The caller."""
        return current_user.public()

    @patch("/me", opt=CHANGE, responses=error_responses({403: [NOT_WITH_PAT + " (a new email)"], 409: [EMAIL_TAKEN]}))
    async def update_user_me(self, users: NamedDependency[UserService], data: JSONBody[UserUpdateMe]) -> UserPublic:
        """Change the caller's name or email. A personal access token may change the name only."""
        return await users.update_me(changes(data))

    @delete("/me", status_code=200, opt=CHANGE, responses=error_responses({403: [SUPERUSER_SELF_DELETE]}))
    async def delete_user_me(self, users: NamedDependency[UserService]) -> Message:
        """Delete the caller and their items."""
        await users.delete_me()
        return Message(message=USER_DELETED)

    @patch("/me/password", opt={NO_PAT: True}, responses=error_responses({400: [INCORRECT_PASSWORD, SAME_PASSWORD]}))
    async def update_password_me(
        self,
        request: Request[Caller, security.AccessToken, Any],
        users: NamedDependency[UserService],
        data: JSONBody[UpdatePassword],
    ) -> Message:
        """Change the caller's password. The caller's other sessions end; the token that made the change (the
        frontend keeps using it) stays valid, and so do the caller's personal access tokens. Not with a personal
        access token."""
        await users.change_own_password(data.current_password, data.new_password, request.auth)
        return Message(message="Password updated successfully")

    @get("/me/sessions", opt={NO_PAT: True})
    async def read_sessions_me(
        self, sessions: NamedDependency[SessionService], skip: Skip = 0, limit: Limit = 100
    ) -> SessionsPublic:
        """The caller's live sessions, newest first: one per login (and one, labelled "before sessions", for the
        tokens issued before sessions existed). `current` marks the session of the token that asks. A session is
        live until it is ended, expires, or a password change or deactivation ends it."""
        return await sessions.page(skip, limit)

    @delete("/me/sessions", status_code=200, opt={NO_PAT: True})
    async def delete_sessions_me(self, sessions: NamedDependency[SessionService]) -> Message:
        """End every session of the caller but the current one: their tokens (and refresh tokens) stop working at
        once, on every replica."""
        await sessions.end_all()
        return Message(message=OTHER_SESSIONS_ENDED)

    @delete(
        "/me/sessions/{session_id:str}",
        status_code=200,
        opt={NO_PAT: True},
        responses=error_responses({404: [SESSION_NOT_FOUND]}),
    )
    async def delete_session_me(self, sessions: NamedDependency[SessionService], session_id: FromPath[UUID]) -> Message:
        """End one of the caller's sessions (the current one too, which signs this token out): its token and
        refresh token stop working at once, on every replica. 404 for a session that is not the caller's, or has
        already ended or expired."""
        await sessions.end(session_id)
        return Message(message=SESSION_ENDED)

    @post("/me/tokens", status_code=200, opt={NO_PAT: True})
    async def create_personal_access_token(
        self, tokens: NamedDependency[PersonalAccessTokenService], data: JSONBody[PersonalAccessTokenCreate]
    ) -> PersonalAccessTokenCreated:
        """Make a personal access token for an SDK, a CLI or a CI job: sent as `Authorization: Bearer lsp_…`, it
        acts as the caller until it expires (`expires_in_days`, at most PAT_MAX_DAYS, 365 by default) or is revoked.
        Scope `read` (the default) may only read (GET); `read-write` may change too. No personal access token may
        make tokens, list or revoke them, change the password or the email. `token` is in this answer only: keep
        it in an environment variable or a secret store. Not with a personal access token."""
        return await tokens.create(data)

    @get("/me/tokens", opt={NO_PAT: True})
    async def read_personal_access_tokens(
        self, tokens: NamedDependency[PersonalAccessTokenService]
    ) -> PersonalAccessTokensPublic:
        """The caller's personal access tokens that are not revoked (expired ones too), newest first; never the
        tokens themselves. Not with a personal access token."""
        return await tokens.list()

    @delete(
        "/me/tokens/{token_id:str}",
        status_code=200,
        opt={NO_PAT: True},
        responses=error_responses({404: [TOKEN_NOT_FOUND]}),
    )
    async def revoke_personal_access_token(
        self, tokens: NamedDependency[PersonalAccessTokenService], token_id: FromPath[UUID]
    ) -> Message:
        """Revoke one of the caller's personal access tokens: it stops working at once. Not with a personal
        access token."""
        await tokens.revoke(token_id)
        return Message(message=TOKEN_REVOKED)

    @post(
        "/signup",
        status_code=200,
        opt={EXCLUDE_FROM_AUTH: True},
        responses=error_responses({400: [USER_EXISTS], 429: ["Too many signups from this client (when enabled)"]}),
    )
    async def register_user(
        self,
        request: Request[Any, Any, Any],
        users: NamedDependency[UserService],
        settings: NamedDependency[Settings],
        rate_limiter: NamedDependency[RateLimiter],
        data: JSONBody[UserRegister],
    ) -> UserPublic:
        """Create an account without logging in."""
        await rate_limiter.reserve(
            Quota(identity_key("signup:client", client_address(request)), settings.SIGNUP_PER_CLIENT_PER_HOUR, HOUR)
        )
        return await users.sign_up(changes(data), USER_EXISTS)

    @post(
        "/verify-email",
        status_code=200,
        opt={EXCLUDE_FROM_AUTH: True},
        responses=error_responses({400: [INVALID_TOKEN, EMAIL_VERIFICATION_OFF]}),
    )
    async def verify_email(
        self, users: NamedDependency[UserService], settings: NamedDependency[Settings], data: JSONBody[VerifyEmail]
    ) -> Message:
        """Verify an address with the token of a verification email (EMAIL_VERIFICATION on). Each token works
        once, for the address it was sent to."""
        if not settings.email_verification_enabled:
            raise BadRequest(EMAIL_VERIFICATION_OFF)
        await users.verify_email(data.token, settings.SECRET_KEY)
        return Message(message=EMAIL_VERIFIED)

    @post(
        "/verify-email/resend/{email:str}",
        status_code=200,
        opt={EXCLUDE_FROM_AUTH: True},
        responses=error_responses(
            {400: [EMAIL_VERIFICATION_OFF], 429: ["Too many verification requests for this address or client"]}
        ),
    )
    async def resend_verification_email(
        self,
        request: Request[Any, Any, Any],
        users: NamedDependency[UserService],
        settings: NamedDependency[Settings],
        rate_limiter: NamedDependency[RateLimiter],
        email: PathAddress,
    ) -> Message:
        """A new verification email (EMAIL_VERIFICATION on). The answer is the same whether or not the address is
        registered or verified."""
        if not settings.email_verification_enabled:
            raise BadRequest(EMAIL_VERIFICATION_OFF)
        # Limited as password recovery is (its settings), under keys of its own.
        await rate_limiter.reserve(
            Quota(identity_key("verify:email", email_identity(email)), settings.RECOVERY_PER_EMAIL_PER_HOUR, HOUR),
            Quota(identity_key("verify:client", client_address(request)), settings.RECOVERY_PER_CLIENT_PER_HOUR, HOUR),
        )
        await users.resend_verification(email)
        return Message(message=VERIFICATION_SENT)

    @get("/{user_id:str}", responses=error_responses({403: [NOT_ENOUGH_PRIVILEGES], 404: [USER_NOT_FOUND]}))
    async def read_user_by_id(self, users: NamedDependency[UserService], user_id: FromPath[UUID]) -> UserPublic:
        """A user: the caller themselves, or anyone for a superuser."""
        return await users.read(user_id)

    @patch(
        "/{user_id:str}",
        guards=[requires_superuser],
        # The user as they were (for the audit of what changed), read in the caller's own statement.
        opt={**WITH_USER, **SUPERUSERS_CHANGE},
        responses=error_responses(
            {
                403: [SUPERUSER_SELF_DEMOTE, SUPERUSER_SELF_DEACTIVATE, NOT_WITH_PAT + " (a new email or password)"],
                404: [UNKNOWN_USER_ID],
                409: [EMAIL_TAKEN],
            }
        ),
    )
    async def update_user(
        self, users: NamedDependency[UserService], user_id: FromPath[UUID], data: JSONBody[UserUpdate]
    ) -> UserPublic:
        """Update a user; a new password is hashed and revokes their tokens. A personal access token may not change
        an email or a password."""
        return await users.update(user_id, changes(data), UNKNOWN_USER_ID)

    @delete(
        "/{user_id:str}",
        status_code=200,
        guards=[requires_superuser],
        opt=SUPERUSERS_CHANGE,
        responses=error_responses({403: [SUPERUSER_SELF_DELETE], 404: [USER_NOT_FOUND]}),
    )
    async def delete_user(self, users: NamedDependency[UserService], user_id: FromPath[UUID]) -> Message:
        """Delete a user and their items."""
        await users.delete(user_id)
        return Message(message=USER_DELETED)

    @get(
        "/{user_id:str}/sessions",
        guards=[requires_superuser],
        opt={**WITH_USER, NO_PAT: True},
        responses=error_responses({403: [NOT_ENOUGH_PRIVILEGES], 404: [USER_NOT_FOUND]}),
    )
    async def read_user_sessions(
        self, sessions: NamedDependency[SessionService], user_id: FromPath[UUID], skip: Skip = 0, limit: Limit = 100
    ) -> SessionsPublic:
        """A user's live sessions, newest first (superusers only)."""
        return await sessions.page(skip, limit, user_id)

    @delete(
        "/{user_id:str}/sessions",
        status_code=200,
        guards=[requires_superuser],
        opt={**WITH_USER, NO_PAT: True},
        responses=error_responses({403: [NOT_ENOUGH_PRIVILEGES], 404: [USER_NOT_FOUND]}),
    )
    async def delete_user_sessions(self, sessions: NamedDependency[SessionService], user_id: FromPath[UUID]) -> Message:
        """End every session of a user (superusers only): all their tokens stop working at once, on every replica;
        they sign in again with their password."""
        await sessions.end_all(user_id)
        return Message(message=SESSIONS_ENDED)

    @delete(
        "/{user_id:str}/sessions/{session_id:str}",
        status_code=200,
        guards=[requires_superuser],
        opt={**WITH_USER, NO_PAT: True},
        responses=error_responses({403: [NOT_ENOUGH_PRIVILEGES], 404: [USER_NOT_FOUND, SESSION_NOT_FOUND]}),
    )
    async def delete_user_session(
        self, sessions: NamedDependency[SessionService], user_id: FromPath[UUID], session_id: FromPath[UUID]
    ) -> Message:
        """End one session of a user (superusers only): its token stops working at once, on every replica."""
        await sessions.end(session_id, user_id)
        return Message(message=SESSION_ENDED)


TOTP_DISABLED = "Two-factor authentication disabled"
TOTP_REMOVED = "Two-factor authentication removed"
# The answer to a wrong password or code when turning the factor off: which of the two was wrong is not said.
INCORRECT_PASSWORD_OR_CODE = f"{INCORRECT_PASSWORD} or one-time code"
TOO_MANY_CODES = "Too many wrong one-time codes for this account"
NOT_CONFIGURED = {503: [TOTP_NOT_CONFIGURED + " (TOTP_ENCRYPTION_KEY unset)"]}


class TotpController(Controller):
    """The TOTP second factor's routes (README "Two-factor authentication (TOTP)"). None with a personal access
    token: a second factor guards the account's credentials, which such a token never manages."""

    path = "/users"
    tags = ["users"]
    opt = {NO_PAT: True}

    @post(
        "/me/totp",
        status_code=200,
        responses=error_responses({409: [TOTP_ALREADY_ENABLED], **NOT_CONFIGURED}),
    )
    async def enrol_totp(self, totp: NamedDependency[TotpService]) -> TotpEnrolment:
        """Start setting up a second factor: a new TOTP secret (30-second steps, 6 digits, SHA-1) to give the
        authenticator app, by hand or as `otpauth_uri` (a QR code of it). Nothing changes at login until it is
        confirmed; enrolling again before that replaces the secret. 409 when a confirmed one exists."""
        return await totp.enrol()

    @post(
        "/me/totp/confirm",
        status_code=200,
        responses=error_responses(
            {
                400: [INVALID_OTP, TOTP_NOT_ENROLLED],
                409: [TOTP_ALREADY_ENABLED],
                429: [TOO_MANY_CODES],
                **NOT_CONFIGURED,
            }
        ),
    )
    async def confirm_totp(
        self,
        current_user: NamedDependency[Caller],
        totp: NamedDependency[TotpService],
        settings: NamedDependency[Settings],
        rate_limiter: NamedDependency[RateLimiter],
        data: JSONBody[TotpConfirm],
    ) -> TotpRecoveryCodes:
        """Turn the second factor on with the authenticator's current code: from now on a login needs a code too.
        The answer holds ten single-use recovery codes, each good for one login without the authenticator; they
        are shown this once (only their digests are kept)."""
        codes = await counted_as_guess(rate_limiter, settings, current_user.id, totp.confirm(data.code))
        if codes is None:
            raise Rejected(INVALID_OTP)
        return codes

    @post(
        "/me/totp/disable",
        status_code=200,
        responses=error_responses(
            {400: [INCORRECT_PASSWORD_OR_CODE, TOTP_NOT_ENABLED], 429: [TOO_MANY_CODES], **NOT_CONFIGURED}
        ),
    )
    async def disable_totp(
        self,
        current_user: NamedDependency[Caller],
        totp: NamedDependency[TotpService],
        settings: NamedDependency[Settings],
        rate_limiter: NamedDependency[RateLimiter],
        data: JSONBody[TotpDisable],
    ) -> Message:
        """Turn the caller's second factor off, with their password and a current code (or a recovery code); its
        secret and recovery codes are deleted."""
        attempt = totp.disable(data.password, data.code)
        if not await counted_as_guess(rate_limiter, settings, current_user.id, attempt):
            raise Rejected(INCORRECT_PASSWORD_OR_CODE)
        return Message(message=TOTP_DISABLED)

    @delete(
        "/{user_id:str}/totp",
        status_code=200,
        guards=[requires_superuser],
        responses=error_responses({404: [USER_NOT_FOUND, TOTP_NOT_ENABLED]}),
    )
    async def remove_user_totp(self, totp: NamedDependency[TotpService], user_id: FromPath[UUID]) -> Message:
        """Remove a user's second factor (superusers only), for one who lost their authenticator and their
        recovery codes: they log in with their password alone until they set up a new one."""
        await totp.remove(user_id)
        return Message(message=TOTP_REMOVED)
