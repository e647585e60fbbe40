"""Bearer-token authentication (a Litestar middleware) and role guards."""

from __future__ import annotations

from typing import Any
from uuid import UUID

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
# Route opt: the path parameter naming an item to read in the caller's statement (one round trip, not two).
PREFETCH_ITEM = "prefetch_item"
# Request state: {item id: the item or None}, what PREFETCH_ITEM read.
PREFETCHED_ITEMS = "prefetched_items"
NOT_AUTHENTICATED = "Not authenticated"
INVALID_CREDENTIALS = "Could not validate credentials"
USER_NOT_FOUND = "User not found"
INACTIVE_USER = "Inactive user"
NOT_ENOUGH_PRIVILEGES = "The user doesn't have enough privileges"


class BearerAuthMiddleware(AbstractAuthenticationMiddleware):
    """`Authorization: Bearer <JWT>` → `connection.user`, in the contract's order of answers:
    401 no bearer token, 403 a token that fails verification (or was revoked), 404 its user is gone,
    400 its user is inactive.

    A route whose opt names an item's path parameter (PREFETCH_ITEM) gets that item read in the caller's own
    statement and left in the request state (PREFETCHED_ITEMS) for its handler: one round trip instead of two."""

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
            access = security.decode_access_token(token, self.settings.SECRET_KEY)
        except security.InvalidTokenError:
            raise PermissionDeniedException(INVALID_CREDENTIALS) from None
        item_id = self._item_to_prefetch(connection)
        if item_id is None:
            user = await self.hot_path.user(access.user_id)
        else:
            user, item = await self.hot_path.user_and_item(access.user_id, item_id)
            connection.state[PREFETCHED_ITEMS] = {item_id: item}
        if user is None:
            raise NotFoundException(USER_NOT_FOUND)
        if not user.is_active:
            raise HTTPException(status_code=400, detail=INACTIVE_USER)
        if user.token_version != access.version and user.kept_token_digest != access.digest:
            # Revoked: issued before a password change or a deactivation (but for the session that changed
            # its own password).
            raise PermissionDeniedException(INVALID_CREDENTIALS)
        structlog.contextvars.bind_contextvars(user_id=str(user.id))
        return AuthenticationResult(user=user, auth=access)

    @staticmethod
    def _item_to_prefetch(connection: ASGIConnection[Any, Any, Any, Any]) -> UUID | None:
        parameter = connection.route_handler.opt.get(PREFETCH_ITEM)
        if parameter is None:
            return None
        try:
            return UUID(connection.path_params[parameter])
        except ValueError:
            return None  # the handler answers 422 for it


def auth_middleware(settings: Settings, hot_path: HotPath) -> DefineMiddleware:
    return DefineMiddleware(BearerAuthMiddleware, settings=settings, hot_path=hot_path)


def requires_superuser(connection: ASGIConnection[Any, UserRow, Any, Any], _: BaseRouteHandler) -> None:
    if not connection.user.is_superuser:
        raise PermissionDeniedException(NOT_ENOUGH_PRIVILEGES)
