"""The users routes, row by row of the contract."""

import uuid
from collections.abc import Callable

import httpx
import pytest

from tests.conftest import SUPERUSER_EMAIL, Account, Served, login, random_email

UserFactory = Callable[..., Account]


def test_read_users_is_paged_newest_first_with_total_count(
    client: httpx.Client, superuser_headers: dict[str, str], new_account: UserFactory
) -> None:
    first, second = new_account(), new_account()
    response = client.get("/users/", params={"skip": 0, "limit": 2}, headers=superuser_headers)
    assert response.status_code == 200
    body = response.json()
    assert [row["email"] for row in body["data"]] == [second.email, first.email]
    assert body["count"] >= 3
    everything = client.get("/users/", params={"limit": 1000}, headers=superuser_headers).json()
    assert everything["count"] == len(everything["data"])
    created = [row["created_at"] for row in everything["data"]]
    assert created == sorted(created, reverse=True)


def test_read_users_count_is_total_even_for_an_empty_page(
    client: httpx.Client, superuser_headers: dict[str, str]
) -> None:
    total = client.get("/users/", headers=superuser_headers).json()["count"]
    assert client.get("/users/", params={"limit": 0}, headers=superuser_headers).json() == {"data": [], "count": total}
    past_end = client.get("/users/", params={"skip": 10_000}, headers=superuser_headers).json()
    assert past_end == {"data": [], "count": total}


@pytest.mark.parametrize("query", [{"skip": -1}, {"limit": -1}, {"skip": "x"}])
def test_read_users_bad_paging_is_422(client: httpx.Client, superuser_headers: dict[str, str], query: dict) -> None:
    response = client.get("/users/", params=query, headers=superuser_headers)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", next(iter(query))]


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/users/"), ("POST", "/users/"), ("PATCH", "/users/{id}"), ("DELETE", "/users/{id}")],
)
def test_superuser_routes_refuse_normal_users(client: httpx.Client, user: Account, method: str, path: str) -> None:
    response = client.request(
        method, path.format(id=user.id), headers=user.headers, json={"email": random_email(), "password": "12345678"}
    )
    assert response.status_code == 403
    assert response.json() == {"detail": "The user doesn't have enough privileges"}


def test_create_user_returns_public_fields_only(client: httpx.Client, superuser_headers: dict[str, str]) -> None:
    email = random_email()
    response = client.post(
        "/users/",
        json={"email": email, "password": "password123", "full_name": "New Person", "is_superuser": True},
        headers=superuser_headers,
    )
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"email", "is_active", "is_superuser", "full_name", "id", "created_at"}
    assert body["email"] == email
    assert body["is_superuser"] is True
    assert body["is_active"] is True
    assert body["created_at"].endswith("Z") or body["created_at"].endswith("+00:00")
    uuid.UUID(body["id"])


@pytest.mark.parametrize("variant", [str.lower, str.upper])
def test_create_user_duplicate_email_any_case_is_400(
    client: httpx.Client, superuser_headers: dict[str, str], user: Account, variant: Callable[[str], str]
) -> None:
    response = client.post(
        "/users/", json={"email": variant(user.email), "password": "password123"}, headers=superuser_headers
    )
    assert response.status_code == 400
    assert response.json() == {"detail": "The user with this email already exists in the system."}


@pytest.mark.parametrize(
    "body",
    [
        {"email": "not-an-email", "password": "password123"},
        {"email": "a@example.com", "password": "short"},
        {"email": "a@example.com", "password": "x" * 129},
        {"email": ("x" * 250) + "@example.com", "password": "password123"},
        {"password": "password123"},
        {"email": "a@example.com", "password": "password123", "full_name": "x" * 256},
        {"email": None, "password": "password123"},
    ],
)
def test_create_user_invalid_body_is_422(client: httpx.Client, superuser_headers: dict[str, str], body: dict) -> None:
    response = client.post("/users/", json=body, headers=superuser_headers)
    assert response.status_code == 422
    assert all(error["loc"][0] == "body" for error in response.json()["detail"])


