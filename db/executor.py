"""Fast statements: one round trip each, on a pooled connection outside the ORM session.

Through the ORM, the API's requests spent most of their CPU in SQLAlchemy's execution layer and session (~0.5 ms a
statement against ~0.1 ms on the driver, and a BEGIN and a COMMIT around each change; see bench/RESULTS.md).
On PostgreSQL these statements run straight on the asyncpg connection of a pooled SQLAlchemy connection,
compiled once by SQLAlchemy; elsewhere (SQLite) through SQLAlchemy Core. A single statement needs no
transaction around it, so none is opened.

The executor knows no resource: each repository (app/services.py) owns its statements, and each statement selects
the columns of the struct it returns (`columns`), so that struct is built straight from the row (`from_row`)."""

from __future__ import annotations

import asyncio
import operator
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from functools import cache
from typing import Any, TypeVar

import asyncpg
import msgspec
from advanced_alchemy.exceptions import DuplicateKeyError, ForeignKeyError
from sqlalchemy import Column, Delete, Insert, Select, Update, inspect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool
from sqlalchemy.util import greenlet_spawn

from db.models import Base

Statement = Select[Any] | Insert | Update | Delete
S = TypeVar("S", bound=msgspec.Struct)


def columns(model: type[Base], struct: type[msgspec.Struct]) -> list[Column[Any]]:
    """The model's columns named by the struct's fields, in the struct's order. Statements are built from this at
    import, so a struct field without a column fails there, not as a 500 on some request."""
    mapped = inspect(model).columns
    missing = [name for name in struct.__struct_fields__ if name not in mapped]
    if missing:
        raise TypeError(f"{struct.__name__} has fields that are no column of {model.__name__}: {missing}")
    return [mapped[name] for name in struct.__struct_fields__]


def from_row(struct: type[S], row: Mapping[str, Any], prefix: str = "", shown: frozenset[str] = frozenset()) -> S:
    """The struct from a row that selected its `columns` (labelled `prefix` + field name). A field whose default
    is UNSET is shown only when a setting asks for it: filled when `shown` names it, left UNSET (so out of the
    answer) otherwise."""
    return struct(*_values(struct, prefix, shown)(row))


@cache
def _values(
    struct: type[msgspec.Struct], prefix: str, shown: frozenset[str]
) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    """A row's values of the struct's fields that are filled, in their order. By `itemgetter`, since a page builds a
    struct per row: as fast as naming each field by hand, four times faster than a dict of them."""
    names = [
        field.name
        for field in msgspec.structs.fields(struct)
        if field.default is not msgspec.UNSET or field.name in shown
    ]
    if names != list(struct.__struct_fields__[: len(names)]):
        raise TypeError(f"{struct.__name__}: the fields left UNSET must come after those filled from a row")
    keys = [prefix + name for name in names]
    if len(keys) == 1:
        return lambda row: (row[keys[0]],)
    return operator.itemgetter(*keys)


class DatabaseUnavailable(ConnectionError):
    """A fast statement lost its connection, timed out, or found no connection free in time (answered 503 like the
    ORM's connection errors)."""


# What a connection the database closed, terminated (`pg_terminate_backend`, a restart) or stopped answering raises:
# an in-flight statement gets the server's shutdown error, the next one finds the connection closed or, if the
# termination notice arrived while it sat in the pool, still consuming that error (InternalClientError).
_CONNECTION_LOST = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
)
# ... except the server's cancel of one statement (its `statement_timeout`, a `pg_cancel_backend`): an error like
# any other (answered 503 by app/errors.py), on a connection that stays healthy.
_STATEMENT_CANCELED = asyncpg.QueryCanceledError


# What a new connection meets when the server has no slot for it ("too many clients", a role's connection limit)
# or is starting up or shutting down: unavailable for now, as when it does not answer.
REFUSED = (asyncpg.InsufficientResourcesError, asyncpg.CannotConnectNowError)


