"""Bearer-token authentication (a Litestar middleware) and role guards."""

from __future__ import annotations

from typing import Any

import structlog
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
from db.queries import HotPath, UserRow

EXCLUDE_FROM_AUTH = "exclude_from_auth"
NOT_AUTHENTICATED = "Not authenticated"
INVALID_CREDENTIALS = "Could not validate credentials"


class BearerAuthMiddleware(AbstractAuthenticationMiddleware):
    """`Authorization: Bearer <JWT>` → `connection.user`, in the contract's order of answers:
    401 no bearer token, 403 a token that fails verification (or was revoked), 404 its user is gone,
    400 its user is inactive."""

    def __init__(self, app: ASGIApp, settings: Settings, hot_path: HotPath, **kwargs: Any) -> None:
        super().__init__(app, exclude_from_auth_key=EXCLUDE_FROM_AUTH, exclude_http_methods=["OPTIONS"], **kwargs)
        self.settings = settings
        self.hot_path = hot_path

    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticationResult:
        scheme, _, token = connection.headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise NotAuthorizedException(NOT_AUTHENTICATED, headers={"WWW-Authenticate": "Bearer"})
        try:
            user_id, token_version = security.decode_access_token(token, self.settings.SECRET_KEY)
        except security.InvalidTokenError:
            raise PermissionDeniedException(INVALID_CREDENTIALS) from None
        user = await self.hot_path.user(user_id)
        if user is None:
            raise NotFoundException("User not found")
        if not user.is_active:
            raise HTTPException(status_code=400, detail="Inactive user")
        if user.token_version != token_version:
            # Revoked: issued before a password change or a deactivation.
            raise PermissionDeniedException(INVALID_CREDENTIALS)
        structlog.contextvars.bind_contextvars(user_id=str(user.id))
        return AuthenticationResult(user=user, auth=token)


def auth_middleware(settings: Settings, hot_path: HotPath) -> DefineMiddleware:
    return DefineMiddleware(BearerAuthMiddleware, settings=settings, hot_path=hot_path)


def requires_superuser(connection: ASGIConnection[Any, UserRow, Any, Any], _: BaseRouteHandler) -> None:
    if not connection.user.is_superuser:
        raise PermissionDeniedException("The user doesn't have enough privileges")
