"""Business rules: accounts, credentials, ownership. One repository and one service per resource.

A repository owns its resource's statements: the ORM's (advanced-alchemy, on the request's session) and the fast
ones (db/executor.py, each selecting the columns of the struct it returns). A service holds every rule of its
resource once and is the one dependency of its handlers. Reads and changes of the API's routes are fast statements,
one each: a change is one UPDATE/INSERT/DELETE … RETURNING, its rules checked on the row the caller's own statement
read with it (ReadWithCaller), or enforced by the database (unique email, cascading delete). The ORM path, in the
request's transaction (committed by advanced-alchemy on 2xx), is left to what needs the full row: finding an
account by email for a login or a recovery link. The session is opened only by that path: a request that needs
none pays nothing for it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache, cached_property, partial
from typing import Any, Generic, Literal
from uuid import UUID

import msgspec
from advanced_alchemy.exceptions import DuplicateKeyError, ForeignKeyError
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from advanced_alchemy.types import DateTimeUTC
from litestar import Request
from sqlalchemy import (
    ColumnElement,
    Exists,
    Label,
    ScalarSelect,
    Select,
    Update,
    and_,
    bindparam,
    delete,
    false,
    func,
    insert,
    literal_column,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute, aliased
from uuid_utils.compat import uuid7

from app import security, totp
from app.audit import AuditEvent, audit
from app.errors import (
    EMAIL_TAKEN,
    INACTIVE_USER,
    INCORRECT_PASSWORD,
    INVALID_CREDENTIALS,
    INVALID_REFRESH_TOKEN,
    INVALID_TOKEN,
    ITEM_NOT_FOUND,
    NOT_ENOUGH_PERMISSIONS,
    NOT_ENOUGH_PRIVILEGES,
    NOT_WITH_PAT,
    SAME_PASSWORD,
    SUPERUSER_SELF_DELETE,
    TOKEN_NOT_FOUND,
    TOTP_ALREADY_ENABLED,
    TOTP_NOT_CONFIGURED,
    TOTP_NOT_ENABLED,
    TOTP_NOT_ENROLLED,
    USER_NOT_FOUND,
    Conflict,
    Forbidden,
    NotFound,
    Rejected,
    Unavailable,
    Unprocessable,
)
from app.schemas import (
    Caller,
    ItemCreate,
    ItemPublic,
    ItemsPublic,
    PatCredential,
    PersonalAccessTokenCreate,
    PersonalAccessTokenCreated,
    PersonalAccessTokenPublic,
    PersonalAccessTokensPublic,
    SessionPublic,
    SessionShown,
    SessionsPublic,
    TotpEnrolment,
    TotpRecoveryCodes,
    UserPublic,
    UsersPublic,
)
from app.validation import error
from db.executor import Executor, S, Statement, columns, from_row
from db.identity import email_identity
from db.models import (
    TOTP_KEY,
    Base,
    Item,
    PersonalAccessToken,
    User,
    UserItemCount,
    UserRecoveryCode,
    UserSession,
    UserTotp,
    utc_now,
)

OpenSession = Callable[[], AsyncSession]
# A check of a new password before it is accepted (app/breach.py's, when on): given the password and the body field
# that carries it, it raises to refuse it.
CheckPassword = Callable[[str, str], Awaitable[None]]
# Sends a verification link to a user's address, for a reason (app/verification.py's `EmailVerification.send`).
SendVerification = Callable[[UUID, str, str], None]
# Beside the contract's SUPERUSER_SELF_DELETE, in its words: what the template allowed and we refuse [better].
SUPERUSER_SELF_DEMOTE = "Super users are not allowed to demote themselves"
SUPERUSER_SELF_DEACTIVATE = "Super users are not allowed to deactivate themselves"


def user_public(user: User) -> UserPublic:
    # Field by field from the model's attributes: a field added to the struct needs no edit here.
    return msgspec.convert(user, UserPublic, from_attributes=True)


_CALLER = columns(User, Caller)
_ROW_KEY = "row_key"
_ROW_PREFIX = "row_"
SESSION_NOT_FOUND = "Session not found"


class CallerSession(msgspec.Struct, frozen=True):
    """What authentication reads of the token's session, in the caller's own statement."""

    id: UUID
    ended_at: datetime | None
    expires_at: datetime
    last_used_at: datetime
    token_version: int
    legacy: bool


_SESSION_PREFIX = "session_"
_CALLER_SESSION = [
    getattr(UserSession, column.key).label(_SESSION_PREFIX + column.key)
    for column in columns(UserSession, CallerSession)
]
# The token's session (`sid`), if it is one of the caller's.
_TOKEN_SESSION = and_(UserSession.id == bindparam("sid"), UserSession.user_id == User.id)
# A session that began at its user's current token_version, or the one their last password change kept.
_CURRENT_VERSION = or_(UserSession.token_version == User.token_version, UserSession.id == User.kept_session_id)


# The caller's row in a change's `admitted_caller` (aliased: the change may be of another user's row).
CALLER_ROW = aliased(User, name="caller")


def admitted_caller(*rules: ColumnElement[bool] | InstrumentedAttribute[bool]) -> Exists:
    """`check_caller` in SQL, for a change's own WHERE: the token's user (`caller_id`, as CALLER_ROW) exists and is
    active, and its session (`sid`) is theirs, not ended, not expired (`now`) and current; and `rules` hold (of
    CALLER_ROW, and of the row changed, whose table the subquery correlates to). For a token with a `sid` only (a
    legacy token is checked by the auth middleware, against its own version and digest)."""
    return (
        select(literal_column("1"))
        .select_from(CALLER_ROW)
        .join(UserSession, and_(UserSession.id == bindparam("sid"), UserSession.user_id == CALLER_ROW.id))
        .where(
            CALLER_ROW.id == bindparam("caller_id"),
            CALLER_ROW.is_active,
            UserSession.ended_at.is_(None),
            UserSession.expires_at > bindparam("now"),
            or_(UserSession.token_version == CALLER_ROW.token_version, UserSession.id == CALLER_ROW.kept_session_id),
            *rules,
        )
        .exists()
    )


# Returned by a change that `admitted_caller` checked: whether the token's session is due a last_used_at write.
SESSION_STALE = (
    select(UserSession.last_used_at < bindparam("touch_before"))
    .where(UserSession.id == bindparam("sid"))
    .scalar_subquery()
    .label("session_stale")
)


# A session's last_used_at is written at most this often (app/sessions.py `Touches`).
TOUCH_EVERY = timedelta(seconds=60)


def check_caller(
    user: Caller | None,
    session: CallerSession | None,
    access: security.AccessToken,
    now: datetime,
    superuser: bool = False,
) -> tuple[Caller, bool]:
    """The contract's answers for the caller of a verified access token, in its order: 404 they are gone, 400
    inactive, 403 the token's session no longer admits it, and, on a route for `superuser`s, 403 they are none. The
    caller, and whether the session's last_used_at is to be written."""
    if user is None:
        raise NotFound(USER_NOT_FOUND)
    if not user.is_active:
        raise Rejected(INACTIVE_USER)
    if not session_admits(user, session, access, now):
        # Its session ended, expired, or was revoked by a password change or a deactivation (but for the
        # session that changed its own password).
        raise Forbidden(INVALID_CREDENTIALS)
    if superuser and not user.is_superuser:
        raise Forbidden(NOT_ENOUGH_PRIVILEGES)
    return user, session is not None and session.last_used_at < now - TOUCH_EVERY


