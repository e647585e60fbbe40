"""The ceiling: a lean raw ASGI app on asyncpg + msgspec (no framework, no ORM, no auth) answering every benchmarked
route with the SQL the service sends, or the honest minimum where the service sends more (an update is one
`UPDATE … RETURNING` that checks ownership in its WHERE). `bench/run.py` serves it with uvicorn next to the real
service (same worker count, uvloop, httptools), so each scenario shows the service's throughput as a fraction of
what this stack can do at most.

The caller is named by an `X-User-Id` header instead of a token, and trusted (superuser routes included): the
ceiling reads no caller row. Password routes hash and verify with the service's argon2 parameters in one
low-priority thread per worker, as app/security.py does.

What keeps it lean (bench/RESULTS.md, "The ceiling"): a minimal connection pool instead of asyncpg's (whose
checkout costs as much CPU as the rest of a users_me answer, and whose release sends a reset query: a round trip per
request that the service's pool does not make), statements prepared once per connection (asyncpg's cache), rows
turned into msgspec Structs positionally, one encoder, a Content-Length on every response.

The database comes from `BENCH_CEILING_DSN` (a plain `postgresql://` DSN); the pool holds `BENCH_CEILING_POOL`
connections per worker (default 20, the service's `DB_POOL_SIZE`).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl
from uuid import UUID

import asyncpg
import msgspec
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from argon2.profiles import RFC_9106_LOW_MEMORY
from msgspec import UNSET, UnsetType
from uuid_utils.compat import uuid7

from app.schemas import ItemPublic, ItemsPublic, UserPublic, UsersPublic  # the very shapes the service answers
from db.identity import email_identity

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Answer = tuple[int, bytes]

PREFIX = "/api/v1"
USERS = f"{PREFIX}/users"
ITEMS = f"{PREFIX}/items"
HEALTH = f"{PREFIX}/utils/health-check"
USER_PUBLIC = '"user".email, "user".is_active, "user".is_superuser, "user".full_name, "user".id, "user".created_at'
ITEM_PUBLIC = "item.title, item.description, item.id, item.owner_id, item.created_at"

# The service's statements (app/services.py, as SQLAlchemy compiles them), and the minimal writes.
SQL_USER_PUBLIC = f'SELECT {USER_PUBLIC} FROM "user" WHERE "user".id = $1::UUID'
SQL_USERS_PAGE = (
    f'SELECT {USER_PUBLIC}, (SELECT count(*) AS count_1 FROM "user") AS total FROM "user" '
    'ORDER BY "user".created_at DESC LIMIT $1 OFFSET $2'
)
SQL_USERS_COUNT = 'SELECT count(*) AS count_1 FROM "user"'
SQL_USER_INSERT = (
    'INSERT INTO "user" (id, email, email_key, is_active, is_superuser, full_name, hashed_password, token_version, '
    "created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8)"
)
SQL_USER_HASH = 'SELECT "user".hashed_password FROM "user" WHERE "user".id = $1::UUID'
SQL_USER_PASSWORD = (
    'UPDATE "user" SET hashed_password = $2, token_version = token_version + 1, kept_token_digest = $3 '
    'WHERE "user".id = $1::UUID'
)
SQL_ITEM = f"SELECT {ITEM_PUBLIC} FROM item WHERE item.id = $1::UUID"
# The owner's count is the one the database keeps (user_item_count, migration 0012), as the service reads it.
SQL_OWN_COUNT = (
    "SELECT coalesce((SELECT user_item_count.item_count FROM user_item_count "
    "WHERE user_item_count.user_id = $1::UUID), 0)"
)
SQL_ITEMS_PAGE = (
    f"SELECT {ITEM_PUBLIC}, ({SQL_OWN_COUNT}) AS total FROM item WHERE item.owner_id = $1::UUID "
    "ORDER BY item.created_at DESC, item.id DESC LIMIT $2 OFFSET $3"
)
SQL_ITEMS_COUNT = SQL_OWN_COUNT
SQL_ITEM_INSERT = (
    "INSERT INTO item (id, title, description, owner_id, created_at) "
    "VALUES ($1::UUID, $2::VARCHAR, $3::VARCHAR, $4::UUID, $5::TIMESTAMP WITH TIME ZONE)"
)
SQL_ITEM_DELETE = "DELETE FROM item WHERE item.id = $1::UUID AND item.owner_id = $2::UUID RETURNING item.id"
SQL_ITEM_OWNER = "SELECT item.owner_id FROM item WHERE item.id = $1::UUID"


class ItemCreate(msgspec.Struct):
    title: str
    description: str | None = None


class ItemUpdate(msgspec.Struct, omit_defaults=True):
    title: str | UnsetType = UNSET
    description: str | UnsetType | None = UNSET


class UserUpdate(msgspec.Struct, omit_defaults=True):
    full_name: str | UnsetType | None = UNSET
    is_active: bool | UnsetType = UNSET
    is_superuser: bool | UnsetType = UNSET


class UserCreate(msgspec.Struct, kw_only=True):
    email: str
    is_active: bool = True
    is_superuser: bool = False
    full_name: str | None = None
    password: str


class UpdatePassword(msgspec.Struct):
    current_password: str
    new_password: str


class Detail(msgspec.Struct):
    detail: str


class Message(msgspec.Struct):
    message: str


encode = msgspec.json.Encoder().encode
decode_item_create = msgspec.json.Decoder(ItemCreate).decode
decode_item_update = msgspec.json.Decoder(ItemUpdate).decode
decode_user_update = msgspec.json.Decoder(UserUpdate).decode
decode_user_create = msgspec.json.Decoder(UserCreate).decode
decode_password = msgspec.json.Decoder(UpdatePassword).decode
TRUE = b"true"
ITEM_DELETED = encode(Message("Item deleted successfully"))
PASSWORD_UPDATED = encode(Message("Password updated successfully"))
NOT_FOUND = encode(Detail("Not Found"))

# app/security.py's hashing: argon2id (RFC 9106 low memory), one thread per worker at nice 10.
hasher = PasswordHasher.from_parameters(RFC_9106_LOW_MEMORY)


def _lower_priority() -> None:
    os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


hash_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="password-hash", initializer=_lower_priority)


def _verify(password: str, hashed: str) -> bool:
    try:
        return bool(hasher.verify(hashed, password))
    except (VerificationError, InvalidHashError):
        return False


async def hash_password(password: str) -> str:
    return await asyncio.get_running_loop().run_in_executor(hash_pool, hasher.hash, password)


async def verify_password(password: str, hashed: str) -> bool:
    return await asyncio.get_running_loop().run_in_executor(hash_pool, _verify, password, hashed)


class Pool:
    """At most `size` connections, opened as needed (the warm-up run) and then kept, handed out last-in first-out;
    a request waits when all are busy. asyncpg's own pool costs ~60 µs of CPU per checkout here (its release runs
    in a shielded task of its own, and by default sends a `RESET ALL; CLOSE ALL; …` query): as much as the rest of
    a users_me answer. Nothing here changes a connection's session state, so nothing needs resetting.

    Connections are closed after IDLE_SECONDS without a request: the bench keeps the ceiling up while it measures
    the service and a reference, and PostgreSQL's 100 connections are shared by all of them."""

    IDLE_SECONDS = 3.0

    def __init__(self, dsn: str, size: int) -> None:
        self.dsn = dsn
        self.size = size
        self.opened = 0
        self.idle: list[asyncpg.Connection] = []
        self.waiters: deque[asyncio.Future[asyncpg.Connection]] = deque()
        self.used = 0  # requests so far: the reaper closes the idle connections when it stops growing
        self.reaper: asyncio.Task[None] | None = None

    async def reap(self) -> None:
        seen = -1
        while True:
            await asyncio.sleep(self.IDLE_SECONDS)
            if self.used == seen:
                while self.idle:
                    self.opened -= 1
                    await self.idle.pop().close()
            seen = self.used

    async def acquire(self) -> asyncpg.Connection:
        self.used += 1
        if self.idle:
            return self.idle.pop()
        if self.reaper is None:
            self.reaper = asyncio.create_task(self.reap())
        if self.opened < self.size:
            self.opened += 1
            try:
                return await asyncpg.connect(self.dsn)
            except BaseException:
                self.opened -= 1
                raise
        waiter: asyncio.Future[asyncpg.Connection] = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release(waiter.result())  # handed over just as this request was cancelled
            raise

    def release(self, connection: asyncpg.Connection) -> None:
        if connection.is_closed():
            self.opened -= 1
            return
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return
        self.idle.append(connection)

    async def run(self, method: str, sql: str, *args: Any) -> Any:
        connection = await self.acquire()
        try:
            return await getattr(connection, method)(sql, *args)
        except asyncpg.PostgresError:
            raise  # the statement failed; the connection is fine
        except BaseException:
            connection.terminate()  # cancelled or broken mid-protocol: never handed out again
            raise
        finally:
            self.release(connection)

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self.run("fetch", sql, *args)
        return rows

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await self.run("fetchrow", sql, *args)
        return row

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self.run("fetchval", sql, *args)

    async def execute(self, sql: str, *args: Any) -> str:
        status: str = await self.run("execute", sql, *args)
        return status

    async def close(self) -> None:
        if self.reaper is not None:
            self.reaper.cancel()
        for connection in self.idle:
            await connection.close()
        self.idle.clear()


