"""Sliding-window limits on a Litestar store: in memory per process, or shared through Redis (`REDIS_URL`)."""

from __future__ import annotations

import math
import time

import msgspec
from litestar.exceptions import HTTPException
from litestar.status_codes import HTTP_429_TOO_MANY_REQUESTS
from litestar.stores.base import Store

TOO_MANY_REQUESTS = "Too many requests, please try again later"


class TooManyRequests(HTTPException):
    status_code = HTTP_429_TOO_MANY_REQUESTS


class RateLimiter:
    """At most `limit` events per key in any `window` seconds (the times of recent events are kept, so the
    limit holds across window boundaries). A limit of 0 switches a check off.

    Read-modify-write without a lock: concurrent requests may slip one or two events past a limit, never more
    than the number of requests in flight for that key."""

    def __init__(self, store: Store, enabled: bool = True) -> None:
        self.store = store
        self.enabled = enabled

    async def _recent(self, key: str, window: int, now: float) -> list[float]:
        raw = await self.store.get(key)
        events = msgspec.json.decode(raw, type=list[float]) if raw else []
        return [moment for moment in events if moment > now - window]

    async def check(self, key: str, limit: int, window: int) -> None:
        """Raise 429 (with `Retry-After`) when `key` already had `limit` events in the last `window` seconds."""
        if not self.enabled or limit <= 0:
            return
        now = time.time()
        recent = await self._recent(key, window, now)
        if len(recent) >= limit:
            retry_after = math.ceil(recent[-limit] + window - now)
            raise TooManyRequests(TOO_MANY_REQUESTS, headers={"Retry-After": str(max(retry_after, 1))})

    async def hit(self, key: str, limit: int, window: int) -> None:
        """Record one event for `key`."""
        if not self.enabled or limit <= 0:
            return
        now = time.time()
        recent = [*await self._recent(key, window, now), now][-limit:]
        await self.store.set(key, msgspec.json.encode(recent), expires_in=window)

    async def take(self, key: str, limit: int, window: int) -> None:
        """Check, then record: for limits on every request rather than only on failures."""
        await self.check(key, limit, window)
        await self.hit(key, limit, window)
