"""The items routes, row by row of the contract."""

import uuid
from collections.abc import Callable

import httpx
import pytest

from tests.conftest import Account, Counted, login, sent_by

UserFactory = Callable[..., Account]


def create_item(client: httpx.Client, account: Account, **body: object) -> dict:
    response = client.post("/items/", json={"title": "An item", **body}, headers=account.headers)
    assert response.status_code == 200, response.text
    return response.json()


def test_create_item_belongs_to_the_caller_whatever_the_body_says(
    client: httpx.Client, user: Account, new_account: UserFactory
) -> None:
    other = new_account()
    item = create_item(client, user, title="Mine", description="Desc", owner_id=other.id, id=str(uuid.uuid4()))
    assert set(item) == {"title", "description", "id", "owner_id", "created_at"}
    assert (item["title"], item["description"], item["owner_id"]) == ("Mine", "Desc", user.id)


@pytest.mark.parametrize(
    "body",
    [{}, {"title": ""}, {"title": "x" * 256}, {"title": None}, {"title": "ok", "description": "x" * 256}, {"title": 5}],
)
def test_create_item_invalid_is_422(client: httpx.Client, user: Account, body: dict) -> None:
    response = client.post("/items/", json=body, headers=user.headers)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][:2] == ["body", "title"] or response.json()["detail"][0]["loc"] == [
        "body",
        "description",
    ]


def test_malformed_json_and_missing_body_are_422(client: httpx.Client, user: Account) -> None:
    headers = {**user.headers, "content-type": "application/json"}
    malformed = client.post("/items/", content=b'{"title": ', headers=headers)
    assert malformed.status_code == 422
    assert malformed.json()["detail"] == [
        {
            "type": "json_invalid",
            "loc": ["body", 10],
            "msg": "JSON decode error",
            "input": {},
            "ctx": {"error": "Expecting value"},
        }
    ]
    missing = client.post("/items/", headers=headers)
    assert missing.status_code == 422
    assert missing.json()["detail"] == [{"type": "missing", "loc": ["body"], "msg": "Field required", "input": None}]
    for body in (["title"], "title", 7):
        not_an_object = client.post("/items/", json=body, headers=user.headers)
        assert not_an_object.status_code == 422
        assert not_an_object.json()["detail"] == [
            {
                "type": "model_attributes_type",
                "loc": ["body"],
                "msg": "Input should be a valid dictionary or object to extract fields from",
                "input": body,
            }
        ]


def test_read_items_shows_own_items_newest_first_with_total(
    client: httpx.Client, new_account: UserFactory, superuser_headers: dict[str, str]
) -> None:
    owner, stranger = new_account(), new_account()
    made = [create_item(client, owner, title=f"item {n}") for n in range(3)]
    create_item(client, stranger, title="not yours")
    page = client.get("/items/", params={"limit": 2}, headers=owner.headers).json()
    assert page["count"] == 3
    assert [row["id"] for row in page["data"]] == [made[2]["id"], made[1]["id"]]
    rest = client.get("/items/", params={"skip": 2, "limit": 2}, headers=owner.headers).json()
    assert [row["id"] for row in rest["data"]] == [made[0]["id"]]
    assert client.get("/items/", params={"skip": 50}, headers=owner.headers).json() == {"data": [], "count": 3}
    assert client.get("/items/", params={"limit": 0}, headers=owner.headers).json() == {"data": [], "count": 3}
    # Every item, a page of the most a page holds at a time (app/api/paging.py).
    pages = [client.get("/items/", params={"skip": 0, "limit": 1000}, headers=superuser_headers).json()]
    while len(pages) * 1000 < pages[0]["count"]:
        params = {"skip": len(pages) * 1000, "limit": 1000}
        pages.append(client.get("/items/", params=params, headers=superuser_headers).json())
    everything = [row["id"] for page in pages for row in page["data"]]
    assert pages[0]["count"] == len(everything) == len(set(everything)) >= 4
    assert {made[0]["id"], made[2]["id"]} <= set(everything)


@pytest.mark.parametrize("query", [{"skip": -1}, {"limit": -5}, {"limit": "many"}])
def test_read_items_bad_paging_is_422(client: httpx.Client, user: Account, query: dict) -> None:
    response = client.get("/items/", params=query, headers=user.headers)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", next(iter(query))]


def test_read_item_owner_superuser_stranger(
    client: httpx.Client, new_account: UserFactory, superuser_headers: dict[str, str]
) -> None:
    owner, stranger = new_account(), new_account()
    item = create_item(client, owner)
    assert client.get(f"/items/{item['id']}", headers=owner.headers).json() == item
    assert client.get(f"/items/{item['id']}", headers=superuser_headers).json() == item
    forbidden = client.get(f"/items/{item['id']}", headers=stranger.headers)
    assert forbidden.status_code == 403
    assert forbidden.json() == {"detail": "Not enough permissions"}


def test_missing_item_is_404_before_ownership(client: httpx.Client, user: Account) -> None:
    missing = f"/items/{uuid.uuid4()}"
    for response in (
        client.get(missing, headers=user.headers),
        client.put(missing, json={"title": "x"}, headers=user.headers),
        client.delete(missing, headers=user.headers),
    ):
        assert response.status_code == 404
        assert response.json() == {"detail": "Item not found"}


