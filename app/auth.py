"""Bearer-token authentication (a Litestar middleware) and role guards."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import (
    HTTPException,
    NotAuthorizedException,
    NotFoundException,
    PermissionDeniedException,
)
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult, DefineMiddleware
from litestar.types import ASGIApp

from app import security
from app.config import Settings
from app.errors import INACTIVE_USER, INVALID_CREDENTIALS, NOT_AUTHENTICATED, NOT_ENOUGH_PRIVILEGES, USER_NOT_FOUND
from app.observability import bind_user
from app.schemas import Caller
from app.services import READ_WITH_CALLER, Found, ReadWithCaller, UserRepository, session_admits
from app.sessions import TOUCH_EVERY, TOUCH_STATE_KEY
from db.executor import Executor
from db.models import utc_now

EXCLUDE_FROM_AUTH = "exclude_from_auth"


class BearerAuthMiddleware(AbstractAuthenticationMiddleware):
    """`Authorization: Bearer <JWT>` → `connection.user` (a `Caller`), in the contract's order of answers:
    401 no bearer token, 403 a token that fails verification (or was revoked), 404 its user is gone,
    400 its user is inactive.

    The token's session is read with the caller (app/services.py `session_admits` says whether it still admits
    the token); its `last_used_at` is written after the answer when older than a minute (app/sessions.py).

    A route whose opt declares a `ReadWithCaller` (under READ_WITH_CALLER) gets that row read in the caller's own
    statement and left in the request state under the same key, as a `Found`: one round trip instead of two."""

    def __init__(self, app: ASGIApp, settings: Settings, fast: Executor, **kwargs: Any) -> None:
        super().__init__(app, exclude_from_auth_key=EXCLUDE_FROM_AUTH, exclude_http_methods=["OPTIONS"], **kwargs)
        self.settings = settings
        self.fast = fast
        self.token_lifetime = timedelta(minutes=settings.ACCESS_TOKEN_EXPIRE_MINUTES)

    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticationResult:
        scheme, _, token = connection.headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise NotAuthorizedException(NOT_AUTHENTICATED, headers={"WWW-Authenticate": "Bearer"})
        try:
            access = security.decode_access_token(token, self.settings.SECRET_KEY, self.token_lifetime)
        except security.InvalidTokenError:
            raise PermissionDeniedException(INVALID_CREDENTIALS) from None
        read = connection.route_handler.opt.get(READ_WITH_CALLER)
        row_id = read.row_id(connection.path_params) if isinstance(read, ReadWithCaller) else None
        if row_id is None:
            user, session = await UserRepository.read_caller(self.fast, access.user_id, access.session_id)
        else:
            user, session, row = await UserRepository.read_caller_with(
                self.fast, access.user_id, access.session_id, read, row_id
            )
            connection.state[READ_WITH_CALLER] = Found(row_id, row)
        if user is None:
            raise NotFoundException(USER_NOT_FOUND)
        if not user.is_active:
            raise HTTPException(status_code=400, detail=INACTIVE_USER)
        now = utc_now()
        if not session_admits(user, session, access, now):
            # Its session ended, expired, or was revoked by a password change or a deactivation (but for the
            # session that changed its own password).
            raise PermissionDeniedException(INVALID_CREDENTIALS)
        if session is not None and session.last_used_at < now - TOUCH_EVERY:
            connection.state[TOUCH_STATE_KEY] = session.id  # written after the answer (app/sessions.py)
        bind_user(user.id)
        return AuthenticationResult(user=user, auth=access)


def auth_middleware(settings: Settings, fast: Executor) -> DefineMiddleware:
    return DefineMiddleware(BearerAuthMiddleware, settings=settings, fast=fast)


async def requires_superuser(connection: ASGIConnection[Any, Caller, Any, Any], _: BaseRouteHandler) -> None:
    # async: Litestar runs a plain function guard in a worker thread, a hop on every superuser request.
    if not connection.user.is_superuser:
        raise PermissionDeniedException(NOT_ENOUGH_PRIVILEGES)
