"""Breached passwords (README "Breached passwords"): a new password is looked up in a k-anonymity range API, in the
format Have I Been Pwned serves, before it is hashed.

Only the first 5 hex digits of the password's SHA-1 leave the process (`GET {base}/{prefix}`); the answer lists the
remaining 35 digits of every known hash with that prefix and how often each was seen (`SUFFIX:COUNT` lines), and is
compared here. With `Add-Padding: true` the range API adds lines of count 0, so that the answer's size does not tell
the prefix either; those are skipped. Neither the password nor any of its hash is ever logged."""

from __future__ import annotations

import asyncio
import hashlib
import re

import httpx
import structlog

from app.config import Settings
from app.errors import Unavailable, Unprocessable
from app.metrics import count_breach_check

log = structlog.get_logger("app.breach")

PREFIX_LENGTH = 5
_LINE = re.compile(r"([0-9A-Fa-f]{35}):([0-9]{1,12})")
# A padded answer is 800 to 1,000 lines (~40 KB): far more is no range answer, and is not read whole.
MAX_ANSWER_BYTES = 1024 * 1024
BREACHED = "This password has appeared in a data breach and must not be used: choose another one"
CHECK_UNAVAILABLE = "The password check is unavailable at the moment, please try again shortly"


class UnusableAnswer(Exception):
    """The range API answered, but not with a range (an error status, a body that is no list of counts)."""


def breach_check(settings: Settings) -> BreachCheck | None:
    """The app's check, or None when PASSWORD_BREACH_CHECK_URL is unset (off: nothing is sent)."""
    if settings.PASSWORD_BREACH_CHECK_URL is None:
        return None
    return BreachCheck(
        settings.PASSWORD_BREACH_CHECK_URL,
        settings.PASSWORD_BREACH_MIN_COUNT,
        settings.PASSWORD_BREACH_TIMEOUT_SECONDS,
        settings.PASSWORD_BREACH_FAIL_CLOSED,
    )


class BreachCheck:
    """The range API's client: one connection pool per app, opened at the first check, closed at shutdown."""

    def __init__(self, base_url: str, min_count: int, timeout: float, fail_closed: bool) -> None:
        self.base = base_url.rstrip("/")
        self.min_count = min_count
        self.timeout = timeout
        self.fail_closed = fail_closed
        self._client: httpx.AsyncClient | None = None

    async def check(self, password: str, field: str) -> None:
        """Refuses `password` (the body's `field`) with a 422 if the range API saw it at least `min_count` times.
        Without a usable answer in time it passes, unless failing closed (503)."""
        # SHA-1 is the range API's index, not a protection of the password.
        digest = hashlib.sha1(password.encode(), usedforsecurity=False).hexdigest().upper()
        prefix, suffix = digest[:PREFIX_LENGTH], digest[PREFIX_LENGTH:]
        try:
            # The whole exchange, however slowly a server trickles its answer (httpx's timeout is per read).
            async with asyncio.timeout(self.timeout):
                seen = await self._seen(prefix, suffix)
        except (httpx.HTTPError, OSError, TimeoutError, UnusableAnswer) as exc:
            count_breach_check("error")
            # Our own words or the error's type only: an HTTP library's message may quote the URL, which ends
            # with the prefix.
            reason = str(exc) if isinstance(exc, UnusableAnswer) else type(exc).__name__
            log.warning("password breach check failed", reason=reason, fail_closed=self.fail_closed)
            if self.fail_closed:
                raise Unavailable(CHECK_UNAVAILABLE) from None
            return
        if seen >= self.min_count:
            count_breach_check("breached")
            # pydantic's shape without `input`: the password is never echoed.
            raise Unprocessable([{"type": "password_breached", "loc": ["body", field], "msg": BREACHED}])
        count_breach_check("ok")

    async def _seen(self, prefix: str, suffix: str) -> int:
        """How often the range of `prefix` says the hash ending in `suffix` was seen (0 if it is not listed)."""
        async with self._http().stream("GET", f"{self.base}/{prefix}", headers={"Add-Padding": "true"}) as answer:
            if answer.status_code != 200:
                raise UnusableAnswer(f"status {answer.status_code}")
            body = bytearray()
            async for chunk in answer.aiter_bytes():  # decompressed: the bound holds for a gzip bomb too
                body += chunk
                if len(body) > MAX_ANSWER_BYTES:
                    raise UnusableAnswer(f"an answer over {MAX_ANSWER_BYTES} bytes")
        try:
            text = body.decode("ascii")
        except UnicodeDecodeError:
            raise UnusableAnswer("an answer that is not text") from None
        seen = 0
        for line in text.splitlines():  # CRLF-separated; a last empty line or none alike
            if not line.strip():
                continue
            match = _LINE.fullmatch(line.strip())
            if match is None:
                raise UnusableAnswer("an answer that is no list of SUFFIX:COUNT lines")
            if match[1].upper() == suffix:
                seen = int(match[2])  # 0 for a padding line, which never names a real hash
        return seen

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            # trust_env off: settings come from app/config.py only, not from proxy variables or ~/.netrc.
            self._client = httpx.AsyncClient(
                timeout=self.timeout,
                headers={"User-Agent": "accounts-api"},
                follow_redirects=False,
                trust_env=False,
            )
        return self._client

    async def close(self) -> None:
        """The app's on_shutdown hook."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None
