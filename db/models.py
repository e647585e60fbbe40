"""Persistence models. Tables and columns match the template's, so its database can be adopted."""

from __future__ import annotations

from contextvars import ContextVar
from datetime import UTC, datetime
from uuid import UUID, uuid5

from advanced_alchemy.base import AdvancedDeclarativeBase, CommonTableAttributes
from advanced_alchemy.types import GUID, DateTimeUTC, EncryptedString
from advanced_alchemy.types.encrypted_string import FernetBackend
from sqlalchemy import Boolean, Column, ForeignKey, Index, Integer, String, Table, Text, false, true
from sqlalchemy.ext.asyncio import AsyncAttrs
from sqlalchemy.orm import Mapped, mapped_column, validates
from uuid_utils.compat import uuid7

from db.identity import email_identity

# Access tokens minted without a session id (the template's, and ours from before sessions) belong to their user's
# one legacy session, whose id is derived from the user's: migration 0007 made one per user that existed then.
LEGACY_SESSION_NAMESPACE = UUID("5b0d7f3e-6c8a-4a43-9e51-0f2d3c4b5a69")
LEGACY_SESSION_LABEL = "before sessions"


def legacy_session_id(user_id: UUID) -> UUID:
    return uuid5(LEGACY_SESSION_NAMESPACE, f"legacy:{user_id}")


# The longest key a storable email can have: 64 characters before the @ (email-validator's limit), each expanding to
# at most 18 under NFKC (U+FDFA), plus the domain; about 2,400 bytes, within PostgreSQL's btree entry limit.
EMAIL_KEY_LENGTH = 1536


def utc_now() -> datetime:
    return datetime.now(UTC)


class Row(CommonTableAttributes, AdvancedDeclarativeBase, AsyncAttrs):
    """Table name from the class name, a creation time; the primary key is the table's own (see `Base`)."""

    __abstract__ = True

    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), default=utc_now, sort_order=100)


class Base(Row):
    """A UUID primary key (time-ordered v7: compact, append-only inserts)."""

    __abstract__ = True

    id: Mapped[UUID] = mapped_column(GUID, primary_key=True, default=uuid7, sort_order=-100)


class User(Base):
    __table_args__ = (
        Index("ix_user_created_at", "created_at"),
        # One account per identity (db/identity.py); lookups by email compare this column, so they use this index.
        Index("ix_user_email_key", "email_key", unique=True),
    )

    email: Mapped[str] = mapped_column(String(255))
    # email_identity(email), kept in step by `_set_email_key` on every write through the ORM. A writer that knows only
    # the template's columns leaves it out: a trigger (migration 0005) fills it for a plain ASCII address and refuses
    # any other. (On SQLite the column has DEFAULT '', the trigger's "not given"; PostgreSQL's is NULL.)
    email_key: Mapped[str] = mapped_column(String(EMAIL_KEY_LENGTH))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    is_superuser: Mapped[bool] = mapped_column(Boolean, default=False)
    full_name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    hashed_password: Mapped[str] = mapped_column(String)
    # Bumped when the password changes or the account is deactivated: older access tokens stop working.
    token_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The digest of the legacy access token (no session id) that changed its own password: it survives the version
    # bump. Written only for a change made with such a token; kept_session_id names the surviving session.
    kept_token_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The session that changed its own password: it survives the version bump (no foreign key: a pruned session
    # simply names no row).
    kept_session_id: Mapped[UUID | None] = mapped_column(GUID, nullable=True)
    # Whether the owner proved the address is theirs (README "Email verification"). True for the accounts from
    # before migration 0010 and for a writer that knows only the template's columns; a signup or an email change
    # stores False.
    is_verified: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    # Whether a confirmed second factor (user_totp) guards the login: set in the transaction that confirms or removes
    # it, so that the login of a user without one reads nothing more than the user's row.
    totp_enabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    @validates("email")
    def _set_email_key(self, _: str, email: str) -> str:
        self.email_key = email_identity(email)
        return email


class UserItemCount(CommonTableAttributes, AdvancedDeclarativeBase, AsyncAttrs):
    """How many items the user owns: kept by triggers on `item` (migration 0012, first 0006 in "user") for every
    writer, so a page of one owner's items reads its total here instead of counting their rows. A user with no row
    owns none. In a table of its own, not the user's row: an item's insert locks its owner's row (KEY SHARE, the
    foreign-key check), and the counter's UPDATE of that same row made PostgreSQL record both in a MultiXact on every
    insert. Never written by the application. Deleted with its user."""

    __tablename__ = "user_item_count"

    user_id: Mapped[UUID] = mapped_column(GUID, ForeignKey("user.id", ondelete="CASCADE"), primary_key=True)
    item_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Item(Base):
    __table_args__ = (
        Index("ix_item_owner_id_created_at", "owner_id", "created_at"),
        Index("ix_item_created_at", "created_at"),
    )

    title: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(String(255), nullable=True)
    owner_id: Mapped[UUID] = mapped_column(GUID, ForeignKey("user.id", ondelete="CASCADE"))


class UserSession(Base):
    """One login: its access token names it (`sid`), and ending it (ended_at) ends that token on every replica. A
    session is live while it is not ended, not expired, and began at the user's current token_version (or is the one
    their last password change kept)."""

    __tablename__ = "user_session"
    __table_args__ = (Index("ix_user_session_user_id_created_at", "user_id", "created_at"),)

    user_id: Mapped[UUID] = mapped_column(GUID, ForeignKey("user.id", ondelete="CASCADE"))
    last_used_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), default=utc_now)
    expires_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), nullable=True)
    # The client's User-Agent, shortened, and its address masked (IPv4 /24, IPv6 /48): enough to tell sessions apart.
    label: Mapped[str] = mapped_column(String(100), default="")
    client_network: Mapped[str] = mapped_column(String(50), default="")
    # The user's token_version when the session began.
    token_version: Mapped[int] = mapped_column(Integer, default=0)
    # The sha256 of the current refresh token (REFRESH_TOKEN_EXPIRE_MINUTES), and how many times it was rotated.
    refresh_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    refresh_generation: Mapped[int] = mapped_column(Integer, default=0)
    legacy: Mapped[bool] = mapped_column(Boolean, default=False)


