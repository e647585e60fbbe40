"""The OpenAPI document is the contract SDKs are generated from: names, shapes and stability."""

import json
import os
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from litestar.cli.main import litestar_group

from app.config import get_settings
from app.main import create_app
from tests.conftest import SECRET_KEY, Served, make_settings

SNAPSHOT = Path(__file__).parent / "snapshots" / "openapi.json"

CONTRACT_OPERATION_IDS = {
    "login-login_access_token",
    "login-test_token",
    "login-recover_password",
    "login-reset_password",
    "login-recover_password_html_content",
    "users-read_users",
    "users-create_user",
    "users-read_user_me",
    "users-update_user_me",
    "users-delete_user_me",
    "users-update_password_me",
    "users-register_user",
    "users-read_user_by_id",
    "users-update_user",
    "users-delete_user",
    "items-read_items",
    "items-create_item",
    "items-read_item",
    "items-update_item",
    "items-delete_item",
    "utils-test_email",
    "utils-health_check",
    "private-create_user",
}
CONTRACT_COMPONENTS = {
    "UserPublic",
    "UsersPublic",
    "UserCreate",
    "UserRegister",
    "UserUpdate",
    "UserUpdateMe",
    "UpdatePassword",
    "ItemPublic",
    "ItemsPublic",
    "ItemCreate",
    "ItemUpdate",
    "Message",
    "Token",
    "NewPassword",
    "HTTPValidationError",
    "ValidationError",
    "Body_login-login_access_token",
    "PrivateUserCreate",
}
# Ours, beyond the template's, documented here so additions are deliberate.
EXTRA_OPERATION_IDS = {
    "utils-ready",
    # Sessions and refresh tokens (README "Sessions and tokens").
    "login-refresh_access_token",
    "users-read_sessions_me",
    "users-delete_sessions_me",
    "users-delete_session_me",
    "users-read_user_sessions",
    "users-delete_user_sessions",
    "users-delete_user_session",
    "users-create_personal_access_token",
    "users-read_personal_access_tokens",
    "users-revoke_personal_access_token",
    # The audit trail (README "Audit trail").
    "audit-read_audit_events",
    # Email verification (README "Email verification").
    "users-verify_email",
    "users-resend_verification_email",
    # The TOTP second factor (README "Two-factor authentication (TOTP)").
    "users-enrol_totp",
    "users-confirm_totp",
    "users-disable_totp",
    "users-remove_user_totp",
}


def served_document(served: Served) -> dict:
    response = httpx.get(f"{served.api}/openapi.json")
    assert response.status_code == 200
    return response.json()


def operations(document: dict) -> list[dict]:
    return [op for path in document["paths"].values() for op in path.values() if isinstance(op, dict)]


def test_operation_ids_are_the_contracts(served: Served) -> None:
    ids = {op["operationId"] for op in operations(served_document(served))}
    assert ids - EXTRA_OPERATION_IDS == CONTRACT_OPERATION_IDS


def test_every_operation_is_tagged_by_its_router(served: Served) -> None:
    for op in operations(served_document(served)):
        assert op["tags"] == [op["operationId"].split("-")[0]]


def test_component_names_are_the_templates(served: Served) -> None:
    assert set(served_document(served)["components"]["schemas"]) >= CONTRACT_COMPONENTS


def test_validation_is_documented_as_422_never_400(served: Served) -> None:
    document = served_document(served)
    for op in operations(document):
        assert (
            "400" not in op["responses"]
            or op["responses"]["400"]["description"] != "Bad request syntax or unsupported method"
        )
    create = document["paths"]["/api/v1/items/"]["post"]
    assert create["responses"]["422"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/HTTPValidationError"
    }


