"""`just serve` as an operator runs it: PostgreSQL from DATABASE_URL, migrations, one superuser, N workers."""

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import (
    MIGRATIONS_HEAD,
    ROOT,
    SUPERUSER_EMAIL,
    SUPERUSER_PASSWORD,
    Database,
    children_of,
    free_port,
    login,
)

pytestmark = pytest.mark.system  # every test here starts a process


def worker_processes(master: int) -> list[int]:
    """uvicorn's workers are multiprocessing children (its resource tracker is one too, but not a worker)."""
    return [pid for pid in children_of(master) if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]


def serve(database: Database, port: int, workers: int) -> subprocess.Popen[bytes]:
    environ = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("COV_", "PYTEST"))},
        "DATABASE_URL": database.url,
        "SECRET_KEY": "serve-test-secret-key-of-enough-length",
        "FIRST_SUPERUSER": SUPERUSER_EMAIL,
        "FIRST_SUPERUSER_PASSWORD": SUPERUSER_PASSWORD,
        "ENVIRONMENT": "staging",
        "POSTGRES_PASSWORD": "unused-but-not-changethis",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "WORKERS": str(workers),
    }
    return subprocess.Popen(
        ["uv", "run", "just", "serve"],
        cwd=ROOT,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_until_healthy(url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
        try:
            if httpx.get(url + "/api/v1/utils/health-check/", timeout=1).json() is True:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("service did not become healthy")


def stop(process: subprocess.Popen[bytes]) -> str:
    os.killpg(process.pid, signal.SIGTERM)
    output, _ = process.communicate(timeout=30)
    return output.decode()


def uvicorn_master(shell_pid: int) -> int:
    """`uv run just serve` → just → uv → uvicorn master: follow the single-child chain to the process with many."""
    pid = shell_pid
    for _ in range(10):
        kids = children_of(pid)
        if len(kids) != 1:
            return pid
        pid = kids[0]
    return pid


@pytest.mark.parametrize("workers", [2])
def test_just_serve_migrates_seeds_once_and_runs_the_requested_workers(
    postgres_database: Database, workers: int
) -> None:
    for attempt in range(2):
        port = free_port()
        process = serve(postgres_database, port, workers)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until_healthy(url, process)
            assert len(worker_processes(uvicorn_master(process.pid))) == workers
            with httpx.Client(base_url=url + "/api/v1") as http:
                headers = login(http, SUPERUSER_EMAIL, SUPERUSER_PASSWORD)
                assert http.get("/users/me", headers=headers).json()["is_superuser"] is True
        finally:
            output = stop(process)
        assert postgres_database.scalar("SELECT version_num FROM alembic_version") == MIGRATIONS_HEAD
        assert postgres_database.scalar('SELECT count(*) FROM "user"') == 1, output
        expected = "first superuser created" if attempt == 0 else "first superuser already exists"
        assert expected in output


def test_just_dev_serves_on_host_and_port(tmp_path: Path) -> None:
    """The quick start's first command, on a port of the caller's choosing (PORT/HOST, as `just serve` takes them)."""
    port = free_port()
    environ = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("COV_", "PYTEST"))},
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'dev.db'}",
        "HOST": "127.0.0.1",
        "PORT": str(port),
    }
    process = subprocess.Popen(
        ["uv", "run", "just", "dev"],
        cwd=ROOT,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}", process)
    finally:
        output = stop(process)
    assert f"API docs: http://127.0.0.1:{port}/docs" in output
