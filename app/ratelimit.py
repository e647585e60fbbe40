"""Sliding-window limits, shared by every worker and replica through Redis (`REDIS_URL`), or kept per process.

An event is reserved atomically *before* the work it limits (a password check costs ~100 ms, and concurrent
guesses must not all pass a check made before any of them is recorded), and refunded when it should not count
(a successful login). When Redis does not answer within `REDIS_TIMEOUT_S`, limits are kept per process until it
does: logins degrade to per-worker limits, they never fail because Redis did. Each worker checks and records its
own events before Redis's shared ones, so a worker falling back (also when Redis is merely slow for a moment)
still counts what it already let through.

Keys are short and of one length whatever a request sent: a quota on an identity (an account, an address, a client)
is kept under its scope and the SHA-256 digest of the identity (`identity_key`), never the identity itself. A 900 KB
login username once made a 900 KB key per failure (Redis grew by that each time, its calls timed out, and the limits
fell back to per process); the form's bounds (app/schemas.py) keep such input out, and the digest keeps any key short.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import secrets
import time
from dataclasses import dataclass, field

import structlog
from litestar.exceptions import HTTPException
from litestar.status_codes import HTTP_429_TOO_MANY_REQUESTS
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.schemas import RateLimitMode

TOO_MANY_REQUESTS = "Too many requests, please try again later"
REDIS_TIMEOUT_S = 0.25
# After Redis failed, how long requests use the per-process limits before Redis is tried again: a hanging Redis
# then costs one request in this interval REDIS_TIMEOUT_S, not every request.
REDIS_RETRY_INTERVAL_S = 5.0

log = structlog.get_logger("app.ratelimit")

# Drop the events that left the window, refuse when `limit` remain, else record this one: all in one step.
# Returns nil when reserved, else the time of the event whose expiry frees the next slot.
_RESERVE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[1]) - tonumber(ARGV[2]))
local limit = tonumber(ARGV[3])
if redis.call('ZCARD', KEYS[1]) >= limit then
    return redis.call('ZRANGE', KEYS[1], -limit, -limit, 'WITHSCORES')[2]
end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2])))
return nil
"""


class TooManyRequests(HTTPException):
    status_code = HTTP_429_TOO_MANY_REQUESTS


# The longest key a quota keeps as given (`identity_key`'s are 64 characters and their scope): a longer one, which
# only a caller putting an identity into a key itself would make, is kept under its digest too.
KEY_MAX = 128


def identity_key(scope: str, identity: str) -> str:
    """The key of a quota on one identity: `scope:<SHA-256 hex of the identity>`, one length for any identity."""
    return f"{scope}:{hashlib.sha256(identity.encode('utf-8', 'surrogatepass')).hexdigest()}"


@dataclass(frozen=True)
class Quota:
    key: str
    limit: int
    window: int

    def __post_init__(self) -> None:
        if len(self.key) > KEY_MAX:
            object.__setattr__(self, "key", identity_key("digest", self.key))


@dataclass(frozen=True)
class Reservation:
    """Events recorded by one `reserve`, in the store that recorded them."""

    events: tuple[tuple[str, str], ...]  # (key, member)
    in_redis: bool


@dataclass
class _ProcessWindows:
    """The per-process store. No await between reading and writing: atomic within the event loop."""

    events: dict[str, list[tuple[float, str]]] = field(default_factory=dict)
    reserves_since_sweep: int = 0

    def reserve(self, key: str, limit: int, window: int, now: float, member: str) -> float | None:
        recent = [event for event in self.events.get(key, []) if event[0] > now - window]
        if len(recent) >= limit:
            self.events[key] = recent
            return recent[-limit][0]
        self.events[key] = [*recent, (now, member)]
        self._sweep(now, window)
        return None

    def refund(self, key: str, member: str) -> None:
        if key in self.events:
            self.events[key] = [event for event in self.events[key] if event[1] != member]

    def _sweep(self, now: float, window: int) -> None:
        """Forget keys with no recent events now and then, so that many one-off keys do not pile up."""
        self.reserves_since_sweep += 1
        if self.reserves_since_sweep < 1000:
            return
        self.reserves_since_sweep = 0
        self.events = {key: events for key, events in self.events.items() if events and events[-1][0] > now - window}


