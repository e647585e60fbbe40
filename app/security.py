"""Password hashing (argon2id, off the event loop, legacy bcrypt accepted), JWT minting/verification, and the
format of personal access tokens (mint, parse, checksum)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import secrets
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from functools import cache, lru_cache
from typing import Any, NamedTuple
from uuid import UUID

import bcrypt
import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from argon2.profiles import CHEAPEST, RFC_9106_LOW_MEMORY

from db.models import legacy_session_id

ALGORITHM = "HS256"
# Replicas' clocks differ a little: a token issued by one a second "in the future" of another is still valid.
# PyJWT applies the leeway to expiry too: the decoders check `exp` again without it.
CLOCK_SKEW = timedelta(seconds=30)

# argon2-cffi's parameter profiles, by the name PASSWORD_HASH_PROFILE gives. CHEAPEST (argon2's minimum: a hash
# in microseconds) is for test suites only: app/config.py refuses it outside local.
HASH_PROFILES = {"RFC_9106_LOW_MEMORY": RFC_9106_LOW_MEMORY, "CHEAPEST": CHEAPEST}


def _lower_priority() -> None:
    """Hashing yields the CPU to request handling (the argon2 lane threads inherit this)."""
    os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


# Each argon2 hash takes 64 MiB and ~100 ms of CPU: one hashing thread per worker process (with one worker per
# core, about the core count in all), at a lower priority, so a login storm neither stalls other requests nor
# multiplies the memory. Measured in bench/RESULTS.md: users_me p99 during 4 concurrent logins 369 -> ~175 ms.
_hash_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="password-hash", initializer=_lower_priority)


class InvalidTokenError(Exception):
    """The token is malformed, forged, expired or of the wrong type."""


class Passwords:
    """Hashes new passwords with one argon2 profile and checks stored hashes of any (argon2 reads the parameters
    from the hash; the template's bcrypt hashes too). A match of another profile's hash asks for a new hash."""

    def __init__(self, profile: str) -> None:
        self._hasher = PasswordHasher.from_parameters(HASH_PROFILES[profile])
        # Verified against when the account does not exist, so unknown emails cost the same time as wrong passwords.
        self.dummy_hash = self._hash_sync("not-a-real-password-only-for-timing")

    def _hash_sync(self, password: str) -> str:
        return self._hasher.hash(password)

    def _verify_sync(self, password: str, hashed: str) -> tuple[bool, bool]:
        if hashed.startswith("$2"):
            try:
                return bcrypt.checkpw(password.encode()[:72], hashed.encode()), True
            except ValueError:
                return False, False
        try:
            self._hasher.verify(hashed, password)
        except (VerificationError, InvalidHashError):
            return False, False
        return True, self._hasher.check_needs_rehash(hashed)

    async def hash(self, password: str) -> str:
        return await asyncio.get_running_loop().run_in_executor(_hash_pool, self._hash_sync, password)

    async def verify(self, password: str, hashed: str) -> tuple[bool, bool]:
        """Whether `password` matches `hashed`, and whether the hash should be replaced by a fresh one."""
        return await asyncio.get_running_loop().run_in_executor(_hash_pool, self._verify_sync, password, hashed)


@cache
def passwords(profile: str) -> Passwords:
    """One per profile and process (its dummy hash costs a hash)."""
    return Passwords(profile)


def _encode(claims: dict[str, Any], secret: str, expires: timedelta) -> str:
    now = datetime.now(UTC)
    return jwt.encode({**claims, "iat": now, "exp": now + expires}, secret, algorithm=ALGORITHM)


def create_access_token(
    user_id: UUID, token_version: int, secret: str, expires: timedelta, session_id: UUID | None = None
) -> str:
    """`session_id`: the login's session (`sid`), which the token belongs to; without one it belongs to the user's
    legacy session, as the tokens minted before sessions."""
    # `jti` makes each login's token unique (two logins in one second would otherwise sign the same claims).
    claims = {"sub": str(user_id), "typ": "access", "ver": token_version, "jti": secrets.token_urlsafe(12)}
    if session_id is not None:
        claims["sid"] = str(session_id)
    return _encode(claims, secret, expires)


class AccessToken(NamedTuple):
    user_id: UUID
    version: int
    # Names this token (a digest of it): the legacy token that changed its own password keeps working by it.
    digest: str
    # The session it belongs to: its `sid`, or, for a token without one, the user's legacy session.
    session_id: UUID
    legacy: bool


def decode_access_token(token: str, secret: str, lifetime: timedelta) -> AccessToken:
    """The user id, token version and digest of a valid access token: signed with `secret`, unexpired, and living
    no longer than `lifetime` (ACCESS_TOKEN_EXPIRE_MINUTES), give or take the clock skew."""
    access, expires_at = _verified_access_token(token, secret, lifetime.total_seconds())
    if expires_at <= time.time():
        raise InvalidTokenError("expired")
    return access


# The template's access tokens carry exactly these claims (no type, no version): they are version 0, which is
# where every adopted account starts, so they work until the user's password changes or they are deactivated.
_TEMPLATE_ACCESS_CLAIMS = {"exp", "sub"}


@lru_cache(maxsize=4096)
def _verified_access_token(token: str, secret: str, lifetime: float) -> tuple[AccessToken, float]:
    """Signature and claims checked once per token string (a client sends the same token many times); expiry
    is checked on every use by the caller, and revocation against the database by the auth middleware.

    A token may not outlive `lifetime` seconds: its `exp` is at most `lifetime` after its `iat` and after now
    (give or take the clock skew), so that a signed `exp` a century ahead, or an `iat` pushed ahead with it, is
    refused. The template's tokens carry no `iat`: they are bounded by now only. (Checked when first seen: a
    token within `lifetime` of its expiry then stays so.)"""
    try:
        claims: dict[str, Any] = jwt.decode(
            token, secret, algorithms=[ALGORITHM], options={"require": ["exp", "sub"]}, leeway=CLOCK_SKEW
        )
    except jwt.PyJWTError as exc:
        raise InvalidTokenError(str(exc)) from None
    # Anything else the template signed (its reset tokens: an email as `sub`, and `nbf`) is never an access token.
    if claims.get("typ") != "access" and set(claims) != _TEMPLATE_ACCESS_CLAIMS:
        raise InvalidTokenError("not an access token")
    try:
        digest = hashlib.sha256(token.encode()).hexdigest()
        user_id = UUID(str(claims["sub"]))
        sid = claims.get("sid")
        session_id = UUID(str(sid)) if sid is not None else legacy_session_id(user_id)
        access = AccessToken(user_id, int(claims.get("ver", 0)), digest, session_id, sid is None)
        expires_at = float(claims["exp"])
        issued_at = min(float(claims.get("iat", time.time())), time.time())
    except (ValueError, TypeError):
        raise InvalidTokenError("malformed claims") from None
    if expires_at > issued_at + lifetime + CLOCK_SKEW.total_seconds():
        raise InvalidTokenError("lives longer than ACCESS_TOKEN_EXPIRE_MINUTES")
    return access, expires_at


def token_digest(secret: str) -> str:
    """What the database keeps of a token: its sha256, never the token."""
    return hashlib.sha256(secret.encode()).hexdigest()


def password_fingerprint(hashed_password: str, secret: str) -> str:
    """A short keyed digest of the current hash: a reset token carrying it dies when the password changes."""
    return hmac.new(secret.encode(), hashed_password.encode(), hashlib.sha256).hexdigest()[:32]


def create_reset_token(email: str, hashed_password: str, secret: str, expires: timedelta) -> str:
    claims = {"sub": email, "typ": "reset", "pwd": password_fingerprint(hashed_password, secret)}
    return _encode(claims, secret, expires)


def _decode_link_token(token: str, secret: str, typ: str, claim: str) -> dict[str, Any]:
    """The claims of a valid token of a mailed link: signed with `secret`, of type `typ`, unexpired, with `claim`."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            options={"require": ["exp", "iat", "sub", "typ", claim]},
            leeway=CLOCK_SKEW,
        )
    except jwt.PyJWTError as exc:
        raise InvalidTokenError(str(exc)) from None
    if claims["typ"] != typ:
        raise InvalidTokenError(f"not a {typ} token")
    if float(claims["exp"]) <= time.time():  # the leeway is for `iat` only
        raise InvalidTokenError("expired")
    return claims


