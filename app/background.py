"""Small jobs done after a response, by tasks of the process's own: the request neither waits for them nor pays a
statement for them. Tracked, so that shutdown lets the running ones finish (for a few seconds at most). And the
periodic jobs (the sessions' pruning, the audit trail's writes), each a task of its own."""

from __future__ import annotations

import asyncio
import contextlib
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


class Periodic:
    """`job` run by a task of the process's own at start-up and then every `every` seconds (on_startup/on_shutdown).
    A stop ends the wait between runs at once but lets a run under way finish: cancelled half-way, a run that had
    taken work in hand (a batch of audit events being written) would lose it. The job logs its own failures; one
    it did not foresee is logged here and the next run goes on."""

    def __init__(self, name: str, job: Job, every: float) -> None:
        self.name, self.job, self.every = name, job, every
        self._task: asyncio.Task[None] | None = None
        self._stopping: asyncio.Event | None = None

    async def _run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            try:
                await self.job()
            except Exception:
                log.exception("periodic job failed", kind=self.name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), self.every)

    async def start(self) -> None:
        # The event of this start's loop (an app may be started again, in another loop: the tests).
        self._stopping = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(self._stopping), name=self.name)

    async def stop(self) -> None:
        """Ends the wait at once; a run under way gets DRAIN_SECONDS to finish (a database that hangs does not hold
        the shutdown), then is cancelled."""
        if self._task is not None and self._stopping is not None:
            self._stopping.set()
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._task, DRAIN_SECONDS)
            self._task = None