def test_read_me(client: httpx.Client, user: Account) -> None:
    response = client.get("/users/me", headers=user.headers)
    assert response.status_code == 200
    assert response.json()["email"] == user.email
    assert response.json()["is_superuser"] is False


def test_update_me_changes_name_and_email_and_ignores_the_rest(client: httpx.Client, user: Account) -> None:
    new_email = random_email()
    response = client.patch(
        "/users/me",
        json={"full_name": "Renamed", "email": new_email, "is_superuser": True, "is_active": False},
        headers=user.headers,
    )
    assert response.status_code == 200
    body = response.json()
    assert (body["full_name"], body["email"], body["is_superuser"], body["is_active"]) == (
        "Renamed",
        new_email,
        False,
        True,
    )


def test_update_me_empty_body_is_a_no_op_and_own_email_is_fine(client: httpx.Client, user: Account) -> None:
    before = client.get("/users/me", headers=user.headers).json()
    assert client.patch("/users/me", json={}, headers=user.headers).json() == before
    same = client.patch("/users/me", json={"email": user.email.upper()}, headers=user.headers)
    assert same.status_code == 200


def test_update_me_taken_email_is_409(client: httpx.Client, user: Account) -> None:
    response = client.patch("/users/me", json={"email": SUPERUSER_EMAIL.upper()}, headers=user.headers)
    assert response.status_code == 409
    assert response.json() == {"detail": "User with this email already exists"}


@pytest.mark.parametrize("body", [{"email": None}, {"email": "nope"}, {"full_name": "x" * 256}])
def test_update_me_invalid_is_422(client: httpx.Client, user: Account, body: dict) -> None:
    assert client.patch("/users/me", json=body, headers=user.headers).status_code == 422


def test_update_me_full_name_can_be_cleared(client: httpx.Client, new_account: UserFactory) -> None:
    account = new_account(full_name="Someone")
    response = client.patch("/users/me", json={"full_name": None}, headers=account.headers)
    assert response.json()["full_name"] is None


def test_update_password_me(client: httpx.Client, user: Account) -> None:
    response = client.patch(
        "/users/me/password",
        json={"current_password": user.password, "new_password": "a-brand-new-password"},
        headers=user.headers,
    )
    assert response.status_code == 200
    assert response.json() == {"message": "Password updated successfully"}
    login(client, user.email, "a-brand-new-password")
    old = client.post("/login/access-token", data={"username": user.email, "password": user.password})
    assert old.status_code == 400


def test_update_password_me_wrong_current_is_checked_first(client: httpx.Client, user: Account) -> None:
    response = client.patch(
        "/users/me/password",
        json={"current_password": "wrong-password", "new_password": "wrong-password"},
        headers=user.headers,
    )
    assert response.status_code == 400
    assert response.json() == {"detail": "Incorrect password"}


def test_update_password_me_same_password_is_400(client: httpx.Client, user: Account) -> None:
    response = client.patch(
        "/users/me/password",
        json={"current_password": user.password, "new_password": user.password},
        headers=user.headers,
    )
    assert response.status_code == 400
    assert response.json() == {"detail": "New password cannot be the same as the current one"}


@pytest.mark.parametrize(
    "body", [{"current_password": "short", "new_password": "long-enough"}, {"current_password": "long-enough"}]
)
def test_update_password_me_invalid_is_422(client: httpx.Client, user: Account, body: dict) -> None:
    assert client.patch("/users/me/password", json=body, headers=user.headers).status_code == 422


def test_delete_me_deletes_the_user_and_their_items(client: httpx.Client, user: Account, served: Served) -> None:
    item = client.post("/items/", json={"title": "mine"}, headers=user.headers).json()
    response = client.delete("/users/me", headers=user.headers)
    assert response.status_code == 200
    assert response.json() == {"message": "User deleted successfully"}
    assert (
        served.database.scalar(
            "SELECT count(*) FROM item WHERE title = 'mine' AND id = :id", id=served.database.id(item["id"])
        )
        == 0
    )


