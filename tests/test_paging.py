"""Pages of the list routes (issue 23): `limit` has a documented maximum, and a page's `count` stays exact."""

from collections.abc import Callable

import httpx
import pytest

from app.api.paging import LIMIT_MAX
from tests.conftest import Account, Served

UserFactory = Callable[..., Account]
LISTS = ["/items/", "/users/"]


@pytest.mark.parametrize("path", LISTS)
def test_limit_above_the_maximum_is_422_in_pydantics_words(
    client: httpx.Client, superuser_headers: dict[str, str], path: str
) -> None:
    response = client.get(path, params={"limit": LIMIT_MAX + 1}, headers=superuser_headers)
    assert response.status_code == 422, response.text
    assert response.json() == {
        "detail": [
            {
                "type": "less_than_equal",
                "loc": ["query", "limit"],
                "msg": f"Input should be less than or equal to {LIMIT_MAX}",
                "input": str(LIMIT_MAX + 1),
                "ctx": {"le": LIMIT_MAX},
            }
        ]
    }
    assert client.get(path, params={"limit": 100_000}, headers=superuser_headers).status_code == 422


@pytest.mark.parametrize("path", LISTS)
def test_limit_up_to_the_maximum_is_answered_as_before(
    client: httpx.Client, superuser_headers: dict[str, str], path: str
) -> None:
    for limit in (0, 1, 100, LIMIT_MAX):
        response = client.get(path, params={"skip": 0, "limit": limit}, headers=superuser_headers)
        assert response.status_code == 200, response.text
        body = response.json()
        assert len(body["data"]) == min(limit, body["count"])
    assert len(client.get(path, headers=superuser_headers).json()["data"]) <= 100  # the default is 100


@pytest.mark.parametrize("path", ["/api/v1/items/", "/api/v1/users/"])
def test_the_maximum_is_in_the_openapi_document(served: Served, path: str) -> None:
    document = httpx.get(f"{served.api}/openapi.json").json()
    parameters = {p["name"]: p["schema"] for p in document["paths"][path]["get"]["parameters"]}
    assert parameters["limit"] == {
        "type": "integer",
        "maximum": LIMIT_MAX,
        "minimum": 0,
        "title": "Limit",
        "default": 100,
    }
