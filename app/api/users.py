from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.background_tasks import BackgroundTask
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody, Parameter

from app import emails, security
from app.api.login import HOUR, client_address
from app.auth import EXCLUDE_FROM_AUTH, USER_NOT_FOUND, requires_superuser
from app.config import Settings
from app.ratelimit import Quota, RateLimiter
from app.schemas import (
    PAGE_MAX,
    Message,
    UpdatePassword,
    UserCreate,
    UserPublic,
    UserRegister,
    UsersPublic,
    UserUpdate,
    UserUpdateMe,
    changes,
    user_public,
)
from app.services import BadRequest, UserService, provide_user_service
from db.queries import UserRow

Skip = Annotated[int, Parameter(ge=0, le=PAGE_MAX)]
Limit = Annotated[int, Parameter(ge=0, le=PAGE_MAX)]
USER_DELETED = "User deleted successfully"


class UsersController(Controller):
    path = "/users"
    tags = ["users"]
    dependencies = {"users": Provide(provide_user_service)}

    @get("/", guards=[requires_superuser])
    async def read_users(self, users: NamedDependency[UserService], skip: Skip = 0, limit: Limit = 100) -> UsersPublic:
        """All users, newest first."""
        rows, count = await users.list_page(skip, limit)
        return UsersPublic(data=[user_public(row) for row in rows], count=count)

    @post("/", status_code=200, guards=[requires_superuser])
    async def create_user(
        self, users: NamedDependency[UserService], settings: NamedDependency[Settings], data: JSONBody[UserCreate]
    ) -> Response[UserPublic]:
        """Create a user; they get a welcome email (never with their password) when mail is configured."""
        user = await users.create_account(changes(data), "The user with this email already exists in the system.")
        background = None
        if settings.emails_enabled:
            mail = emails.new_account_email(settings, user.email)
            background = BackgroundTask(emails.send_email, settings, user.email, mail)
        return Response(user_public(user), background=background)

    @get("/me")
    async def read_user_me(self, current_user: NamedDependency[UserRow]) -> UserPublic:
        """The caller."""
        return user_public(current_user)

    @patch("/me")
    async def update_user_me(
        self, users: NamedDependency[UserService], current_user: NamedDependency[UserRow], data: JSONBody[UserUpdateMe]
    ) -> UserPublic:
        """Change the caller's name or email."""
        user = await users.get_or_404(current_user.id, USER_NOT_FOUND)
        return user_public(await users.apply_changes(user, changes(data)))

    @delete("/me", status_code=200)
    async def delete_user_me(
        self, users: NamedDependency[UserService], current_user: NamedDependency[UserRow]
    ) -> Message:
        """Delete the caller and their items."""
        await users.remove(await users.get_or_404(current_user.id, USER_NOT_FOUND), current_user)
        return Message(message=USER_DELETED)

    @patch("/me/password")
    async def update_password_me(
        self,
        request: Request[UserRow, security.AccessToken, Any],
        users: NamedDependency[UserService],
        current_user: NamedDependency[UserRow],
        data: JSONBody[UpdatePassword],
    ) -> Message:
        """Change the caller's password. The caller's other sessions end; the token that made the change (the
        frontend keeps using it) stays valid."""
        matches, _ = await security.verify_password(data.current_password, current_user.hashed_password)
        if not matches:
            raise BadRequest("Incorrect password")
        if data.current_password == data.new_password:
            raise BadRequest("New password cannot be the same as the current one")
        user = await users.get_or_404(current_user.id, USER_NOT_FOUND)
        await users.set_password(user, data.new_password, keep_token_digest=request.auth.digest)
        return Message(message="Password updated successfully")

    @post("/signup", status_code=200, opt={EXCLUDE_FROM_AUTH: True})
    async def register_user(
        self,
        request: Request[Any, Any, Any],
        users: NamedDependency[UserService],
        settings: NamedDependency[Settings],
        rate_limiter: NamedDependency[RateLimiter],
        data: JSONBody[UserRegister],
    ) -> UserPublic:
        """Create an account without logging in."""
        await rate_limiter.reserve(
            Quota(f"signup:client:{client_address(request)}", settings.SIGNUP_PER_CLIENT_PER_HOUR, HOUR)
        )
        user = await users.create_account(changes(data), "The user with this email already exists in the system")
        return user_public(user)

    @get("/{user_id:str}")
    async def read_user_by_id(
        self, users: NamedDependency[UserService], current_user: NamedDependency[UserRow], user_id: FromPath[UUID]
    ) -> UserPublic:
        """A user: the caller themselves, or anyone for a superuser."""
        return user_public(await users.get_for_caller(user_id, current_user))

    @patch("/{user_id:str}", guards=[requires_superuser])
    async def update_user(
        self, users: NamedDependency[UserService], user_id: FromPath[UUID], data: JSONBody[UserUpdate]
    ) -> UserPublic:
        """Update a user; a new password is hashed and revokes their tokens."""
        user = await users.get_or_404(user_id, "The user with this id does not exist in the system")
        return user_public(await users.apply_changes(user, changes(data)))

    @delete("/{user_id:str}", status_code=200, guards=[requires_superuser])
    async def delete_user(
        self, users: NamedDependency[UserService], current_user: NamedDependency[UserRow], user_id: FromPath[UUID]
    ) -> Message:
        """Delete a user and their items."""
        user = await users.get_or_404(user_id, USER_NOT_FOUND)
        await users.remove(user, current_user)
        return Message(message=USER_DELETED)
