"""Business rules: accounts, credentials, ownership. Controllers call these; these call the repositories."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from uuid import UUID

from advanced_alchemy.exceptions import DuplicateKeyError
from advanced_alchemy.filters import LimitOffset, OrderBy
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from advanced_alchemy.service import SQLAlchemyAsyncRepositoryService
from litestar import Request
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException, NotFoundException, PermissionDeniedException
from sqlalchemy.ext.asyncio import AsyncSession

from app import security
from app.auth import NOT_ENOUGH_PRIVILEGES, PREFETCHED_ITEMS, USER_NOT_FOUND
from db.identity import email_identity
from db.models import Item, User
from db.queries import HotPath, ItemRow, UserRow


class BadRequest(HTTPException):
    status_code = 400


class Conflict(HTTPException):
    status_code = 409


class UserRepository(SQLAlchemyAsyncRepository[User]):
    model_type = User


class ItemRepository(SQLAlchemyAsyncRepository[Item]):
    model_type = Item


def check_item_access(owner_id: UUID, caller: UserRow) -> None:
    if not caller.is_superuser and owner_id != caller.id:
        raise PermissionDeniedException("Not enough permissions")


class UserService(SQLAlchemyAsyncRepositoryService[User, UserRepository]):
    repository_type = UserRepository

    async def get_by_email(self, email: str) -> User | None:
        # The one rule (db/identity.py) on both sides: no SQL function, whose folding would differ from Python's.
        return await self.repository.get_one_or_none(User.email_key == email_identity(email))

    async def authenticate(self, email: str, password: str) -> User | None:
        """The user with these credentials, or None. Costs the same hash work whether or not the email exists."""
        user = await self.get_by_email(email)
        matches, needs_rehash = await security.verify_password(
            password, user.hashed_password if user else security.DUMMY_HASH
        )
        if user is None or not matches:
            return None
        if needs_rehash:
            user.hashed_password = await security.hash_password(password)
            await self.repository.update(user)
        return user

    async def list_page(self, skip: int, limit: int) -> tuple[list[User], int]:
        """Newest first, with the total (a separate count: a window count would read every row)."""
        rows, count = await self.repository.get_many_and_count(
            LimitOffset(limit=limit, offset=skip),
            OrderBy(field_name="created_at", sort_order="desc"),
            count_with_window_function=False,
        )
        return list(rows), count

    async def create_account(self, fields: dict[str, Any], duplicate_message: str) -> User:
        email = str(fields["email"])
        if await self.get_by_email(email) is not None:
            raise BadRequest(duplicate_message)
        password = fields.pop("password")
        fields["hashed_password"] = await security.hash_password(password)
        try:
            # id and created_at are set here, not by the database: no need to read the row back.
            return await self.repository.add(User(**fields), auto_refresh=False)
        except DuplicateKeyError:
            # Lost a race with a concurrent request for the same email: the same answer as the check above.
            raise BadRequest(duplicate_message) from None

    async def apply_changes(self, user: User, changes: dict[str, Any], keep_token_digest: str | None = None) -> User:
        """Apply a partial update. A new password or a deactivation revokes the user's tokens, except, for a new
        password, the one named by `keep_token_digest` (the session that changed its own password)."""
        if "email" in changes and email_identity(changes["email"]) != user.email_key:
            existing = await self.get_by_email(changes["email"])
            if existing is not None and existing.id != user.id:
                raise Conflict("User with this email already exists")
        if "password" in changes:
            changes["hashed_password"] = await security.hash_password(changes.pop("password"))
            user.token_version += 1
            user.kept_token_digest = keep_token_digest
        if changes.get("is_active") is False and user.is_active:
            user.token_version += 1
            user.kept_token_digest = None
        for name, value in changes.items():
            setattr(user, name, value)
        try:
            return await self.repository.update(user)
        except DuplicateKeyError:
            raise Conflict("User with this email already exists") from None

    async def set_password(self, user: User, new_password: str, keep_token_digest: str | None = None) -> None:
        await self.apply_changes(user, {"password": new_password}, keep_token_digest)

    async def get_for_caller(self, user_id: UUID, caller: UserRow) -> User | UserRow:
        if user_id == caller.id:
            return caller
        if not caller.is_superuser:
            raise PermissionDeniedException(NOT_ENOUGH_PRIVILEGES)
        return await self.get_or_404(user_id, USER_NOT_FOUND)

    async def get_or_404(self, user_id: UUID, message: str) -> User:
        user = await self.repository.get_one_or_none(User.id == user_id)
        if user is None:
            raise NotFoundException(message)
        return user

    async def remove(self, user: User, caller: UserRow) -> None:
        if user.id == caller.id and user.is_superuser:
            raise PermissionDeniedException("Super users are not allowed to delete themselves")
        await self.repository.delete(user.id)


class ItemService(SQLAlchemyAsyncRepositoryService[Item, ItemRepository]):
    """Item changes that load, check and modify a row in the request's transaction."""

    repository_type = ItemRepository

    async def get_for_caller(self, item_id: UUID, caller: UserRow) -> Item:
        """Existence first (404), then ownership (403)."""
        item = await self.repository.get_one_or_none(Item.id == item_id)
        if item is None:
            raise NotFoundException("Item not found")
        check_item_access(item.owner_id, caller)
        return item

    async def apply_changes(self, item: Item, changes: dict[str, Any]) -> Item:
        for name, value in changes.items():
            setattr(item, name, value)
        return await self.repository.update(item)

    async def remove(self, item: Item) -> None:
        await self.repository.delete(item.id)


class ItemReads:
    """The hot item requests of one caller, one statement each (db/queries.py): list, read and create.

    Bound to the caller so that these handlers need a single dependency: Litestar resolves two independent
    dependencies of a handler concurrently, in an anyio task group that cost ~10% of a request's CPU."""

    def __init__(
        self, hot_path: HotPath, caller: UserRow, prefetched: Mapping[UUID, ItemRow | None] | None = None
    ) -> None:
        self.hot_path = hot_path
        self.caller = caller
        self.prefetched = prefetched or {}

    async def list_page(self, skip: int, limit: int) -> tuple[list[ItemRow], int]:
        """Items visible to the caller: all of them for a superuser."""
        return await self.hot_path.items_page(None if self.caller.is_superuser else self.caller.id, skip, limit)

    async def read(self, item_id: UUID) -> ItemRow:
        """Existence first (404), then ownership (403)."""
        item = self.prefetched[item_id] if item_id in self.prefetched else await self.hot_path.item(item_id)
        if item is None:
            raise NotFoundException("Item not found")
        check_item_access(item.owner_id, self.caller)
        return item

    async def create(self, title: str, description: str | None) -> ItemRow:
        return await self.hot_path.add_item(self.caller.id, title, description)


def provide_item_reads(request: Request[UserRow, Any, Any]) -> ItemReads:
    return ItemReads(request.app.state.hot_path, request.user, request.state.get(PREFETCHED_ITEMS))


async def provide_user_service(db_session: NamedDependency[AsyncSession]) -> UserService:
    return UserService(session=db_session)


async def provide_item_service(db_session: NamedDependency[AsyncSession]) -> ItemService:
    return ItemService(session=db_session)
