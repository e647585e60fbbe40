"""Validation failures described as pydantic 2 describes them (`type`, `loc`, `msg`, `input`, `ctx`).

msgspec decodes every request and stops at its first error, in its own words; the template's clients show pydantic's
`msg` and expect one error per failing field. So, only once a request has already failed, its raw input is checked
again here against the same declarations (read with `msgspec.inspect`), in pydantic's words. The checks follow
msgspec's lax acceptance, so a field msgspec accepted is not reported.
"""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Any
from uuid import UUID

import email_validator
import msgspec
from litestar import Request
from msgspec import inspect as mi

Error = dict[str, Any]
Loc = list[str | int]

# pydantic's `EmailStr` (pydantic/networks.py, 2.13): a "Name <address>" form is accepted and reduced to the address.
_NAME_CHARS = r"[\w.!#$%&\'*+\-/=?^_`{|}~]"
_PRETTY_EMAIL = re.compile(rf'\s*(?:((?:{_NAME_CHARS}+\s+)*{_NAME_CHARS}+)|"((?:[^"]|\")+)")?\s*<(.+)>\s*')
_MAX_EMAIL_INPUT = 2048
EMAIL_FORMAT = "email"


class InvalidEmail(ValueError):
    def __init__(self, reason: str) -> None:
        super().__init__(f"value is not a valid email address: {reason}")
        self.reason = reason


def normalize_email(value: str) -> str:
    """The address as pydantic's `EmailStr` stores it, or `InvalidEmail` with email-validator's reason."""
    if len(value) > _MAX_EMAIL_INPUT:
        raise InvalidEmail(f"Length must not exceed {_MAX_EMAIL_INPUT} characters")
    pretty = _PRETTY_EMAIL.fullmatch(value)
    address = (pretty.group(3) if pretty else value).strip()
    try:
        parts = email_validator.validate_email(address, check_deliverability=False)
    except email_validator.EmailNotValidError as exc:
        raise InvalidEmail(str(exc.args[0])) from None
    return str(parts.normalized)


def error(type_: str, loc: Loc, msg: str, value: Any, ctx: dict[str, Any] | None = None) -> Error:
    entry: Error = {"type": type_, "loc": loc, "msg": msg, "input": value}
    if ctx is not None:
        entry["ctx"] = ctx
    return entry


def missing(loc: Loc, value: Any) -> Error:
    return error("missing", loc, "Field required", value)


# ---------------------------------------------------------------- one value


def check(value: Any, info: mi.Type, loc: Loc) -> Error | None:
    """pydantic's error for the first rule `value` breaks, or None when msgspec would accept it."""
    email = False
    if isinstance(info, mi.Metadata):
        email = _is_email(info)
        info = info.type
    if isinstance(info, mi.UnionType):
        if value is None and any(isinstance(arm, mi.NoneType) for arm in info.types):
            return None
        arms = [arm for arm in info.types if not isinstance(arm, mi.NoneType)]
        if len(arms) != 1:
            return None
        return check(value, arms[0], loc)
    if isinstance(info, mi.StrType):
        return _check_str(value, info, loc, email=email)
    if isinstance(info, mi.BoolType):
        return _check_bool(value, loc)
    if isinstance(info, mi.IntType):
        return _check_int(value, info, loc)
    if isinstance(info, mi.UUIDType):
        return _check_uuid(value, loc)
    if isinstance(info, mi.LiteralType):
        return _check_literal(value, info, loc)
    return None


def _check_literal(value: Any, info: mi.LiteralType, loc: Loc) -> Error | None:
    if value in info.values:
        return None
    choices = [repr(choice) for choice in info.values]
    expected = choices[0] if len(choices) == 1 else f"{', '.join(choices[:-1])} or {choices[-1]}"
    return error("literal_error", loc, f"Input should be {expected}", value, {"expected": expected})


