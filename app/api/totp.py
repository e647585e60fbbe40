"""The TOTP second factor's routes (README "Two-factor authentication (TOTP)"), under the users tag. None of them
with a personal access token: a second factor guards the account's credentials, which such a token never manages."""

from __future__ import annotations

from uuid import UUID

from litestar import Controller, delete, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from app.api.login import counted_as_guess
from app.auth import NO_PAT, requires_superuser
from app.config import Settings
from app.errors import (
    INCORRECT_PASSWORD,
    INVALID_OTP,
    TOTP_ALREADY_ENABLED,
    TOTP_NOT_CONFIGURED,
    TOTP_NOT_ENABLED,
    TOTP_NOT_ENROLLED,
    USER_NOT_FOUND,
    Rejected,
)
from app.openapi import error_responses
from app.ratelimit import RateLimiter
from app.schemas import Caller, Message, TotpConfirm, TotpDisable, TotpEnrolment, TotpRecoveryCodes
from app.services import TotpService

TOTP_DISABLED = "Two-factor authentication disabled"
TOTP_REMOVED = "Two-factor authentication removed"
# The answer to a wrong password or code when turning the factor off: which of the two was wrong is not said.
INCORRECT_PASSWORD_OR_CODE = f"{INCORRECT_PASSWORD} or one-time code"
TOO_MANY_CODES = "Too many wrong one-time codes for this account"
NOT_CONFIGURED = {503: [TOTP_NOT_CONFIGURED + " (TOTP_ENCRYPTION_KEY unset)"]}


class TotpController(Controller):
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