class RateLimiter:
    """At most `limit` events per key in any `window` seconds. A limit of 0 switches a check off."""

    def __init__(self, redis_url: str | None, namespace: str, enabled: bool = True) -> None:
        self.enabled = enabled
        self.namespace = namespace
        self.redis = (
            Redis.from_url(redis_url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S)
            if redis_url
            else None
        )
        self.process = _ProcessWindows()
        self.redis_retry_at = 0.0  # while in the future, Redis failed lately and the process limits apply
        # The last attempt to reach Redis failed, and none has succeeded since. Not the same as the retry time
        # having passed: Redis is tried again only by the next limited request, and until one finds it answering
        # the limits are still per process (a quiet service would otherwise report "redis" through an outage).
        self.redis_failing = False

    @property
    def mode(self) -> RateLimitMode:
        if not self.enabled:
            return "off"
        if self.redis is None:
            return "process"
        degraded = self.redis_failing or time.monotonic() < self.redis_retry_at
        return "process (redis unavailable)" if degraded else "redis"

    async def probe(self) -> RateLimitMode:
        """The mode, after trying Redis again if it failed and its retry is due: readiness then reports recovery
        on a service with no limited request to try it."""
        if self.enabled and self.redis is not None and self.redis_failing and time.monotonic() >= self.redis_retry_at:
            try:
                async with asyncio.timeout(REDIS_TIMEOUT_S):
                    await self.redis.ping()
                self.redis_failing = False
                log.info("redis answers again, rate limits shared")
            except (RedisError, OSError, TimeoutError):
                self.redis_retry_at = time.monotonic() + REDIS_RETRY_INTERVAL_S
        return self.mode

    async def reserve(self, *quotas: Quota) -> Reservation:
        """Record one event under each quota, or none at all and 429 (with `Retry-After`) when one is full."""
        active = [quota for quota in quotas if self.enabled and quota.limit > 0]
        # This worker's own events first: they are a part of what Redis holds, so a refusal here is one Redis
        # would give too, and they bound the worker on their own while Redis is away (or slow to answer).
        local = self._reserve_in_process(active)
        if not active or self.redis is None or time.monotonic() < self.redis_retry_at:
            return local
        try:
            async with asyncio.timeout(REDIS_TIMEOUT_S):
                await self._reserve_in_redis(self.redis, active, local)
        except TooManyRequests:
            await self.refund(local)
            raise
        except (RedisError, OSError, TimeoutError) as exc:
            self.redis_retry_at = time.monotonic() + REDIS_RETRY_INTERVAL_S
            self.redis_failing = True
            log.warning(
                "redis unavailable, rate limits kept per process",
                error=type(exc).__name__,
                retry_in_s=REDIS_RETRY_INTERVAL_S,
            )
            return local
        return Reservation(events=local.events, in_redis=True)

    async def refund(self, reservation: Reservation) -> None:
        """Take back the events of a reservation (they should not count: the login succeeded)."""
        for key, member in reservation.events:
            self.process.refund(key, member)
        if not reservation.in_redis or self.redis is None:
            return
        try:
            async with asyncio.timeout(REDIS_TIMEOUT_S):
                async with self.redis.pipeline(transaction=False) as pipe:
                    for key, member in reservation.events:
                        pipe.zrem(f"{self.namespace}:{key}", member)
                    await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            # The events expire with their window: at worst a success counts as a failure for a minute.
            log.warning("redis unavailable, a refund is lost", error=type(exc).__name__)

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()

    async def _reserve_in_redis(self, redis: Redis, quotas: list[Quota], local: Reservation) -> None:
        """The same events (same members) in Redis, shared by every worker; 429 when one quota is full there."""
        accepted: list[tuple[str, str]] = []
        for quota, (key, member) in zip(quotas, local.events, strict=True):
            now = time.time()
            oldest = await redis.eval(_RESERVE, 1, f"{self.namespace}:{key}", now, quota.window, quota.limit, member)
            self.redis_failing = False  # Redis answered: the limits are shared again
            if oldest is not None:
                await self.refund(Reservation(events=tuple(accepted), in_redis=True))
                raise _refusal(float(oldest), quota.window, now)
            accepted.append((key, member))

    def _reserve_in_process(self, quotas: list[Quota]) -> Reservation:
        events: list[tuple[str, str]] = []
        for quota in quotas:
            member, now = secrets.token_hex(8), time.time()
            oldest = self.process.reserve(quota.key, quota.limit, quota.window, now, member)
            if oldest is not None:
                for key, taken in events:
                    self.process.refund(key, taken)
                raise _refusal(oldest, quota.window, now)
            events.append((quota.key, member))
        return Reservation(events=tuple(events), in_redis=False)


def _refusal(oldest: float, window: int, now: float) -> TooManyRequests:
    retry_after = max(math.ceil(oldest + window - now), 1)
    return TooManyRequests(TOO_MANY_REQUESTS, headers={"Retry-After": str(retry_after)})
