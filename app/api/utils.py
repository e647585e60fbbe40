from __future__ import annotations

from typing import Annotated

from litestar import Controller, Response, get, post
from litestar.background_tasks import BackgroundTask
from litestar.di import NamedDependency
from litestar.exceptions import ValidationException
from litestar.params import Parameter
from sqlalchemy.ext.asyncio import AsyncSession

from app import emails
from app.auth import EXCLUDE_FROM_AUTH, requires_superuser
from app.config import Settings
from app.errors import DATABASE_UNAVAILABLE
from app.openapi import error_responses
from app.ratelimit import RateLimiter
from app.schemas import EMAIL_SCHEMA, Message, Readiness
from app.validation import InvalidEmail, normalize_email
from db.engine import ping


class UtilsController(Controller):
    path = "/utils"
    tags = ["utils"]

    @post("/test-email", status_code=201, guards=[requires_superuser])
    async def test_email(
        self,
        settings: NamedDependency[Settings],
        email_to: Annotated[str, Parameter(schema_extra=EMAIL_SCHEMA)],
    ) -> Response[Message]:
        """Send a test email."""
        try:
            address = normalize_email(email_to)
        except InvalidEmail:
            # app/errors.py words it, from this parameter's declared format.
            raise ValidationException(extra=[{"key": "email_to", "source": "query"}]) from None
        mail = emails.test_email(settings, address)
        return Response(
            Message(message="Test email sent"),
            status_code=201,
            background=BackgroundTask(emails.send_email, settings, address, mail),
        )

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