def test_superuser_cannot_delete_themselves(client: httpx.Client, superuser_headers: dict[str, str]) -> None:
    response = client.delete("/users/me", headers=superuser_headers)
    assert response.status_code == 403
    assert response.json() == {"detail": "Super users are not allowed to delete themselves"}
    me = client.get("/users/me", headers=superuser_headers).json()
    by_id = client.delete(f"/users/{me['id']}", headers=superuser_headers)
    assert by_id.status_code == 403
    assert by_id.json() == {"detail": "Super users are not allowed to delete themselves"}


@pytest.mark.parametrize(
    ("change", "detail"),
    [
        ({"is_superuser": False}, "Super users are not allowed to demote themselves"),
        ({"is_active": False}, "Super users are not allowed to deactivate themselves"),
        ({"full_name": "Renamed", "is_active": False}, "Super users are not allowed to deactivate themselves"),
    ],
)
def test_superuser_cannot_demote_or_deactivate_themselves(
    client: httpx.Client, new_account: UserFactory, change: dict, detail: str
) -> None:
    # A superuser of the test's own: were the refusal missing, the session's superuser would be left alone.
    admin = new_account(is_superuser=True, full_name="Admin")
    response = client.patch(f"/users/{admin.id}", json=change, headers=admin.headers)
    assert response.status_code == 403
    assert response.json() == {"detail": detail}
    me = client.get("/users/me", headers=admin.headers)  # nothing changed, and the token still works
    assert me.status_code == 200
    assert (me.json()["is_superuser"], me.json()["is_active"], me.json()["full_name"]) == (True, True, "Admin")
    # What keeps them a superuser, and anything else, is fine.
    kept = {"is_superuser": True, "is_active": True, "full_name": "Still Admin"}
    response = client.patch(f"/users/{admin.id}", json=kept, headers=admin.headers)
    assert response.status_code == 200, response.text
    assert response.json()["full_name"] == "Still Admin"
    # /users/me cannot change these fields at all: they are ignored.
    response = client.patch("/users/me", json={"is_superuser": False, "is_active": False}, headers=admin.headers)
    assert response.status_code == 200
    assert (response.json()["is_superuser"], response.json()["is_active"]) == (True, True)


def test_another_superuser_can_demote_and_deactivate_a_superuser(
    client: httpx.Client, superuser_headers: dict[str, str], new_account: UserFactory
) -> None:
    admin = new_account(is_superuser=True)
    response = client.patch(f"/users/{admin.id}", json={"is_superuser": False}, headers=superuser_headers)
    assert (response.status_code, response.json()["is_superuser"]) == (200, False)
    response = client.patch(f"/users/{admin.id}", json={"is_active": False}, headers=superuser_headers)
    assert (response.status_code, response.json()["is_active"]) == (200, False)


def test_signup_creates_a_normal_active_user_and_ignores_extra_fields(client: httpx.Client) -> None:
    email = random_email()
    response = client.post(
        "/users/signup",
        json={
            "email": email,
            "password": "password123",
            "full_name": "Signed Up",
            "is_superuser": True,
            "is_active": False,
            "confirm_password": "password123",
        },
    )
    assert response.status_code == 200
    body = response.json()
    assert (body["email"], body["is_superuser"], body["is_active"], body["full_name"]) == (
        email,
        False,
        True,
        "Signed Up",
    )
    login(client, email, "password123")


def test_signup_duplicate_is_400_without_period(client: httpx.Client, user: Account) -> None:
    response = client.post("/users/signup", json={"email": user.email.upper(), "password": "password123"})
    assert response.status_code == 400
    assert response.json() == {"detail": "The user with this email already exists in the system"}


