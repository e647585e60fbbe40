"""Persistence models. Tables and columns match the template's, so its database can be adopted."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

from advanced_alchemy.base import AdvancedDeclarativeBase, CommonTableAttributes
from advanced_alchemy.types import GUID, DateTimeUTC
from sqlalchemy import Boolean, Column, ForeignKey, Index, Integer, String, Table
from sqlalchemy.ext.asyncio import AsyncAttrs
from sqlalchemy.orm import Mapped, mapped_column, validates
from uuid_utils.compat import uuid7

from db.identity import email_identity

# The longest key a storable email can have: 64 characters before the @ (email-validator's limit), each expanding to
# at most 18 under NFKC (U+FDFA), plus the domain; about 2,400 bytes, within PostgreSQL's btree entry limit.
EMAIL_KEY_LENGTH = 1536


def utc_now() -> datetime:
    return datetime.now(UTC)


class Base(CommonTableAttributes, AdvancedDeclarativeBase, AsyncAttrs):
    """Table name from the class name, UUID primary key (time-ordered v7: compact, append-only inserts)."""

    __abstract__ = True

    id: Mapped[UUID] = mapped_column(GUID, primary_key=True, default=uuid7, sort_order=-100)
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), default=utc_now, sort_order=100)


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
    # The digest of the access token that changed its own password: that one session survives the version bump.
    kept_token_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # How many items the user owns: kept by triggers on `item` (migration 0006) for every writer, so a page of one
    # owner's items reads its total here instead of counting their rows. Never written by the application.
    item_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    @validates("email")
    def _set_email_key(self, _: str, email: str) -> str:
        self.email_key = email_identity(email)
        return email


class Item(Base):
    __table_args__ = (
        Index("ix_item_owner_id_created_at", "owner_id", "created_at"),
        Index("ix_item_created_at", "created_at"),
    )

    title: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(String(255), nullable=True)
    owner_id: Mapped[UUID] = mapped_column(GUID, ForeignKey("user.id", ondelete="CASCADE"))


class PersonalAccessToken(Base):
    """A token a user made for an SDK, a CLI or a CI job (app/security.py's `lsp_` format). Only its digest is kept:
    the token itself is shown once, when made. Revoked by its user, or by the database (migration 0007p's trigger)
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


metadata = Base.metadata

# The triggers' scratch (migration 0005): a statement that sets user.email_key itself notes the row's id here before
# the row changes, so that the trigger that fills the key leaves a given one alone (SQL has no other way to tell "set
# to the same value" from "not set"); it takes the note away again, so the table is empty outside a statement.
user_email_key_given = Table("user_email_key_given", metadata, Column("user_id", GUID, primary_key=True))
