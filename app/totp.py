"""Time-based one-time passwords (RFC 6238 over RFC 4226's HOTP): 30-second steps, 6 digits, HMAC-SHA-1, which is
what authenticator apps read from an `otpauth://` URI. Pure functions: no clock of their own but `time.time()` as a
default, no storage; the caller keeps the last step it accepted so that a code works once."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import string
import time
from urllib.parse import quote, urlencode

STEP_SECONDS = 30
DIGITS = 6
# Steps either side of the current one that are accepted: a phone's clock a little off, a code typed as it turned.
WINDOW = 1
SECRET_BYTES = 20  # 160 bits, the length RFC 4226 recommends for HMAC-SHA-1
# Recovery codes: 10 characters of an alphabet without look-alikes (50 bits each), shown as `xxxxx-xxxxx`.
RECOVERY_ALPHABET = "".join(c for c in string.ascii_lowercase + string.digits if c not in "0o1il")
RECOVERY_LENGTH = 10


def new_secret() -> str:
    """A random secret, base32 without padding (as authenticator apps take it)."""
    return base64.b32encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii").rstrip("=")


def _secret_bytes(secret: str) -> bytes:
    padded = secret.upper() + "=" * (-len(secret) % 8)
    return base64.b32decode(padded)


def hotp(key: bytes, counter: int, digits: int = DIGITS) -> str:
    """RFC 4226 section 5.3: HMAC-SHA-1 of the counter, dynamically truncated to `digits` decimal digits."""
    mac = hmac.new(key, counter.to_bytes(8, "big"), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    value = int.from_bytes(mac[offset : offset + 4], "big") & 0x7FFFFFFF
    return str(value % 10**digits).zfill(digits)


def step_at(timestamp: float) -> int:
    return int(timestamp // STEP_SECONDS)


def code_at(secret: str, timestamp: float) -> str:
    """The code of a base32 `secret` at a Unix time."""
    return hotp(_secret_bytes(secret), step_at(timestamp))


def matching_step(secret: str, code: str, timestamp: float | None = None) -> int | None:
    """The step within WINDOW of now whose code is `code`, or None. Every candidate is compared, in constant time,
    so the answer's timing does not tell which step (if any) matched."""
    now = step_at(time.time() if timestamp is None else timestamp)
    key = _secret_bytes(secret)
    given = code.strip().encode("ascii", "replace")
    found = None
    for step in range(now - WINDOW, now + WINDOW + 1):
        if hmac.compare_digest(hotp(key, step).encode("ascii"), given):
            found = step
    return found


def otpauth_uri(secret: str, issuer: str, account: str) -> str:
    """The Key URI authenticator apps read (as a QR code or pasted): `otpauth://totp/{issuer}:{account}?...`."""
    label = quote(f"{issuer}:{account}", safe=":@")
    query = urlencode({"secret": secret, "issuer": issuer}, quote_via=quote)
    return f"otpauth://totp/{label}?{query}"


def new_recovery_code() -> str:
    code = "".join(secrets.choice(RECOVERY_ALPHABET) for _ in range(RECOVERY_LENGTH))
    return f"{code[:5]}-{code[5:]}"


def normalize_recovery_code(code: str) -> str:
    """What is hashed of a recovery code: case, spaces and dashes do not matter (people retype them)."""
    return "".join(c for c in code.lower() if c not in " -")


def looks_like_otp(code: str) -> bool:
    """A TOTP code (DIGITS digits) rather than a recovery code (RECOVERY_LENGTH characters): their lengths differ."""
    stripped = code.strip()
    return len(stripped) == DIGITS and stripped.isdigit()
