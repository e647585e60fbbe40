import httpx

from tests.conftest import Served


def test_health_check_is_true(client: httpx.Client) -> None:
    response = client.get("/utils/health-check/")
    assert response.status_code == 200
    assert response.json() is True


def test_health_check_without_trailing_slash(client: httpx.Client) -> None:
    assert client.get("/utils/health-check").json() is True


def test_request_id_is_echoed(client: httpx.Client) -> None:
    response = client.get("/utils/health-check/", headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"


def test_request_id_is_generated_when_absent_or_unsafe(client: httpx.Client) -> None:
    generated = client.get("/utils/health-check/").headers["x-request-id"]
    assert len(generated) == 32
    unsafe = client.get("/utils/health-check/", headers={"X-Request-ID": "bad id\twith spaces"})
    assert unsafe.headers["x-request-id"] not in ("bad id\twith spaces", generated)


def test_docs_and_openapi_are_served(served: Served) -> None:
    with httpx.Client(base_url=served.url) as http:
        assert http.get("/docs").status_code == 200
        document = http.get("/api/v1/openapi.json").json()
    assert document["info"]["title"] == "Test Project"


def test_unknown_route_is_json_404(client: httpx.Client) -> None:
    response = client.get("/no-such-thing")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}


def test_wrong_method_is_405(client: httpx.Client) -> None:
    assert client.delete("/utils/health-check/").status_code == 405
