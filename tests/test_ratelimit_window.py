"""The limiter's window slides: a burst that straddles a minute boundary is still one burst."""

import asyncio

import pytest
from litestar.stores.memory import MemoryStore

from app import ratelimit
from app.ratelimit import RateLimiter, TooManyRequests


def test_the_limit_holds_across_a_window_boundary(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = {"now": 1_000_000 * 60 - 0.5}  # half a second before a whole minute
    monkeypatch.setattr(ratelimit.time, "time", lambda: clock["now"])
    limiter = RateLimiter(MemoryStore())

    async def scenario() -> None:
        for step in range(5):
            await limiter.check("k", 5, 60)
            await limiter.hit("k", 5, 60)
            clock["now"] += 0.25 if step < 4 else 0
        with pytest.raises(TooManyRequests) as blocked:
            await limiter.check("k", 5, 60)
        assert blocked.value.headers == {"Retry-After": "59"}  # the first of the five, a second ago, frees a slot
        clock["now"] += 61
        await limiter.check("k", 5, 60)
        disabled = RateLimiter(MemoryStore(), enabled=False)
        for _ in range(10):
            await disabled.take("k", 1, 60)

    asyncio.run(scenario())
