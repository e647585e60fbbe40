"""Adding a field to a response takes the model (and its migration) and the struct, nothing else: every fast
statement selects the columns named by the struct it returns, and a struct field that no column backs fails when
the statements are built (at import), not as a 500 on the one route that reads it."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

import pytest
from sqlalchemy import Select, Update

from app.schemas import Caller, ItemPublic, UserPublic
from app.services import CallerSession, ItemRepository, UserRepository, caller_with
from db.executor import columns, from_row
from db.models import Item, User


def selected(statement: Select[object]) -> list[str]:
    return [column.key for column in statement.selected_columns]


def returned(statement: Update) -> list[str]:
    return [column.key for column in statement.exported_columns]


def fields(struct: type[object]) -> list[str]:
    return list(struct.__struct_fields__)  # type: ignore[attr-defined]


def session_fields() -> list[str]:
    """The token's session, read with the caller (prefixed: its columns share names with the user's)."""
    return [f"session_{name}" for name in fields(CallerSession)]


def test_each_fast_statement_selects_exactly_the_fields_of_the_struct_it_returns() -> None:
    assert selected(UserRepository.CALLER) == [*fields(Caller), *session_fields()]
    assert selected(UserRepository.PUBLIC) == fields(UserPublic)
    assert selected(UserRepository.PAGE) == [*fields(UserPublic), "total"]
    assert selected(ItemRepository.PUBLIC) == fields(ItemPublic)
    assert selected(ItemRepository.PAGE) == [*fields(ItemPublic), "total"]
    assert selected(ItemRepository.OWN_PAGE) == [*fields(ItemPublic), "total"]
    assert sorted(ItemRepository.INSERT.compile().params) == sorted(fields(ItemPublic))
    # An update answers with the struct it returns, whatever it sets.
    assert returned(UserRepository.update_statement(("full_name",), True)) == fields(UserPublic)
    assert returned(ItemRepository.update_statement(("description", "title"))) == fields(ItemPublic)


def test_a_new_user_sets_every_column() -> None:
    assert sorted(UserRepository.INSERT.compile().params) == sorted(User.__table__.columns.keys())


def test_an_update_statement_is_built_once_per_set_of_columns() -> None:
    """The executor compiles each statement object once."""
    assert ItemRepository.update_statement(("title",)) is ItemRepository.update_statement(("title",))
    assert UserRepository.update_statement(("email",), False) is not UserRepository.update_statement(("email",), True)


def test_the_caller_read_with_an_item_selects_both_structs() -> None:
    statement = caller_with(Item, ItemPublic)
    rows = [f"row_{name}" for name in fields(ItemPublic)]
    assert selected(statement) == [*fields(Caller), *session_fields(), "row_key", *rows]
    assert caller_with(Item, ItemPublic) is statement  # built once: the executor compiles it once


def test_a_struct_field_without_a_column_fails_when_the_statement_is_built() -> None:
    class ItemWithPriority(ItemPublic):
        priority: int = 0

    with pytest.raises(TypeError, match=r"ItemWithPriority has fields that are no column of Item: \['priority'\]"):
        columns(Item, ItemWithPriority)


def test_a_struct_is_built_from_its_columns_whatever_else_the_row_has() -> None:
    row = {"title": "t", "description": None, "id": uuid4(), "owner_id": uuid4(), "created_at": datetime.now(UTC)}
    assert from_row(ItemPublic, {**row, "total": 3}) == ItemPublic(**row)
    assert from_row(ItemPublic, {f"row_{name}": value for name, value in row.items()}, "row_") == ItemPublic(**row)


def test_the_caller_shows_every_public_field_of_a_user() -> None:
    """`Caller.public()` is what /users/me answers: a UserPublic field the caller lacks would not type-check, and a
    Caller field without a User column fails above."""
    assert set(fields(UserPublic)) <= set(fields(Caller))
    assert [column.key for column in columns(User, Caller)] == fields(Caller)
    values = {"email": "a@example.com", "is_active": True, "is_superuser": False, "full_name": None}
    caller = Caller(
        **values, id=uuid4(), created_at=datetime.now(UTC), hashed_password="x", token_version=0, kept_token_digest=None
    )
    assert caller.public() == UserPublic(**values, id=caller.id, created_at=caller.created_at)
