from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.exceptions import ValidationException
from litestar.params import Parameter
from litestar.status_codes import HTTP_502_BAD_GATEWAY
from sqlalchemy.ext.asyncio import AsyncSession

from app import emails
from app.auth import EXCLUDE_FROM_AUTH, requires_superuser
from app.config import Settings
from app.errors import DATABASE_UNAVAILABLE
from app.openapi import error_responses
from app.ratelimit import RateLimiter
from app.schemas import EMAIL_SCHEMA, HTTPError, Message, Readiness
from app.validation import InvalidEmail, normalize_email
from db.engine import ping

# [better]: the template answers 500 when its mail server refuses (or cannot be reached); we answered 201.
TEST_EMAIL_NOT_SENT = "Test email not sent: the mail server could not be reached or refused it"


def mail_not_sent(_: Request[Any, Any, Any], __: emails.MailNotSent) -> Response[HTTPError]:
    """502 (app/errors.py answers any 5xx exception as a 500): the mail server, not this service, failed."""
    return Response(HTTPError(detail=TEST_EMAIL_NOT_SENT), status_code=HTTP_502_BAD_GATEWAY)


class UtilsController(Controller):
    path = "/utils"
    tags = ["utils"]

    @post(
        "/test-email",
        status_code=201,
        guards=[requires_superuser],
        responses=error_responses({502: [TEST_EMAIL_NOT_SENT]}),
        exception_handlers={emails.MailNotSent: mail_not_sent},
    )
    async def test_email(
        self,
        settings: NamedDependency[Settings],
        email_to: Annotated[str, Parameter(schema_extra=EMAIL_SCHEMA)],
    ) -> Message:
        """Send a test email."""
        try:
            address = normalize_email(email_to)
        except InvalidEmail:
            # app/errors.py words it, from this parameter's declared format.
            raise ValidationException(extra=[{"key": "email_to", "source": "query"}]) from None
        # Sent before the answer, as the template does, so that the answer says whether the mail server took it: 502
        # when it could not be reached or refused it (its reason is logged), after SMTP_TIMEOUT_SECONDS at most.
        await emails.deliver(settings, address, emails.test_email(settings, address))
        return Message(message="Test email sent")

    @get("/health-check", opt={EXCLUDE_FROM_AUTH: True}, cache=False)
    async def health_check(self) -> bool:
        """Liveness: the process answers. See `/utils/ready` for the database."""
        return True

    @get(
        "/ready",
        opt={EXCLUDE_FROM_AUTH: True},
        cache=False,
        responses=error_responses({503: [DATABASE_UNAVAILABLE]}),
    )
    async def ready(
        self,
        settings: NamedDependency[Settings],
        db_session: NamedDependency[AsyncSession],
        rate_limiter: NamedDependency[RateLimiter],
    ) -> Readiness:
        """Readiness: 200 when the database answers, 503 until it does (for load balancers and orchestrators)."""
        await ping(db_session, settings.DB_CONNECT_TIMEOUT)
        return Readiness(rate_limits=await rate_limiter.probe())
