"""Bearer-token authentication (a Litestar middleware) and role guards."""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import partial
from typing import Any
from uuid import UUID

from litestar.connection import ASGIConnection
from litestar.exceptions import (
    HTTPException,
    NotAuthorizedException,
    PermissionDeniedException,
)
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult, DefineMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from app import security
from app.background import Background
from app.config import Settings
from app.errors import (
    INACTIVE_USER,
    INVALID_CREDENTIALS,
    NOT_AUTHENTICATED,
    NOT_ENOUGH_PRIVILEGES,
    NOT_WITH_PAT,
    READ_ONLY_TOKEN,
)
from app.observability import bind_user
from app.schemas import Caller, PatCredential
from app.services import (
    PAT_USE_RESOLUTION,
    READ_WITH_CALLER,
    Found,
    ReadWithCaller,
    TokenCaller,
    UserRepository,
    check_caller,
    record_pat_use,
)
from app.sessions import Touches
from db.executor import Executor
from db.models import utc_now

EXCLUDE_FROM_AUTH = "exclude_from_auth"
# A route's opt: the route's change checks its caller in its own statement (app/services.py TokenCaller), so a
# JWT's caller is not read here (a legacy token's or a PAT's still is). Its value: CALLER, or SUPERUSER for a route
# that also has the `requires_superuser` guard (which leaves a TokenCaller to the change).
CHECKED_IN_WRITE = "checked_in_write"
CALLER = "caller"
SUPERUSER = "superuser"
# A route's opt: a personal access token is refused there (403 NOT_WITH_PAT), whatever its scope: its account's
# credentials and its tokens and sessions are managed with a login's token only.
NO_PAT = "no_pat"
# What a `read` personal access token may do (any other method is refused 403 READ_ONLY_TOKEN).
READING_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
WRITE_SCOPE = "read-write"
# The request state's keys of what is written after the response: a token use to note (a (token id, user id, first
# use) tuple), a session whose last_used_at is stale (its id).
_PAT_USED = "pat_used"
_TOUCH = "touch_session"
# Tokens whose use this process noted lately (by id, with when): at most this many are remembered.
_NOTED_MAX = 10_000