@dataclass(slots=True)
class TokenCaller:
    """The caller of a route that checks them in its own change (opt CHECKED_IN_WRITE, app/auth.py): so far known by
    their verified access token only. The change's statement admits them (`admitted_caller`) or changes nothing; in
    that case the service reads them and answers as the auth middleware would (`check_caller`), then goes on as for
    any caller. Until `checked`, no refusal is answered without that check (app/auth.py)."""

    access: security.AccessToken
    checked: bool = False
    # The session's last_used_at is to be written after the answer.
    stale: bool = False

    @property
    def id(self) -> UUID:
        return self.access.user_id

    async def change(self, fast: Executor, statement: Statement, params: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """A change whose WHERE is `admitted_caller` and whose RETURNING has SESSION_STALE, run with `params` and
        this caller's: its row, the caller then checked; None if it changed nothing."""
        now = utc_now()
        access = self.access
        checks = {"caller_id": access.user_id, "sid": access.session_id, "now": now, "touch_before": now - TOUCH_EVERY}
        rows = await fast.rows(statement, {**params, **checks})
        if not rows:
            return None
        self.checked = True
        self.stale = bool(rows[0]["session_stale"])
        return rows[0]

    async def read_checked(
        self,
        fast: Executor,
        superuser: bool = False,
        read: ReadWithCaller[S] | None = None,
        row_id: UUID | None = None,
    ) -> tuple[Caller, Found[S] | None]:
        """Read (with the `read` row `row_id`, in the same statement) and answered as the auth middleware would
        (`check_caller`); checked whatever its answer."""
        found = None
        if read is None or row_id is None:
            user, session = await UserRepository.read_caller(fast, self.id, self.access.session_id)
        else:
            user, session, row = await UserRepository.read_caller_with(
                fast, self.id, self.access.session_id, read, row_id
            )
            found = Found(row_id, row)
        self.checked = True
        caller, self.stale = check_caller(user, session, self.access, utc_now(), superuser)
        return caller, found


def session_admits(caller: Caller, session: CallerSession | None, access: security.AccessToken, now: datetime) -> bool:
    """Whether `access` is still good: its session exists, is not ended or expired, and was not revoked by a later
    password change or deactivation (token_version bumped), but for the session that change kept.

    A legacy token (no `sid`) also answers for itself, as before sessions: it is good while its own `ver` is the
    user's version, or it is the very token (by digest) that changed its own password. All legacy tokens share one
    session, so that session's version alone would revive the tokens a change before migration 0007 revoked."""
    if session is None or session.ended_at is not None or session.expires_at <= now:
        return False
    if access.legacy:
        current = session.token_version == caller.token_version == access.version
        kept = caller.kept_session_id == session.id and caller.kept_token_digest == access.digest
        return current or kept
    return session.token_version == caller.token_version or caller.kept_session_id == session.id


_PAT_PREFIX = "pat_"
# The personal access token's columns the auth middleware checks, beside its user's.
_PAT_CREDENTIAL = [column.label(_PAT_PREFIX + column.key) for column in columns(PersonalAccessToken, PatCredential)]


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
# The item named by the path (`id`), read in the caller's own statement.
ITEM_WITH_CALLER = ReadWithCaller(Item, ItemPublic, "id")
# The user named by the path (`user_id`), read in the caller's own statement.
USER_WITH_CALLER = ReadWithCaller(User, UserPublic, "user_id")


@cache
def caller_with(model: type[Base], struct: type[msgspec.Struct]) -> Select[Any]:
    """The caller's statement, with the columns of `struct` from the `model` row named `row_id` (null if none).
    Cached: the executor compiles each statement object once. The row's table is aliased, so the row may be
    another user."""
    row = aliased(model, name="target")
    return (
        select(
            *_CALLER,
            *_CALLER_SESSION,
            row.id.label(_ROW_KEY),
            *(getattr(row, column.key).label(_ROW_PREFIX + column.key) for column in columns(model, struct)),
        )
        .select_from(User)
        .outerjoin(UserSession, _TOKEN_SESSION)
        .outerjoin(row, row.id == bindparam("row_id"))
        .where(User.id == bindparam("id"))
    )


def _caller_and_session(row: Mapping[str, Any], shown: frozenset[str]) -> tuple[Caller, CallerSession | None]:
    found = row[_SESSION_PREFIX + "id"] is not None
    return from_row(Caller, row, shown=shown), from_row(CallerSession, row, _SESSION_PREFIX) if found else None


def _pat_caller() -> Select[Any]:
    """The caller's columns and their personal access token's, found by the token's `digest` (a unique index read,
    then the user's primary key): no row for a token that does not exist, nor for one whose user is gone (the
    token went with them)."""
    return (
        select(*_CALLER, *_PAT_CREDENTIAL)
        .select_from(PersonalAccessToken)
        .join(User, User.id == PersonalAccessToken.user_id)
        .where(PersonalAccessToken.digest == bindparam("digest"))
    )


@cache
def pat_caller_with(model: type[Base], struct: type[msgspec.Struct]) -> Select[Any]:
    """`caller_with` for a caller authenticated by a personal access token: the caller found by the token's digest
    (`_pat_caller`) instead of by id, with the same row columns."""
    row = aliased(model, name="target")
    return (
        _pat_caller()
        .add_columns(
            row.id.label(_ROW_KEY),
            *(getattr(row, column.key).label(_ROW_PREFIX + column.key) for column in columns(model, struct)),
        )
        .outerjoin(row, row.id == bindparam("row_id"))
    )


@dataclass(frozen=True, slots=True)
class Found(Generic[S]):
    """What a ReadWithCaller read: the row named `row_id`, None if there is none."""

    row_id: UUID
    row: S | None


def _total(model: type[Base]) -> Label[int]:
    """The table's row count as a column of each row of a page (computed once per statement, not per row)."""
    return select(func.count()).select_from(model).scalar_subquery().label("total")


def _own_total() -> ScalarSelect[int]:
    """How many items the user `owner_id` owns (0 for a user with no counter row: no items yet, or gone)."""
    owned = select(UserItemCount.item_count).where(UserItemCount.user_id == bindparam("owner_id")).scalar_subquery()
    return select(func.coalesce(owned, literal_column("0"))).scalar_subquery()


def _all_items() -> ScalarSelect[int]:
    """How many items there are: every item has an owner, whose counter row counts it."""
    return select(func.coalesce(func.sum(UserItemCount.item_count), literal_column("0"))).scalar_subquery()


def _update(model: type[Base], struct: type[msgspec.Struct], names: tuple[str, ...], **computed: Any) -> Update:
    """UPDATE the row `where_id` … RETURNING the columns of `struct`, setting `names` from parameters
    `new_<column>` (`_assigned`: in an UPDATE a bind parameter may not bear its column's name) and the `computed`
    columns from their expressions."""
    assignments = {name: bindparam(f"new_{name}") for name in names} | computed
    return update(model).where(model.id == bindparam("where_id")).values(assignments).returning(*columns(model, struct))


def _assigned(values: Mapping[str, Any]) -> dict[str, Any]:
    return {f"new_{name}": value for name, value in values.items()}


class Address(msgspec.Struct, frozen=True):
    """A user's address and whether it is verified, as an email verification reads them."""

    email: str
    is_verified: bool


class UserRepository(SQLAlchemyAsyncRepository[User]):
    """Users: the ORM's methods on the request's session, and the fast statements below. Those are classmethods on
    the executor, not on the session: a request that needs no ORM opens no session (and pays no commit for one)."""

    model_type = User

    # The caller with the token's session (null columns if there is none): authentication in one statement.
    CALLER = (
        select(*_CALLER, *_CALLER_SESSION)
        .select_from(User)
        .outerjoin(UserSession, _TOKEN_SESSION)
        .where(User.id == bindparam("id"))
    )
    PAT_CALLER = _pat_caller()
    PUBLIC = select(*columns(User, UserPublic)).where(User.id == bindparam("id"))
    # Newest first, each row with the total: a window count would read every row before the LIMIT.
    PAGE = (
        select(*columns(User, UserPublic), _total(User))
        .order_by(User.created_at.desc())
        .limit(bindparam("limit"))
        .offset(bindparam("skip"))
    )
    COUNT = select(func.count()).select_from(User)
    INSERT = insert(User).values({column.key: bindparam(column.key) for column in User.__table__.columns})
    DELETE = delete(User).where(User.id == bindparam("where_id")).returning(User.id)
    # Deleting a user with their caller checked in the statement (TokenCaller): themself, unless a superuser; or,
    # for a superuser, anyone but themself.
    DELETE_ME_AS_CALLER = DELETE.where(admitted_caller(User.id == CALLER_ROW.id, ~CALLER_ROW.is_superuser)).returning(
        SESSION_STALE
    )
    DELETE_AS_SUPERUSER = DELETE.where(admitted_caller(User.id != CALLER_ROW.id, CALLER_ROW.is_superuser)).returning(
        SESSION_STALE
    )
    ADDRESS = select(*columns(User, Address)).where(User.id == bindparam("id"))
    # Verified only while the address is still the one read: an email change in between leaves the row alone.
    VERIFY = (
        update(User)
        .where(User.id == bindparam("where_id"), User.email == bindparam("address"), User.is_verified == false())
        .values(is_verified=true())
        .returning(User.id)
    )

    @staticmethod
    @cache
    def update_statement(names: tuple[str, ...], revoke_tokens: bool) -> Update:
        """UPDATE … RETURNING the public columns, setting `names`, and revoking the user's tokens in the same
        statement (a version bump that no concurrent change can lose). One statement object per combination."""
        if revoke_tokens:
            # A literal, not a bound 1: the executor binds only the parameters a repository passes.
            return _update(User, UserPublic, names, token_version=User.token_version + literal_column("1"))
        return _update(User, UserPublic, names)

    @staticmethod
    @cache
    def rename_as_caller_statement(superuser: bool) -> Update:
        """A new full_name, the caller checked in the statement: their own (where_id is the caller), or anyone's
        by a superuser. No row back when the name is the one it was, so that the audit's `fields` stays exact."""
        rule = CALLER_ROW.is_superuser if superuser else User.id == CALLER_ROW.id
        return (
            _update(User, UserPublic, ("full_name",))
            .where(User.full_name.is_distinct_from(bindparam("new_full_name")), admitted_caller(rule))
            .returning(SESSION_STALE)
        )

    @classmethod
    async def rename_as(
        cls, fast: Executor, caller: TokenCaller, user_id: UUID, full_name: str | None, superuser: bool
    ) -> UserPublic | None:
        """The user renamed if `caller` is admitted (and a superuser, if asked) and the name is new; None, with
        nothing written, if not."""
        params = {"where_id": user_id, "new_full_name": full_name}
        row = await caller.change(fast, cls.rename_as_caller_statement(superuser), params)
        return from_row(UserPublic, row, shown=fast.shown) if row is not None else None

    @classmethod
    async def delete_as(cls, fast: Executor, caller: TokenCaller, user_id: UUID, superuser: bool) -> bool:
        """`delete_by_id` if `caller` is admitted: themself (`user_id`), unless a superuser; or, by a superuser,
        anyone but themself. False, with nothing deleted, if not."""
        statement = cls.DELETE_AS_SUPERUSER if superuser else cls.DELETE_ME_AS_CALLER
        return await caller.change(fast, statement, {"where_id": user_id}) is not None

    @classmethod
    async def read_caller(
        cls, fast: Executor, user_id: UUID, session_id: UUID
    ) -> tuple[Caller | None, CallerSession | None]:
        """The caller and the session `session_id` if it is theirs, in one round trip."""
        rows = await fast.rows(cls.CALLER, {"id": user_id, "sid": session_id})
        return _caller_and_session(rows[0], fast.shown) if rows else (None, None)

    @classmethod
    async def read_caller_with(
        cls, fast: Executor, user_id: UUID, session_id: UUID, read: ReadWithCaller[S], row_id: UUID
    ) -> tuple[Caller | None, CallerSession | None, S | None]:
        """All three in one round trip (no row without its caller: a missing caller answers before a missing
        row)."""
        rows = await fast.rows(
            caller_with(read.model, read.struct), {"id": user_id, "sid": session_id, "row_id": row_id}
        )
        if not rows:
            return None, None, None
        row = rows[0]
        found = from_row(read.struct, row, _ROW_PREFIX, fast.shown) if row[_ROW_KEY] is not None else None
        return *_caller_and_session(row, fast.shown), found

    @classmethod
    async def read_pat_caller(cls, fast: Executor, digest: str) -> tuple[Caller, PatCredential] | None:
        """The caller and the personal access token of this digest, in one statement; None if there is none."""
        rows = await fast.rows(cls.PAT_CALLER, {"digest": digest})
        if not rows:
            return None
        return from_row(Caller, rows[0], shown=fast.shown), from_row(PatCredential, rows[0], _PAT_PREFIX)

    @classmethod
    async def read_pat_caller_with(
        cls, fast: Executor, digest: str, read: ReadWithCaller[S], row_id: UUID
    ) -> tuple[tuple[Caller, PatCredential] | None, S | None]:
        """`read_caller_with` for a personal access token: the caller, their token and the row, in one statement."""
        rows = await fast.rows(pat_caller_with(read.model, read.struct), {"digest": digest, "row_id": row_id})
        if not rows:
            return None, None
        row = rows[0]
        found = from_row(read.struct, row, _ROW_PREFIX, fast.shown) if row[_ROW_KEY] is not None else None
        return (from_row(Caller, row, shown=fast.shown), from_row(PatCredential, row, _PAT_PREFIX)), found

    @classmethod
    async def read_public(cls, fast: Executor, user_id: UUID) -> UserPublic | None:
        return await fast.first(UserPublic, cls.PUBLIC, {"id": user_id})

    @classmethod
    async def read_page(cls, fast: Executor, skip: int, limit: int) -> tuple[list[UserPublic], int]:
        return await fast.page(UserPublic, cls.PAGE, cls.COUNT, {}, skip, limit)

    @classmethod
    async def insert(cls, fast: Executor, row: Mapping[str, Any]) -> None:
        """A new user from every column's value (DuplicateKeyError if the email's identity is taken)."""
        await fast.rows(cls.INSERT, row)

    @classmethod
    async def update_public(
        cls, fast: Executor, user_id: UUID, values: Mapping[str, Any], revoke_tokens: bool = False
    ) -> UserPublic | None:
        """The user with `values` set, None if there is none; one statement (DuplicateKeyError if a new email's
        identity is taken). A new email brings its identity along, as the ORM's validator does."""
        if "email" in values:
            values = {**values, "email_key": email_identity(values["email"])}
        if not values and not revoke_tokens:
            return await cls.read_public(fast, user_id)
        statement = cls.update_statement(tuple(sorted(values)), revoke_tokens)
        return await fast.first(UserPublic, statement, {"where_id": user_id, **_assigned(values)})

    @classmethod
    async def delete_by_id(cls, fast: Executor, user_id: UUID) -> bool:
        """Whether there was such a user; their items go with them (the foreign key's ON DELETE CASCADE)."""
        return bool(await fast.rows(cls.DELETE, {"where_id": user_id}))

    @classmethod
    async def read_address(cls, fast: Executor, user_id: UUID) -> Address | None:
        return await fast.first(Address, cls.ADDRESS, {"id": user_id})

    @classmethod
    async def mark_verified(cls, fast: Executor, user_id: UUID, email: str) -> bool:
        """Whether the user of this address was unverified (now verified)."""
        return bool(await fast.rows(cls.VERIFY, {"where_id": user_id, "address": email}))


class ItemRepository(SQLAlchemyAsyncRepository[Item]):
    """Items: the ORM's methods on the request's session, and the fast statements below (classmethods on the
    executor, as UserRepository's)."""

    model_type = Item

    _NEWEST_FIRST = (Item.created_at.desc(), Item.id.desc())
    PUBLIC = select(*columns(Item, ItemPublic)).where(Item.id == bindparam("id"))
    # Each page carries its total from the counts the database keeps (user_item_count, migrations 0006 and 0012):
    # one primary-key row read for an owner's page, the sum over the counters for a superuser's, whatever the number
    # of items (a window count over the owner's rows read them all before the LIMIT: 122 ms at 100,000 own items).
    OWN_PAGE = (
        select(*columns(Item, ItemPublic), _own_total().label("total"))
        .where(Item.owner_id == bindparam("owner_id"))
        .order_by(*_NEWEST_FIRST)
        .limit(bindparam("limit"))
        .offset(bindparam("skip"))
    )
    OWN_COUNT = select(_own_total())
    PAGE = (
        select(*columns(Item, ItemPublic), _all_items().label("total"))
        .order_by(*_NEWEST_FIRST)
        .limit(bindparam("limit"))
        .offset(bindparam("skip"))
    )
    COUNT = select(_all_items())
    INSERT = insert(Item).values({column.key: bindparam(column.key) for column in columns(Item, ItemPublic)})
    DELETE = delete(Item).where(Item.id == bindparam("where_id")).returning(Item.id)
    # The same changes with their caller checked in them (TokenCaller): nothing written, and no row back, unless
    # the caller is admitted and (but for an insert) owns the item or is a superuser.
    _OWNED = or_(Item.owner_id == CALLER_ROW.id, CALLER_ROW.is_superuser)
    INSERT_AS_CALLER = (
        insert(Item)
        .from_select(
            list(ItemPublic.__struct_fields__),
            select(*(bindparam(column.key, type_=column.type) for column in columns(Item, ItemPublic))).where(
                admitted_caller()
            ),
        )
        .returning(SESSION_STALE)
    )
    DELETE_AS_CALLER = (
        delete(Item).where(Item.id == bindparam("where_id"), admitted_caller(_OWNED)).returning(SESSION_STALE)
    )

    @classmethod
    async def read_public(cls, fast: Executor, item_id: UUID) -> ItemPublic | None:
        return await fast.first(ItemPublic, cls.PUBLIC, {"id": item_id})

    @classmethod
    async def read_page(
        cls, fast: Executor, owner_id: UUID | None, skip: int, limit: int
    ) -> tuple[list[ItemPublic], int]:
        """Newest first, with the total: one round trip for a page that has rows, two otherwise."""
        if owner_id is None:
            return await fast.page(ItemPublic, cls.PAGE, cls.COUNT, {}, skip, limit)
        return await fast.page(ItemPublic, cls.OWN_PAGE, cls.OWN_COUNT, {"owner_id": owner_id}, skip, limit)

    @classmethod
    async def insert_public(cls, fast: Executor, item: ItemPublic) -> None:
        await fast.rows(cls.INSERT, {name: getattr(item, name) for name in ItemPublic.__struct_fields__})

    @staticmethod
    @cache
    def update_statement(names: tuple[str, ...]) -> Update:
        """UPDATE … RETURNING the public columns, setting `names` (one statement object per combination)."""
        return _update(Item, ItemPublic, names)

    @staticmethod
    @cache
    def update_as_caller_statement(names: tuple[str, ...]) -> Update:
        return _update(Item, ItemPublic, names).where(admitted_caller(ItemRepository._OWNED)).returning(SESSION_STALE)

    @classmethod
    async def update_public(cls, fast: Executor, item_id: UUID, values: Mapping[str, Any]) -> ItemPublic | None:
        """The item with `values` set, None if there is none; one statement."""
        if not values:
            return await cls.read_public(fast, item_id)
        statement = cls.update_statement(tuple(sorted(values)))
        return await fast.first(ItemPublic, statement, {"where_id": item_id, **_assigned(values)})

    @classmethod
    async def delete_by_id(cls, fast: Executor, item_id: UUID) -> bool:
        return bool(await fast.rows(cls.DELETE, {"where_id": item_id}))

    @classmethod
    async def insert_as(cls, fast: Executor, caller: TokenCaller, item: ItemPublic) -> bool:
        """`insert_public` if `caller` is admitted; False, with nothing written, if not."""
        values = {name: getattr(item, name) for name in ItemPublic.__struct_fields__}
        return await caller.change(fast, cls.INSERT_AS_CALLER, values) is not None

    @classmethod
    async def update_as(
        cls, fast: Executor, caller: TokenCaller, item_id: UUID, values: Mapping[str, Any]
    ) -> ItemPublic | None:
        """`update_public` (with `values`) if `caller` is admitted and may change the item; None, with nothing
        written, if not, or if there is no such item."""
        statement = cls.update_as_caller_statement(tuple(sorted(values)))
        row = await caller.change(fast, statement, {"where_id": item_id, **_assigned(values)})
        return from_row(ItemPublic, row) if row is not None else None

    @classmethod
    async def delete_as(cls, fast: Executor, caller: TokenCaller, item_id: UUID) -> bool:
        """`delete_by_id` if `caller` is admitted and may delete the item; False, with nothing deleted, if not."""
        return await caller.change(fast, cls.DELETE_AS_CALLER, {"where_id": item_id}) is not None


class Refreshed(msgspec.Struct):
    """A session a refresh token rotated: what the new access token is minted from."""

    user_id: UUID
    token_version: int
    refresh_generation: int


_LIVE = and_(
    UserSession.ended_at.is_(None),
    UserSession.expires_at > bindparam("now"),
    _CURRENT_VERSION,
)
_SESSION_USER = User.id == UserSession.user_id
# A session whose user is active and has not revoked it since it began (the refresh statement's own check).
_USER_ADMITS = (
    select(literal_column("1"))
    .select_from(User)
    .where(_SESSION_USER, User.is_active.is_(True), _CURRENT_VERSION)
    .exists()
)
# Ended, expired, or revoked by a version bump it was not kept through: nothing will ever accept it again.
_PRUNABLE = or_(
    UserSession.ended_at.is_not(None),
    UserSession.expires_at <= bindparam("now"),
    and_(
        UserSession.token_version != User.token_version,
        User.kept_session_id.is_distinct_from(UserSession.id),
    ),
)
PRUNE_BATCH = 1000


class SessionRepository:
    """Sessions (db.models.UserSession): fast statements only. Login inserts through the request's ORM session
    (UserService.start_session): on SQLite that session may hold the write lock of a password rehash."""

    _NEWEST_FIRST = (UserSession.created_at.desc(), UserSession.id.desc())
    # One user's live sessions, newest first, each row with the total (a user has a handful: a window count is
    # cheap here).
    LIVE_PAGE = (
        select(*columns(UserSession, SessionShown), func.count().over().label("total"))
        .join(User, _SESSION_USER)
        .where(UserSession.user_id == bindparam("owner_id"), _LIVE)
        .order_by(*_NEWEST_FIRST)
        .limit(bindparam("limit"))
        .offset(bindparam("skip"))
    )
    LIVE_COUNT = (
        select(func.count())
        .select_from(UserSession)
        .join(User, _SESSION_USER)
        .where(UserSession.user_id == bindparam("owner_id"), _LIVE)
    )
    _OPEN = and_(UserSession.ended_at.is_(None), UserSession.expires_at > bindparam("now"))
    END_ONE = (
        update(UserSession)
        .where(UserSession.id == bindparam("where_id"), UserSession.user_id == bindparam("owner_id"), _OPEN)
        .values(ended_at=bindparam("end_at"))
        .returning(UserSession.id)
    )
    END_ALL = (
        update(UserSession)
        .where(UserSession.user_id == bindparam("owner_id"), _OPEN)
        .values(ended_at=bindparam("end_at"))
        .returning(UserSession.id)
    )
    END_OTHERS = (
        update(UserSession)
        .where(UserSession.user_id == bindparam("owner_id"), UserSession.id != bindparam("keep_id"), _OPEN)
        .values(ended_at=bindparam("end_at"))
        .returning(UserSession.id)
    )
    TOUCH = (
        update(UserSession)
        .where(UserSession.id == bindparam("where_id"), UserSession.last_used_at < bindparam("cutoff"))
        .values(last_used_at=bindparam("used_at"))
    )
    INSERT = insert(UserSession)
    # A refresh token works once: the row changes only if it still holds that token's digest (atomic rotation).
    REFRESH = (
        update(UserSession)
        .where(
            UserSession.id == bindparam("where_id"),
            UserSession.refresh_digest == bindparam("digest"),
            UserSession.ended_at.is_(None),
            UserSession.expires_at > bindparam("now"),
            _USER_ADMITS,
        )
        .values(
            refresh_digest=bindparam("new_digest"),
            refresh_generation=UserSession.refresh_generation + literal_column("1"),
            expires_at=bindparam("new_expires_at"),
            last_used_at=bindparam("now"),
        )
        .returning(*columns(UserSession, Refreshed))
    )
    # A refresh token older than the session's current one: someone holds a copy of it. The session ends.
    END_REUSED = (
        update(UserSession)
        .where(
            UserSession.id == bindparam("where_id"),
            UserSession.refresh_generation > bindparam("generation"),
            UserSession.ended_at.is_(None),
        )
        .values(ended_at=bindparam("end_at"))
        .returning(UserSession.user_id)
    )
    PRUNE = (
        delete(UserSession)
        .where(
            UserSession.id.in_(
                select(UserSession.id)
                .join(User, _SESSION_USER)
                .where(_PRUNABLE)
                .limit(bindparam("limit"))
                .scalar_subquery()
            )
        )
        .returning(UserSession.id)
    )

    @classmethod
    async def read_live_page(
        cls, fast: Executor, user_id: UUID, now: datetime, skip: int, limit: int
    ) -> tuple[list[SessionShown], int]:
        return await fast.page(
            SessionShown, cls.LIVE_PAGE, cls.LIVE_COUNT, {"owner_id": user_id, "now": now}, skip, limit
        )

    @classmethod
    async def end_one(cls, fast: Executor, user_id: UUID, session_id: UUID, now: datetime) -> bool:
        params = {"where_id": session_id, "owner_id": user_id, "now": now, "end_at": now}
        return bool(await fast.rows(cls.END_ONE, params))

    @classmethod
    async def end_all(cls, fast: Executor, user_id: UUID, now: datetime, keep_id: UUID | None = None) -> list[UUID]:
        """The ids of the sessions ended: all the user's open ones, but `keep_id`."""
        params: dict[str, Any] = {"owner_id": user_id, "now": now, "end_at": now}
        if keep_id is None:
            rows = await fast.rows(cls.END_ALL, params)
        else:
            rows = await fast.rows(cls.END_OTHERS, {**params, "keep_id": keep_id})
        return [row["id"] for row in rows]

    @classmethod
    async def touch(cls, fast: Executor, session_id: UUID, now: datetime, cutoff: datetime) -> None:
        await fast.rows(cls.TOUCH, {"where_id": session_id, "used_at": now, "cutoff": cutoff})

    @classmethod
    async def refresh(
        cls, fast: Executor, session_id: UUID, digest: str, new_digest: str, now: datetime, expires_at: datetime
    ) -> Refreshed | None:
        params = {
            "where_id": session_id,
            "digest": digest,
            "new_digest": new_digest,
            "now": now,
            "new_expires_at": expires_at,
        }
        return await fast.first(Refreshed, cls.REFRESH, params)

    @classmethod
    async def end_reused(cls, fast: Executor, session_id: UUID, generation: int, now: datetime) -> UUID | None:
        """The session's user if a refresh token of `generation` is an old one (the session then ended)."""
        rows = await fast.rows(cls.END_REUSED, {"where_id": session_id, "generation": generation, "end_at": now})
        return rows[0]["user_id"] if rows else None

    @classmethod
    async def prune(cls, fast: Executor, now: datetime, limit: int = PRUNE_BATCH) -> int:
        """Deletes at most `limit` sessions that can never be used again; how many it deleted."""
        return len(await fast.rows(cls.PRUNE, {"now": now, "limit": limit}))


class SessionService:
    """The caller's sessions, or (for a superuser, on routes guarded as theirs) another user's. `access` is the
    caller's token: it names the caller's own session."""

    def __init__(
        self, caller: Caller, access: security.AccessToken, fast: Executor, found: Found[UserPublic] | None = None
    ) -> None:
        self.caller = caller
        self.access = access
        self.fast = fast
        self.found = found

    def _user(self, user_id: UUID | None) -> UUID:
        """The caller's id, or a user a superuser names (read in the caller's statement: 404 if there is none)."""
        if user_id is None or user_id == self.caller.id:
            return self.caller.id
        if self.found is not None and self.found.row_id == user_id:
            if self.found.row is None:
                raise NotFound(USER_NOT_FOUND)
            return user_id
        raise RuntimeError("a superuser's session route reads its user with the caller (ReadWithCaller)")

    async def page(self, skip: int, limit: int, user_id: UUID | None = None) -> SessionsPublic:
        rows, count = await SessionRepository.read_live_page(self.fast, self._user(user_id), utc_now(), skip, limit)
        current = self.access.session_id
        sessions = [SessionPublic(**msgspec.structs.asdict(row), current=row.id == current) for row in rows]
        return SessionsPublic(data=sessions, count=count)

    async def end(self, session_id: UUID, user_id: UUID | None = None) -> None:
        owner = self._user(user_id)
        if not await SessionRepository.end_one(self.fast, owner, session_id, utc_now()):
            raise NotFound(SESSION_NOT_FOUND)
        self._ended(owner, [session_id], user_id)

    async def end_all(self, user_id: UUID | None = None) -> int:
        """All the user's sessions; for the caller's own (`user_id` None), all but the current one."""
        owner = self._user(user_id)
        keep = self.access.session_id if user_id is None else None
        ended = await SessionRepository.end_all(self.fast, owner, utc_now(), keep)
        self._ended(owner, ended, user_id)
        return len(ended)

    def _ended(self, owner: UUID, session_ids: list[UUID], user_id: UUID | None) -> None:
        reason = "user" if user_id is None else "superuser"
        actor = None if owner == self.caller.id else self.caller.id
        for session_id in session_ids:
            audit(AuditEvent.SESSION_ENDED, user_id=owner, actor_id=actor, session_id=str(session_id), reason=reason)


_PAT = PersonalAccessToken
_WHEN = DateTimeUTC(timezone=True)  # a bound time, stored as its column stores it (SQLite: text in UTC)
# A token's last_used_at is written at its first use and then at most this often.
PAT_USE_RESOLUTION = timedelta(minutes=1)


class PersonalAccessTokenRepository(SQLAlchemyAsyncRepository[PersonalAccessToken]):
    """Personal access tokens: fast statements (classmethods on the executor, as UserRepository's). Authentication
    reads a token with its user (UserRepository.read_pat_caller)."""

    model_type = PersonalAccessToken

    INSERT = insert(_PAT).values({column.key: bindparam(column.key) for column in _PAT.__table__.columns})
    # A user's unrevoked tokens, newest first (the (user_id, created_at) index); expired ones too, until revoked.
    OWN = (
        select(*columns(_PAT, PersonalAccessTokenPublic))
        .where(_PAT.user_id == bindparam("owner"), _PAT.revoked_at.is_(None))
        .order_by(_PAT.created_at.desc(), _PAT.id.desc())
    )
    REVOKE = (
        update(_PAT)
        .where(_PAT.id == bindparam("where_id"), _PAT.user_id == bindparam("owner"), _PAT.revoked_at.is_(None))
        .values(revoked_at=bindparam("now", type_=_WHEN))
        .returning(_PAT.id)
    )
    # The first use wins once, whichever request of whichever process writes it (pat.first_used is logged once).
    FIRST_USE = (
        update(_PAT)
        .where(_PAT.id == bindparam("where_id"), _PAT.last_used_at.is_(None))
        .values(last_used_at=bindparam("now", type_=_WHEN))
        .returning(_PAT.id)
    )
    LATER_USE = (
        update(_PAT)
        .where(_PAT.id == bindparam("where_id"), _PAT.last_used_at < bindparam("cutoff", type_=_WHEN))
        .values(last_used_at=bindparam("now", type_=_WHEN))
        .returning(_PAT.id)
    )

    @classmethod
    async def insert(cls, fast: Executor, row: Mapping[str, Any]) -> None:
        """A new token from every column's value (ForeignKeyError if its user is gone)."""
        await fast.rows(cls.INSERT, row)

    @classmethod
    async def read_own(cls, fast: Executor, user_id: UUID) -> list[PersonalAccessTokenPublic]:
        return await fast.all(PersonalAccessTokenPublic, cls.OWN, {"owner": user_id})

    @classmethod
    async def revoke(cls, fast: Executor, user_id: UUID, token_id: UUID, now: datetime) -> bool:
        """Whether the user had such an unrevoked token (now revoked)."""
        return bool(await fast.rows(cls.REVOKE, {"where_id": token_id, "owner": user_id, "now": now}))

    @classmethod
    async def record_use(cls, fast: Executor, token_id: UUID, now: datetime, first: bool) -> bool:
        """last_used_at = now, if it is still unset (`first`) or older than PAT_USE_RESOLUTION; whether it was."""
        if first:
            return bool(await fast.rows(cls.FIRST_USE, {"where_id": token_id, "now": now}))
        params = {"where_id": token_id, "now": now, "cutoff": now - PAT_USE_RESOLUTION}
        return bool(await fast.rows(cls.LATER_USE, params))


async def record_pat_use(fast: Executor, token_id: UUID, user_id: UUID, first: bool) -> None:
    """After a response (app/auth.py runs it as a background job): note the token's use; log its first."""
    if await PersonalAccessTokenRepository.record_use(fast, token_id, utc_now(), first) and first:
        audit(AuditEvent.PAT_FIRST_USED, user_id=user_id, token_id=str(token_id))


class PersonalAccessTokenService:
    """The caller's personal access tokens (the routes refuse a caller authenticated by one: app/auth.py's NO_PAT).
    A token is shown once, when made; only its digest is kept."""

    def __init__(self, caller: Caller, fast: Executor, max_days: int) -> None:
        self.caller = caller
        self.fast = fast
        self.max_days = max_days

    async def create(self, data: PersonalAccessTokenCreate) -> PersonalAccessTokenCreated:
        if data.expires_in_days > self.max_days:
            loc: list[str | int] = ["body", "expires_in_days"]
            message = f"Input should be less than or equal to {self.max_days}"
            raise Unprocessable([error("less_than_equal", loc, message, data.expires_in_days, {"le": self.max_days})])
        token = security.mint_pat()
        now = utc_now()
        created = PersonalAccessTokenCreated(
            id=uuid7(),
            name=data.name,
            scope=data.scope,
            created_at=now,
            expires_at=now + timedelta(days=data.expires_in_days),
            last_used_at=None,
            token=token,
        )
        row = {
            **{name: getattr(created, name) for name in PersonalAccessTokenPublic.__struct_fields__},
            "user_id": self.caller.id,
            "digest": security.pat_digest(token),
            "revoked_at": None,
        }
        try:
            await PersonalAccessTokenRepository.insert(self.fast, row)
        except ForeignKeyError:
            raise NotFound(USER_NOT_FOUND) from None  # the caller was deleted since its token was checked
        audit(
            AuditEvent.PAT_CREATED,
            user_id=self.caller.id,
            token_id=str(created.id),
            scope=created.scope,
            expires_at=created.expires_at.isoformat(),
        )
        return created

    async def list(self) -> PersonalAccessTokensPublic:
        """The unrevoked ones, newest first."""
        tokens = await PersonalAccessTokenRepository.read_own(self.fast, self.caller.id)
        return PersonalAccessTokensPublic(data=tokens, count=len(tokens))

    async def revoke(self, token_id: UUID) -> None:
        """One of the caller's unrevoked tokens; another's, or one revoked already, is not found."""
        if not await PersonalAccessTokenRepository.revoke(self.fast, self.caller.id, token_id, utc_now()):
            raise NotFound(TOKEN_NOT_FOUND)
        audit(AuditEvent.PAT_REVOKED, user_id=self.caller.id, token_id=str(token_id))


class TotpState(msgspec.Struct, frozen=True):
    """A user's second factor as its row holds it (the secret decrypted by its column's type)."""

    secret: str
    confirmed_at: datetime | None


SecondFactor = Literal["otp", "recovery_code"]
RECOVERY_CODES = 10


def recovery_digest(code: str) -> str:
    """What is kept of a recovery code: the sha256 of its normalised form (50 random bits: no salt needed)."""
    return security.token_digest(totp.normalize_recovery_code(code))


class TotpRepository:
    """The second factor's rows, on the request's ORM session (in its transaction, committed on 2xx): the secret
    column is encrypted and decrypted by its type (EncryptedString), which the fast executor (raw asyncpg) would
    not run. Each change that must happen once is one UPDATE … WHERE its condition still holds … RETURNING, so
    concurrent requests cannot both pass it."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def read(self, user_id: UUID) -> TotpState | None:
        statement = select(UserTotp.secret, UserTotp.confirmed_at).where(UserTotp.user_id == user_id)
        row = (await self.session.execute(statement)).first()
        return TotpState(*row) if row else None

    async def is_confirmed(self, user_id: UUID) -> bool:
        """Without the secret: needs no key."""
        statement = select(UserTotp.user_id).where(UserTotp.user_id == user_id, UserTotp.confirmed_at.is_not(None))
        return (await self.session.execute(statement)).first() is not None

    async def save_pending(self, user_id: UUID, secret: str, now: datetime) -> bool:
        """A new pending secret, replacing a pending one; False (nothing written) when a confirmed one exists."""
        upsert = postgresql_insert if self.session.get_bind().dialect.name == "postgresql" else sqlite_insert
        values = {"user_id": user_id, "secret": secret, "confirmed_at": None, "last_used_step": 0, "created_at": now}
        new = upsert(UserTotp).values(values)
        statement = new.on_conflict_do_update(
            index_elements=[UserTotp.user_id],
            set_={"secret": new.excluded.secret, "created_at": new.excluded.created_at},
            where=UserTotp.confirmed_at.is_(None),
        ).returning(UserTotp.user_id)
        return (await self.session.execute(statement)).first() is not None

    async def accept_step(self, user_id: UUID, step: int, confirm_at: datetime | None = None) -> bool:
        """Whether `step` is newer than the last accepted one (now it is the last): each code works once. With
        `confirm_at`, only for a pending secret, which it confirms; otherwise only for a confirmed one."""
        values: dict[str, Any] = {"last_used_step": step}
        state = UserTotp.confirmed_at.is_not(None)
        if confirm_at is not None:
            values["confirmed_at"] = confirm_at
            state = UserTotp.confirmed_at.is_(None)
        statement = (
            update(UserTotp)
            .where(UserTotp.user_id == user_id, UserTotp.last_used_step < step, state)
            .values(values)
            .returning(UserTotp.user_id)
            .execution_options(synchronize_session=False)
        )
        return (await self.session.execute(statement)).first() is not None

    async def use_recovery_code(self, user_id: UUID, digest: str, now: datetime) -> bool:
        """Whether the user had this unused code (now used)."""
        statement = (
            update(UserRecoveryCode)
            .where(
                UserRecoveryCode.user_id == user_id,
                UserRecoveryCode.digest == digest,
                UserRecoveryCode.used_at.is_(None),
            )
            .values(used_at=now)
            .returning(UserRecoveryCode.id)
            .execution_options(synchronize_session=False)
        )
        return (await self.session.execute(statement)).first() is not None

    async def replace_recovery_codes(self, user_id: UUID, digests: list[str], now: datetime) -> None:
        await self.session.execute(delete(UserRecoveryCode).where(UserRecoveryCode.user_id == user_id))
        rows = [{"id": uuid7(), "user_id": user_id, "digest": digest, "created_at": now} for digest in digests]
        await self.session.execute(insert(UserRecoveryCode), rows)

    async def set_enabled(self, user_id: UUID, enabled: bool) -> bool:
        """user.totp_enabled, in the transaction that confirms or removes the factor; whether the user exists."""
        statement = (
            update(User)
            .where(User.id == user_id)
            .values(totp_enabled=enabled)
            .returning(User.id)
            .execution_options(synchronize_session=False)
        )
        return (await self.session.execute(statement)).first() is not None

    async def remove(self, user_id: UUID) -> bool:
        """The user's secret (pending or confirmed) and recovery codes; whether there was a secret."""
        statement = delete(UserTotp).where(UserTotp.user_id == user_id).returning(UserTotp.user_id)
        removed = (await self.session.execute(statement)).first() is not None
        await self.session.execute(delete(UserRecoveryCode).where(UserRecoveryCode.user_id == user_id))
        return removed


class TotpService:
    """A user's TOTP second factor: enrolment (a pending secret), confirmation with a first code (which turns it on
    and makes the recovery codes), the check at login, and its removal by its owner or a superuser. `key` is
    TOTP_ENCRYPTION_KEY: without it nothing needing the secret is possible (503).

    A method that checks a code answers None or False when the code is refused, so that the caller counts it as a
    guess (app/api/login.py `counted_as_guess`); what refuses the request for another reason raises."""

    def __init__(
        self,
        caller: Caller | None,
        open_session: OpenSession,
        passwords: security.Passwords,
        key: str | None,
        issuer: str,
    ) -> None:
        self._caller = caller
        self.open_session = open_session
        self.passwords = passwords
        self.key = key
        self.issuer = issuer

    @cached_property
    def repository(self) -> TotpRepository:
        return TotpRepository(self.open_session())

    @property
    def caller(self) -> Caller:
        if self._caller is None:
            raise RuntimeError("this route is not authenticated: it has no caller")
        return self._caller

    @contextmanager
    def _keyed(self) -> Iterator[None]:
        """The statements within encrypt and decrypt the secret with this app's key (db/models.py TOTP_KEY)."""
        if self.key is None:
            raise Unavailable(TOTP_NOT_CONFIGURED)
        token = TOTP_KEY.set(self.key)
        try:
            yield
        finally:
            TOTP_KEY.reset(token)

    async def enrol(self) -> TotpEnrolment:
        """A new secret for the caller, pending until confirmed (a new enrolment replaces a pending one)."""
        secret = totp.new_secret()
        with self._keyed():
            if not await self.repository.save_pending(self.caller.id, secret, utc_now()):
                raise Conflict(TOTP_ALREADY_ENABLED)
        return TotpEnrolment(secret=secret, otpauth_uri=totp.otpauth_uri(secret, self.issuer, self.caller.email))

    async def confirm(self, code: str) -> TotpRecoveryCodes | None:
        """The pending secret confirmed by a current code (which is then used up): the second factor is on, and
        these recovery codes (shown once) replace any earlier ones. None when the code is refused."""
        user_id = self.caller.id
        now = utc_now()
        with self._keyed():
            state = await self.repository.read(user_id)
            if state is None:
                raise Rejected(TOTP_NOT_ENROLLED)
            if state.confirmed_at is not None:
                raise Conflict(TOTP_ALREADY_ENABLED)
            step = totp.matching_step(state.secret, code)
            if step is None or not await self.repository.accept_step(user_id, step, confirm_at=now):
                return None
        codes = [totp.new_recovery_code() for _ in range(RECOVERY_CODES)]
        await self.repository.replace_recovery_codes(user_id, [recovery_digest(code) for code in codes], now)
        await self.repository.set_enabled(user_id, True)
        audit(AuditEvent.TOTP_ENABLED, user_id=user_id)
        return TotpRecoveryCodes(recovery_codes=codes)

    async def verify(self, user_id: UUID, otp: str | None, recovery_code: str | None) -> SecondFactor | None:
        """The second factor given (a current code, else a recovery code) accepted and used up, or None. A code is
        accepted once: for a step within the window newer than the last accepted one."""
        if otp is not None:
            with self._keyed():
                state = await self.repository.read(user_id)
                if state is None or state.confirmed_at is None:
                    return None  # removed since the login read the user
                step = totp.matching_step(state.secret, otp)
                accepted = step is not None and await self.repository.accept_step(user_id, step)
            return "otp" if accepted else None
        if recovery_code is not None and await self.repository.use_recovery_code(
            user_id, recovery_digest(recovery_code), utc_now()
        ):
            audit(AuditEvent.RECOVERY_CODE_USED, user_id=user_id)
            return "recovery_code"
        return None

    async def disable(self, password: str, code: str) -> bool:
        """The caller's own second factor off, with their password and a current code or a recovery code; False
        when either is wrong (the answer does not say which)."""
        user_id = self.caller.id
        if not await self.repository.is_confirmed(user_id):
            raise Rejected(TOTP_NOT_ENABLED)
        matches, _ = await self.passwords.verify(password, self.caller.hashed_password)
        if not matches:
            return False
        is_otp = totp.looks_like_otp(code)
        used = await self.verify(user_id, code if is_otp else None, None if is_otp else code)
        if used is None:
            return False
        await self.repository.remove(user_id)
        await self.repository.set_enabled(user_id, False)
        audit(AuditEvent.TOTP_DISABLED, user_id=user_id, with_code=used)
        return True

    async def remove(self, user_id: UUID) -> None:
        """By a superuser (a user who lost their authenticator and their recovery codes): 404 for a user who is
        not there or has no second factor (pending or confirmed)."""
        if not await self.repository.set_enabled(user_id, False):
            raise NotFound(USER_NOT_FOUND)
        if not await self.repository.remove(user_id):
            raise NotFound(TOTP_NOT_ENABLED)  # the request's transaction is rolled back: nothing changed
        audit(AuditEvent.TOTP_REMOVED, user_id=user_id, actor_id=self.caller.id)


class UserService:
    """Accounts and credentials. `caller` is None on the routes that need no authentication (login, signup);
    `found` is the user a route read with its caller (ReadWithCaller), if any."""

    def __init__(
        self,
        caller: Caller | TokenCaller | None,
        fast: Executor,
        open_session: OpenSession,
        passwords: security.Passwords,
        found: Found[UserPublic] | None = None,
        by_pat: bool = False,
        check_password: CheckPassword | None = None,
        send_verification: SendVerification | None = None,
    ) -> None:
        self._caller = caller
        self.check_password = check_password
        # The caller is authenticated by a personal access token: their email is not theirs to change with it.
        self.by_pat = by_pat
        self.passwords = passwords
        self.fast = fast
        self.open_session = open_session
        self.found = found
        # None with EMAIL_VERIFICATION off: no link is sent.
        self.send_verification = send_verification

    @cached_property
    def repository(self) -> UserRepository:
        return UserRepository(session=self.open_session())

    @property
    def caller(self) -> Caller:
        if not isinstance(self._caller, Caller):
            raise RuntimeError("this route has no caller, or has not checked them (`_checked`)")
        return self._caller

    async def _checked(self, superuser: bool = False, row_id: UUID | None = None) -> Caller:
        """The caller, checked: a TokenCaller (whose change changed nothing) is read, with the user `row_id` in the
        same statement, and answered as the auth middleware and the superuser guard would."""
        token = self._caller
        if not isinstance(token, TokenCaller):
            return self.caller
        caller, found = await token.read_checked(self.fast, superuser, USER_WITH_CALLER, row_id)
        self._caller, self.found = caller, found or self.found
        return caller

    async def _renamed(self, user_id: UUID, changes: dict[str, Any], superuser: bool) -> UserPublic | None:
        """A change of the name alone by a TokenCaller, in one statement; None when it changed nothing (then the
        caller is checked and the change made as any other)."""
        if not isinstance(self._caller, TokenCaller) or changes.keys() != {"full_name"}:
            return None
        renamed = await UserRepository.rename_as(self.fast, self._caller, user_id, changes["full_name"], superuser)
        if renamed is not None:
            audit(AuditEvent.USER_UPDATED, user_id=user_id, actor_id=self._actor, fields=["full_name"])
        return renamed

    async def _deleted(self, user_id: UUID, superuser: bool) -> bool:
        """A deletion by a TokenCaller in one statement; False when it deleted nothing."""
        if not isinstance(self._caller, TokenCaller):
            return False
        if not await UserRepository.delete_as(self.fast, self._caller, user_id, superuser):
            return False
        audit(AuditEvent.USER_DELETED, user_id=user_id, actor_id=self._actor)
        return True

    async def get_by_email(self, email: str) -> User | None:
        # The one rule (db/identity.py) on both sides: no SQL function, whose folding would differ from Python's.
        return await self.repository.get_one_or_none(User.email_key == email_identity(email))

    async def authenticate(self, email: str, password: str) -> User | None:
        """The user with these credentials, or None. Costs the same hash work whether or not the email exists."""
        user = await self.get_by_email(email)
        matches, needs_rehash = await self.passwords.verify(
            password, user.hashed_password if user else self.passwords.dummy_hash
        )
        if user is None or not matches:
            return None
        if needs_rehash:
            user.hashed_password = await self.passwords.hash(password)
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
        """One INSERT; an email whose identity is taken is refused by the unique index (also when a concurrent
        request took it a moment before), after the same hash work as a new one."""
        await self._check_new_password(fields["password"], "password")
        hashed_password = await self.passwords.hash(fields.pop("password"))
        row = {
            "id": uuid7(),
            "created_at": utc_now(),
            "is_active": True,
            "is_superuser": False,
            "full_name": None,
            # An account a superuser creates is verified: they vouch for the address (a signup's is not).
            "is_verified": True,
            **fields,
            "email_key": email_identity(fields["email"]),
            "hashed_password": hashed_password,
            "token_version": 0,
            "kept_token_digest": None,
            "kept_session_id": None,
            "totp_enabled": False,
        }
        try:
            await UserRepository.insert(self.fast, row)
        except DuplicateKeyError:
            raise Rejected(duplicate_message) from None
        created = from_row(UserPublic, row, shown=self.fast.shown)
        audit(AuditEvent.USER_CREATED, user_id=created.id, actor_id=self._actor, is_superuser=created.is_superuser)
        if created.is_superuser:
            audit(AuditEvent.SUPERUSER_GRANTED, user_id=created.id, actor_id=self._actor)
        return created

    async def sign_up(self, fields: dict[str, Any], duplicate_message: str) -> UserPublic:
        """An account whose address is not verified yet (whatever EMAIL_VERIFICATION says: it is not); with
        verification on, a link goes to it."""
        created = await self.create_account({**fields, "is_verified": False}, duplicate_message)
        if self.send_verification is not None:
            self.send_verification(created.id, created.email, "signup")
        return created

    async def resend_verification(self, email: str) -> None:
        """A new link for the unverified account of this address; nothing for any other (the answer is the same)."""
        user = await self.get_by_email(email)
        if user is not None and not user.is_verified and self.send_verification is not None:
            self.send_verification(user.id, user.email, "resend")

    async def verify_email(self, token: str, secret: str) -> None:
        """The account of a verification link is verified. Refused (400) for a token that is malformed, expired or
        not ours, of an account that is gone, has another address now, or is verified already (so a link works
        once)."""
        try:
            user_id, fingerprint = security.decode_verify_token(token, secret)
        except security.InvalidTokenError:
            raise Rejected(INVALID_TOKEN) from None
        address = await UserRepository.read_address(self.fast, user_id)
        if address is None or address.is_verified:
            raise Rejected(INVALID_TOKEN)
        if not security.fingerprint_matches(fingerprint, address.email, secret):
            raise Rejected(INVALID_TOKEN)  # sent to an address the account no longer has
        if not await UserRepository.mark_verified(self.fast, user_id, address.email):
            raise Rejected(INVALID_TOKEN)  # verified, or given another address, since it was read
        audit(AuditEvent.EMAIL_VERIFIED, user_id=user_id)

    async def update(self, user_id: UUID, changes: dict[str, Any], not_found: str) -> UserPublic:
        """By a superuser; the user as it was comes from the caller's own statement (ReadWithCaller). A superuser
        may neither demote nor deactivate themself, as they may not delete themself: the last one would lock
        administration out."""
        renamed = await self._renamed(user_id, changes, superuser=True)
        if renamed is not None:
            return renamed
        await self._checked(superuser=True, row_id=user_id)
        if self.by_pat and ("email" in changes or "password" in changes):
            raise Forbidden(NOT_WITH_PAT)  # a leaked token must not take over accounts by their credentials
        if user_id == self.caller.id:
            if changes.get("is_superuser") is False:
                raise Forbidden(SUPERUSER_SELF_DEMOTE)
            if changes.get("is_active") is False:
                raise Forbidden(SUPERUSER_SELF_DEACTIVATE)
        if self.found is not None and self.found.row_id == user_id:
            before = self.found.row
        else:
            before = await UserRepository.read_public(self.fast, user_id)
        if before is None:
            raise NotFound(not_found)
        if "password" in changes:
            await self._check_new_password(changes["password"], "password")
        return await self._apply(before, changes)

    async def update_me(self, changes: dict[str, Any]) -> UserPublic:
        """A personal access token may change the caller's name, not their email (who owns the email owns the
        account: its recovery links go there)."""
        renamed = await self._renamed(self._caller_id, changes, superuser=False)
        if renamed is not None:
            return renamed
        caller = await self._checked()
        if "email" in changes and self.by_pat:
            raise Forbidden(NOT_WITH_PAT)
        return await self._apply(caller.public(), changes)

    async def start_session(
        self, user: User, label: str, client_network: str, lifetime: timedelta, refresh_key: str | None = None
    ) -> tuple[UUID, security.RefreshToken | None]:
        """A new session of `user` (a login), in the request's transaction (that of the login's own reads and
        rehash): its id, which the access token names, and its first refresh token when `refresh_key` is given
        (only its digest is stored)."""
        now = utc_now()
        session_id = uuid7()
        refresh = security.new_refresh_token(session_id, 0, refresh_key) if refresh_key else None
        refresh_digest = security.token_digest(str(refresh)) if refresh else None
        values = {
            "id": session_id,
            "user_id": user.id,
            "created_at": now,
            "last_used_at": now,
            "expires_at": now + lifetime,
            "ended_at": None,
            "label": label,
            "client_network": client_network,
            "token_version": user.token_version,
            "refresh_digest": refresh_digest,
            "refresh_generation": 0,
            "legacy": False,
        }
        await self.repository.session.execute(SessionRepository.INSERT, values)
        audit(AuditEvent.SESSION_CREATED, user_id=user.id, session_id=str(session_id))
        return session_id, refresh

    async def refresh(self, token: str, key: str, lifetime: timedelta) -> tuple[Refreshed, security.RefreshToken]:
        """Rotates a refresh token: the session's next one (the given one never works again) and what its new
        access token is minted from; the session now expires `lifetime` from now. A token of ours older than the
        session's current one was used before: someone else holds a copy, and the session ends (only that one)."""
        parsed = security.parse_refresh_token(token, key)
        if parsed is None:
            raise Rejected(INVALID_REFRESH_TOKEN)
        now = utc_now()
        rotated = security.new_refresh_token(parsed.session_id, parsed.generation + 1, key)
        refreshed = await SessionRepository.refresh(
            self.fast,
            parsed.session_id,
            security.token_digest(str(parsed)),
            security.token_digest(str(rotated)),
            now,
            now + lifetime,
        )
        if refreshed is None:
            owner = await SessionRepository.end_reused(self.fast, parsed.session_id, parsed.generation, now)
            if owner is not None:
                audit(AuditEvent.SESSION_REFRESH_REUSED, user_id=owner, session_id=str(parsed.session_id))
            raise Rejected(INVALID_REFRESH_TOKEN)
        audit(AuditEvent.SESSION_REFRESHED, user_id=refreshed.user_id, session_id=str(parsed.session_id))
        return refreshed, rotated

    async def change_own_password(self, current: str, new: str, access: security.AccessToken) -> None:
        """The caller's other sessions end; the session of `access` (the token that made the change) stays."""
        matches, _ = await self.passwords.verify(current, self.caller.hashed_password)
        if not matches:
            raise Rejected(INCORRECT_PASSWORD)
        if current == new:
            raise Rejected(SAME_PASSWORD)
        await self._check_new_password(new, "new_password")
        await self._apply(self.caller.public(), {"password": new}, access)

    async def reset_password(self, user: User, new_password: str) -> None:
        """A new password by a recovery link: every session ends."""
        await self._check_new_password(new_password, "new_password")
        await self._apply(user_public(user), {"password": new_password}, reset=True)

    async def delete(self, user_id: UUID) -> None:
        """By a superuser: the user and, by the item->owner foreign key's cascade, their items."""
        if not await self._deleted(user_id, superuser=True):
            await self._checked(superuser=True, row_id=user_id)
            await self._delete(user_id)

    async def delete_me(self) -> None:
        if not await self._deleted(self._caller_id, superuser=False):
            await self._delete((await self._checked()).id)

    async def _delete(self, user_id: UUID) -> None:
        if user_id == self.caller.id and self.caller.is_superuser:
            raise Forbidden(SUPERUSER_SELF_DELETE)
        gone = self.found is not None and self.found.row_id == user_id and self.found.row is None
        if gone or not await UserRepository.delete_by_id(self.fast, user_id):
            raise NotFound(USER_NOT_FOUND)
        audit(AuditEvent.USER_DELETED, user_id=user_id, actor_id=self._actor)

    async def _check_new_password(self, password: str, field: str) -> None:
        """Before the password is hashed and anything is written, so that a refusal leaves nothing behind."""
        if self.check_password is not None:
            await self.check_password(password, field)

    async def _apply(
        self,
        before: UserPublic,
        changes: dict[str, Any],
        keep: security.AccessToken | None = None,
        reset: bool = False,
    ) -> UserPublic:
        """A partial update of the user who was `before`, in one statement. A new password or a deactivation
        revokes the user's sessions (bumps token_version), except, for a new password, the session of `keep` (the
        token that changed its own password; for a legacy token, that token only)."""
        values = dict(changes)
        revoke_tokens = False
        events: list[tuple[AuditEvent, dict[str, Any]]] = []
        if "password" in values:
            values["hashed_password"] = await self.passwords.hash(values.pop("password"))
            values["kept_session_id"] = keep.session_id if keep else None
            values["kept_token_digest"] = keep.digest if keep and keep.legacy else None
            revoke_tokens = True
            events.append((AuditEvent.PASSWORD_RESET if reset else AuditEvent.PASSWORD_CHANGED, {}))
            events.append((AuditEvent.TOKENS_REVOKED, {"reason": "password", "kept_one": keep is not None}))
        if values.get("is_active") is False and before.is_active:
            values["kept_session_id"] = None
            values["kept_token_digest"] = None
            revoke_tokens = True
            events.append((AuditEvent.TOKENS_REVOKED, {"reason": "deactivated", "kept_one": False}))
        # A new address (not the same one spelt otherwise) is not verified yet.
        readdressed = "email" in values and email_identity(values["email"]) != email_identity(before.email)
        if readdressed:
            values["is_verified"] = False
        if "is_superuser" in values and values["is_superuser"] != before.is_superuser:
            granted = bool(values["is_superuser"])
            events.append((AuditEvent.SUPERUSER_GRANTED if granted else AuditEvent.SUPERUSER_REVOKED, {}))
        try:
            updated = await UserRepository.update_public(self.fast, before.id, values, revoke_tokens)
        except DuplicateKeyError:
            raise Conflict(EMAIL_TAKEN) from None
        if updated is None:
            raise NotFound(USER_NOT_FOUND)  # deleted since it was read
        if readdressed and self.send_verification is not None:
            self.send_verification(updated.id, updated.email, "email_changed")
        if not reset:
            fields = sorted(name for name, value in changes.items() if getattr(before, name, None) != value)
            audit(AuditEvent.USER_UPDATED, user_id=before.id, actor_id=self._actor, fields=fields)
        for event, details in events:
            audit(event, user_id=before.id, actor_id=self._actor, **details)
        return updated

    @property
    def _actor(self) -> UUID | None:
        """Who acts: the signed-in caller, or nobody (signup, a recovery link)."""
        return self._caller.id if self._caller is not None else None

    @property
    def _caller_id(self) -> UUID:
        """The caller's id, checked or not yet."""
        if self._caller is None:
            raise RuntimeError("this route is not authenticated: it has no caller")
        return self._caller.id


class ItemService:
    """Items of one caller: all of them for a superuser, their own otherwise (404 before 403). `found` is the item
    a route read with its caller (ReadWithCaller), if any.

    A change's caller may be a TokenCaller (a route with CHECKED_IN_WRITE): the change is then one statement that
    checks them too; only when it changes nothing are the caller and the item read, for the contract's answer."""

    def __init__(self, caller: Caller | TokenCaller, fast: Executor, found: Found[ItemPublic] | None = None) -> None:
        self.caller = caller
        self.fast = fast
        self.found = found

    async def page(self, skip: int, limit: int) -> ItemsPublic:
        caller = await self._checked()
        owner_id = None if caller.is_superuser else caller.id
        items, count = await ItemRepository.read_page(self.fast, owner_id, skip, limit)
        return ItemsPublic(data=items, count=count)

    async def read(self, item_id: UUID) -> ItemPublic:
        caller = await self._checked(item_id)
        if self.found is not None and self.found.row_id == item_id:
            item = self.found.row
        else:
            item = await ItemRepository.read_public(self.fast, item_id)
        return _visible(caller, item)

    async def create(self, data: ItemCreate) -> ItemPublic:
        item = ItemPublic(
            title=data.title, description=data.description, id=uuid7(), owner_id=self.caller.id, created_at=utc_now()
        )
        try:
            if isinstance(self.caller, TokenCaller) and await ItemRepository.insert_as(self.fast, self.caller, item):
                return item
            await self._checked()
            await ItemRepository.insert_public(self.fast, item)
        except ForeignKeyError:
            raise NotFound(USER_NOT_FOUND) from None  # the caller was deleted since its token was checked
        return item

    async def update(self, item_id: UUID, changes: dict[str, Any]) -> ItemPublic:
        if isinstance(self.caller, TokenCaller) and changes:
            changed = await ItemRepository.update_as(self.fast, self.caller, item_id, changes)
            if changed is not None:
                return changed
        await self.read(item_id)
        updated = await ItemRepository.update_public(self.fast, item_id, changes)
        if updated is None:
            raise NotFound(ITEM_NOT_FOUND)  # deleted since it was read
        return updated

    async def delete(self, item_id: UUID) -> None:
        if isinstance(self.caller, TokenCaller) and await ItemRepository.delete_as(self.fast, self.caller, item_id):
            return
        await self.read(item_id)
        if not await ItemRepository.delete_by_id(self.fast, item_id):
            raise NotFound(ITEM_NOT_FOUND)

    async def _checked(self, item_id: UUID | None = None) -> Caller:
        """The caller, checked: a TokenCaller is read (with the item `item_id`, in the same statement) and answered
        as the auth middleware would."""
        if isinstance(self.caller, Caller):
            return self.caller
        caller, found = await self.caller.read_checked(self.fast, read=ITEM_WITH_CALLER, row_id=item_id)
        self.caller, self.found = caller, found or self.found
        return caller


def _visible(caller: Caller, item: ItemPublic | None) -> ItemPublic:
    """Existence first (404), then ownership (403)."""
    if item is None:
        raise NotFound(ITEM_NOT_FOUND)
    if not caller.is_superuser and item.owner_id != caller.id:
        raise Forbidden(NOT_ENOUGH_PERMISSIONS)
    return item


def provide_user_service(request: Request[Any, Any, Any]) -> UserService:
    found = request.state.get(READ_WITH_CALLER)
    state = request.app.state
    by_pat = isinstance(request.scope.get("auth"), security.PatAuth)
    breach = state.breach
    return UserService(
        request.scope.get("user"),
        state.executor,
        _session_opener(request),
        state.passwords,
        found,
        by_pat,
        breach.check if breach is not None else None,
        state.verification.send if state.verification else None,
    )


def provide_token_service(request: Request[Caller, Any, Any]) -> PersonalAccessTokenService:
    state = request.app.state
    return PersonalAccessTokenService(request.user, state.executor, state.settings.PAT_MAX_DAYS)


def provide_totp_service(request: Request[Any, Any, Any]) -> TotpService:
    state = request.app.state
    key, issuer = state.settings.TOTP_ENCRYPTION_KEY, state.settings.PROJECT_NAME
    return TotpService(request.scope.get("user"), _session_opener(request), state.passwords, key, issuer)


def provide_session_service(request: Request[Caller, security.AccessToken, Any]) -> SessionService:
    return SessionService(request.user, request.auth, request.app.state.executor, request.state.get(READ_WITH_CALLER))


def provide_item_service(request: Request[Caller | TokenCaller, Any, Any]) -> ItemService:
    return ItemService(request.user, request.app.state.executor, request.state.get(READ_WITH_CALLER))


def _session_opener(request: Request[Any, Any, Any]) -> OpenSession:
    """The request's session (committed on 2xx, rolled back otherwise), created on first use."""
    return partial(request.app.state.db_config.provide_session, request.app.state, request.scope)