def test_login_is_an_oauth2_password_form(served: Served) -> None:
    document = served_document(served)
    scheme = document["components"]["securitySchemes"]["OAuth2PasswordBearer"]
    assert scheme["type"] == "oauth2"
    assert scheme["flows"]["password"]["tokenUrl"] == "/api/v1/login/access-token"
    login = document["paths"]["/api/v1/login/access-token"]["post"]
    form = login["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]
    assert form == {"$ref": "#/components/schemas/Body_login-login_access_token"}
    assert "security" not in login
    assert document["paths"]["/api/v1/users/me"]["get"]["security"] == [{"OAuth2PasswordBearer": []}]


@pytest.mark.parametrize("path", ["/api/v1/users/", "/api/v1/items/"])
def test_documented_page_bounds_are_the_enforced_ones(
    served: Served, superuser_headers: dict[str, str], path: str
) -> None:
    """Litestar wrote `le=2**63 - 1` as the float 9.223372036854776e+18 (2**63), a value the API refuses: clients
    reading the document (schemathesis did) sent 422s they were promised would pass."""
    for parameter in served_document(served)["paths"][path]["get"]["parameters"]:
        maximum = parameter["schema"]["maximum"]
        assert isinstance(maximum, int)
        assert parameter["schema"]["minimum"] == 0
        params = {parameter["name"]: maximum}
        assert httpx.get(served.url + path, params=params, headers=superuser_headers).status_code == 200
        params = {parameter["name"]: maximum + 1}
        assert httpx.get(served.url + path, params=params, headers=superuser_headers).status_code == 422


# Paths the template's document spells with a trailing slash (FastAPI keeps them as declared); the SDKs generated from
# it call these spellings.
SLASHED_PATHS = {
    "/api/v1/items/",
    "/api/v1/users/",
    "/api/v1/private/users/",
    "/api/v1/reset-password/",
    "/api/v1/utils/test-email/",
    "/api/v1/utils/health-check/",
}


def test_paths_are_spelt_as_the_templates(served: Served) -> None:
    paths = set(served_document(served)["paths"])
    assert paths >= SLASHED_PATHS
    assert not {path.rstrip("/") for path in SLASHED_PATHS} & paths
    for path in SLASHED_PATHS - {"/api/v1/private/users/"}:  # served with and without the slash
        method = "get" if path.endswith(("/items/", "/users/", "/health-check/")) else "post"
        for spelling in (path, path.rstrip("/")):
            assert httpx.request(method, served.url + spelling).status_code != 404, spelling


def component(document: dict, name: str) -> dict:
    return document["components"]["schemas"][name]


def test_required_and_nullable_fields_are_the_templates(served: Served) -> None:
    """As FastAPI documents the template's models, so that clients generated from either document have the same
    types: response fields with a default are optional there, `X | None` fields are `anyOf [X, null]`."""
    document = served_document(served)
    expected_required = {
        "UserPublic": ["email", "id"],
        "ItemPublic": ["title", "id", "owner_id"],
        "UserCreate": ["email", "password"],
        "UserRegister": ["email", "password"],
        "ItemCreate": ["title"],
        "UsersPublic": ["data", "count"],
        "ItemsPublic": ["data", "count"],
        "Token": ["access_token"],
        "NewPassword": ["token", "new_password"],
        "UpdatePassword": ["current_password", "new_password"],
        "Body_login-login_access_token": ["username", "password"],
        "ValidationError": ["loc", "msg", "type"],
    }
    for name, required in expected_required.items():
        assert component(document, name).get("required") == required, name
    for name in ("UserUpdate", "UserUpdateMe", "ItemUpdate", "HTTPValidationError"):
        assert "required" not in component(document, name), name
    null = {"type": "null"}
    nullable = {
        "UserPublic": ["full_name", "created_at"],
        "ItemPublic": ["description", "created_at"],
        "UserUpdate": ["email", "is_active", "is_superuser", "full_name", "password"],
        "UserUpdateMe": ["full_name", "email"],
        "ItemUpdate": ["title", "description"],
        "UserCreate": ["full_name"],
        "ItemCreate": ["description"],
    }
    for name, fields in nullable.items():
        for field in fields:
            assert component(document, name)["properties"][field]["anyOf"][-1] == null, (name, field)
    assert component(document, "UserUpdate")["properties"]["email"]["anyOf"][0] == {
        "type": "string",
        "format": "email",
        "maxLength": 255,
    }
    assert component(document, "UserPublic")["properties"]["created_at"]["anyOf"][0] == {
        "type": "string",
        "format": "date-time",
    }
    assert component(document, "UserPublic")["properties"]["is_active"]["default"] is True
    assert component(document, "ItemPublic")["properties"]["owner_id"] == {
        "type": "string",
        "format": "uuid",
        "title": "Owner Id",
    }


def test_validation_error_is_fastapis(served: Served) -> None:
    properties = component(served_document(served), "ValidationError")["properties"]
    assert list(properties) == ["loc", "msg", "type", "input", "ctx"]
    assert properties["input"] == {"title": "Input"}
    assert properties["ctx"] == {"type": "object", "title": "Context"}


def test_summaries_are_the_handlers_names(served: Served) -> None:
    document = served_document(served)
    assert document["paths"]["/api/v1/users/{user_id}"]["get"]["summary"] == "Read User By Id"
    assert document["paths"]["/api/v1/users/me"]["get"]["responses"]["200"]["description"] == "Successful Response"


def test_null_where_documented_nullable_is_still_refused(served: Served, superuser_headers: dict[str, str]) -> None:
    """The document says `email: string | null` as the template's does; a null still never reaches the database."""
    response = httpx.patch(f"{served.api}/users/me", json={"email": None}, headers=superuser_headers)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "email"]


def test_document_is_byte_identical_across_builds() -> None:
    settings = make_settings("sqlite+aiosqlite:///:memory:")
    assert create_app(settings).state.openapi_document == create_app(settings).state.openapi_document


def test_document_matches_the_committed_snapshot(served: Served) -> None:
    """A contract change must show up as a diff of tests/snapshots/openapi.json.
    Regenerate with: UPDATE_SNAPSHOTS=1 just test tests/test_openapi.py"""
    current = json.dumps(served_document(served), indent=2, ensure_ascii=False) + "\n"
    if os.environ.get("UPDATE_SNAPSHOTS"):
        SNAPSHOT.write_text(current)
    assert SNAPSHOT.read_text() == current


def test_just_openapi_exports_the_served_document(tmp_path: Path) -> None:
    """`just openapi` runs Litestar's `schema openapi` (pretty-printed): its document is the snapshot's, fixups
    included, because they change the app's own schema rather than a copy of it."""
    target = tmp_path / "openapi.json"
    environ = {
        "DATABASE_URL": "sqlite+aiosqlite:///:memory:",
        "SECRET_KEY": SECRET_KEY,
        "ENVIRONMENT": "local",
        "PROJECT_NAME": "Test Project",
        "FIRST_SUPERUSER_PASSWORD": "not-the-default",
    }
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(
            litestar_group, ["--app", "app.main:create_app", "schema", "openapi", "--output", str(target)], env=environ
        )
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert json.loads(target.read_text()) == json.loads(SNAPSHOT.read_text())
