"""The limiter's window slides: a burst that straddles a minute boundary is still one burst."""

import asyncio

import pytest

from app import ratelimit
from app.ratelimit import Quota, RateLimiter, TooManyRequests


def test_the_limit_holds_across_a_window_boundary(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = {"now": 1_000_000 * 60 - 0.5}  # half a second before a whole minute
    monkeypatch.setattr(ratelimit.time, "time", lambda: clock["now"])
    limiter = RateLimiter(None, "test")
    quota = Quota("k", 5, 60)

    async def scenario() -> None:
        for step in range(5):
            await limiter.reserve(quota)
            clock["now"] += 0.25 if step < 4 else 0
        with pytest.raises(TooManyRequests) as blocked:
            await limiter.reserve(quota)
        assert blocked.value.headers == {"Retry-After": "59"}  # the first of the five, a second ago, frees a slot
        clock["now"] += 61
        await limiter.reserve(quota)
        disabled = RateLimiter(None, "test", enabled=False)
        for _ in range(10):
            await disabled.reserve(Quota("k", 1, 60))

    asyncio.run(scenario())


def test_a_refused_reservation_takes_nothing_and_a_refund_gives_back() -> None:
    limiter = RateLimiter(None, "test")

    async def scenario() -> None:
        full, other = Quota("full", 1, 60), Quota("other", 1, 60)
        await limiter.reserve(full)
        with pytest.raises(TooManyRequests):
            await limiter.reserve(other, full)
        refundable = await limiter.reserve(other)  # the refused reservation did not keep its `other` event
        await limiter.refund(refundable)
        await limiter.reserve(other)

    asyncio.run(scenario())