def test_malformed_item_id_is_422(client: httpx.Client, user: Account) -> None:
    for response in (
        client.get("/items/123", headers=user.headers),
        client.put("/items/123", json={"title": "x"}, headers=user.headers),
        client.delete("/items/123", headers=user.headers),
    ):
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["path", "id"]


def test_update_item_is_partial_and_keeps_identity(
    client: httpx.Client, user: Account, new_account: UserFactory
) -> None:
    other = new_account()
    item = create_item(client, user, title="Before", description="Kept")
    response = client.put(
        f"/items/{item['id']}",
        json={"title": "After", "owner_id": other.id, "id": str(uuid.uuid4()), "created_at": "2000-01-01T00:00:00Z"},
        headers=user.headers,
    )
    assert response.status_code == 200
    updated = response.json()
    assert updated == {**item, "title": "After"}
    cleared = client.put(f"/items/{item['id']}", json={"description": None}, headers=user.headers).json()
    assert cleared == {**item, "title": "After", "description": None}


def test_update_item_body_is_checked_before_existence(client: httpx.Client, user: Account) -> None:
    response = client.put(f"/items/{uuid.uuid4()}", json={"title": None}, headers=user.headers)
    assert response.status_code == 422


def test_update_and_delete_by_stranger_are_403(client: httpx.Client, new_account: UserFactory) -> None:
    owner, stranger = new_account(), new_account()
    item = create_item(client, owner)
    put = client.put(f"/items/{item['id']}", json={"title": "stolen"}, headers=stranger.headers)
    delete = client.delete(f"/items/{item['id']}", headers=stranger.headers)
    assert (put.status_code, delete.status_code) == (403, 403)
    assert put.json() == delete.json() == {"detail": "Not enough permissions"}
    assert client.get(f"/items/{item['id']}", headers=owner.headers).json()["title"] == item["title"]


def test_delete_item(client: httpx.Client, user: Account, superuser_headers: dict[str, str]) -> None:
    mine, other = create_item(client, user), create_item(client, user)
    response = client.delete(f"/items/{mine['id']}", headers=user.headers)
    assert response.status_code == 200
    assert response.json() == {"message": "Item deleted successfully"}
    assert client.get(f"/items/{mine['id']}", headers=user.headers).status_code == 404
    assert client.delete(f"/items/{other['id']}", headers=superuser_headers).status_code == 200


def test_items_routes_need_a_token(client: httpx.Client) -> None:
    for response in (client.get("/items/"), client.post("/items/", json={"title": "x"})):
        assert response.status_code == 401


def test_listing_is_one_query_for_the_page_and_count(counted: Counted, user: Account) -> None:
    http, statements = counted
    for n in range(30):
        http.post("/items/", json={"title": f"row {n}"}, headers=user.headers)
    response, sent = sent_by(http, statements, "GET", "/items/", params={"limit": 100}, headers=user.headers)
    assert (len(response.json()["data"]), response.json()["count"]) == (30, 30)
    # One statement authenticates the caller, one reads the page with its total count: no BEGIN/COMMIT.
    assert len(sent) == 2, sent
    response, sent = sent_by(http, statements, "GET", "/items/", params={"skip": 100}, headers=user.headers)
    assert response.json() == {"data": [], "count": 30}
    assert len(sent) == 3, sent


def test_reading_an_item_is_one_query_with_the_caller(counted: Counted, new_account: UserFactory) -> None:
    http, statements = counted
    owner, stranger = new_account(), new_account()
    item = http.post("/items/", json={"title": "mine"}, headers=owner.headers).json()
    for account, path, status in (
        (owner, f"/items/{item['id']}", 200),
        (stranger, f"/items/{item['id']}", 403),
        (owner, f"/items/{uuid.uuid4()}", 404),
    ):
        response, sent = sent_by(http, statements, "GET", path, headers=account.headers)
        assert response.status_code == status
        assert len(sent) == 1, sent


def test_reading_an_item_checks_the_caller_first(
    client: httpx.Client, new_account: UserFactory, superuser_headers: dict[str, str]
) -> None:
    owner, inactive, deleted = new_account(), new_account(), new_account()
    item = create_item(client, owner)
    client.patch(f"/users/{inactive.id}", json={"is_active": False}, headers=superuser_headers)
    client.delete("/users/me", headers=deleted.headers)
    for path in (f"/items/{item['id']}", f"/items/{uuid.uuid4()}", "/items/123"):
        gone = client.get(path, headers=deleted.headers)
        assert (gone.status_code, gone.json()) == (404, {"detail": "User not found"})
        idle = client.get(path, headers=inactive.headers)
        assert (idle.status_code, idle.json()) == (400, {"detail": "Inactive user"})
    # A token issued before a password change made by another session is revoked, whatever the item.
    other_session = login(client, owner.email, owner.password)
    change = {"current_password": owner.password, "new_password": "another-good-password"}
    assert client.patch("/users/me/password", json=change, headers=other_session).status_code == 200
    revoked = client.get(f"/items/{item['id']}", headers=owner.headers)
    assert (revoked.status_code, revoked.json()) == (403, {"detail": "Could not validate credentials"})