class Executor:
    """Runs a statement (a module constant, compiled once) on a pooled connection of the engine."""

    def __init__(self, engine: AsyncEngine, shown: frozenset[str] = frozenset()) -> None:
        self.engine = engine
        # The fields with an UNSET default that the structs built here fill (see `from_row`).
        self.shown = shown
        self.native = engine.dialect.driver == "asyncpg"
        # Statements wait their turn here, first come first served, rather than in the pool: SQLAlchemy's async
        # queue lets a newcomer take a returned connection before a waiter wakes, and the waiter queues again at
        # the back (a few requests waited seconds at 32 per worker on 20 connections; see bench/RESULTS.md).
        self._turns = asyncio.Semaphore(engine.pool.size()) if isinstance(engine.pool, QueuePool) else None
        # ... for at most the pool's own timeout: a request behind statements that are stuck (on a lock, say) gives
        # up with a 503 instead of queueing for as long as they take.
        self._turn_timeout = engine.pool.timeout() if isinstance(engine.pool, QueuePool) else None
        # Connections kept checked out between statements, newest last: a checkout from the pool and its return
        # cost a request on users_me ~50 µs of CPU (SQLAlchemy's pool, entered through a greenlet), taking one
        # from here next to nothing. At most half the pool's, so that an idle executor leaves the ORM's sessions
        # the rest; and none kept while the pool has no connection left, so that an ORM session waiting for one
        # gets the next statement's.
        self._idle: list[Any] = []
        self._pool = engine.pool if isinstance(engine.pool, QueuePool) else None
        self._idle_max = self._pool.size() // 2 if self._pool is not None else 0
        self._compiled: dict[int, tuple[str, tuple[str, ...]]] = {}
        # A span per statement of the fast path on asyncpg, given its SQL, when the app traces (app/tracing.py);
        # elsewhere SQLAlchemy's own instrumentation sees the statements.
        self.span: Callable[[str], AbstractContextManager[Any]] | None = None

    def waiting(self) -> int:
        """Fast statements waiting for their turn for a connection (the pool's own queue aside)."""
        return len(getattr(self._turns, "_waiters", None) or ())

    def idle(self) -> int:
        """Connections this executor keeps checked out of the pool while no statement uses them."""
        return len(self._idle)

    def close(self) -> None:
        """Every kept connection back to the pool (at shutdown, before the engine is disposed; and when the
        database was lost, so that the pool replaces them)."""
        idle, self._idle = self._idle, []
        for pooled in idle:
            pooled.close()

    def _sql(self, statement: Statement) -> tuple[str, tuple[str, ...]]:
        """The driver's SQL and the order of its parameters (statements here are module constants)."""
        key = id(statement)
        if key not in self._compiled:
            compiled = statement.compile(dialect=self.engine.dialect)
            self._compiled[key] = (compiled.string, tuple(compiled.positiontup or ()))
        return self._compiled[key]

    async def rows(self, statement: Statement, params: Mapping[str, Any]) -> Sequence[Mapping[str, Any]]:
        if self.native:
            if self.span is not None:
                with self.span(self._sql(statement)[0]):
                    return await self._native_rows(statement, params)
            return await self._native_rows(statement, params)
        async with self.engine.connect() as connection:
            try:
                result = await connection.execute(statement, dict(params))
            except IntegrityError as exc:
                if "UNIQUE" in str(exc.orig):
                    raise DuplicateKeyError(type(exc.orig).__name__) from exc
                if "FOREIGN KEY" in str(exc.orig):
                    raise ForeignKeyError(type(exc.orig).__name__) from exc
                raise
            found = [dict(row) for row in result.mappings()] if result.returns_rows else []
            await connection.commit()
        return found

    async def _native_rows(self, statement: Statement, params: Mapping[str, Any]) -> Sequence[Mapping[str, Any]]:
        if self._turns is None:
            return await self._checked_out_rows(statement, params)
        try:
            async with asyncio.timeout(self._turn_timeout):
                await self._turns.acquire()
        except TimeoutError:
            raise DatabaseUnavailable("no connection free in time") from None
        try:
            return await self._checked_out_rows(statement, params)
        finally:
            self._turns.release()

    async def _checked_out_rows(self, statement: Statement, params: Mapping[str, Any]) -> Sequence[Mapping[str, Any]]:
        sql, names = self._sql(statement)
        pooled = self._idle.pop() if self._idle else await self.engine.raw_connection()
        try:
            rows: Sequence[Mapping[str, Any]] = await pooled.driver_connection.fetch(  # type: ignore[union-attr]
                sql, *(params[name] for name in names)
            )
        except _CONNECTION_LOST as exc:
            if isinstance(exc, _STATEMENT_CANCELED):
                await greenlet_spawn(pooled.close)  # canceled by the server: the connection is fine
                raise
            # The pool's other connections are as old as this one and likely as dead: invalidate them all, as
            # SQLAlchemy does on a disconnect it sees itself, so each is replaced when next checked out instead
            # of failing a request of its own once the database is back.
            await greenlet_spawn(self.engine.sync_engine.pool._invalidate, pooled, exc)
            self.close()
            raise DatabaseUnavailable(type(exc).__name__) from exc
        except asyncpg.PostgresError as exc:
            await greenlet_spawn(pooled.close)  # the statement failed; its connection is fine
            if isinstance(exc, asyncpg.UniqueViolationError):
                raise DuplicateKeyError(type(exc).__name__) from exc
            if isinstance(exc, asyncpg.ForeignKeyViolationError):
                raise ForeignKeyError(type(exc).__name__) from exc
            raise
        except BaseException:
            # Cancelled mid-statement: the connection may be mid-protocol, so it is never handed out again.
            await greenlet_spawn(pooled.invalidate)
            raise
        if self._pool is not None and len(self._idle) < self._idle_max and self._pool.checkedout() < self._pool.size():
            self._idle.append(pooled)
        else:
            pooled.close()  # no transaction was opened, so returning it to the pool sends nothing
        return rows

    async def first(self, struct: type[S], statement: Statement, params: Mapping[str, Any]) -> S | None:
        """The first row as `struct` (the statement selects its `columns`), or None."""
        rows = await self.rows(statement, params)
        return from_row(struct, rows[0], shown=self.shown) if rows else None

    async def all(self, struct: type[S], statement: Statement, params: Mapping[str, Any]) -> list[S]:
        return [from_row(struct, row, shown=self.shown) for row in await self.rows(statement, params)]

    async def count(self, statement: Statement, params: Mapping[str, Any]) -> int:
        rows = await self.rows(statement, params)
        return int(next(iter(rows[0].values())))

    async def page(
        self, struct: type[S], statement: Statement, count: Statement, params: Mapping[str, Any], skip: int, limit: int
    ) -> tuple[list[S], int]:
        """A page and the total of rows: one round trip when the page has rows (`statement` selects the total as
        `total` beside the struct's columns), two when it is empty but there may be rows before it."""
        rows = await self.rows(statement, {**params, "skip": skip, "limit": limit})
        if rows:
            return [from_row(struct, row, shown=self.shown) for row in rows], int(rows[0]["total"])
        return [], await self.count(count, params) if skip or not limit else 0