def decode_reset_token(token: str, secret: str) -> tuple[str, str]:
    """The email and password fingerprint of a valid reset token (the template's reset tokens carry no type
    and no fingerprint: they are refused, see the README's cutover procedure)."""
    claims = _decode_link_token(token, secret, "reset", "pwd")
    return str(claims["sub"]), str(claims["pwd"])


def email_fingerprint(email: str, secret: str) -> str:
    """A short keyed digest of an address as stored: a verification token carrying it is good for that address
    only, so one sent before an email change is refused after it."""
    return hmac.new(secret.encode(), f"verify:{email}".encode(), hashlib.sha256).hexdigest()[:32]


def create_verify_token(user_id: UUID, email: str, secret: str, expires: timedelta) -> str:
    """The token of an email verification link: the account and a fingerprint of the address it was sent to."""
    claims = {"sub": str(user_id), "typ": "verify", "eml": email_fingerprint(email, secret)}
    return _encode(claims, secret, expires)


def decode_verify_token(token: str, secret: str) -> tuple[UUID, str]:
    """The user id and address fingerprint of a valid verification token."""
    claims = _decode_link_token(token, secret, "verify", "eml")
    try:
        return UUID(str(claims["sub"])), str(claims["eml"])
    except ValueError:
        raise InvalidTokenError("malformed claims") from None


