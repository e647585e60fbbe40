"""Idempotent first-superuser creation."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from db.identity import email_identity
from db.models import User


async def ensure_first_superuser(session: AsyncSession, email: str, hashed_password: str) -> bool:
    """Create the superuser unless an account has that email's identity (db/identity.py). Returns whether it did."""
    existing = await session.scalar(select(User.id).where(User.email_key == email_identity(email)))
    if existing is not None:
        return False
    # Verified: the operator who configures it vouches for the address.
    session.add(User(email=email, hashed_password=hashed_password, is_superuser=True, is_active=True, is_verified=True))
    await session.commit()
    return True
