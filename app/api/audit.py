from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

from litestar import Controller, get
from litestar.di import NamedDependency, Provide
from litestar.params import FromQuery, Parameter

from app.api.paging import Limit, Skip
from app.audit_store import AuditFilters, AuditService, provide_audit_service
from app.auth import requires_superuser
from app.errors import Unprocessable
from app.schemas import AuditEventsPublic
from app.validation import error

# An ISO 8601 date or date and time, as text: Litestar's own datetime parameter also takes a number (a timestamp),
# which is not what the document says.
IsoDateTime = Annotated[
    str | None,
    Parameter(
        pattern=r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:?\d{2})?)?$",
    ),
]


def parsed_datetime(name: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise Unprocessable(
            [error("datetime_parsing", ["query", name], "Input should be a valid datetime", value)]
        ) from None


class AuditController(Controller):
    path = "/audit"
    tags = ["audit"]
    dependencies = {"audit_service": Provide(provide_audit_service, sync_to_thread=False)}

    @get("/", guards=[requires_superuser])
    async def read_audit_events(
        self,
        audit_service: NamedDependency[AuditService],
        skip: Skip = 0,
        limit: Limit = 100,
        user_id: FromQuery[UUID | None] = None,
        event: FromQuery[str | None] = None,
        since: IsoDateTime = None,
        until: IsoDateTime = None,
    ) -> AuditEventsPublic:
        """Stored audit events, newest first: of one account (`user_id`, as subject or actor), of one `event`, from
        `since` to `until` (ISO 8601; UTC when without a zone). Stored only with AUDIT_STORE_ENABLED."""
        filters = AuditFilters(
            user_id=user_id,
            event=event,
            since=parsed_datetime("since", since),
            until=parsed_datetime("until", until),
        )
        return await audit_service.page(filters, skip, limit)
