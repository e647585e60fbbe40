"""Pages of the list routes (issue 23): `limit` has a documented maximum, and a page's `count` stays exact."""

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from advanced_alchemy.alembic.commands import AlembicCommands
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.api.paging import LIMIT_MAX
from app.database import sqlalchemy_config
from tests.conftest import Account, Database, Served, create_postgres_database, drop_postgres_database, make_settings

UserFactory = Callable[..., Account]
LISTS = ["/items/", "/users/"]
# The triggers on item that keep user_item_count (migration 0012; 0006's names, which kept "user".item_count).
TRIGGERS = {
    "postgresql": ["item_count_insert", "item_count_delete", "item_count_owner", "item_count_truncate"],
    "sqlite": ["item_count_insert", "item_count_delete", "item_count_owner"],
}


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


# ---------------------------------------------------------------- counts kept by the database (user_item_count)

# A user's kept count: their counter row's, 0 for a user with none (no items yet).
KEPT = 'coalesce((SELECT item_count FROM user_item_count WHERE user_item_count.user_id = "user".id), 0)'


def own_count(client: httpx.Client, account: Account) -> int:
    """The owner's count from both statements: a page with rows carries it, an empty page reads it alone."""
    with_rows = client.get("/items/", params={"limit": 1}, headers=account.headers).json()["count"]
    alone = client.get("/items/", params={"limit": 0}, headers=account.headers).json()["count"]
    assert with_rows == alone
    return int(alone)


def all_count(client: httpx.Client, superuser_headers: dict[str, str]) -> int:
    with_rows = client.get("/items/", params={"limit": 1}, headers=superuser_headers).json()["count"]
    alone = client.get("/items/", params={"limit": 0}, headers=superuser_headers).json()["count"]
    assert with_rows == alone
    return int(alone)


def assert_counts_agree(served: Served) -> None:
    """Every user's kept count is their number of items, and so is the sum the total."""
    wrong = served.database.scalar(
        f'SELECT count(*) FROM "user" WHERE {KEPT} <> (SELECT count(*) FROM item WHERE item.owner_id = "user".id)'
    )
    assert wrong == 0
    assert (
        served.database.scalar('SELECT count(*) FROM user_item_count WHERE user_id NOT IN (SELECT id FROM "user")') == 0
    )
    total = served.database.scalar("SELECT count(*) FROM item")
    assert served.database.scalar("SELECT coalesce(sum(item_count), 0) FROM user_item_count") == total


def create(client: httpx.Client, account: Account, n: int) -> list[str]:
    ids = []
    for k in range(n):
        response = client.post("/items/", json={"title": f"item {k}"}, headers=account.headers)
        assert response.status_code == 200, response.text
        ids.append(response.json()["id"])
    return ids


def test_count_follows_creates_and_deletes(
    served: Served, client: httpx.Client, new_account: UserFactory, superuser_headers: dict[str, str]
) -> None:
    owner, other = new_account(), new_account()
    assert own_count(client, owner) == 0
    before = all_count(client, superuser_headers)
    mine = create(client, owner, 5)
    create(client, other, 2)
    assert (own_count(client, owner), own_count(client, other)) == (5, 2)
    assert all_count(client, superuser_headers) == before + 7
    assert client.delete(f"/items/{mine[0]}", headers=owner.headers).status_code == 200
    assert client.delete(f"/items/{mine[1]}", headers=superuser_headers).status_code == 200
    assert client.delete(f"/items/{mine[1]}", headers=owner.headers).status_code == 404  # counted once
    assert client.put(f"/items/{mine[2]}", json={"title": "renamed"}, headers=owner.headers).status_code == 200
    assert own_count(client, owner) == 3
    assert all_count(client, superuser_headers) == before + 5
    assert_counts_agree(served)


@pytest.mark.parametrize("route", ["superuser", "self"])
def test_a_deleted_users_items_leave_the_total(
    served: Served, client: httpx.Client, new_account: UserFactory, superuser_headers: dict[str, str], route: str
) -> None:
    leaving, staying = new_account(), new_account()
    create(client, leaving, 4)
    create(client, staying, 1)
    before = all_count(client, superuser_headers)
    if route == "self":
        response = client.delete("/users/me", headers=leaving.headers)
    else:
        response = client.delete(f"/users/{leaving.id}", headers=superuser_headers)
    assert response.status_code == 200, response.text
    assert all_count(client, superuser_headers) == before - 4
    assert own_count(client, staying) == 1
    assert_counts_agree(served)


def test_concurrent_creates_of_one_owner_are_all_counted(
    served: Served, new_account: UserFactory, superuser_headers: dict[str, str]
) -> None:
    owner = new_account()
    before = served.database.scalar("SELECT count(*) FROM item")

    async def go() -> list[int]:
        async with httpx.AsyncClient(base_url=served.api, timeout=30) as http:
            gate = asyncio.Semaphore(16)

            async def one(n: int) -> int:
                async with gate:
                    response = await http.post("/items/", json={"title": f"c{n}"}, headers=owner.headers)
                    return response.status_code

            return await asyncio.gather(*(one(n) for n in range(60)))

    assert asyncio.run(go()) == [200] * 60
    with served.client() as client:
        assert own_count(client, owner) == 60
        assert all_count(client, superuser_headers) == before + 60
    assert_counts_agree(served)


