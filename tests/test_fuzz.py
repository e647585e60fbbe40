"""Property-based fuzzing of the served OpenAPI document with schemathesis, as a superuser and as a normal user, on
both engines: every check schemathesis has (no 5xx; status code, content type, headers and body as documented;
invalid data refused and valid data accepted; auth enforced; no resource usable after its DELETE; answers within
10 s; ...) over the schema's examples and edge values, drawn valid and invalid cases, and stateful chains of calls
along the links schemathesis infers from the document. The reports it may dismiss are in tests/fuzz_runner.py,
each with its reason. The run is bounded and seeded, and has a database and an app of its own, so what it
creates, changes or deletes does not leak into the rest of the suite."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.api.paging import LIMIT_MAX
from tests.conftest import (
    ENGINES,
    ROOT,
    SUPERUSER_EMAIL,
    SUPERUSER_PASSWORD,
    LiveServer,
    create_app,
    create_postgres_database,
    drop_postgres_database,
    login,
    make_settings,
    prepare,
)


@dataclass
class Caller:
    id: str
    token: str


@dataclass
class FuzzTarget:
    url: str
    superuser: Caller

    def new_user(self) -> Caller:
        """A fresh normal user: the superuser's fuzz may have deleted, deactivated or renamed any earlier one."""
        email = f"fuzzed-{uuid.uuid4().hex[:8]}@example.com"
        with httpx.Client(base_url=self.url + "/api/v1") as http:
            headers = {"Authorization": f"Bearer {self.superuser.token}"}
            created = http.post("/users/", json={"email": email, "password": "fuzzed-password"}, headers=headers)
            assert created.status_code == 200, created.text
            token = login(http, email, "fuzzed-password")["Authorization"].split()[1]
        return Caller(id=created.json()["id"], token=token)


@pytest.fixture(scope="module", params=ENGINES)
def fuzz_target(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzTarget]:
    """A throwaway database (migrated, with the first superuser) served by an app of its own."""
    engine: str = request.param
    if engine == "postgresql":
        url = create_postgres_database()
    else:
        url = f"sqlite+aiosqlite:///{Path(tmp_path_factory.mktemp('fuzz')) / 'fuzz.db'}"
    try:
        prepare(url)
        # With the second factor configured, so that its routes are fuzzed past their 503 (README "Two-factor
        # authentication (TOTP)").
        settings = make_settings(url, TOTP_ENCRYPTION_KEY="a-fuzzing-totp-encryption-key-0123456789")
        with LiveServer(create_app(settings)) as server, httpx.Client(base_url=server.url + "/api/v1") as http:
            headers = login(http, SUPERUSER_EMAIL, SUPERUSER_PASSWORD)
            superuser = Caller(
                id=http.get("/users/me", headers=headers).json()["id"], token=headers["Authorization"][7:]
            )
            yield FuzzTarget(url=server.url, superuser=superuser)
    finally:
        if engine == "postgresql":
            drop_postgres_database(url)


def fuzz(target: FuzzTarget, caller: Caller) -> dict[str, Any]:
    """Run schemathesis (tests/fuzz_runner.py, in a process of its own) against the target as `caller`: what
    `fuzz_runner.fuzz` reports."""
    is_superuser = "1" if caller is target.superuser else "0"
    result = subprocess.run(
        [sys.executable, "-m", "tests.fuzz_runner", target.url, caller.token, caller.id, is_superuser],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return found


# Chains the stateful phase must be able to follow: a created resource read, changed and deleted by its id.
CONTRACT_LINKS = {
    "POST /api/v1/items/ -> GET /api/v1/items/{id}",
    "POST /api/v1/items/ -> PUT /api/v1/items/{id}",
    "POST /api/v1/items/ -> DELETE /api/v1/items/{id}",
    "POST /api/v1/users/ -> GET /api/v1/users/{user_id}",
    "POST /api/v1/users/ -> PATCH /api/v1/users/{user_id}",
    "POST /api/v1/users/ -> DELETE /api/v1/users/{user_id}",
}


@pytest.mark.parametrize("role", ["superuser", "user"])
@pytest.mark.system
def test_every_answer_is_documented_and_no_5xx(fuzz_target: FuzzTarget, role: str) -> None:
    found = fuzz(fuzz_target, fuzz_target.superuser if role == "superuser" else fuzz_target.new_user())
    problems = found["problems"]
    assert not problems, f"{len(problems)} problems in {found['requests']} requests:\n" + "\n".join(problems)
    assert found["requests"] > 300
    assert found["stateful_requests"] > 50
    assert set(found["links"]) >= CONTRACT_LINKS
    # Every check schemathesis has ran (none silently off), and the response time limit.
    assert set(found["checked"]) == {*found["available_checks"], "max_response_time"}


# ---------------------------------------------------------------- what the fuzzing found


@pytest.mark.parametrize("path", ["/users/", "/items/"])
@pytest.mark.parametrize("name", ["skip", "limit"])
def test_page_values_beyond_64_bits_are_422_not_500(
    client: httpx.Client, superuser_headers: dict[str, str], path: str, name: str
) -> None:
    """`limit=19162743048701067298603008` reached the database, which cannot take it (500 on both engines)."""
    too_big = client.get(path, params={name: 2**63}, headers=superuser_headers)
    assert too_big.status_code == 422, too_big.text
    assert too_big.json()["detail"][0]["loc"] == ["query", name]
    largest = client.get(path, params={name: 2**63 - 1 if name == "skip" else LIMIT_MAX}, headers=superuser_headers)
    assert largest.status_code == 200, largest.text


@pytest.mark.parametrize(("spelt", "meant"), [(0, False), (1, True), ("false", False), ("true", True)])
def test_a_boolean_spelt_as_pydantic_reads_it_is_accepted(
    client: httpx.Client, superuser_headers: dict[str, str], spelt: object, meant: bool
) -> None:
    """negative_data_rejection reported `"is_superuser": 0` accepted: the template's pydantic reads it as false, so
    the drop-in does too (the fuzz runner's `lax_boolean` excuse)."""
    body = {"email": f"lax-{uuid.uuid4().hex[:8]}@example.com", "password": "a-good-password", "is_superuser": spelt}
    created = client.post("/users/", json=body, headers=superuser_headers)
    assert created.status_code == 200, created.text
    assert created.json()["is_superuser"] is meant


def test_an_address_beyond_254_characters_is_422(client: httpx.Client) -> None:
    """positive_data_acceptance sent a 255-character address (the documented maxLength, the template's): no address
    may exceed 254 octets (RFC 5321), and the template's email-validator says so in a 422 (the fuzz runner's
    `undeliverable_address` excuse)."""
    domain = ".".join(["a" * 63] * 3) + "." + "a" * 61  # 253 characters, the most a domain may have
    email = "0@" + domain
    assert len(email) == 255
    response = client.post("/users/signup", json={"email": email, "password": "a-good-password"})
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["msg"].startswith(
        "value is not a valid email address: The email address is too long"
    )
