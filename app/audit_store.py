"""The audit trail (README "Audit trail"): the audit events (app/audit.py) also stored, in the table `audit_event`.

A request only appends its events to this process's buffer; a task of the process's own writes them in batches
every AUDIT_FLUSH_SECONDS (never a statement of the request's), and once more on shutdown, so a graceful stop
loses none. The buffer is bounded: while the database is away, events beyond it are dropped (their log lines
remain). The same task prunes the events older than AUDIT_RETENTION_DAYS, a bounded batch per run."""

from __future__ import annotations

import asyncio
from collections import deque
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any
from uuid import UUID

import msgspec
import structlog
from litestar import Request
from litestar.types import ASGIApp, Receive, Scope, Send
from sqlalchemy import Select, and_, bindparam, delete, func, insert, or_, select, true
from uuid_utils.compat import uuid7

from app.audit import SINK
from app.background import Periodic
from app.schemas import AuditEventPublic, AuditEventsPublic
from db.executor import Executor, columns
from db.models import AuditRecord, utc_now

log = structlog.get_logger("app.audit_store")

BUFFER_LIMIT = 10_000
WRITE_BATCH = 500
PRUNE_BATCH = 1000
PRUNE_EVERY_SECONDS = 600.0


class AuditRow(msgspec.Struct):
    id: UUID
    created_at: datetime
    event: str
    subject_id: UUID | None
    actor_id: UUID | None
    details: str


class AuditFilters(msgspec.Struct, frozen=True):
    user_id: UUID | None = None
    event: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def _utc(moment: datetime | None) -> datetime | None:
    """A filter's time; one without a zone is taken as UTC (the column holds UTC)."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


class AuditRepository:
    """The audit trail's statements: fast ones for the reads and the pruning, a Core executemany for the batches."""

    _NEWEST_FIRST = (AuditRecord.created_at.desc(), AuditRecord.id.desc())
    INSERT = insert(AuditRecord)
    PRUNE = (
        delete(AuditRecord)
        .where(
            AuditRecord.id.in_(
                select(AuditRecord.id)
                .where(AuditRecord.created_at < bindparam("cutoff"))
                .order_by(AuditRecord.created_at)
                .limit(bindparam("limit"))
                .scalar_subquery()
            )
        )
        .returning(AuditRecord.id)
    )

    @staticmethod
    def _where(names: tuple[str, ...]) -> Any:
        conditions = {
            "user_id": or_(
                AuditRecord.subject_id == bindparam("user_id"), AuditRecord.actor_id == bindparam("user_id")
            ),
            "event": AuditRecord.event == bindparam("event"),
            "since": AuditRecord.created_at >= bindparam("since"),
            "until": AuditRecord.created_at <= bindparam("until"),
        }
        return and_(true(), *(conditions[name] for name in names))

    @classmethod
    @cache
    def page_statements(cls, names: tuple[str, ...]) -> tuple[Select[Any], Select[Any]]:
        """The page (each row with the filtered total) and the count, for the filters `names` given: one pair of
        statement objects per combination, compiled once each."""
        where = cls._where(names)
        page = (
            select(*columns(AuditRecord, AuditRow), func.count().over().label("total"))
            .where(where)
            .order_by(*cls._NEWEST_FIRST)
            .limit(bindparam("limit"))
            .offset(bindparam("skip"))
        )
        return page, select(func.count()).select_from(AuditRecord).where(where)

    @classmethod
    async def read_page(
        cls, fast: Executor, filters: AuditFilters, skip: int, limit: int
    ) -> tuple[list[AuditRow], int]:
        params = {
            "user_id": filters.user_id,
            "event": filters.event,
            "since": _utc(filters.since),
            "until": _utc(filters.until),
        }
        given = {name: value for name, value in params.items() if value is not None}
        page, count = cls.page_statements(tuple(given))
        return await fast.page(AuditRow, page, count, given, skip, limit)

    @classmethod
    async def write(cls, fast: Executor, rows: list[dict[str, Any]]) -> None:
        async with fast.engine.begin() as connection:
            await connection.execute(cls.INSERT, rows)

    @classmethod
    async def prune(cls, fast: Executor, cutoff: datetime, limit: int = PRUNE_BATCH) -> int:
        return len(await fast.rows(cls.PRUNE, {"cutoff": cutoff, "limit": limit}))


