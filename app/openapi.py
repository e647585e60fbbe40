"""OpenAPI details that clients generated from the template's document rely on."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
from litestar import Litestar
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import (
    Components,
    OpenAPIMediaType,
    OpenAPIResponse,
    Operation,
    Parameter,
    PathItem,
    Reference,
    Schema,
)
from litestar.openapi.spec.enums import OpenAPIType
from litestar.params import KwargDefinition
from litestar.routes import HTTPRoute
from litestar.types import Method

from app import schemas
from app.auth import EXCLUDE_FROM_AUTH, NO_PAT, READING_METHODS, requires_superuser
from app.errors import (
    INACTIVE_USER,
    INVALID_CREDENTIALS,
    NOT_AUTHENTICATED,
    NOT_ENOUGH_PRIVILEGES,
    NOT_WITH_PAT,
    READ_ONLY_TOKEN,
    USER_NOT_FOUND,
)
from app.schemas import OPENAPI_MARKS, SHOWN_WITH_EMAIL_VERIFICATION, HTTPError

SECURITY_SCHEME = "OAuth2PasswordBearer"

_VALIDATION_ERROR = Schema(
    title="ValidationError",
    type=OpenAPIType.OBJECT,
    required=["loc", "msg", "type"],
    properties={
        "loc": Schema(
            title="Location",
            type=OpenAPIType.ARRAY,
            items=Schema(any_of=[Schema(type=OpenAPIType.STRING), Schema(type=OpenAPIType.INTEGER)]),
        ),
        "msg": Schema(title="Message", type=OpenAPIType.STRING),
        "type": Schema(title="Error Type", type=OpenAPIType.STRING),
        # What each of our 422 errors carries too, as pydantic's do (FastAPI documents them so).
        "input": Schema(title="Input"),
        "ctx": Schema(title="Context", type=OpenAPIType.OBJECT),
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


def _pat_errors(handler: HTTPRouteHandler, method: str) -> dict[int, str]:
    """What a personal access token is refused on this operation, if anything (app/auth.py)."""
    if handler.opt.get(NO_PAT):
        return {403: NOT_WITH_PAT}
    if method not in READING_METHODS:
        return {403: READ_ONLY_TOKEN}
    return {}


def _document_preceding_errors(
    responses: dict[str, OpenAPIResponse | Reference],
    authenticated: bool,
    superuser_only: bool,
    pat_errors: dict[int, str],
) -> None:
    """The answers of authentication (a personal access token's limits included) and of the superuser guard, before
    those the handler declares."""
    preceding: dict[int, list[str]] = {}
    for source in (
        _AUTH_ERRORS if authenticated else {},
        pat_errors if authenticated else {},
        _SUPERUSER_ERRORS if superuser_only else {},
    ):
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


# The template's routers in the order its app includes them: its document lists their paths in this order (and
# generated SDKs their classes), each router's in the order of its handlers (ours are declared in the same order).
TAG_ORDER = ("login", "users", "utils", "items", "private")
# Paths (under the API prefix) the template's document spells with a trailing slash, as its routes are declared. We
# serve both spellings; generated clients call the documented one.
SLASHED_PATHS = frozenset(
    {"/items", "/users", "/private/users", "/reset-password", "/utils/test-email", "/utils/health-check"}
)
SUCCESSFUL_RESPONSE = "Successful Response"  # FastAPI's description of a route's own status
# A constraint of a string's value: pydantic writes it on the union's member it constrains, not beside the union.
_MEMBER_CONSTRAINTS = ("max_length", "min_length", "pattern", "format")


def pydantic_title(name: str) -> str:
    """The title pydantic gives a field (and FastAPI an operation's summary): `owner_id` → `Owner Id`."""
    return name.title().replace("_", " ")


def _marks(field_type: msgspec.inspect.Type) -> dict[str, Any]:
    """The `documented(...)` marks of a struct field (see app/schemas.py), also inside a union."""
    if isinstance(field_type, msgspec.inspect.Metadata):
        return dict((field_type.extra or {}).get(OPENAPI_MARKS) or {})
    if isinstance(field_type, msgspec.inspect.UnionType):
        for member in field_type.types:
            if found := _marks(member):
                return found
    return {}


def _with_null(prop: Schema) -> None:
    """`X` (or a union of one member) documented as `X | null`."""
    null = Schema(type=OpenAPIType.NULL)
    if prop.one_of is not None:
        if not any(isinstance(member, Schema) and member.type == OpenAPIType.NULL for member in prop.one_of):
            prop.one_of = [*prop.one_of, null]
        return
    member = Schema(type=prop.type, format=prop.format)
    prop.type = prop.format = None
    prop.one_of = [member, null]


def _as_any_of(prop: Schema) -> None:
    """A union as pydantic writes it: `anyOf`, a string's constraints on its member (`format: password` stays beside
    the union: FastAPI's login form declares it on the field), a union of one member as that member."""
    if prop.one_of is None:
        return
    members = list(prop.one_of)
    prop.one_of = None
    values = [member for member in members if not (isinstance(member, Schema) and member.type == OpenAPIType.NULL)]
    if len(values) == 1 and isinstance(values[0], Schema):
        for key in _MEMBER_CONSTRAINTS:
            value = getattr(prop, key)
            if value is None or (key == "format" and value == "password"):
                continue
            setattr(values[0], key, value)
            setattr(prop, key, None)
        if len(members) == 1:
            prop.type, prop.format = values[0].type, values[0].format
            for key in _MEMBER_CONSTRAINTS:
                setattr(prop, key, getattr(values[0], key))
            return
    prop.any_of = members


def _as_the_templates_component(component: Schema, struct: type[msgspec.Struct] | None) -> None:
    """A component as FastAPI (pydantic 2) documents the template's model of that name: titled fields, unions as
    `anyOf`, `required` in field order, and what the struct's `documented(...)` marks say."""
    info = msgspec.inspect.type_info(struct) if struct is not None else None
    fields = info.fields if isinstance(info, msgspec.inspect.StructType) else ()
    marks = {field.encode_name: _marks(field.type) for field in fields}
    required = set(component.required or [])
    properties = component.properties or {}
    for name, prop in properties.items():
        if not isinstance(prop, Schema):
            continue
        mark = marks.get(name, {})
        if mark.get("nullable"):
            _with_null(prop)
        _as_any_of(prop)
        if mark.get("optional"):
            required.discard(name)
            if mark.get("default") is not None:
                prop.default = mark["default"]
        if prop.title is None:
            prop.title = pydantic_title(name)
    component.required = [name for name in properties if name in required] or None


def _structs() -> dict[str, type[msgspec.Struct]]:
    """app/schemas.py's structs by component name (the login form's is not its class's)."""
    return {
        value.__name__: value
        for value in vars(schemas).values()
        if isinstance(value, type) and issubclass(value, msgspec.Struct)
    }


def _as_the_templates_operation(operation: Operation, handler: HTTPRouteHandler) -> None:
    """FastAPI's summary (the handler's name as a title), success description, parameter titles, and the title of an
    inline response schema."""
    operation.summary = pydantic_title(handler.handler_name)
    for parameter in operation.parameters or []:
        if isinstance(parameter, Parameter) and isinstance(parameter.schema, Schema) and parameter.schema.title is None:
            parameter.schema.title = pydantic_title(parameter.name)
    for status, response in (operation.responses or {}).items():
        if not isinstance(response, OpenAPIResponse) or not status.startswith("2"):
            continue
        response.description = SUCCESSFUL_RESPONSE
        response.headers = response.headers or None
        json_body = (response.content or {}).get("application/json")
        if json_body is not None and isinstance(json_body.schema, Schema) and json_body.schema.title is None:
            json_body.schema.title = pydantic_title(f"Response_{operation.operation_id}")


def _in_the_templates_order(app: Litestar, paths: dict[str, PathItem]) -> dict[str, PathItem]:
    """The template's order of paths (its routers' order, then its handlers'), each spelt as its document spells it."""
    prefix = app.state.settings.API_V1_STR
    place: dict[str, tuple[int, int]] = {}
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or route.path_format not in paths:
            continue
        for handler in route.route_handlers:
            # Not Litestar's own OPTIONS handler: its line (in Litestar) would place every path declared below it
            # by the order routes happen to be registered in, whatever their handlers' lines.
            if not handler.fn.__module__.startswith("app."):
                continue
            tags = handler.resolve_tags()
            tag = TAG_ORDER.index(tags[0]) if tags and tags[0] in TAG_ORDER else len(TAG_ORDER)
            line = handler.fn.__code__.co_firstlineno if hasattr(handler.fn, "__code__") else 0
            place[route.path_format] = min(place.get(route.path_format, (tag, line)), (tag, line))
    ordered = sorted(paths, key=lambda path: place.get(path, (len(TAG_ORDER) + 1, 0)))
    return {path + ("/" if path.removeprefix(prefix) in SLASHED_PATHS else ""): paths[path] for path in ordered}


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
    structs = _structs()
    for name, component in schemas.items():
        if isinstance(component, Schema) and name not in ("ValidationError", "HTTPValidationError", "HTTPError"):
            _as_the_templates_component(component, structs.get(name))
    # A bound from the settings (the struct's `le` could not be): the service enforces it, the document says it.
    pat_create = schemas.get("PersonalAccessTokenCreate")
    days = (pat_create.properties or {}).get("expires_in_days") if isinstance(pat_create, Schema) else None
    if isinstance(days, Schema):
        days.maximum = app.state.settings.PAT_MAX_DAYS
        days.minimum = int(days.minimum) if days.minimum is not None else None  # Litestar writes `ge=1` as 1.0
    # Shown only with email verification on (app/schemas.py): otherwise the document is as if it did not exist.
    user_public = schemas.get("UserPublic")
    if not app.state.settings.email_verification_enabled and isinstance(user_public, Schema):
        for field in SHOWN_WITH_EMAIL_VERIFICATION:
            (user_public.properties or {}).pop(field, None)
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
                _document_preceding_errors(responses, authenticated, superuser_only, _pat_errors(handler, method))
                operation.responses = dict(sorted(responses.items()))
                _exact_integer_bounds(operation, handler)
                _as_the_templates_operation(operation, handler)
                if authenticated:
                    operation.security = [{SECURITY_SCHEME: []}]
    schema.paths = _in_the_templates_order(app, dict(schema.paths or {}))