def fingerprint_matches(fingerprint: str, email: str, secret: str) -> bool:
    return hmac.compare_digest(fingerprint.encode(), email_fingerprint(email, secret).encode())


class RefreshToken(NamedTuple):
    """`<session id>.<generation>.<secret>`; the secret is a random nonce and a keyed tag over all three, so that a
    token we never issued is told from an old one of ours (only an old one of ours ends its session as reused)."""

    session_id: UUID
    generation: int
    secret: str

    def __str__(self) -> str:
        return f"{self.session_id}.{self.generation}.{self.secret}"


def _tag(session_id: UUID, generation: int, nonce: str, key: str) -> str:
    message = f"refresh:{session_id}.{generation}.{nonce}".encode()
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()[:32]


def new_refresh_token(session_id: UUID, generation: int, key: str) -> RefreshToken:
    nonce = secrets.token_urlsafe(32)
    return RefreshToken(session_id, generation, f"{nonce}~{_tag(session_id, generation, nonce, key)}")


def parse_refresh_token(token: str, key: str) -> RefreshToken | None:
    """The token's parts if we issued it (whatever its age), None otherwise."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    session, generation, secret = parts
    nonce, _, tag = secret.partition("~")
    try:
        session_id, number = UUID(session), int(generation)
    except ValueError:
        return None
    if not (0 <= number < 2**31 and nonce and hmac.compare_digest(tag, _tag(session_id, number, nonce, key))):
        return None
    return RefreshToken(session_id, number, secret)


# ---------------------------------------------------------------- personal access tokens

# `lsp_` + 30 random base62 characters + the base62 CRC32 of those 30 (6 characters): a secret scanner recognises the
# prefix and checks the checksum offline, as it does for GitHub's `ghp_` tokens; we refuse a bad checksum without a
# database round trip. 30 base62 characters carry 178 bits of randomness.
PAT_PREFIX = "lsp_"
PAT_RANDOM_LENGTH = 30
PAT_CHECKSUM_LENGTH = 6  # 62**6 > 2**32: any CRC32 fits
PAT_LENGTH = len(PAT_PREFIX) + PAT_RANDOM_LENGTH + PAT_CHECKSUM_LENGTH
BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_BASE62_CHARACTERS = frozenset(BASE62)


def base62(number: int, width: int) -> str:
    """`number` in base62, most significant digit first, zero-padded to `width` characters."""
    digits = []
    while number:
        number, digit = divmod(number, 62)
        digits.append(BASE62[digit])
    return "".join(reversed(digits)).rjust(width, BASE62[0])


def pat_checksum(random_part: str) -> str:
    """The 6-character base62 CRC32 (zlib's, of the ASCII text) of a token's random part."""
    return base62(zlib.crc32(random_part.encode()), PAT_CHECKSUM_LENGTH)


def is_pat(token: str) -> bool:
    """Whether a bearer token claims to be a personal access token (by its prefix; it may still be malformed)."""
    return token.startswith(PAT_PREFIX)


def mint_pat() -> str:
    random_part = "".join(secrets.choice(BASE62) for _ in range(PAT_RANDOM_LENGTH))
    return PAT_PREFIX + random_part + pat_checksum(random_part)


def pat_digest(token: str) -> str:
    """What is stored of a token: the sha256 of its text, hex (a token has 178 random bits: no salt or stretching
    is needed, and the lookup by digest is an index read)."""
    return hashlib.sha256(token.encode()).hexdigest()


def parse_pat(token: str) -> str:
    """The digest of a well-formed personal access token (prefix, length, base62, checksum), or InvalidTokenError."""
    body = token.removeprefix(PAT_PREFIX)
    if len(token) != PAT_LENGTH or body == token or not _BASE62_CHARACTERS.issuperset(body):
        raise InvalidTokenError("not a personal access token")
    random_part, checksum = body[:PAT_RANDOM_LENGTH], body[PAT_RANDOM_LENGTH:]
    if not hmac.compare_digest(pat_checksum(random_part), checksum):
        raise InvalidTokenError("bad checksum")
    return pat_digest(token)


class PatAuth(NamedTuple):
    """`request.auth` of a request authenticated by a personal access token (a JWT's is an `AccessToken`)."""

    token_id: UUID
    scope: str
