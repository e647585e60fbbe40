"""The ceiling: a minimal raw ASGI app on asyncpg + msgspec (no framework, no ORM, no auth) answering the
benchmarked routes with the same SQL as the service. `bench/run.py` serves it with uvicorn next to the real
service, so each scenario shows the service's throughput as a fraction of what this stack can do at most.

The caller is named by an `X-User-Id` header instead of a token. The database comes from `BENCH_CEILING_DSN`
(a plain `postgresql://` DSN); the pool holds up to `BENCH_CEILING_POOL` connections per worker (default 20,
the service's `DB_POOL_SIZE` plus its overflow).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl
from uuid import UUID

import asyncpg
import msgspec
from uuid_utils.compat import uuid7

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

PREFIX = "/api/v1"
USER_COLUMNS = "email, is_active, is_superuser, full_name, id, created_at"
ITEM_COLUMNS = "title, description, id, owner_id, created_at"


class UserPublic(msgspec.Struct):
    email: str
    is_active: bool
    is_superuser: bool
    full_name: str | None
    id: UUID
    created_at: datetime


class ItemPublic(msgspec.Struct):
    title: str
    description: str | None
    id: UUID
    owner_id: UUID
    created_at: datetime


class ItemsPublic(msgspec.Struct):
    data: list[ItemPublic]
    count: int


class ItemCreate(msgspec.Struct):
    title: str
    description: str | None = None


class Detail(msgspec.Struct):
    detail: str


encoder = msgspec.json.Encoder()
item_create_decoder = msgspec.json.Decoder(ItemCreate)
JSON_HEADERS = [(b"content-type", b"application/json")]


class Ceiling:
    def __init__(self) -> None:
        self.pool: asyncpg.Pool | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
            return
        status, body = await self.handle(scope, receive)
        await send({"type": "http.response.start", "status": status, "headers": JSON_HEADERS})
        await send({"type": "http.response.body", "body": body})

    async def lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.pool = await asyncpg.create_pool(
                    os.environ["BENCH_CEILING_DSN"],
                    min_size=2,
                    max_size=int(os.environ.get("BENCH_CEILING_POOL", "20")),
                )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.pool is not None:
                    await self.pool.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def handle(self, scope: Scope, receive: Receive) -> tuple[int, bytes]:
        method: str = scope["method"]
        path: str = scope["path"].rstrip("/")
        if path == f"{PREFIX}/utils/health-check":
            return 200, b"true"
        user_id = next((UUID(v.decode()) for k, v in scope["headers"] if k == b"x-user-id"), None)
        if user_id is None:
            return 401, encoder.encode(Detail("Not authenticated"))
        if path == f"{PREFIX}/users/me" and method == "GET":
            return await self.users_me(user_id)
        if path == f"{PREFIX}/items":
            if method == "GET":
                query = dict(parse_qsl(scope["query_string"].decode()))
                return await self.items_list(user_id, int(query.get("skip", 0)), int(query.get("limit", 100)))
            if method == "POST":
                return await self.item_create(user_id, await read_body(receive))
        if path.startswith(f"{PREFIX}/items/") and method == "GET":
            return await self.item_get(user_id, UUID(path.rsplit("/", 1)[1]))
        return 404, encoder.encode(Detail("Not Found"))

    async def users_me(self, user_id: UUID) -> tuple[int, bytes]:
        assert self.pool is not None
        row = await self.pool.fetchrow(f'SELECT {USER_COLUMNS} FROM "user" WHERE id = $1', user_id)
        if row is None:
            return 404, encoder.encode(Detail("User not found"))
        return 200, encoder.encode(UserPublic(*row))

    async def items_list(self, user_id: UUID, skip: int, limit: int) -> tuple[int, bytes]:
        assert self.pool is not None
        rows = await self.pool.fetch(
            f"SELECT {ITEM_COLUMNS}, count(*) OVER () FROM item WHERE owner_id = $1 "
            "ORDER BY created_at DESC LIMIT $2 OFFSET $3",
            user_id,
            limit,
            skip,
        )
        if rows:
            count = rows[0][5]
        else:
            count = await self.pool.fetchval("SELECT count(*) FROM item WHERE owner_id = $1", user_id)
        return 200, encoder.encode(ItemsPublic([ItemPublic(*row[:5]) for row in rows], count))

    async def item_get(self, user_id: UUID, item_id: UUID) -> tuple[int, bytes]:
        assert self.pool is not None
        row = await self.pool.fetchrow(f"SELECT {ITEM_COLUMNS} FROM item WHERE id = $1", item_id)
        if row is None:
            return 404, encoder.encode(Detail("Item not found"))
        if row["owner_id"] != user_id:
            return 403, encoder.encode(Detail("Not enough permissions"))
        return 200, encoder.encode(ItemPublic(*row))

    async def item_create(self, user_id: UUID, body: bytes) -> tuple[int, bytes]:
        assert self.pool is not None
        try:
            data = item_create_decoder.decode(body)
        except msgspec.ValidationError as exc:
            return 422, encoder.encode(Detail(str(exc)))
        item = ItemPublic(data.title, data.description, uuid7(), user_id, datetime.now(UTC))
        await self.pool.execute(
            "INSERT INTO item (title, description, id, owner_id, created_at) VALUES ($1, $2, $3, $4, $5)",
            item.title,
            item.description,
            item.id,
            item.owner_id,
            item.created_at,
        )
        return 200, encoder.encode(item)


async def read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


app = Ceiling()
