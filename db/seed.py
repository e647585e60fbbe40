"""Idempotent first-superuser creation."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import User


async def ensure_first_superuser(session: AsyncSession, email: str, hashed_password: str) -> bool:
    """Create the superuser unless a user with that email (any case) exists. Returns whether it was created."""
    existing = await session.scalar(select(User.id).where(func.lower(User.email) == email.lower()))
    if existing is not None:
        return False
    session.add(User(email=email, hashed_password=hashed_password, is_superuser=True, is_active=True))
    await session.commit()
    return True
