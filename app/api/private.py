from __future__ import annotations

from litestar import Controller, post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from app.auth import EXCLUDE_FROM_AUTH
from app.errors import USER_EXISTS
from app.openapi import error_responses
from app.schemas import PrivateUserCreate, UserPublic, changes
from app.services import UserService


class PrivateController(Controller):
    """Mounted only when ENVIRONMENT=local."""

    path = "/private"
    tags = ["private"]

    @post(
        "/users",
        status_code=200,
        opt={EXCLUDE_FROM_AUTH: True},
        responses=error_responses({400: [USER_EXISTS]}),
    )
    async def create_user(self, users: NamedDependency[UserService], data: JSONBody[PrivateUserCreate]) -> UserPublic:
        """Create a user without any checks (development only)."""
        # Verified or not as the body's `is_verified` says (README "Email verification").
        return await users.create_account(changes(data), USER_EXISTS)