def _is_email(info: mi.Metadata) -> bool:
    # The OpenAPI `format`: a Struct field's `Meta(extra_json_schema={"extra": ...})`, or a parameter's
    # `Parameter(schema_extra=...)`, which Litestar's signature model keeps in msgspec's `extra`.
    schema_extra = (info.extra_json_schema or {}).get("extra") or (info.extra or {}).get("schema_extra") or {}
    return bool(schema_extra.get("format") == EMAIL_FORMAT)


def _check_str(value: Any, info: mi.Type, loc: Loc, *, email: bool) -> Error | None:
    if not isinstance(value, str):
        return error("string_type", loc, "Input should be a valid string", value)
    if email:
        try:
            normalize_email(value)
        except InvalidEmail as exc:
            return error("value_error", loc, str(exc), value, {"reason": exc.reason})
    if not isinstance(info, mi.StrType):
        return None
    if info.min_length is not None and len(value) < info.min_length:
        unit = "character" if info.min_length == 1 else "characters"
        msg = f"String should have at least {info.min_length} {unit}"
        return error("string_too_short", loc, msg, value, {"min_length": info.min_length})
    if info.max_length is not None and len(value) > info.max_length:
        unit = "character" if info.max_length == 1 else "characters"
        msg = f"String should have at most {info.max_length} {unit}"
        return error("string_too_long", loc, msg, value, {"max_length": info.max_length})
    if info.pattern is not None and re.search(info.pattern, value) is None:
        msg = f"String should match pattern '{info.pattern}'"
        return error("string_pattern_mismatch", loc, msg, value, {"pattern": info.pattern})
    return None


def _check_bool(value: Any, loc: Loc) -> Error | None:
    try:
        msgspec.convert(value, bool, strict=False)
    except msgspec.ValidationError:
        if isinstance(value, str | int | float):
            return error("bool_parsing", loc, "Input should be a valid boolean, unable to interpret input", value)
        return error("bool_type", loc, "Input should be a valid boolean", value)
    return None


def _check_int(value: Any, info: mi.IntType, loc: Loc) -> Error | None:
    try:
        number = msgspec.convert(value, int, strict=False)
    except msgspec.ValidationError:
        if isinstance(value, str):
            msg = "Input should be a valid integer, unable to parse string as an integer"
            return error("int_parsing", loc, msg, value)
        if isinstance(value, float):
            msg = "Input should be a valid integer, got a number with a fractional part"
            return error("int_from_float", loc, msg, value)
        return error("int_type", loc, "Input should be a valid integer", value)
    bounds = (
        ("ge", info.ge, "greater_than_equal", "greater than or equal to", number >= (info.ge or 0)),
        ("gt", info.gt, "greater_than", "greater than", number > (info.gt or 0)),
        ("le", info.le, "less_than_equal", "less than or equal to", number <= (info.le or 0)),
        ("lt", info.lt, "less_than", "less than", number < (info.lt or 0)),
    )
    for name, bound, type_, words, holds in bounds:
        if bound is not None and not holds:
            return error(type_, loc, f"Input should be {words} {bound}", value, {name: bound})
    return None


def _check_uuid(value: Any, loc: Loc) -> Error | None:
    if isinstance(value, UUID):
        return None
    if not isinstance(value, str):
        return error("uuid_type", loc, "UUID input should be a string, bytes or UUID object", value)
    try:
        UUID(value)  # what Litestar decodes with
    except ValueError:
        reason = uuid_error(value)
        return error("uuid_parsing", loc, f"Input should be a valid UUID, {reason}", value, {"error": reason})
    return None


_UUID_GROUP_STARTS = (0, 9, 14, 19, 24)
_UUID_GROUP_LENGTHS = (8, 4, 4, 4, 12)
_HEX = frozenset("0123456789abcdefABCDEF")