def test_signup_invalid_is_422(client: httpx.Client) -> None:
    assert client.post("/users/signup", json={"email": random_email(), "password": "short"}).status_code == 422
    assert client.post("/users/signup").status_code == 422


def test_read_user_by_id(
    client: httpx.Client, user: Account, new_account: UserFactory, superuser_headers: dict
) -> None:
    assert client.get(f"/users/{user.id}", headers=user.headers).json()["email"] == user.email
    assert client.get(f"/users/{user.id}", headers=superuser_headers).json()["email"] == user.email
    other = new_account()
    response = client.get(f"/users/{other.id}", headers=user.headers)
    assert response.status_code == 403
    assert response.json() == {"detail": "The user doesn't have enough privileges"}
    missing = uuid.uuid4()
    assert client.get(f"/users/{missing}", headers=user.headers).status_code == 403
    not_found = client.get(f"/users/{missing}", headers=superuser_headers)
    assert not_found.status_code == 404
    assert not_found.json() == {"detail": "User not found"}


def test_read_user_by_malformed_id_is_422(client: httpx.Client, user: Account) -> None:
    response = client.get("/users/not-a-uuid", headers=user.headers)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["path", "user_id"]


def test_update_user(client: httpx.Client, superuser_headers: dict[str, str], user: Account) -> None:
    response = client.patch(
        f"/users/{user.id}",
        json={"full_name": "Changed", "is_superuser": True, "password": "replaced-password"},
        headers=superuser_headers,
    )
    assert response.status_code == 200
    assert response.json()["full_name"] == "Changed"
    assert response.json()["is_superuser"] is True
    login(client, user.email, "replaced-password")


def test_update_user_errors(client: httpx.Client, superuser_headers: dict[str, str], user: Account) -> None:
    missing = client.patch(f"/users/{uuid.uuid4()}", json={"full_name": "x"}, headers=superuser_headers)
    assert missing.status_code == 404
    assert missing.json() == {"detail": "The user with this id does not exist in the system"}
    taken = client.patch(f"/users/{user.id}", json={"email": SUPERUSER_EMAIL}, headers=superuser_headers)
    assert taken.status_code == 409
    assert taken.json() == {"detail": "User with this email already exists"}
    assert client.patch(f"/users/{user.id}", json={"email": None}, headers=superuser_headers).status_code == 422
    assert client.patch(f"/users/{user.id}", json={"is_active": None}, headers=superuser_headers).status_code == 422
    assert client.patch("/users/nope", json={}, headers=superuser_headers).status_code == 422


def test_delete_user(client: httpx.Client, superuser_headers: dict[str, str], user: Account) -> None:
    client.post("/items/", json={"title": "owned"}, headers=user.headers)
    response = client.delete(f"/users/{user.id}", headers=superuser_headers)
    assert response.status_code == 200
    assert response.json() == {"message": "User deleted successfully"}
    assert client.get(f"/users/{user.id}", headers=superuser_headers).status_code == 404
    again = client.delete(f"/users/{user.id}", headers=superuser_headers)
    assert again.status_code == 404
    assert again.json() == {"detail": "User not found"}


def test_private_route_creates_a_user_that_can_log_in(client: httpx.Client) -> None:
    email = random_email()
    response = client.post("/private/users/", json={"email": email, "password": "password123", "full_name": "Private"})
    assert response.status_code == 200
    assert response.json()["email"] == email
    login(client, email, "password123")
    duplicate = client.post("/private/users/", json={"email": email, "password": "password123", "full_name": "P"})
    assert duplicate.status_code == 400


def test_concurrent_signups_for_one_email_create_one_account(served: Served) -> None:
    from concurrent.futures import ThreadPoolExecutor

    email = random_email()

    def signup(_: int) -> httpx.Response:
        with served.client() as http:
            return http.post("/users/signup", json={"email": email, "password": "password123"})

    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(signup, range(8)))
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200] + [400] * 7
    for response in responses:
        if response.status_code == 400:
            assert response.json() == {"detail": "The user with this email already exists in the system"}