class BearerAuthMiddleware(AbstractAuthenticationMiddleware):
    """`Authorization: Bearer <JWT>` or `Bearer lsp_…` (a personal access token, `authenticate_pat`) →
    `connection.user` (a `Caller`) and `connection.auth` (an `AccessToken`, a `PatAuth`). For a JWT, in the
    contract's order of answers:
    401 no bearer token, 403 a token that fails verification (or was revoked), 404 its user is gone,
    400 its user is inactive.

    The token's session is read with the caller (app/services.py `session_admits` says whether it still admits
    the token); its `last_used_at` is written after the answer when older than a minute (app/sessions.py).

    A route whose opt declares a `ReadWithCaller` (under READ_WITH_CALLER) gets that row read in the caller's own
    statement and left in the request state under the same key, as a `Found`: one round trip instead of two."""

    def __init__(
        self,
        app: ASGIApp,
        settings: Settings,
        fast: Executor,
        background: Background,
        touches: Touches,
        **kwargs: Any,
    ) -> None:
        super().__init__(app, exclude_from_auth_key=EXCLUDE_FROM_AUTH, exclude_http_methods=["OPTIONS"], **kwargs)
        self.settings = settings
        self.fast = fast
        self.token_lifetime = timedelta(minutes=settings.ACCESS_TOKEN_EXPIRE_MINUTES)
        self.background = background
        self.touches = touches
        self._noted: dict[UUID, datetime] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            if scope["route_handler"].opt.get(CHECKED_IN_WRITE):
                await self._checked_before_refusal(scope, receive, send)
            else:
                await super().__call__(scope, receive, send)
        finally:
            # After the response (or the refusal raised to the exception handlers): never a statement of the request.
            # Here rather than in an after_response hook, which every route, this middleware's excluded ones too,
            # would pay for (a Request's state built per request).
            state = scope.get("state")
            if state:
                used = state.pop(_PAT_USED, None)
                if used is not None:
                    self.background.post("pat_used", partial(record_pat_use, self.fast, *used))
                stale_session = state.pop(_TOUCH, None)
                if stale_session is not None:
                    self.touches.post(stale_session)
            caller = scope.get("user")
            if isinstance(caller, TokenCaller) and caller.stale:
                self.touches.post(caller.access.session_id)

    async def _checked_before_refusal(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A CHECKED_IN_WRITE route, whose change checks its caller: a refusal answered before that check (a
        malformed body, say) is held until the caller is checked here, since the contract answers for the caller
        first."""
        held: list[Message] = []

        async def hold_refusal(message: Message) -> None:
            if not held and message["type"] == "http.response.start" and 400 <= message["status"] < 500:
                caller = scope.get("user")
                if isinstance(caller, TokenCaller) and not caller.checked:
                    held.append(message)
                    return
            if held:
                held.append(message)
                return
            await send(message)

        await super().__call__(scope, receive, hold_refusal)
        caller = scope.get("user")
        if held and isinstance(caller, TokenCaller):
            # Raises the caller's own answer, if they have one.
            await caller.read_checked(self.fast, superuser=scope["route_handler"].opt[CHECKED_IN_WRITE] == SUPERUSER)
        for message in held:
            await send(message)

    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticationResult:
        scheme, _, token = connection.headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise NotAuthorizedException(NOT_AUTHENTICATED, headers={"WWW-Authenticate": "Bearer"})
        if security.is_pat(token):
            return await self.authenticate_pat(connection, token)
        try:
            access = security.decode_access_token(token, self.settings.SECRET_KEY, self.token_lifetime)
        except security.InvalidTokenError:
            raise PermissionDeniedException(INVALID_CREDENTIALS) from None
        if not access.legacy and connection.route_handler.opt.get(CHECKED_IN_WRITE):
            bind_user(access.user_id)
            return AuthenticationResult(user=TokenCaller(access), auth=access)
        read = connection.route_handler.opt.get(READ_WITH_CALLER)
        row_id = read.row_id(connection.path_params) if isinstance(read, ReadWithCaller) else None
        if row_id is None:
            user, session = await UserRepository.read_caller(self.fast, access.user_id, access.session_id)
        else:
            user, session, row = await UserRepository.read_caller_with(
                self.fast, access.user_id, access.session_id, read, row_id
            )
            connection.state[READ_WITH_CALLER] = Found(row_id, row)
        caller, stale = check_caller(user, session, access, utc_now())
        if stale:
            connection.state[_TOUCH] = access.session_id  # written after the answer (app/sessions.py)
        bind_user(caller.id)
        return AuthenticationResult(user=caller, auth=access)

    async def authenticate_pat(
        self, connection: ASGIConnection[Any, Any, Any, Any], token: str
    ) -> AuthenticationResult:
        """A personal access token (`lsp_…`): a malformed one or a bad checksum is refused 403 without a statement;
        otherwise one statement reads the caller with the token (by its digest), and the route's ReadWithCaller row.
        403 no such token (nor its user: it went with them), revoked or expired; 400 its user is inactive; then the
        token's limits: 403 on a NO_PAT route, 403 for a `read` token on a method that writes."""
        try:
            digest = security.parse_pat(token)
        except security.InvalidTokenError:
            raise PermissionDeniedException(INVALID_CREDENTIALS) from None
        read = connection.route_handler.opt.get(READ_WITH_CALLER)
        row_id = read.row_id(connection.path_params) if isinstance(read, ReadWithCaller) else None
        if row_id is None:
            found = await UserRepository.read_pat_caller(self.fast, digest)
        else:
            found, row = await UserRepository.read_pat_caller_with(self.fast, digest, read, row_id)
            connection.state[READ_WITH_CALLER] = Found(row_id, row)
        if found is None:
            raise PermissionDeniedException(INVALID_CREDENTIALS)
        user, pat = found
        if not user.is_active:
            raise HTTPException(status_code=400, detail=INACTIVE_USER)
        now = utc_now()
        if pat.revoked_at is not None or pat.expires_at <= now:
            raise PermissionDeniedException(INVALID_CREDENTIALS)
        if self._use_to_note(pat, now):
            connection.state[_PAT_USED] = (pat.id, user.id, pat.last_used_at is None)
        if connection.route_handler.opt.get(NO_PAT):
            raise PermissionDeniedException(NOT_WITH_PAT)
        if pat.scope != WRITE_SCOPE and connection.scope.get("method") not in READING_METHODS:
            raise PermissionDeniedException(READ_ONLY_TOKEN)
        bind_user(user.id)
        return AuthenticationResult(user=user, auth=security.PatAuth(pat.id, pat.scope))

    def _use_to_note(self, pat: PatCredential, now: datetime) -> bool:
        """Whether this use is to be written to last_used_at: the first, then once per PAT_USE_RESOLUTION (by the
        row read, and by what this process noted already, so that a burst of requests notes one)."""
        if pat.last_used_at is not None and now - pat.last_used_at < PAT_USE_RESOLUTION:
            return False
        noted = self._noted.get(pat.id)
        if noted is not None and timedelta(0) <= now - noted < PAT_USE_RESOLUTION:
            return False
        if len(self._noted) >= _NOTED_MAX:
            self._noted.clear()
        self._noted[pat.id] = now
        return True


def auth_middleware(settings: Settings, fast: Executor, background: Background, touches: Touches) -> DefineMiddleware:
    return DefineMiddleware(BearerAuthMiddleware, settings=settings, fast=fast, background=background, touches=touches)


async def requires_superuser(
    connection: ASGIConnection[Any, Caller | TokenCaller, Any, Any], _: BaseRouteHandler
) -> None:
    # async: Litestar runs a plain function guard in a worker thread, a hop on every superuser request.
    caller = connection.user
    if isinstance(caller, TokenCaller):
        return  # a CHECKED_IN_WRITE=SUPERUSER route: its change checks it (app/services.py check_caller)
    if not caller.is_superuser:
        raise PermissionDeniedException(NOT_ENOUGH_PRIVILEGES)
