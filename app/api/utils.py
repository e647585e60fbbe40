from __future__ import annotations

from typing import Annotated

from litestar import Controller, Response, get, post
from litestar.background_tasks import BackgroundTask
from litestar.di import NamedDependency
from litestar.params import Parameter

from app import emails
from app.auth import EXCLUDE_FROM_AUTH, requires_superuser
from app.config import Settings
from app.schemas import EMAIL_PATTERN, Message


class UtilsController(Controller):
    path = "/utils"
    tags = ["utils"]

    @post("/test-email", status_code=201, guards=[requires_superuser])
    async def test_email(
        self,
        settings: NamedDependency[Settings],
        email_to: Annotated[str, Parameter(pattern=EMAIL_PATTERN, max_length=255)],
    ) -> Response[Message]:
        """Send a test email."""
        mail = emails.test_email(settings, email_to)
        return Response(
            Message(message="Test email sent"),
            status_code=201,
            background=BackgroundTask(emails.send_email, settings, email_to, mail),
        )

    @get("/health-check", opt={EXCLUDE_FROM_AUTH: True}, cache=False)
    async def health_check(self) -> bool:
        """Liveness: the process answers. See `/utils/ready` for the database."""
        return True
