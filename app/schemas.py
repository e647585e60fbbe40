"""Every request and response body. Names are the template's, so generated SDKs keep their model names."""

from __future__ import annotations

import operator
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
# How the template's document describes a field where it says more than our type does (app/openapi.py writes it;
# msgspec ignores `Meta.extra`, so nothing is decoded or encoded differently):
# - nullable: `X | null`, as pydantic documents the template's `X | None = None` fields. We answer a null 422 there (the
#   contract's [better]: the template answered 500), but clients generated from the template's document type these
#   fields as nullable, so ours must too.
# - optional (showing `default` when given): not required, as the template's response models declare them, although
#   every response of ours carries the field. Our structs keep them required: rows become structs positionally.
OPENAPI_MARKS = "openapi"


def documented(*, nullable: bool = False, optional: bool = False, default: Any = None) -> Meta:
    return Meta(extra={OPENAPI_MARKS: {"nullable": nullable, "optional": optional, "default": default}})


NULLABLE = documented(nullable=True)
OPTIONAL = documented(optional=True)
# Bounds on free text the template leaves unbounded, far above any real value and checked before any work on it
# (lookups, rate-limit keys, password hashing): 422 `string_too_long` beyond. An address is at most 254 characters
# (RFC 5321), 255 as the template's `EmailStr` fields document; a reset token we mint stays under 4,000 even for the
# longest address (of non-ASCII characters, each written `\uXXXX` or two of them in its JSON, then base64).
FORM_FIELD_MAX = 1024
ADDRESS_MAX = 255
TOKEN_MAX = 8192
FormText = Annotated[str, Meta(max_length=FORM_FIELD_MAX)]
# The login form's secrets, as FastAPI's `OAuth2PasswordRequestForm` documents them.
SECRET_SCHEMA = {"format": "password"}
Secret = Annotated[str, Meta(max_length=FORM_FIELD_MAX, extra_json_schema={"extra": SECRET_SCHEMA})]
# `skip`/`limit` must fit the databases' signed 64-bit integers: a larger one made them answer 500.
PAGE_MAX = 2**63 - 1


class Message(Struct):
    message: str


class Token(Struct):
    access_token: str
    token_type: str = "bearer"


# With refresh tokens on (REFRESH_TOKEN_EXPIRE_MINUTES), what a login and a refresh answer: `Token` stays the
# template's (its frontend's generated client types the login answer by it), and the default answer is its
# `{"access_token": ..., "token_type": "bearer"}`, byte for byte.
class TokenPair(Token, kw_only=True):
    refresh_token: str
    expires_in: int  # the access token's lifetime, in seconds


class NewPassword(Struct):
    token: Annotated[str, Meta(max_length=TOKEN_MAX)]
    new_password: Password


class VerifyEmail(Struct):
    token: Annotated[str, Meta(max_length=TOKEN_MAX)]


# What the API shows of a user: all of `UserPublic`, and the start of `Caller` (frozen, as both). No docstrings on the
# response structs: the OpenAPI document would take them as descriptions.
class ShownUser(Struct, frozen=True):
    email: Email
    is_active: Annotated[bool, documented(optional=True, default=True)]
    is_superuser: Annotated[bool, documented(optional=True, default=False)]
    full_name: Annotated[FullName, OPTIONAL] | None
    id: UUID
    created_at: Annotated[datetime, documented(optional=True, nullable=True)]


# Shown only with EMAIL_VERIFICATION on (README "Email verification"): the fast statements select it always, and the
# executor fills it when told to (db/executor.py `from_row`); left UNSET, it is not in the answer, nor (app/openapi.py)
# in the document.
SHOWN_WITH_EMAIL_VERIFICATION = frozenset({"is_verified"})


# A class of its own: a `Caller` is never a `UserPublic`, so no response can carry the caller's secrets.
class UserPublic(ShownUser, frozen=True):
    is_verified: bool | UnsetType = UNSET


class Caller(ShownUser, frozen=True):
    """The authenticated user, read once per request by app/auth.py: what a response about them shows, and what
    authentication checks. Not a body: `public()` is what the API shows of it."""

    hashed_password: str
    token_version: int
    kept_token_digest: str | None
    kept_session_id: UUID | None = None
    is_verified: bool | UnsetType = UNSET

    def public(self) -> UserPublic:
        # Field by field, positionally: `msgspec.convert` refuses an UNSET attribute (`is_verified` when not shown).
        return UserPublic(*_public_fields(self))


_public_fields = operator.attrgetter(*UserPublic.__struct_fields__)


