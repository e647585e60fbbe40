"""The template's own `.env` files, of both generations, run the service as a new user runs it (`just serve`, `just
dev`), and a deploy that names no environment gets production: no private routes, no dev secrets."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import make_url

from app.cli import prestart
from app.config import Settings, load_settings
from app.database import sqlalchemy_config
from app.main import create_app
from tests.conftest import (
    ROOT,
    SECRET_KEY,
    Database,
    LiveServer,
    free_port,
    login,
    random_email,
)
from tests.test_settings import CURRENT_TEMPLATE_ENV, JUNE_TEMPLATE_ENV


def clean_environment(**environ: str) -> dict[str, str]:
    """This process's environment without any of the service's settings (nor the test runner's), plus `environ`:
    what a new user's shell has."""
    settings = set(Settings.__struct_fields__) | {"FASTAPI_ENV", "ENV_FILE", "HOST", "PORT", "WORKERS"}
    inherited = {
        key: value
        for key, value in os.environ.items()
        if key not in settings and not key.startswith(("COV_", "PYTEST"))
    }
    return {**inherited, **environ}


def start(recipe: str, env_file: Path, port: int, workers: int = 1) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["uv", "run", "just", recipe],
        cwd=ROOT,
        env=clean_environment(ENV_FILE=str(env_file), HOST="127.0.0.1", PORT=str(port), WORKERS=str(workers)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def stop(process: subprocess.Popen[str]) -> str:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
    output, _ = process.communicate(timeout=30)
    return output


def wait_until_healthy(base: str, process: subprocess.Popen[str], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(stop(process))
        try:
            if httpx.get(f"{base}/api/v1/utils/health-check/", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"not healthy in {timeout} s:\n{stop(process)}")


def template_env(text: str, database: Database, tmp_path: Path) -> Path:
    """The template's `.env`, verbatim but for the database name."""
    name = make_url(database.url).database
    env_file = tmp_path / ".env"
    env_file.write_text(
        text.replace("5432/app\n", f"5432/{name}\n").replace("POSTGRES_DB=app\n", f"POSTGRES_DB={name}\n")
    )
    assert env_file.read_text() != text
    return env_file


def configured_line(output: str) -> str:
    (line,) = [line for line in output.splitlines() if "configured" in line and "environment" in line]
    return line


def warning_messages(output: str) -> list[str]:
    """The console's warning lines without their time: `<time> [warning  ] <message> [<logger>]`."""
    return [line.split("] ", 1)[1] for line in output.splitlines() if "[warning" in line]


@pytest.mark.parametrize("recipe", ["serve", "dev"])
@pytest.mark.system
def test_the_current_template_s_env_starts_the_service(
    recipe: str, postgres_database: Database, tmp_path: Path
) -> None:
    env_file = template_env(CURRENT_TEMPLATE_ENV, postgres_database, tmp_path)
    port = free_port()
    # Two workers (`serve`) or the reloader's worker (`dev`), after prestart: the start-up still says each thing once.
    process = start(recipe, env_file, port, workers=2)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(base, process)
        with httpx.Client(base_url=f"{base}/api/v1", timeout=10) as http:
            headers = login(http, "admin@example.com", "changethis")  # its FIRST_SUPERUSER, on its database
            assert http.get("/users/me", headers=headers).json()["is_superuser"] is True
            # FASTAPI_ENV=development: the private route is there, as on the template's own backend.
            created = http.post(
                "/private/users/", json={"email": random_email(), "password": "a-password", "full_name": "P"}
            )
            assert created.status_code == 200, created.text
    finally:
        output = stop(process)
    line = configured_line(output)  # exactly one
    warned = warning_messages(output)
    assert any("FIRST_SUPERUSER_PASSWORD" in message for message in warned), output
    assert len(warned) == len(set(warned)), output
    assert "local" in line
    assert "postgresql+asyncpg" in line
    assert "localhost:5432" in line
    assert "private_routes" in line
    assert "changethis" not in line


@pytest.mark.system
def test_the_june_template_s_env_starts_the_service(postgres_database: Database, tmp_path: Path) -> None:
    env_file = template_env(JUNE_TEMPLATE_ENV, postgres_database, tmp_path)
    port = free_port()
    process = start("serve", env_file, port)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(base, process)
        with httpx.Client(base_url=f"{base}/api/v1", timeout=10) as http:
            login(http, "admin@example.com", "changethis")
            preflight = http.options(
                "/users/me",
                headers={"Origin": "http://localhost.tiangolo.com", "Access-Control-Request-Method": "GET"},
            )
            assert preflight.headers["access-control-allow-origin"] == "http://localhost.tiangolo.com"
    finally:
        stop(process)


@pytest.mark.system
def test_a_deploy_that_names_no_environment_stops_at_the_dev_secrets(
    postgres_database: Database, tmp_path: Path
) -> None:
    """The current template's `.env` as its production deploys have it: without FASTAPI_ENV."""
    env_file = template_env(CURRENT_TEMPLATE_ENV.replace("FASTAPI_ENV=development\n", ""), postgres_database, tmp_path)
    process = start("serve", env_file, free_port())
    output = stop(process) if process.wait(timeout=60) is not None else ""
    assert process.returncode != 0
    # just echoes the recipe's command and ends with its own "recipe failed" line; the service says one line.
    said = [line for line in output.splitlines() if line.strip() and not line.startswith(("uv run", "error: recipe"))]
    assert said == ['Configuration error: The value of SECRET_KEY is "changethis", for security, please change it.']


def test_a_deploy_that_names_no_environment_has_no_private_routes(postgres_database: Database) -> None:
    environ = {
        "DATABASE_URL": postgres_database.url,
        "SECRET_KEY": SECRET_KEY,
        "FIRST_SUPERUSER_PASSWORD": "a-first-superuser-password",
        "LOG_LEVEL": "WARNING",
    }
    settings = load_settings(environ=environ, env_file=None)
    assert settings.ENVIRONMENT == "production"
    prestart(sqlalchemy_config(settings), settings)
    with LiveServer(create_app(settings)) as server, httpx.Client(base_url=f"{server.url}/api/v1") as http:
        body = {"email": random_email(), "password": "a-password", "full_name": "Nobody"}
        answer = http.post("/private/users/", json=body)
        assert (answer.status_code, answer.json()) == (404, {"detail": "Not Found"})
        document = http.get("/openapi.json").json()
        assert not [path for path in document["paths"] if "private" in path]
        # the superuser route still needs a token
        assert http.post("/users/", json=body).status_code == 401
