"""Property-based fuzzing of the served OpenAPI document with schemathesis: every operation, as a superuser and as
a normal user, on both engines. No answer may be a 5xx, and every answer must be documented (status code, content
type, body schema). The run is bounded and deterministic, and has a database and an app of its own, so what it
creates, changes or deletes does not leak into the rest of the suite."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from app.cli import prestart
from app.database import sqlalchemy_config
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
        settings = make_settings(url)
        prestart(sqlalchemy_config(settings), settings)  # as `just serve` does
        with LiveServer(create_app(settings)) as server, httpx.Client(base_url=server.url + "/api/v1") as http:
            headers = login(http, SUPERUSER_EMAIL, SUPERUSER_PASSWORD)
            superuser = Caller(
                id=http.get("/users/me", headers=headers).json()["id"], token=headers["Authorization"][7:]
            )
            yield FuzzTarget(url=server.url, superuser=superuser)
    finally:
        if engine == "postgresql":
            drop_postgres_database(url)


def fuzz(target: FuzzTarget, caller: Caller) -> tuple[int, list[str]]:
    """Run schemathesis (tests/fuzz_runner.py, in a process of its own) against the target as `caller`: the number
    of requests, and a line per problem found."""
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
    found = json.loads(result.stdout.strip().splitlines()[-1])
    return int(found["requests"]), list(found["problems"])


@pytest.mark.parametrize("role", ["superuser", "user"])
def test_every_answer_is_documented_and_no_5xx(fuzz_target: FuzzTarget, role: str) -> None:
    requests, problems = fuzz(fuzz_target, fuzz_target.superuser if role == "superuser" else fuzz_target.new_user())
    assert not problems, f"{len(problems)} problems in {requests} requests:\n" + "\n".join(problems)
    assert requests > 50


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
    largest = client.get(path, params={name: 2**63 - 1}, headers=superuser_headers)
    assert largest.status_code == 200, largest.text