def uuid_error(text: str) -> str:
    """Why the Rust `uuid` crate (1.x, in pydantic-core) rejects `text`: its `InvalidUuid::into_err` diagnosis.

    Positions are 1-based byte offsets; the lengths are byte lengths of the whole input, as the crate counts them.
    """
    if len(text) >= 2 and text[0] == "{" and text[-1] == "}":
        body, offset, simple = text[1:-1], 1, False
    elif text.startswith("urn:uuid:"):
        body, offset, simple = text[9:], 9, False
    else:
        body, offset, simple = text, 0, True
    hyphens: list[int] = []
    index = 0
    for character in body:
        if character == "-":
            hyphens.append(index)
        elif character not in _HEX:
            return f"invalid character: found `{character}` at {index + offset + 1}"
        index += len(character.encode())
    if not hyphens and simple:
        return f"invalid length: expected length 32 for simple format, found {len(text.encode())}"
    if len(hyphens) != 4:
        return f"invalid group count: expected 5, found {len(hyphens) + 1}"
    for group, bound in enumerate(hyphens):
        if bound != _UUID_GROUP_STARTS[group + 1] - 1:
            found = bound - _UUID_GROUP_STARTS[group]
            return f"invalid group length in group {group}: expected {_UUID_GROUP_LENGTHS[group]}, found {found}"
    return f"invalid group length in group 4: expected 12, found {len(text.encode()) - _UUID_GROUP_STARTS[4]}"


# ---------------------------------------------------------------- a request


@cache
def signature_fields(signature_model: type[msgspec.Struct]) -> dict[str, mi.Type]:
    """A handler's parameters (Litestar's signature model, with their constraints) by name."""
    info = mi.type_info(signature_model)
    assert isinstance(info, mi.StructType)
    return {field.name: field.type for field in info.fields}


def body_errors(raw: Any, info: mi.Type, *, form: bool) -> list[Error]:
    """Every failing field of a body, in field order (what FastAPI reports for its body model)."""
    if isinstance(info, mi.Metadata):
        info = info.type
    if not isinstance(info, mi.StructType):
        return []
    if raw is None:
        return [missing(["body"], None)]
    if not isinstance(raw, dict):
        msg = "Input should be a valid dictionary or object to extract fields from"
        return [error("model_attributes_type", ["body"], msg, raw)]
    errors: list[Error] = []
    for field in info.fields:
        loc: Loc = ["body", field.encode_name]
        if field.encode_name not in raw:
            if field.required:
                # A missing form field has no enclosing object to show; a JSON body does.
                errors.append(missing(loc, None if form else raw))
            continue
        failure = check(raw[field.encode_name], field.type, loc)
        if failure is not None:
            errors.append(failure)
    return errors


def json_invalid(body: bytes) -> Error | None:
    """Python's json module's account of a body that is not JSON, as FastAPI reports it."""
    try:
        json.loads(body)
    except RecursionError:
        return error("json_invalid", ["body", 0], "JSON decode error", {}, {"error": "Nesting too deep"})
    except ValueError as exc:
        if isinstance(exc, json.JSONDecodeError):
            return error("json_invalid", ["body", exc.pos], "JSON decode error", {}, {"error": exc.msg})
        return error("json_invalid", ["body", 0], "JSON decode error", {}, {"error": str(exc)})
    return None


# ---------------------------------------------------------------- NUL characters

NUL_MESSAGE = "Value error, text must not contain NUL characters"
# A NUL as each body encoding writes it. PostgreSQL refuses it in text, so it must be refused before it reaches a
# statement (a 500 with the statement's values otherwise).
_NUL_BY_CONTENT_TYPE = {
    "application/json": b"\\u0000",
    "application/x-www-form-urlencoded": b"%00",
    "multipart/form-data": b"\x00",
}


class NulCharacter(Exception):
    def __init__(self, loc: Loc) -> None:
        super().__init__(NUL_MESSAGE)
        self.loc = loc


async def reject_nul_characters(request: Request[Any, Any, Any]) -> None:
    """422 for a NUL anywhere in a request's text: path, query or body."""
    scope = request.scope  # its raw parts: this runs on every request, so no URL or header objects are built
    if "\x00" in scope["path"]:
        raise NulCharacter(["path"])
    if b"%00" in scope["query_string"]:
        raise NulCharacter(["query"])
    if scope["method"] in ("POST", "PUT", "PATCH"):
        nul = _NUL_BY_CONTENT_TYPE.get(request.content_type[0])
        if nul is not None and nul in await request.body():
            raise NulCharacter(["body"])
