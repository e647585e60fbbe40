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
from app.services import READ_WITH_CALLER, Found, ReadWithCaller, UserRepository
from db.executor import Executor

EXCLUDE_FROM_AUTH = "exclude_from_auth"


class BearerAuthMiddleware(AbstractAuthenticationMiddleware):
    """`Authorization: Bearer <JWT>` → `connection.user` (a `Caller`), in the contract's order of answers:
    401 no bearer token, 403 a token that fails verification (or was revoked), 404 its user is gone,
    400 its user is inactive.

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
            user = await UserRepository.read_caller(self.fast, access.user_id)
        else:
            user, row = await UserRepository.read_caller_with(self.fast, access.user_id, read, row_id)
            connection.state[READ_WITH_CALLER] = Found(row_id, row)
        if user is None:
            raise NotFoundException(USER_NOT_FOUND)
        if not user.is_active:
            raise HTTPException(status_code=400, detail=INACTIVE_USER)
        if user.token_version != access.version and user.kept_token_digest != access.digest:
            # Revoked: issued before a password change or a deactivation (but for the session that changed
            # its own password).
            raise PermissionDeniedException(INVALID_CREDENTIALS)
        bind_user(user.id)
        return AuthenticationResult(user=user, auth=access)


def auth_middleware(settings: Settings, fast: Executor) -> DefineMiddleware:
    return DefineMiddleware(BearerAuthMiddleware, settings=settings, fast=fast)


async def requires_superuser(connection: ASGIConnection[Any, Caller, Any, Any], _: BaseRouteHandler) -> None:
    # async: Litestar runs a plain function guard in a worker thread, a hop on every superuser request.
    if not connection.user.is_superuser:
        raise PermissionDeniedException(NOT_ENOUGH_PRIVILEGES)
