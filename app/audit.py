"""Audit events: one structured log line per security-relevant action, on the `app.audit` logger, named by a
stable `event` (README "Audit events"). They name accounts by id; an address that names no known account is logged
by its domain only. Never a password, token, hash or reset link."""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from enum import StrEnum
from typing import Any
from uuid import UUID

import structlog

log = structlog.get_logger("app.audit")


class AuditEvent(StrEnum):
    LOGIN_SUCCEEDED = "login.succeeded"
    LOGIN_FAILED = "login.failed"
    LOGIN_LOCKED_OUT = "login.locked_out"
    PASSWORD_CHANGED = "password.changed"
    PASSWORD_RESET = "password.reset"
    TOKENS_REVOKED = "tokens.revoked"
    SESSION_CREATED = "session.created"
    SESSION_ENDED = "session.ended"
    SESSION_REFRESHED = "session.refreshed"
    SESSION_REFRESH_REUSED = "session.refresh_reused"
    USER_CREATED = "user.created"
    USER_UPDATED = "user.updated"
    USER_DELETED = "user.deleted"
    SUPERUSER_GRANTED = "superuser.granted"
    SUPERUSER_REVOKED = "superuser.revoked"
    PAT_CREATED = "pat.created"
    PAT_FIRST_USED = "pat.first_used"
    PAT_REVOKED = "pat.revoked"
    EMAIL_VERIFICATION_SENT = "email.verification_sent"
    EMAIL_VERIFIED = "email.verified"
    TOTP_ENABLED = "totp.enabled"
    TOTP_DISABLED = "totp.disabled"
    TOTP_REMOVED = "totp.removed"
    LOGIN_OTP_FAILED = "login.otp_failed"
    RECOVERY_CODE_USED = "recovery_code.used"


# Where the app that serves the request keeps its events too (app/audit_store.py), when it stores them: set for each
# request by that app, so two apps in one process (the tests) each store their own.
Sink = Callable[[str, UUID | None, UUID | None, dict[str, Any]], None]
SINK: ContextVar[Sink | None] = ContextVar("audit_sink", default=None)


def audit(event: AuditEvent, *, user_id: UUID | None = None, actor_id: UUID | None = None, **fields: Any) -> None:
    """`user_id`: the account acted on; `actor_id`: who acted (None for the account itself or nobody signed in)."""
    sink = SINK.get()
    if sink is not None:
        sink(event.value, user_id, actor_id, fields)
    log.info(
        event.value,
        audit=True,
        subject_id=str(user_id) if user_id else None,
        actor_id=str(actor_id) if actor_id else None,
        **fields,
    )


# The longest domain name (RFC 1035): anything longer after an @-sign is not one, and is not logged.
DOMAIN_MAX = 253


def email_domain(address: str) -> str:
    """The domain of an address, or "" for a username that has none: a login's free text without an @-sign (a name,
    a password typed in the wrong field) or with something too long to be a domain after it is never logged."""
    _, at, domain = address.rpartition("@")
    domain = domain.strip().lower()
    return domain if at and len(domain) <= DOMAIN_MAX else ""