def header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


class Ceiling:
    def __init__(self) -> None:
        self.pool: Pool | None = None
        self._item_updates: dict[tuple[str, ...], str] = {}
        self._user_updates: dict[tuple[str, ...], str] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
            return
        try:
            status, body = await self.handle(scope, receive)
        except (ValueError, msgspec.ValidationError, msgspec.DecodeError) as exc:
            status, body = 422, encode(Detail(str(exc)))
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.pool = Pool(os.environ["BENCH_CEILING_DSN"], int(os.environ.get("BENCH_CEILING_POOL", "20")))
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.pool is not None:
                    await self.pool.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def handle(self, scope: Scope, receive: Receive) -> Answer:
        method: str = scope["method"]
        path: str = scope["path"]
        if path[-1] == "/":
            path = path[:-1]
        if path == HEALTH:
            return 200, TRUE
        raw_user = header(scope, b"x-user-id")
        if raw_user is None:
            return 401, encode(Detail("Not authenticated"))
        user_id = UUID(raw_user.decode())
        if path.startswith(ITEMS):
            if path == ITEMS:
                if method == "GET":
                    skip, limit = page_params(scope)
                    return await self.items_list(user_id, skip, limit)
                if method == "POST":
                    return await self.item_create(user_id, await read_body(receive))
            else:
                item_id = UUID(path[len(ITEMS) + 1 :])
                if method == "GET":
                    return await self.item_get(user_id, item_id)
                if method == "PUT":
                    return await self.item_update(user_id, item_id, await read_body(receive))
                if method == "DELETE":
                    return await self.item_delete(user_id, item_id)
        elif path.startswith(USERS):
            if path == USERS:
                if method == "GET":
                    return await self.users_list(*page_params(scope))
                if method == "POST":
                    return await self.user_create(await read_body(receive))
            elif path == f"{USERS}/me":
                if method == "GET":
                    return await self.user_get(user_id)
                if method == "PATCH":
                    return await self.user_update(user_id, await read_body(receive))
            elif path == f"{USERS}/me/password" and method == "PATCH":
                return await self.password_change(scope, user_id, await read_body(receive))
            elif method == "PATCH":
                return await self.user_update(UUID(path[len(USERS) + 1 :]), await read_body(receive))
        return 404, NOT_FOUND

    # ------------------------------------------------------------ users

    async def user_get(self, user_id: UUID) -> Answer:
        assert self.pool is not None
        row = await self.pool.fetchrow(SQL_USER_PUBLIC, user_id)
        if row is None:
            return 404, encode(Detail("User not found"))
        return 200, encode(UserPublic(*row))

    async def users_list(self, skip: int, limit: int) -> Answer:
        """The page carries its total (one round trip); a page without rows needs the count on its own."""
        assert self.pool is not None
        rows = await self.pool.fetch(SQL_USERS_PAGE, limit, skip)
        count = rows[0][6] if rows else await self.pool.fetchval(SQL_USERS_COUNT)
        return 200, encode(UsersPublic([UserPublic(*row[:6]) for row in rows], count))

    async def user_create(self, body: bytes) -> Answer:
        assert self.pool is not None
        data = decode_user_create(body)
        hashed = await hash_password(data.password)
        user = UserPublic(data.email, data.is_active, data.is_superuser, data.full_name, uuid7(), datetime.now(UTC))
        try:
            await self.pool.execute(
                SQL_USER_INSERT,
                user.id,
                user.email,
                email_identity(user.email),
                user.is_active,
                user.is_superuser,
                user.full_name,
                hashed,
                user.created_at,
            )
        except asyncpg.UniqueViolationError:
            return 400, encode(Detail("The user with this email already exists in the system."))
        return 200, encode(user)

    async def user_update(self, user_id: UUID, body: bytes) -> Answer:
        """PATCH /users/me and /users/{id}: one UPDATE … RETURNING of the fields the body sets."""
        assert self.pool is not None
        changes = msgspec.structs.asdict(decode_user_update(body))
        names = tuple(name for name, value in changes.items() if value is not UNSET)
        if not names:
            return await self.user_get(user_id)
        sql = self._user_updates.get(names)
        if sql is None:
            assignments = ", ".join(f"{name} = ${n}" for n, name in enumerate(names, 2))
            sql = f'UPDATE "user" SET {assignments} WHERE "user".id = $1::UUID RETURNING {USER_PUBLIC}'
            self._user_updates[names] = sql
        row = await self.pool.fetchrow(sql, user_id, *(changes[name] for name in names))
        if row is None:
            return 404, encode(Detail("User not found"))
        return 200, encode(UserPublic(*row))

    async def password_change(self, scope: Scope, user_id: UUID, body: bytes) -> Answer:
        assert self.pool is not None
        data = decode_password(body)
        hashed = await self.pool.fetchval(SQL_USER_HASH, user_id)
        if hashed is None:
            return 404, encode(Detail("User not found"))
        if not await verify_password(data.current_password, hashed):
            return 400, encode(Detail("Incorrect password"))
        if data.current_password == data.new_password:
            return 400, encode(Detail("New password cannot be the same as the current one"))
        token = (header(scope, b"authorization") or b"").partition(b" ")[2].strip()
        kept = hashlib.sha256(token).hexdigest() if token else None
        await self.pool.execute(SQL_USER_PASSWORD, user_id, await hash_password(data.new_password), kept)
        return 200, PASSWORD_UPDATED

    # ------------------------------------------------------------ items

    async def items_list(self, user_id: UUID, skip: int, limit: int) -> Answer:
        assert self.pool is not None
        rows = await self.pool.fetch(SQL_ITEMS_PAGE, user_id, limit, skip)
        if rows:
            count = rows[0][5]
        elif skip or not limit:
            count = await self.pool.fetchval(SQL_ITEMS_COUNT, user_id)
        else:
            count = 0
        return 200, encode(ItemsPublic([ItemPublic(*row[:5]) for row in rows], count))

    async def item_get(self, user_id: UUID, item_id: UUID) -> Answer:
        assert self.pool is not None
        row = await self.pool.fetchrow(SQL_ITEM, item_id)
        if row is None:
            return 404, encode(Detail("Item not found"))
        if row[3] != user_id:
            return 403, encode(Detail("Not enough permissions"))
        return 200, encode(ItemPublic(*row))

    async def item_create(self, user_id: UUID, body: bytes) -> Answer:
        assert self.pool is not None
        data = decode_item_create(body)
        item = ItemPublic(data.title, data.description, uuid7(), user_id, datetime.now(UTC))
        await self.pool.execute(SQL_ITEM_INSERT, item.id, item.title, item.description, item.owner_id, item.created_at)
        return 200, encode(item)

    async def item_update(self, user_id: UUID, item_id: UUID, body: bytes) -> Answer:
        """One UPDATE … RETURNING with the ownership in its WHERE; a second statement only to tell 404 from 403."""
        assert self.pool is not None
        changes = msgspec.structs.asdict(decode_item_update(body))
        names = tuple(name for name, value in changes.items() if value is not UNSET)
        sql = self._item_updates.get(names)
        if sql is None:
            assignments = ", ".join(f"{name} = ${n}" for n, name in enumerate(names, 3)) or "title = title"
            sql = (
                f"UPDATE item SET {assignments} WHERE item.id = $1::UUID AND item.owner_id = $2::UUID "
                f"RETURNING {ITEM_PUBLIC}"
            )
            self._item_updates[names] = sql
        row = await self.pool.fetchrow(sql, item_id, user_id, *(changes[name] for name in names))
        if row is None:
            return await self.item_missing(item_id)
        return 200, encode(ItemPublic(*row))

    async def item_delete(self, user_id: UUID, item_id: UUID) -> Answer:
        assert self.pool is not None
        if await self.pool.fetchval(SQL_ITEM_DELETE, item_id, user_id) is None:
            return await self.item_missing(item_id)
        return 200, ITEM_DELETED

    async def item_missing(self, item_id: UUID) -> Answer:
        """404 when the item is not there, else 403 (an owner's statement found no row of theirs)."""
        assert self.pool is not None
        if await self.pool.fetchval(SQL_ITEM_OWNER, item_id) is None:
            return 404, encode(Detail("Item not found"))
        return 403, encode(Detail("Not enough permissions"))


def page_params(scope: Scope) -> tuple[int, int]:
    query = dict(parse_qsl(scope["query_string"].decode()))
    return int(query.get("skip", 0)), int(query.get("limit", 100))


async def read_body(receive: Receive) -> bytes:
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        return body
    chunks = [body]
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


app = Ceiling()
