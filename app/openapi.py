"""OpenAPI details that clients generated from the template's document rely on."""

from __future__ import annotations

from typing import Any

from litestar import Litestar
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.spec import Components, OpenAPIMediaType, OpenAPIResponse, Operation, Parameter, Reference, Schema
from litestar.openapi.spec.enums import OpenAPIType
from litestar.params import KwargDefinition
from litestar.routes import HTTPRoute
from litestar.types import Method

from app.auth import EXCLUDE_FROM_AUTH, requires_superuser
from app.errors import INACTIVE_USER, INVALID_CREDENTIALS, NOT_AUTHENTICATED, NOT_ENOUGH_PRIVILEGES, USER_NOT_FOUND

SECURITY_SCHEME = "OAuth2PasswordBearer"

_VALIDATION_ERROR = Schema(
    title="ValidationError",
    type=OpenAPIType.OBJECT,
    required=["loc", "msg", "type"],
    properties={
        "loc": Schema(
            title="Location",
            type=OpenAPIType.ARRAY,
            items=Schema(one_of=[Schema(type=OpenAPIType.STRING), Schema(type=OpenAPIType.INTEGER)]),
        ),
        "msg": Schema(title="Message", type=OpenAPIType.STRING),
        "type": Schema(title="Error Type", type=OpenAPIType.STRING),
    },
)
_HTTP_VALIDATION_ERROR = Schema(
    title="HTTPValidationError",
    type=OpenAPIType.OBJECT,
    properties={
        "detail": Schema(
            title="Detail",
            type=OpenAPIType.ARRAY,
            items=Reference(ref="#/components/schemas/ValidationError"),
        )
    },
)
_HTTP_ERROR = Schema(
    title="HTTPError",
    type=OpenAPIType.OBJECT,
    required=["detail"],
    properties={"detail": Schema(title="Detail", type=OpenAPIType.STRING)},
)
_UNPROCESSABLE = OpenAPIResponse(
    description="Validation Error",
    content={"application/json": OpenAPIMediaType(schema=Reference(ref="#/components/schemas/HTTPValidationError"))},
)


# What a bearer-authenticated route answers before its handler runs (see app/auth.py).
_AUTH_ERRORS = {"400": INACTIVE_USER, "401": NOT_AUTHENTICATED, "403": INVALID_CREDENTIALS, "404": USER_NOT_FOUND}
_SUPERUSER_ERRORS = {"403": NOT_ENOUGH_PRIVILEGES}
# The `{"detail": "..."}` answers of each route's own rules (the contract's table).
_ROUTE_ERRORS: dict[str, dict[str, str]] = {
    "login-login_access_token": {
        "400": "Incorrect email or password / Inactive user",
        "429": "Too many failed logins for this account or client",
    },
    "login-recover_password": {"429": "Too many recovery requests for this address or client"},
    "login-reset_password": {"400": "Invalid token / Inactive user"},
    "login-recover_password_html_content": {"404": "The user with this username does not exist in the system."},
    "users-create_user": {"400": "The user with this email already exists in the system."},
    "users-register_user": {
        "400": "The user with this email already exists in the system",
        "429": "Too many signups from this client (when enabled)",
    },
    "private-create_user": {"400": "The user with this email already exists in the system"},
    "users-update_user_me": {"409": "User with this email already exists"},
    "users-delete_user_me": {"403": "Super users are not allowed to delete themselves"},
    "users-update_password_me": {"400": "Incorrect password / New password cannot be the same as the current one"},
    "users-read_user_by_id": {"403": "The user doesn't have enough privileges", "404": "User not found"},
    "users-update_user": {
        "404": "The user with this id does not exist in the system",
        "409": "User with this email already exists",
    },
    "users-delete_user": {"403": "Super users are not allowed to delete themselves", "404": "User not found"},
    "items-read_item": {"403": "Not enough permissions", "404": "Item not found"},
    "items-update_item": {"403": "Not enough permissions", "404": "Item not found"},
    "items-delete_item": {"403": "Not enough permissions", "404": "Item not found"},
}


def _error_responses(operation_id: str, authenticated: bool, superuser_only: bool) -> dict[str, OpenAPIResponse]:
    """Every `{"detail": "..."}` answer an operation can give, so clients (and schemathesis) know them all."""
    descriptions: dict[str, list[str]] = {}
    sources = [
        _AUTH_ERRORS if authenticated else {},
        _SUPERUSER_ERRORS if superuser_only else {},
        _ROUTE_ERRORS.get(operation_id, {}),
    ]
    for source in sources:
        for status, description in source.items():
            if description not in descriptions.setdefault(status, []):
                descriptions[status].append(description)
    content = {"application/json": OpenAPIMediaType(schema=Reference(ref="#/components/schemas/HTTPError"))}
    return {
        status: OpenAPIResponse(description=" / ".join(texts), content=content)
        for status, texts in descriptions.items()
    }


def operation_id(route_handler: HTTPRouteHandler, http_method: Method, path_components: list[Any]) -> str:
    """`<tag>-<handler name>`, e.g. `items-read_items`: the names the template's SDKs were generated with."""
    tags = route_handler.resolve_tags()
    return f"{tags[0]}-{route_handler.handler_name}" if tags else route_handler.handler_name


def _exact_integer_bounds(operation: Operation, handler: HTTPRouteHandler) -> None:
    """A parameter's `ge`/`le` as declared: Litestar writes them as floats, so `limit`'s maximum 2**63 - 1 was
    documented as 2**63 (9.223372036854776e+18), and clients (and schemathesis) sent values the API refuses."""
    fields = handler.parsed_fn_signature.parameters
    for parameter in operation.parameters or []:
        if not isinstance(parameter, Parameter) or not isinstance(parameter.schema, Schema):
            continue
        field = fields.get(parameter.name)
        bounds = field.kwarg_definition if field is not None else None
        if not isinstance(bounds, KwargDefinition):
            continue
        if bounds.le is not None:
            parameter.schema.maximum = bounds.le
        if bounds.ge is not None:
            parameter.schema.minimum = bounds.ge


def openapi_fixups(app: Litestar) -> None:
    """Document validation failures as the 422 `HTTPValidationError` we answer (Litestar documents a 400), the
    `{"detail": ...}` errors of authentication and of each route's rules, and mark every route that needs a bearer
    token with the OAuth2 scheme, so the docs' Authorize button applies."""
    schema = app.openapi_schema
    components = schema.components if isinstance(schema.components, Components) else Components()
    schemas = dict(components.schemas or {})
    schemas["ValidationError"] = _VALIDATION_ERROR
    schemas["HTTPValidationError"] = _HTTP_VALIDATION_ERROR
    schemas["HTTPError"] = _HTTP_ERROR
    components.schemas = dict(sorted(schemas.items()))
    schema.components = components

    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            path_item = (schema.paths or {}).get(route.path_format)
            if path_item is None or not handler.include_in_schema:
                continue
            for method in sorted(handler.http_methods):
                operation = getattr(path_item, method.lower(), None)
                if operation is None:
                    continue
                responses = operation.responses or {}
                if responses.pop("400", None) is not None:
                    responses["422"] = _UNPROCESSABLE
                authenticated = not handler.opt.get(EXCLUDE_FROM_AUTH)
                superuser_only = requires_superuser in handler.resolve_guards()
                errors = _error_responses(operation.operation_id or "", authenticated, superuser_only)
                for status, response in errors.items():
                    responses.setdefault(status, response)
                operation.responses = dict(sorted(responses.items()))
                _exact_integer_bounds(operation, handler)
                if authenticated:
                    operation.security = [{SECURITY_SCHEME: []}]