def test_writes_that_bypass_the_api_are_counted(
    served: Served, client: httpx.Client, new_account: UserFactory, superuser_headers: dict[str, str]
) -> None:
    """The template's own code, a script or a raw statement: the triggers count them as the API's writes."""
    first, second = new_account(), new_account()
    db = served.database
    ids = [uuid.uuid4() for _ in range(3)]
    for item_id in ids:
        db.run(
            "INSERT INTO item (id, title, owner_id, created_at) VALUES (:id, 'raw', :owner, CURRENT_TIMESTAMP)",
            id=db.id(str(item_id)),
            owner=db.id(first.id),
        )
    assert own_count(client, first) == 3
    # Several rows in one statement, and an owner changed.
    db.run(
        "INSERT INTO item (id, title, owner_id, created_at) VALUES (:a, 'raw', :owner, CURRENT_TIMESTAMP), "
        "(:b, 'raw', :owner, CURRENT_TIMESTAMP)",
        a=db.id(str(uuid.uuid4())),
        b=db.id(str(uuid.uuid4())),
        owner=db.id(second.id),
    )
    db.run("UPDATE item SET owner_id = :owner WHERE id = :id", owner=db.id(second.id), id=db.id(str(ids[0])))
    db.run("UPDATE item SET title = 'same owner', owner_id = owner_id WHERE id = :id", id=db.id(str(ids[1])))
    assert (own_count(client, first), own_count(client, second)) == (2, 3)
    db.run("DELETE FROM item WHERE owner_id = :owner", owner=db.id(second.id))
    assert (own_count(client, first), own_count(client, second)) == (2, 0)
    assert_counts_agree(served)


def test_an_owners_page_reads_no_item_beyond_it(served: Served, new_account: UserFactory) -> None:
    """The count is the kept one, not a count of the owner's rows: a count set by hand shows (and is put back)."""
    owner = new_account()
    with served.client() as client:
        create(client, owner, 2)
        db = served.database
        db.run("UPDATE user_item_count SET item_count = 12345 WHERE user_id = :id", id=db.id(owner.id))
        try:
            assert own_count(client, owner) == 12345
        finally:
            db.run("UPDATE user_item_count SET item_count = 2 WHERE user_id = :id", id=db.id(owner.id))
        assert own_count(client, owner) == 2


def user_columns(database: Database) -> set[str]:
    async def go(engine: AsyncEngine) -> set[str]:
        async with engine.connect() as connection:
            return set((await connection.execute(text('SELECT * FROM "user" LIMIT 0'))).keys())

    return database.execute(go)


def table_names(database: Database) -> set[str]:
    async def go(engine: AsyncEngine) -> set[str]:
        async with engine.connect() as connection:
            return await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))

    return database.execute(go)


def item_trigger_names(database: Database) -> set[str]:
    return {f"{table}.{name}" for table in ("item", "user") for name in database.trigger_names(table)}


def test_the_migration_counts_existing_items_and_a_downgrade_takes_only_its_own_away(tmp_path: Path) -> None:
    for url in (create_postgres_database(), f"sqlite+aiosqlite:///{tmp_path / 'count.db'}"):
        engine = "postgresql" if url.startswith("postgresql") else "sqlite"
        database = Database(url)
        commands = AlembicCommands(sqlalchemy_config=sqlalchemy_config(make_settings(url)))
        try:
            commands.upgrade("0005")
            before = item_trigger_names(database)
            owners = [uuid.uuid4(), uuid.uuid4()]
            for owner in owners:
                email = f"count-{owner.hex[:8]}@example.com"
                database.run(
                    'INSERT INTO "user" (id, email, email_key, is_active, is_superuser, hashed_password, created_at) '
                    "VALUES (:id, :email, :email, true, false, 'x', CURRENT_TIMESTAMP)",
                    id=database.id(str(owner)),
                    email=email,
                )
            for _ in range(3):
                database.run(
                    "INSERT INTO item (id, title, owner_id, created_at) VALUES (:id, 't', :owner, CURRENT_TIMESTAMP)",
                    id=database.id(str(uuid.uuid4())),
                    owner=database.id(str(owners[0])),
                )
            commands.upgrade("head")
            counted = "SELECT coalesce((SELECT item_count FROM user_item_count WHERE user_id = :id), 0)"
            counts = [database.scalar(counted, id=database.id(str(owner))) for owner in owners]
            assert counts == [3, 0]
            assert "item_count" not in user_columns(database)  # the counter left the user's row (migration 0012)
            # Head has migration 0008's user trigger (a deactivation revokes personal access tokens) too.
            ours = {f"item.{name}" for name in TRIGGERS[engine]} | {"user.personal_access_token_revoke"}
            assert item_trigger_names(database) == before | ours  # migration 0005's user triggers are still there
            # Back to 0006's column, filled from the table, and 0006's triggers keeping it.
            commands.downgrade("0011")
            old = 'SELECT item_count FROM "user" WHERE id = :id'
            assert [database.scalar(old, id=database.id(str(owner))) for owner in owners] == [3, 0]
            assert "user_item_count" not in table_names(database)
            assert item_trigger_names(database) == before | ours
            database.run(
                "INSERT INTO item (id, title, owner_id, created_at) VALUES (:id, 't', :owner, CURRENT_TIMESTAMP)",
                id=database.id(str(uuid.uuid4())),
                owner=database.id(str(owners[1])),
            )
            assert [database.scalar(old, id=database.id(str(owner))) for owner in owners] == [3, 1]
            commands.upgrade("head")
            assert [database.scalar(counted, id=database.id(str(owner))) for owner in owners] == [3, 1]
            commands.downgrade("0005")
            assert item_trigger_names(database) == before
            assert "item_count" not in user_columns(database)
            assert "user_item_count" not in table_names(database)
            commands.upgrade("head")
            assert item_trigger_names(database) == before | ours
        finally:
            if engine == "postgresql":
                drop_postgres_database(url)
