"""OpenAPI details that clients generated from the template's document rely on."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from litestar import Litestar
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import Components, OpenAPIMediaType, OpenAPIResponse, Operation, Parameter, Reference, Schema
from litestar.openapi.spec.enums import OpenAPIType
from litestar.params import KwargDefinition
from litestar.routes import HTTPRoute
from litestar.types import Method

from app.auth import EXCLUDE_FROM_AUTH, requires_superuser
from app.errors import INACTIVE_USER, INVALID_CREDENTIALS, NOT_AUTHENTICATED, NOT_ENOUGH_PRIVILEGES, USER_NOT_FOUND
from app.schemas import HTTPError

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
_HTTP_ERROR_CONTENT = {"application/json": OpenAPIMediaType(schema=Reference(ref="#/components/schemas/HTTPError"))}
_UNPROCESSABLE = OpenAPIResponse(
    description="Validation Error",
    content={"application/json": OpenAPIMediaType(schema=Reference(ref="#/components/schemas/HTTPValidationError"))},
)


def error_responses(errors: Mapping[int, Sequence[str]]) -> dict[int, ResponseSpec]:
    """A handler's own `{"detail": "..."}` answers, for its decorator's `responses=`: each status with its messages.
    `openapi_fixups` puts the answers of authentication before them."""
    return {status: ResponseSpec(HTTPError, description=" / ".join(messages)) for status, messages in errors.items()}


# What a bearer-authenticated route answers before its handler runs (see app/auth.py).
_AUTH_ERRORS = {400: INACTIVE_USER, 401: NOT_AUTHENTICATED, 403: INVALID_CREDENTIALS, 404: USER_NOT_FOUND}
_SUPERUSER_ERRORS = {403: NOT_ENOUGH_PRIVILEGES}


def _document_preceding_errors(
    responses: dict[str, OpenAPIResponse | Reference], authenticated: bool, superuser_only: bool
) -> None:
    """The answers of authentication and of the superuser guard, before those the handler declares."""
    preceding: dict[int, list[str]] = {}
    for source in (_AUTH_ERRORS if authenticated else {}, _SUPERUSER_ERRORS if superuser_only else {}):
        for status, message in source.items():
            preceding.setdefault(status, []).append(message)
    for status, messages in preceding.items():
        declared = responses.get(str(status))
        if isinstance(declared, OpenAPIResponse) and declared.description not in messages:
            messages.append(declared.description)
        responses[str(status)] = OpenAPIResponse(description=" / ".join(messages), content=_HTTP_ERROR_CONTENT)


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
    `{"detail": ...}` errors of authentication before those each handler declares, and mark every route that needs a
    bearer token with the OAuth2 scheme, so the docs' Authorize button applies."""
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
                # Litestar documents a failed validation as a 400 when the operation has a body or parameters (a 400
                # the handler declares replaces it); we answer it 422.
                if 400 not in (handler.responses or {}):
                    responses.pop("400", None)
                if operation.request_body is not None or operation.parameters:
                    responses["422"] = _UNPROCESSABLE
                authenticated = not handler.opt.get(EXCLUDE_FROM_AUTH)
                superuser_only = requires_superuser in handler.resolve_guards()
                _document_preceding_errors(responses, authenticated, superuser_only)
                operation.responses = dict(sorted(responses.items()))
                _exact_integer_bounds(operation, handler)
                if authenticated:
                    operation.security = [{SECURITY_SCHEME: []}]