class PatCredential(Struct, frozen=True):
    """A personal access token as the auth middleware reads it with its user, by the token's digest (app/auth.py).
    Not a body."""

    id: UUID
    scope: str
    expires_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


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
    email: Annotated[Email, NULLABLE] | UnsetType = UNSET
    is_active: Annotated[bool, NULLABLE] | UnsetType = UNSET
    is_superuser: Annotated[bool, NULLABLE] | UnsetType = UNSET
    full_name: FullName | UnsetType | None = UNSET
    password: Annotated[Password, NULLABLE] | UnsetType = UNSET


class UserUpdateMe(WithEmail, Struct):
    full_name: FullName | UnsetType | None = UNSET
    email: Annotated[Email, NULLABLE] | UnsetType = UNSET


class UpdatePassword(Struct):
    current_password: Password
    new_password: Password


class PrivateUserCreate(WithEmail, Struct):
    email: Email
    password: Password
    full_name: FullName
    is_verified: bool = False


# A session as its row holds it (what the fast statement selects); the API adds whether it is the caller's.
class SessionShown(Struct):
    id: UUID
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    label: str
    client_network: str


class SessionPublic(SessionShown):
    current: bool


class SessionsPublic(Struct):
    data: list[SessionPublic]
    count: int


class ItemPublic(Struct):
    title: Title
    description: Annotated[Description, OPTIONAL] | None
    id: UUID
    owner_id: UUID
    created_at: Annotated[datetime, documented(optional=True, nullable=True)]


class ItemsPublic(Struct):
    data: list[ItemPublic]
    count: int


class ItemCreate(Struct):
    title: Title
    description: Description | None = None


class ItemUpdate(Struct):
    title: Annotated[Title, NULLABLE] | UnsetType = UNSET
    description: Description | UnsetType | None = UNSET


# A code as typed: a TOTP code (6 digits) or a recovery code (`xxxxx-xxxxx`), spaces allowed; bounded before any
# work on it.
OtpCode = Annotated[str, Meta(min_length=1, max_length=64)]


# What enrolment answers: the secret to give the authenticator app, by hand or as the URI (a QR code of it).
class TotpEnrolment(Struct):
    secret: str
    otpauth_uri: str


class TotpConfirm(Struct):
    code: OtpCode


# Shown once, when the second factor is confirmed: only their digests are kept.
class TotpRecoveryCodes(Struct):
    recovery_codes: list[str]


class TotpDisable(Struct):
    password: Password
    code: OtpCode  # a current TOTP code or a recovery code


PatScope = Literal["read", "read-write"]


class PersonalAccessTokenCreate(Struct):
    name: Annotated[str, Meta(min_length=1, max_length=100)]
    # At most PAT_MAX_DAYS (a setting, so checked by the service: 422 beyond).
    expires_in_days: Annotated[int, Meta(ge=1)]
    scope: PatScope = "read"


class PersonalAccessTokenPublic(Struct):
    id: UUID
    name: str
    scope: PatScope
    created_at: datetime
    expires_at: datetime
    last_used_at: datetime | None


# The token itself is in this answer only, when it is made: only its digest is kept.
class PersonalAccessTokenCreated(PersonalAccessTokenPublic):
    token: str


class PersonalAccessTokensPublic(Struct):
    data: list[PersonalAccessTokenPublic]
    count: int


class LoginForm(Struct, kw_only=True):
    """The OAuth2 password form, its fields in the order of FastAPI's `OAuth2PasswordRequestForm`."""

    grant_type: Annotated[str, Meta(pattern="^password$")] | None = None  # its pattern bounds it
    username: FormText
    password: Secret
    scope: FormText = ""
    client_id: FormText | None = None
    client_secret: Secret | None = None
    # The second factor of an account that has one (README "Two-factor authentication (TOTP)"): the authenticator's
    # current code, or one of the recovery codes. Ignored for an account without one.
    otp: OtpCode | None = None
    recovery_code: Secret | None = None


class RefreshForm(Struct, kw_only=True):
    """The OAuth2 refresh-token grant (RFC 6749 section 6), as a form."""

    grant_type: Annotated[str, Meta(pattern="^refresh_token$")]
    # Never empty: an empty field counts as absent (as the login form's), so the document says so.
    refresh_token: Annotated[
        str, Meta(min_length=1, max_length=FORM_FIELD_MAX, extra_json_schema={"extra": SECRET_SCHEMA})
    ]


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


class AuditEventPublic(Struct):
    """A stored audit event: `details` holds its log line's other fields (README "Audit events")."""

    id: UUID
    created_at: datetime
    event: str
    subject_id: UUID | None
    actor_id: UUID | None
    details: dict[str, Any]


class AuditEventsPublic(Struct):
    data: list[AuditEventPublic]
    count: int
