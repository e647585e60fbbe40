"""Persistence models. Tables and columns match the template's, so its database can be adopted."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

from advanced_alchemy.base import AdvancedDeclarativeBase, CommonTableAttributes
from advanced_alchemy.types import GUID, DateTimeUTC
from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, func
from sqlalchemy.ext.asyncio import AsyncAttrs
from sqlalchemy.orm import Mapped, mapped_column
from uuid_utils.compat import uuid7


def utc_now() -> datetime:
    return datetime.now(UTC)


class Base(CommonTableAttributes, AdvancedDeclarativeBase, AsyncAttrs):
    """Table name from the class name, UUID primary key (time-ordered v7: compact, append-only inserts)."""

    __abstract__ = True

    id: Mapped[UUID] = mapped_column(GUID, primary_key=True, default=uuid7, sort_order=-100)
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), default=utc_now, sort_order=100)


class User(Base):
    __table_args__ = (Index("ix_user_created_at", "created_at"),)

    email: Mapped[str] = mapped_column(String(255))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    is_superuser: Mapped[bool] = mapped_column(Boolean, default=False)
    full_name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    hashed_password: Mapped[str] = mapped_column(String)
    # Bumped when the password changes or the account is deactivated: older access tokens stop working.
    token_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The digest of the access token that changed its own password: that one session survives the version bump.
    kept_token_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)


class Item(Base):
    __table_args__ = (
        Index("ix_item_owner_id_created_at", "owner_id", "created_at"),
        Index("ix_item_created_at", "created_at"),
    )

    title: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(String(255), nullable=True)
    owner_id: Mapped[UUID] = mapped_column(GUID, ForeignKey("user.id", ondelete="CASCADE"))


# Emails are unique regardless of case; lookups by email use the same expression, so they use this index.
Index("ix_user_email_lower", func.lower(User.email), unique=True)

metadata = Base.metadata
