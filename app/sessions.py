"""Sessions' upkeep beside the requests: what a login records of its client, the `last_used_at` of each session
(written after the answer, at most once a minute), and the periodic pruning of sessions nothing will accept again."""

from __future__ import annotations

import asyncio
import ipaddress
from datetime import datetime
from uuid import UUID

import structlog

from app.background import Periodic
from app.services import TOUCH_EVERY, SessionRepository
from db.executor import Executor
from db.models import utc_now

log = structlog.get_logger("app.sessions")

LABEL_MAX = 100
PRUNE_EVERY_SECONDS = 600.0


def session_label(user_agent: str) -> str:
    """The client's User-Agent, shortened to what the column holds (printable characters only)."""
    shown = "".join(character for character in user_agent if character.isprintable()).strip()
    return shown if len(shown) <= LABEL_MAX else shown[: LABEL_MAX - 1] + "…"


def client_network(address: str) -> str:
    """The client's address masked: its IPv4 /24 or IPv6 /48 (an IPv4-mapped IPv6 address as IPv4), "" if it is
    none (a Unix socket, a test client)."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return ""
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        parsed = parsed.ipv4_mapped
    prefix = 24 if parsed.version == 4 else 48
    return str(ipaddress.ip_network(f"{parsed}/{prefix}", strict=False))


class Touches:
    """`last_used_at` of the sessions in use, written by tasks of the process's own after the answer (never in the
    request's statements): each session at most once a minute (the auth middleware asks only when the value it read
    is older than that, and the UPDATE itself checks again, for the other replicas)."""

    def __init__(self, fast: Executor) -> None:
        self.fast = fast
        self._pending: set[UUID] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def post(self, session_id: UUID) -> None:
        if session_id in self._pending:
            return
        self._pending.add(session_id)
        task = asyncio.get_running_loop().create_task(self._touch(session_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _touch(self, session_id: UUID) -> None:
        try:
            now = utc_now()
            await SessionRepository.touch(self.fast, session_id, now, now - TOUCH_EVERY)
        except Exception as exc:  # a lost touch is harmless: the next request asks again
            log.warning("session last_used_at not written", error=type(exc).__name__)
        finally:
            self._pending.discard(session_id)

    async def close(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


async def prune(fast: Executor, now: datetime | None = None, limit: int | None = None) -> int:
    """One pruning run: deletes at most `limit` (1000) ended, expired or revoked sessions; how many it deleted."""
    if limit is None:
        return await SessionRepository.prune(fast, now or utc_now())
    return await SessionRepository.prune(fast, now or utc_now(), limit)


class Pruner:
    """Prunes sessions once at start-up and every `every` seconds after (on_startup/on_shutdown), each run bounded:
    a backlog is worked off a batch per run, never in one long statement. Every replica prunes; their runs delete
    different rows or none."""

    def __init__(self, fast: Executor, every: float = PRUNE_EVERY_SECONDS) -> None:
        self.fast = fast
        self._periodic = Periodic("session-pruner", self._prune, every)

    async def start(self) -> None:
        await self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()

    async def _prune(self) -> None:
        try:
            deleted = await prune(self.fast)
            if deleted:
                log.info("sessions pruned", deleted=deleted)
        except Exception as exc:  # the database may be away: the next run tries again
            log.warning("sessions not pruned", error=type(exc).__name__)
