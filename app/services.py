"""Business rules: accounts, credentials, ownership. One repository and one service per resource.

A repository owns its resource's statements: the ORM's (advanced-alchemy, on the request's session) and the fast
ones (db/executor.py, each selecting the columns of the struct it returns). A service holds every rule of its
resource once, is the one dependency of its handlers, and picks the path per method: a read answered with a
response struct runs a fast statement; a change loads, checks and modifies the row through the ORM in the request's
transaction (committed by advanced-alchemy on 2xx). The session is opened only by the ORM path: a request that
needs none pays nothing for it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache, cached_property, partial
from typing import Any, Generic, TypeVar
from uuid import UUID

import msgspec
from advanced_alchemy.exceptions import DuplicateKeyError
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from litestar import Request
from sqlalchemy import Select, bindparam, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession
from uuid_utils.compat import uuid7

from app import security
from app.audit import AuditEvent, audit
from app.errors import (
    EMAIL_TAKEN,
    INCORRECT_PASSWORD,
    ITEM_NOT_FOUND,
    NOT_ENOUGH_PERMISSIONS,
    NOT_ENOUGH_PRIVILEGES,
    SAME_PASSWORD,
    SUPERUSER_SELF_DELETE,
    USER_NOT_FOUND,
    Conflict,
    Forbidden,
    NotFound,
    Rejected,
)
from app.schemas import Caller, ItemCreate, ItemPublic, ItemsPublic, UserPublic, UsersPublic
from db.executor import Executor, S, columns, from_row
from db.identity import email_identity
from db.models import Base, Item, User, utc_now

OpenSession = Callable[[], AsyncSession]
Visible = TypeVar("Visible", Item, ItemPublic)


def user_public(user: User) -> UserPublic:
    # Field by field from the model's attributes: a field added to the struct needs no edit here.
    return msgspec.convert(user, UserPublic, from_attributes=True)


def item_public(item: Item) -> ItemPublic:
    return msgspec.convert(item, ItemPublic, from_attributes=True)


_CALLER = columns(User, Caller)
_ROW_KEY = "row_key"
_ROW_PREFIX = "row_"


@dataclass(frozen=True)
class ReadWithCaller(Generic[S]):
    """A route's opt under READ_WITH_CALLER: read the `model` row that the path parameter `parameter` names, as
    `struct`, in the caller's own statement (one round trip instead of two). The auth middleware leaves what it
    read in the request state under the same key, as a `Found`."""

    model: type[Base]
    struct: type[S]
    parameter: str

    def row_id(self, path_params: Mapping[str, Any]) -> UUID | None:
        try:
            return UUID(str(path_params[self.parameter]))
        except ValueError:
            return None  # the handler answers 422 for it


READ_WITH_CALLER = "read_with_caller"


@cache
def caller_with(model: type[Base], struct: type[msgspec.Struct]) -> Select[Any]:
    """The caller's statement, with the columns of `struct` from the `model` row named `row_id` (null if none).
    Cached: the executor compiles each statement object once."""
    return (
        select(
            *_CALLER,
            model.id.label(_ROW_KEY),
            *(column.label(_ROW_PREFIX + column.key) for column in columns(model, struct)),
        )
        .outerjoin(model, model.id == bindparam("row_id"))
        .where(User.id == bindparam("id"))
    )


@dataclass(frozen=True, slots=True)
class Found(Generic[S]):
    """What a ReadWithCaller read: the row named `row_id`, None if there is none."""

    row_id: UUID
    row: S | None


class UserRepository(SQLAlchemyAsyncRepository[User]):
    """Users: the ORM's methods on the request's session, and the fast statements below. Those are classmethods on
    the executor, not on the session: a request that only reads opens no session (and pays no commit for one)."""

    model_type = User

    CALLER = select(*_CALLER).where(User.id == bindparam("id"))
    PUBLIC = select(*columns(User, UserPublic)).where(User.id == bindparam("id"))
    # Newest first, with a separate count: a window count would read every row before the LIMIT.
    PAGE = (
        select(*columns(User, UserPublic))
        .order_by(User.created_at.desc())
        .limit(bindparam("limit"))
        .offset(bindparam("skip"))
    )
    COUNT = select(func.count()).select_from(User)

    @classmethod
    async def read_caller(cls, fast: Executor, user_id: UUID) -> Caller | None:
        return await fast.first(Caller, cls.CALLER, {"id": user_id})

    @classmethod
    async def read_caller_with(
        cls, fast: Executor, user_id: UUID, read: ReadWithCaller[S], row_id: UUID
    ) -> tuple[Caller | None, S | None]:
        """Both in one round trip (no row without its caller: a missing caller answers before a missing row)."""
        rows = await fast.rows(caller_with(read.model, read.struct), {"id": user_id, "row_id": row_id})
        if not rows:
            return None, None
        row = rows[0]
        found = from_row(read.struct, row, _ROW_PREFIX) if row[_ROW_KEY] is not None else None
        return from_row(Caller, row), found

    @classmethod
    async def read_public(cls, fast: Executor, user_id: UUID) -> UserPublic | None:
        return await fast.first(UserPublic, cls.PUBLIC, {"id": user_id})

    @classmethod
    async def read_page(cls, fast: Executor, skip: int, limit: int) -> tuple[list[UserPublic], int]:
        return await fast.all(UserPublic, cls.PAGE, {"skip": skip, "limit": limit}), await fast.count(cls.COUNT, {})


class ItemRepository(SQLAlchemyAsyncRepository[Item]):
    """Items: the ORM's methods on the request's session, and the fast statements below (classmethods on the
    executor, as UserRepository's)."""

    model_type = Item

    _NEWEST_FIRST = (Item.created_at.desc(), Item.id.desc())
    PUBLIC = select(*columns(Item, ItemPublic)).where(Item.id == bindparam("id"))
    # One owner's page carries its total (a window over the owner's index range); the unfiltered page of a
    # superuser does not, since a window count would read the whole table before the LIMIT.
    OWN_PAGE = (
        select(*columns(Item, ItemPublic), func.count().over().label("total"))
        .where(Item.owner_id == bindparam("owner_id"))
        .order_by(*_NEWEST_FIRST)
        .limit(bindparam("limit"))
        .offset(bindparam("skip"))
    )
    OWN_COUNT = select(func.count()).select_from(Item).where(Item.owner_id == bindparam("owner_id"))
    PAGE = (
        select(*columns(Item, ItemPublic)).order_by(*_NEWEST_FIRST).limit(bindparam("limit")).offset(bindparam("skip"))
    )
    COUNT = select(func.count()).select_from(Item)
    INSERT = insert(Item).values({column.key: bindparam(column.key) for column in columns(Item, ItemPublic)})

    @classmethod
    async def read_public(cls, fast: Executor, item_id: UUID) -> ItemPublic | None:
        return await fast.first(ItemPublic, cls.PUBLIC, {"id": item_id})

    @classmethod
    async def read_page(
        cls, fast: Executor, owner_id: UUID | None, skip: int, limit: int
    ) -> tuple[list[ItemPublic], int]:
        """Newest first, with the total: one round trip for an owner's page that has rows, two otherwise."""
        if owner_id is None:
            page = await fast.all(ItemPublic, cls.PAGE, {"skip": skip, "limit": limit})
            return page, await fast.count(cls.COUNT, {})
        rows = await fast.rows(cls.OWN_PAGE, {"owner_id": owner_id, "skip": skip, "limit": limit})
        if rows:
            return [from_row(ItemPublic, row) for row in rows], int(rows[0]["total"])
        total = await fast.count(cls.OWN_COUNT, {"owner_id": owner_id}) if skip or not limit else 0
        return [], total

    @classmethod
    async def insert_public(cls, fast: Executor, item: ItemPublic) -> None:
        await fast.rows(cls.INSERT, {name: getattr(item, name) for name in ItemPublic.__struct_fields__})


class UserService:
    """Accounts and credentials. `caller` is None on the routes that need no authentication (login, signup)."""

    def __init__(self, caller: Caller | None, fast: Executor, open_session: OpenSession) -> None:
        self._caller = caller
        self.fast = fast
        self.open_session = open_session

    @cached_property
    def repository(self) -> UserRepository:
        return UserRepository(session=self.open_session())

    @property
    def caller(self) -> Caller:
        if self._caller is None:
            raise RuntimeError("this route is not authenticated: it has no caller")
        return self._caller

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

    async def page(self, skip: int, limit: int) -> UsersPublic:
        """Newest first, with the total."""
        users, count = await UserRepository.read_page(self.fast, skip, limit)
        return UsersPublic(data=users, count=count)

    async def read(self, user_id: UUID) -> UserPublic:
        """The caller themselves, or anyone for a superuser."""
        if user_id == self.caller.id:
            return self.caller.public()
        if not self.caller.is_superuser:
            raise Forbidden(NOT_ENOUGH_PRIVILEGES)
        user = await UserRepository.read_public(self.fast, user_id)
        if user is None:
            raise NotFound(USER_NOT_FOUND)
        return user

    async def create_account(self, fields: dict[str, Any], duplicate_message: str) -> UserPublic:
        email = str(fields["email"])
        if await self.get_by_email(email) is not None:
            raise Rejected(duplicate_message)
        password = fields.pop("password")
        fields["hashed_password"] = await security.hash_password(password)
        try:
            # id and created_at are set here, not by the database: no need to read the row back.
            created = await self.repository.add(User(**fields), auto_refresh=False)
        except DuplicateKeyError:
            # Lost a race with a concurrent request for the same email: the same answer as the check above.
            raise Rejected(duplicate_message) from None
        audit(AuditEvent.USER_CREATED, user_id=created.id, actor_id=self._actor, is_superuser=created.is_superuser)
        if created.is_superuser:
            audit(AuditEvent.SUPERUSER_GRANTED, user_id=created.id, actor_id=self._actor)
        return user_public(created)

    async def update(self, user_id: UUID, changes: dict[str, Any], not_found: str) -> UserPublic:
        user = await self._load(user_id, not_found)
        return user_public(await self._apply(user, changes))

    async def update_me(self, changes: dict[str, Any]) -> UserPublic:
        return await self.update(self.caller.id, changes, USER_NOT_FOUND)

    async def change_own_password(self, current: str, new: str, keep_token_digest: str) -> None:
        """The caller's other sessions end; the token named by `keep_token_digest` stays valid."""
        matches, _ = await security.verify_password(current, self.caller.hashed_password)
        if not matches:
            raise Rejected(INCORRECT_PASSWORD)
        if current == new:
            raise Rejected(SAME_PASSWORD)
        user = await self._load(self.caller.id, USER_NOT_FOUND)
        await self._apply(user, {"password": new}, keep_token_digest)

    async def reset_password(self, user: User, new_password: str) -> None:
        """A new password by a recovery link: every session ends."""
        await self._apply(user, {"password": new_password}, reset=True)

    async def delete(self, user_id: UUID) -> None:
        """The user and, by the item->owner foreign key's cascade, their items."""
        user = await self._load(user_id, USER_NOT_FOUND)
        if user.id == self.caller.id and user.is_superuser:
            raise Forbidden(SUPERUSER_SELF_DELETE)
        await self.repository.delete(user.id)
        audit(AuditEvent.USER_DELETED, user_id=user.id, actor_id=self._actor)

    async def delete_me(self) -> None:
        await self.delete(self.caller.id)

    async def _load(self, user_id: UUID, not_found: str) -> User:
        user = await self.repository.get_one_or_none(User.id == user_id)
        if user is None:
            raise NotFound(not_found)
        return user

    async def _apply(
        self, user: User, changes: dict[str, Any], keep_token_digest: str | None = None, reset: bool = False
    ) -> User:
        """Apply a partial update. A new password or a deactivation revokes the user's tokens, except, for a new
        password, the one named by `keep_token_digest` (the session that changed its own password)."""
        if "email" in changes and email_identity(changes["email"]) != user.email_key:
            existing = await self.get_by_email(changes["email"])
            if existing is not None and existing.id != user.id:
                raise Conflict(EMAIL_TAKEN)
        events: list[tuple[AuditEvent, dict[str, Any]]] = []
        if "password" in changes:
            changes["hashed_password"] = await security.hash_password(changes.pop("password"))
            user.token_version += 1
            user.kept_token_digest = keep_token_digest
            events.append((AuditEvent.PASSWORD_RESET if reset else AuditEvent.PASSWORD_CHANGED, {}))
            events.append((AuditEvent.TOKENS_REVOKED, {"reason": "password", "kept_one": bool(keep_token_digest)}))
        if changes.get("is_active") is False and user.is_active:
            user.token_version += 1
            user.kept_token_digest = None
            events.append((AuditEvent.TOKENS_REVOKED, {"reason": "deactivated", "kept_one": False}))
        if "is_superuser" in changes and changes["is_superuser"] != user.is_superuser:
            granted = bool(changes["is_superuser"])
            events.append((AuditEvent.SUPERUSER_GRANTED if granted else AuditEvent.SUPERUSER_REVOKED, {}))
        fields = sorted(name for name, value in changes.items() if getattr(user, name) != value)
        for name, value in changes.items():
            setattr(user, name, value)
        try:
            updated = await self.repository.update(user)
        except DuplicateKeyError:
            raise Conflict(EMAIL_TAKEN) from None
        if not reset:
            names = ["password" if name == "hashed_password" else name for name in fields]
            audit(AuditEvent.USER_UPDATED, user_id=user.id, actor_id=self._actor, fields=names)
        for event, details in events:
            audit(event, user_id=user.id, actor_id=self._actor, **details)
        return updated

    @property
    def _actor(self) -> UUID | None:
        """Who acts: the signed-in caller, or nobody (signup, a recovery link)."""
        return self._caller.id if self._caller is not None else None


class ItemService:
    """Items of one caller: all of them for a superuser, their own otherwise (404 before 403)."""

    def __init__(
        self, caller: Caller, fast: Executor, open_session: OpenSession, found: Found[ItemPublic] | None = None
    ) -> None:
        self.caller = caller
        self.fast = fast
        self.open_session = open_session
        self.found = found

    @cached_property
    def repository(self) -> ItemRepository:
        return ItemRepository(session=self.open_session())

    async def page(self, skip: int, limit: int) -> ItemsPublic:
        owner_id = None if self.caller.is_superuser else self.caller.id
        items, count = await ItemRepository.read_page(self.fast, owner_id, skip, limit)
        return ItemsPublic(data=items, count=count)

    async def read(self, item_id: UUID) -> ItemPublic:
        if self.found is not None and self.found.row_id == item_id:
            item = self.found.row
        else:
            item = await ItemRepository.read_public(self.fast, item_id)
        return self._visible(item)

    async def create(self, data: ItemCreate) -> ItemPublic:
        item = ItemPublic(
            title=data.title, description=data.description, id=uuid7(), owner_id=self.caller.id, created_at=utc_now()
        )
        await ItemRepository.insert_public(self.fast, item)
        return item

    async def update(self, item_id: UUID, changes: dict[str, Any]) -> ItemPublic:
        item = await self._load(item_id)
        for name, value in changes.items():
            setattr(item, name, value)
        return item_public(await self.repository.update(item))

    async def delete(self, item_id: UUID) -> None:
        await self.repository.delete((await self._load(item_id)).id)

    async def _load(self, item_id: UUID) -> Item:
        return self._visible(await self.repository.get_one_or_none(Item.id == item_id))

    def _visible(self, item: Visible | None) -> Visible:
        """Existence first (404), then ownership (403)."""
        if item is None:
            raise NotFound(ITEM_NOT_FOUND)
        if not self.caller.is_superuser and item.owner_id != self.caller.id:
            raise Forbidden(NOT_ENOUGH_PERMISSIONS)
        return item


def provide_user_service(request: Request[Any, Any, Any]) -> UserService:
    return UserService(request.scope.get("user"), request.app.state.executor, _session_opener(request))


def provide_item_service(request: Request[Caller, Any, Any]) -> ItemService:
    found = request.state.get(READ_WITH_CALLER)
    return ItemService(request.user, request.app.state.executor, _session_opener(request), found)


def _session_opener(request: Request[Any, Any, Any]) -> OpenSession:
    """The request's session (committed on 2xx, rolled back otherwise), created on first use."""
    return partial(request.app.state.db_config.provide_session, request.app.state, request.scope)
