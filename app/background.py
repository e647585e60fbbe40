"""Small jobs done after a response, by tasks of the process's own: the request neither waits for them nor pays a
statement for them. Tracked, so that shutdown lets the running ones finish (for a few seconds at most)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

log = structlog.get_logger("app.background")

Job = Callable[[], Coroutine[Any, Any, None]]
# Jobs running at once, per worker process: beyond, a job is dropped (what they do may be skipped: the next
# request does it again) rather than piling up while the database is slow.
BACKGROUND_LIMIT = 1000
DRAIN_SECONDS = 5.0


class Background:
    def __init__(self, limit: int = BACKGROUND_LIMIT, drain_seconds: float = DRAIN_SECONDS) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self._limit, self._drain_seconds = limit, drain_seconds

    def post(self, kind: str, job: Job) -> bool:
        """Start `job` (in a copy of the caller's context: its request id in the logs); False if it was dropped."""
        if len(self._tasks) >= self._limit:
            log.warning("background job dropped: too many running", kind=kind, limit=self._limit)
            return False
        task = asyncio.create_task(self._run(kind, job), name=f"background-{kind}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _run(self, kind: str, job: Job) -> None:
        try:
            await job()
        except Exception:  # a job's failure is logged, never raised into the event loop's handler
            log.exception("background job failed", kind=kind)

    async def close(self) -> None:
        """Let the running jobs finish, for `drain_seconds` at most, then cancel the rest."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=self._drain_seconds)
        for task in set(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