class AuditService:
    def __init__(self, fast: Executor) -> None:
        self.fast = fast

    async def page(self, filters: AuditFilters, skip: int, limit: int) -> AuditEventsPublic:
        rows, count = await AuditRepository.read_page(self.fast, filters, skip, limit)
        events = [
            AuditEventPublic(
                id=row.id,
                created_at=row.created_at,
                event=row.event,
                subject_id=row.subject_id,
                actor_id=row.actor_id,
                details=msgspec.json.decode(row.details),
            )
            for row in rows
        ]
        return AuditEventsPublic(data=events, count=count)


def provide_audit_service(request: Request[Any, Any, Any]) -> AuditService:
    return AuditService(request.app.state.executor)


class AuditStore:
    """This process's buffer of events to store, and the task that writes and prunes them (on_startup/on_shutdown)."""

    def __init__(
        self,
        fast: Executor,
        flush_seconds: float,
        retention_days: int,
        buffer_limit: int = BUFFER_LIMIT,
        prune_every: float = PRUNE_EVERY_SECONDS,
    ) -> None:
        self.fast = fast
        self.flush_seconds = flush_seconds
        self.retention = timedelta(days=retention_days) if retention_days else None
        self.prune_every = prune_every
        self._buffer: deque[dict[str, Any]] = deque()
        self._limit = buffer_limit
        self._dropped = 0
        self._next_prune = float("-inf")
        self._periodic = Periodic("audit-store", self._flush_and_prune, flush_seconds)

    def record(self, event: str, subject_id: UUID | None, actor_id: UUID | None, fields: dict[str, Any]) -> None:
        """app/audit.py's sink: the event joins the buffer (the request pays no statement for it)."""
        if len(self._buffer) >= self._limit:
            self._dropped += 1
            return
        self._buffer.append(
            {
                "id": uuid7(),
                "created_at": utc_now(),
                "event": event,
                "subject_id": subject_id,
                "actor_id": actor_id,
                "details": msgspec.json.encode(fields).decode(),
            }
        )

    def wrap(self, handler: ASGIApp) -> ASGIApp:
        """The app's ASGI handler, with this store as the audit sink of everything it runs (and the tasks those
        start, which copy the context)."""

        async def with_sink(scope: Scope, receive: Receive, send: Send) -> None:
            token = SINK.set(self.record)
            try:
                await handler(scope, receive, send)
            finally:
                SINK.reset(token)

        return with_sink

    async def flush(self) -> int:
        """Writes the buffer, a batch per statement; how many it wrote. A failed batch goes back to the front of the
        buffer (within its bound) for the next flush."""
        if self._dropped:
            log.warning("audit events not stored: buffer full", dropped=self._dropped, limit=self._limit)
            self._dropped = 0
        written = 0
        while self._buffer:
            batch = [self._buffer.popleft() for _ in range(min(WRITE_BATCH, len(self._buffer)))]
            try:
                await AuditRepository.write(self.fast, batch)
            except Exception as exc:  # the database may be away: kept for the next flush
                self._buffer.extendleft(reversed(batch[: max(0, self._limit - len(self._buffer))]))
                log.warning("audit events not stored yet", error=type(exc).__name__, pending=len(self._buffer))
                break
            written += len(batch)
        return written

    async def prune(self, now: datetime | None = None) -> int:
        """One pruning run: at most a batch of the events older than the retention; how many it deleted."""
        if self.retention is None:
            return 0
        return await AuditRepository.prune(self.fast, (now or utc_now()) - self.retention)

    async def _flush_and_prune(self) -> None:
        """One run of the store's task: the buffer written, and, every `prune_every` seconds, a pruning run."""
        await self.flush()
        now = asyncio.get_running_loop().time()
        if now < self._next_prune:
            return
        self._next_prune = now + self.prune_every
        try:
            deleted = await self.prune()
            if deleted:
                log.info("audit events pruned", deleted=deleted)
        except Exception as exc:  # the next run tries again
            log.warning("audit events not pruned", error=type(exc).__name__)

    async def start(self) -> None:
        self._next_prune = float("-inf")  # the first run prunes
        await self._periodic.start()

    async def stop(self) -> None:
        """Stops the task (a batch being written is finished), then writes what is left (run before the other
        shutdown steps, while the database is)."""
        await self._periodic.stop()
        await self.flush()
