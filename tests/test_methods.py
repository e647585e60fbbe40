"""Which methods each path answers, as `OPTIONS` and a 405 say in `Allow`, for every route of the served app, with
and without the trailing slash.

Litestar 2 answered `OPTIONS /items/{id}` with `Allow: DELETE, OPTIONS` (litestar-org/litestar#4169): the methods
of the first handler registered for the path. The expectations come from the OpenAPI document (what clients are
told) and, for the routes it leaves out, from the handlers of the app's route table."""

from __future__ import annotations

import re

import httpx
import pytest
from litestar.routes import HTTPRoute

from tests.conftest import Served

METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"}
SAMPLE_ID = "8c3a3c3e-6f1f-4c53-9d6b-2f5f3f0c1a7e"


def documented_methods(served: Served) -> dict[str, set[str]]:
    """Path template → the methods the OpenAPI document gives it, plus OPTIONS (every path answers it)."""
    with httpx.Client() as http:
        paths = http.get(f"{served.url}/api/v1/openapi.json").json()["paths"]
    # Some paths are spelt with a trailing slash, as the template's document spells them; the route is the same.
    return {
        path.rstrip("/"): {method.upper() for method in operations} | {"OPTIONS"} for path, operations in paths.items()
    }


def routed_methods(served: Served) -> dict[str, set[str]]:
    """Path template → the methods its handlers were declared with, plus OPTIONS, for every HTTP route."""
    return {
        route.path_format: {method for handler in route.route_handlers for method in handler.http_methods} | {"OPTIONS"}
        for route in served.app.routes
        if isinstance(route, HTTPRoute)
    }


def expected_methods(served: Served) -> dict[str, set[str]]:
    documented = documented_methods(served)
    routed = routed_methods(served)
    # The document and the route table agree wherever both speak.
    assert {path: routed[path] for path in documented} == documented
    return routed


def urls(served: Served, path_template: str) -> list[str]:
    path = re.sub(r"\{[^}]+\}", SAMPLE_ID, path_template)
    return [served.url + path, served.url + path.rstrip("/") + "/"]


def test_the_contract_paths_allow_their_methods(served: Served) -> None:
    """A few answers spelled out, so the derived expectations below cannot drift with the implementation."""
    expected = {
        "/api/v1/items/{id}": "DELETE, GET, OPTIONS, PUT",
        "/api/v1/items": "GET, OPTIONS, POST",
        "/api/v1/users": "GET, OPTIONS, POST",
        "/api/v1/users/{user_id}": "DELETE, GET, OPTIONS, PATCH",
        "/api/v1/users/me": "DELETE, GET, OPTIONS, PATCH",
        "/api/v1/users/me/password": "OPTIONS, PATCH",
        "/api/v1/login/access-token": "OPTIONS, POST",
        "/api/v1/utils/health-check": "GET, OPTIONS",
    }
    with httpx.Client() as http:
        for path, allow in expected.items():
            for url in urls(served, path):
                response = http.options(url)
                assert (response.status_code, response.headers.get("allow")) == (204, allow), url


def test_options_allows_every_method_of_every_route(served: Served) -> None:
    wrong = []
    with httpx.Client() as http:
        for path, methods in expected_methods(served).items():
            # Sorted, so the header reads the same on every run and every worker.
            allow = ", ".join(sorted(methods))
            for url in urls(served, path):
                response = http.options(url)
                if (response.status_code, response.headers.get("allow")) != (204, allow):
                    wrong.append(f"{url}: {response.status_code} {response.headers.get('allow')!r}, want {allow!r}")
    assert not wrong, "\n".join(wrong)


def test_other_methods_are_405_with_the_full_allow_list(served: Served) -> None:
    """Before authentication: a caller without a token learns the path's methods too."""
    wrong = []
    with httpx.Client() as http:
        for path, methods in expected_methods(served).items():
            for url in urls(served, path):
                for method in sorted(METHODS - methods):
                    response = http.request(method, url)
                    if (response.status_code, response.headers.get("allow")) != (405, ", ".join(sorted(methods))):
                        wrong.append(f"{method} {url}: {response.status_code} {response.headers.get('allow')}")
                    elif method != "HEAD":
                        assert response.json() == {"detail": "Method Not Allowed"}
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("path", ["/api/v1/items/{id}", "/api/v1/users/me"])
def test_a_cors_preflight_is_still_answered_by_the_cors_rules(served: Served, path: str) -> None:
    """A preflight is the CORS middleware's (200, Access-Control-*), not the route's OPTIONS answer."""
    with httpx.Client() as http:
        for url in urls(served, path):
            response = http.options(
                url, headers={"Origin": "http://localhost:5173", "Access-Control-Request-Method": "PUT"}
            )
            assert response.status_code == 200, url
            assert response.headers["access-control-allow-origin"] == "http://localhost:5173"
            assert "allow" not in response.headers
