"""OpenAPI details that clients generated from the template's document rely on."""

from __future__ import annotations

from typing import Any

from litestar import Litestar
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.spec import Components, OpenAPIMediaType, OpenAPIResponse, Reference, Schema
from litestar.openapi.spec.enums import OpenAPIType
from litestar.routes import HTTPRoute
from litestar.types import Method

from app.auth import EXCLUDE_FROM_AUTH

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
_UNPROCESSABLE = OpenAPIResponse(
    description="Validation Error",
    content={"application/json": OpenAPIMediaType(schema=Reference(ref="#/components/schemas/HTTPValidationError"))},
)


def operation_id(route_handler: HTTPRouteHandler, http_method: Method, path_components: list[Any]) -> str:
    """`<tag>-<handler name>`, e.g. `items-read_items`: the names the template's SDKs were generated with."""
    tags = route_handler.resolve_tags()
    return f"{tags[0]}-{route_handler.handler_name}" if tags else route_handler.handler_name


def openapi_fixups(app: Litestar) -> None:
    """Document validation failures as the 422 `HTTPValidationError` we answer (Litestar documents a 400), and
    mark every route that needs a bearer token with the OAuth2 scheme, so the docs' Authorize button applies."""
    schema = app.openapi_schema
    components = schema.components if isinstance(schema.components, Components) else Components()
    schemas = dict(components.schemas or {})
    schemas["ValidationError"] = _VALIDATION_ERROR
    schemas["HTTPValidationError"] = _HTTP_VALIDATION_ERROR
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
                operation.responses = dict(sorted(responses.items()))
                if not handler.opt.get(EXCLUDE_FROM_AUTH):
                    operation.security = [{SECURITY_SCHEME: []}]


if __name__ == "__main__":
    import sys
    from pathlib import Path

    from app.main import create_app

    target = Path(sys.argv[1] if len(sys.argv) > 1 else "openapi.json")
    target.write_bytes(create_app().state.openapi_document)
    print(f"wrote {target}")
