"""The API docs' own JavaScript and CSS, served by us, so that /docs and /redoc work on a closed network (issue 24).

Swagger UI and ReDoc come from the `drf-spectacular-sidecar` wheel: the upstream npm builds of swagger-ui-dist
and redoc, republished monthly. We serve its static folder ourselves and never import the package (its
`__init__` imports Django, which pyproject.toml excludes), so nothing of it runs. The package's version is in
every asset's URL: an upgrade changes the URLs, and the assets can be cached for a year as immutable.
"""

from __future__ import annotations

import importlib.util
from importlib.metadata import version
from pathlib import Path

from litestar import Router
from litestar.datastructures import CacheControlHeader, ResponseHeader
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.static_files import create_static_files_router

from app.auth import EXCLUDE_FROM_AUTH

DISTRIBUTION = "drf-spectacular-sidecar"
STATIC_PREFIX = "/docs/static"


def bundle_dir() -> Path:
    """The package's static folder, found without importing the package."""
    spec = importlib.util.find_spec("drf_spectacular_sidecar")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"{DISTRIBUTION} is not installed: the API docs have no Swagger UI or ReDoc to serve")
    return Path(next(iter(spec.submodule_search_locations))) / "static" / "drf_spectacular_sidecar"


BASE_URL = f"{STATIC_PREFIX}/{version(DISTRIBUTION)}"
SWAGGER_URL = f"{BASE_URL}/swagger-ui-dist"
REDOC_JS_URL = f"{BASE_URL}/redoc/bundles/redoc.standalone.js"
FAVICON = f"<link rel='icon' type='image/png' href='{SWAGGER_URL}/favicon-32x32.png'>"

# The docs pages may load nothing from another host. ReDoc's bundle hotlinks one thing, the Redocly logo of its
# sidebar's footer (an `<img>` from its CDN that hides itself when it fails to load): this policy has the browser
# refuse it before it asks. Inline scripts and styles are the pages' own (Litestar's templates) and the UIs'.
CONTENT_SECURITY_POLICY = ResponseHeader(
    name="Content-Security-Policy",
    value="; ".join(
        [
            "default-src 'self'",
            "script-src 'self' 'unsafe-inline'",
            "style-src 'self' 'unsafe-inline'",
            "img-src 'self' data: blob:",
            "font-src 'self' data:",
            "connect-src 'self'",
            "worker-src 'self' blob:",
            "object-src 'none'",
            "base-uri 'self'",
            "frame-ancestors 'self'",
        ]
    ),
)


def docs_static_router() -> Router:
    """`/docs/static/<version>/…`: open to anyone, as the docs pages are, and outside the OpenAPI document."""
    return create_static_files_router(
        path=BASE_URL,
        directories=[bundle_dir()],
        name="docs-static",
        cache_control=CacheControlHeader(public=True, max_age=365 * 24 * 3600, immutable=True),
        include_in_schema=False,
        opt={EXCLUDE_FROM_AUTH: True},
    )


def swagger_plugin(path: str) -> SwaggerRenderPlugin:
    return SwaggerRenderPlugin(
        path=path,
        js_url=f"{SWAGGER_URL}/swagger-ui-bundle.js",
        css_url=f"{SWAGGER_URL}/swagger-ui.css",
        standalone_preset_js_url=f"{SWAGGER_URL}/swagger-ui-standalone-preset.js",
        favicon=FAVICON,
    )
