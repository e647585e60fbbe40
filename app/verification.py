"""Email verification (README "Email verification"): the mail with a link that proves an address is its account's,
sent after the answer."""

from __future__ import annotations

from datetime import timedelta
from functools import partial
from uuid import UUID

from app import emails, security
from app.audit import AuditEvent, audit
from app.config import Settings


def verify_token_for(settings: Settings, user_id: UUID, email: str) -> str:
    expires = timedelta(hours=settings.EMAIL_VERIFY_TOKEN_EXPIRE_HOURS)
    return security.create_verify_token(user_id, email, settings.SECRET_KEY, expires)


async def send_verification_email(settings: Settings, user_id: UUID, email: str) -> None:
    mail = emails.verify_email_email(settings, email, verify_token_for(settings, user_id, email))
    await emails.send_email(settings, email, mail)


class EmailVerification:
    """Sends the links, when EMAIL_VERIFICATION is not off (app/main.py makes one then). The token and the mail are
    made by the outbox after the answer, as a recovery mail's: a resend for a known address is answered no later."""

    def __init__(self, settings: Settings, outbox: emails.Outbox) -> None:
        self.settings = settings
        self.outbox = outbox

    def send(self, user_id: UUID, email: str, reason: str) -> None:
        """A link for `email`, the account's current address. `reason`: `signup`, `email_changed` or `resend`."""
        if self.outbox.post("verify_email", partial(send_verification_email, self.settings, user_id, email)):
            audit(AuditEvent.EMAIL_VERIFICATION_SENT, user_id=user_id, reason=reason)
