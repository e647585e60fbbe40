"""Fixed-window counters on a Litestar store: in memory per process, or shared through Redis (`REDIS_URL`)."""

from __future__ import annotations

import time

from litestar.exceptions import HTTPException
from litestar.status_codes import HTTP_429_TOO_MANY_REQUESTS
from litestar.stores.base import Store

TOO_MANY_REQUESTS = "Too many requests, please try again later"


class TooManyRequests(HTTPException):
    status_code = HTTP_429_TOO_MANY_REQUESTS


class RateLimiter:
    """`limit` events per `window` seconds per key. A limit of 0 switches the check off."""

    def __init__(self, store: Store, enabled: bool = True) -> None:
        self.store = store
        self.enabled = enabled

    @staticmethod
    def _slot(key: str, window: int) -> tuple[str, int]:
        now = int(time.time())
        start = now - now % window
        return f"{key}:{start}", start + window - now

    async def check(self, key: str, limit: int, window: int) -> None:
        """Raise 429 (with `Retry-After`) when `key` has used up its events in the current window."""
        if not self.enabled or limit <= 0:
            return
        slot, retry_after = self._slot(key, window)
        used = await self.store.get(slot)
        if used is not None and int(used) >= limit:
            raise TooManyRequests(TOO_MANY_REQUESTS, headers={"Retry-After": str(max(retry_after, 1))})

    async def hit(self, key: str, limit: int, window: int) -> None:
        """Count one event for `key`."""
        if not self.enabled or limit <= 0:
            return
        slot, retry_after = self._slot(key, window)
        used = await self.store.get(slot)
        await self.store.set(slot, str(int(used or 0) + 1), expires_in=retry_after + 1)

    async def take(self, key: str, limit: int, window: int) -> None:
        """Check, then count: for limits on every request rather than only on failures."""
        await self.check(key, limit, window)
        await self.hit(key, limit, window)