class PersonalAccessToken(Base):
    """A token a user made for an SDK, a CLI or a CI job (app/security.py's `lsp_` format). Only its digest is kept:
    the token itself is shown once, when made. Revoked by its user, or by the database (migration 0008's trigger)
    when the user is deactivated; a reactivation does not revive it. Deleted with its user."""

    __table_args__ = (
        Index("ix_personal_access_token_user_id_created_at", "user_id", "created_at"),
        Index("ix_personal_access_token_digest", "digest", unique=True),
    )

    user_id: Mapped[UUID] = mapped_column(GUID, ForeignKey("user.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    scope: Mapped[str] = mapped_column(String(10))  # "read" | "read-write"
    digest: Mapped[str] = mapped_column(String(64))  # sha256 hex of the token
    last_used_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), nullable=True)
    expires_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), nullable=True)


# The key TOTP secrets are encrypted with (the app's TOTP_ENCRYPTION_KEY), for the statement being run: each app sets
# it for its own requests (app/services.py `TotpService`), as db/ knows no settings.
TOTP_KEY: ContextVar[str | None] = ContextVar("totp_key", default=None)


def totp_key() -> str:
    key = TOTP_KEY.get()
    if key is None:
        raise LookupError("no TOTP_ENCRYPTION_KEY for this statement")  # a bug: the service checks it first
    return key


class UserTotp(Row):
    """A user's TOTP secret (app/totp.py), encrypted at rest (Fernet, keyed by TOTP_ENCRYPTION_KEY). Pending until
    confirmed with a code; `last_used_step` is the newest time step a code was accepted for, so each code works
    once. Deleted with its user."""

    __tablename__ = "user_totp"

    user_id: Mapped[UUID] = mapped_column(GUID, ForeignKey("user.id", ondelete="CASCADE"), primary_key=True)
    secret: Mapped[str] = mapped_column(EncryptedString(key=totp_key, backend=FernetBackend))
    confirmed_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), nullable=True)
    last_used_step: Mapped[int] = mapped_column(Integer, default=0)


class UserRecoveryCode(Base):
    """A single-use recovery code of a user's second factor: only its sha256 is kept (shown once, when confirmed)."""

    __tablename__ = "user_recovery_code"
    __table_args__ = (Index("ix_user_recovery_code_user_id", "user_id"),)

    user_id: Mapped[UUID] = mapped_column(GUID, ForeignKey("user.id", ondelete="CASCADE"))
    digest: Mapped[str] = mapped_column(String(64))
    used_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), nullable=True)


class AuditRecord(Base):
    """An audit event as stored (app/audit_store.py): what its log line carries, `details` its other fields as JSON.
    Append-only: no foreign keys (an event outlives the accounts it names), and on PostgreSQL a trigger refuses
    UPDATE (migration 0009); rows are deleted only by the retention pruning."""

    __tablename__ = "audit_event"
    __table_args__ = (
        Index("ix_audit_event_created_at", "created_at"),
        Index("ix_audit_event_subject_id_created_at", "subject_id", "created_at"),
        Index("ix_audit_event_actor_id_created_at", "actor_id", "created_at"),
    )

    event: Mapped[str] = mapped_column(String(50))
    subject_id: Mapped[UUID | None] = mapped_column(GUID, nullable=True)
    actor_id: Mapped[UUID | None] = mapped_column(GUID, nullable=True)
    details: Mapped[str] = mapped_column(Text, default="{}")


metadata = Base.metadata

# The triggers' scratch (migration 0005): a statement that sets user.email_key itself notes the row's id here before
# the row changes, so that the trigger that fills the key leaves a given one alone (SQL has no other way to tell "set
# to the same value" from "not set"); it takes the note away again, so the table is empty outside a statement.
user_email_key_given = Table("user_email_key_given", metadata, Column("user_id", GUID, primary_key=True))
