"""Every request and response body. Names are the template's, so generated SDKs keep their model names."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from app.validation import EMAIL_FORMAT, normalize_email

# What decides an address is `normalize_email` (in `__post_init__`); the schema only documents it.
EMAIL_SCHEMA = {"format": EMAIL_FORMAT, "max_length": 255}
Email = Annotated[str, Meta(extra_json_schema={"extra": EMAIL_SCHEMA})]
Password = Annotated[str, Meta(min_length=8, max_length=128)]
FullName = Annotated[str, Meta(max_length=255)]
Title = Annotated[str, Meta(min_length=1, max_length=255)]
Description = Annotated[str, Meta(max_length=255)]
# `skip`/`limit` must fit the databases' signed 64-bit integers: a larger one made them answer 500.
PAGE_MAX = 2**63 - 1


class Message(Struct):
    message: str


class Token(Struct):
    access_token: str
    token_type: str = "bearer"


class NewPassword(Struct):
    token: str
    new_password: Password


# What the API shows of a user: all of `UserPublic`, and the start of `Caller` (frozen, as both). No docstrings on the
# response structs: the OpenAPI document would take them as descriptions.
class ShownUser(Struct, frozen=True):
    email: str
    is_active: bool
    is_superuser: bool
    full_name: str | None
    id: UUID
    created_at: datetime


# A class of its own: a `Caller` is never a `UserPublic`, so no response can carry the caller's secrets.
class UserPublic(ShownUser, frozen=True):
    pass


class Caller(ShownUser, frozen=True):
    """The authenticated user, read once per request by app/auth.py: what a response about them shows, and what
    authentication checks. Not a body: `public()` is what the API shows of it."""

    hashed_password: str
    token_version: int
    kept_token_digest: str | None

    def public(self) -> UserPublic:
        return msgspec.convert(self, UserPublic, from_attributes=True)


class UsersPublic(Struct):
    data: list[UserPublic]
    count: int


class WithEmail:
    """Stores the address as pydantic's `EmailStr` would: normalised, or the body is invalid (a plain mixin, so
    each Struct keeps its own field order)."""

    __slots__ = ()
    email: Any

    def __post_init__(self) -> None:
        if isinstance(self.email, str):
            self.email = normalize_email(self.email)


# Field order is the template's (its models inherit `UserBase`): pydantic reports failing fields in this order.
class UserCreate(WithEmail, Struct, kw_only=True):
    email: Email
    is_active: bool = True
    is_superuser: bool = False
    full_name: FullName | None = None
    password: Password


class UserRegister(WithEmail, Struct):
    email: Email
    password: Password
    full_name: FullName | None = None


class UserUpdate(WithEmail, Struct):
    email: Email | UnsetType = UNSET
    is_active: bool | UnsetType = UNSET
    is_superuser: bool | UnsetType = UNSET
    full_name: FullName | UnsetType | None = UNSET
    password: Password | UnsetType = UNSET


class UserUpdateMe(WithEmail, Struct):
    full_name: FullName | UnsetType | None = UNSET
    email: Email | UnsetType = UNSET


class UpdatePassword(Struct):
    current_password: Password
    new_password: Password


class PrivateUserCreate(WithEmail, Struct):
    email: Email
    password: Password
    full_name: FullName
    is_verified: bool = False


class ItemPublic(Struct):
    title: str
    description: str | None
    id: UUID
    owner_id: UUID
    created_at: datetime


class ItemsPublic(Struct):
    data: list[ItemPublic]
    count: int


class ItemCreate(Struct):
    title: Title
    description: Description | None = None


class ItemUpdate(Struct):
    title: Title | UnsetType = UNSET
    description: Description | UnsetType | None = UNSET


class LoginForm(Struct):
    """The OAuth2 password form."""

    username: str
    password: str
    grant_type: Annotated[str, Meta(pattern="^password$")] | None = None
    scope: str = ""
    client_id: str | None = None
    client_secret: str | None = None


# The template's component name (not a valid identifier), which generated SDKs use as the model name.
LoginForm.__name__ = LoginForm.__qualname__ = "Body_login-login_access_token"


class ValidationError(Struct):
    loc: list[str | int]
    msg: str
    type: str


class HTTPValidationError(Struct):
    detail: list[ValidationError]


class HTTPError(Struct):
    detail: str


def changes(update: Struct) -> dict[str, Any]:
    """The fields a PATCH/PUT body actually set (UNSET ones left out)."""
    return {name: value for name, value in msgspec.structs.asdict(update).items() if value is not UNSET}


HealthStatus = Literal[True]


RateLimitMode = Literal["off", "redis", "process", "process (redis unavailable)"]


class Readiness(Struct):
    """`GET /utils/ready`: the service can serve requests (its database answers). Rate limits are shared through
    Redis, kept per process (no Redis configured), or per process while Redis does not answer: degraded, not down."""

    rate_limits: RateLimitMode
    status: Literal["ready"] = "ready"
