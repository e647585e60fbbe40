from __future__ import annotations

from datetime import datetime
from uuid import UUID

from litestar import Controller, get
from litestar.di import NamedDependency, Provide
from litestar.params import FromQuery

from app.api.paging import Limit, Skip
from app.audit_store import AuditFilters, AuditService, provide_audit_service
from app.auth import requires_superuser
from app.schemas import AuditEventsPublic


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
        since: FromQuery[datetime | None] = None,
        until: FromQuery[datetime | None] = None,
    ) -> AuditEventsPublic:
        """Stored audit events, newest first: of one account (`user_id`, as subject or actor), of one `event`, from
        `since` to `until` (ISO 8601; UTC when without a zone). Stored only with AUDIT_STORE_ENABLED."""
        filters = AuditFilters(user_id=user_id, event=event, since=since, until=until)
        return await audit_service.page(filters, skip, limit)
