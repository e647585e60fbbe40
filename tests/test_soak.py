"""A bounded soak: `just serve` (2 workers, production settings, PostgreSQL) under a mixed load for SOAK_SECONDS
(60 by default; `SOAK_SECONDS=1800 uv run just test tests/test_soak.py` for a longer one). After a warm-up quarter,
each worker's resident memory, open files and the service's database connections must stay flat: a leak of a few
bytes per request shows as megabytes over tens of thousands of requests."""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy import make_url

from tests.conftest import ROOT, SUPERUSER_EMAIL, SUPERUSER_PASSWORD, Database, free_port, login
from tests.test_serve import uvicorn_master, worker_processes
from tests.test_template_env import clean_environment, stop, wait_until_healthy

pytestmark = pytest.mark.system  # every test here starts a process

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "60"))
CLIENTS = 6
# What "flat" allows after the warm-up: allocator and cache noise, far below what a per-request leak makes of tens
# of thousands of requests (a 1 KiB leak per request is > 30 MiB here).
RSS_GROWTH_LIMIT_KIB = 16 * 1024
OPEN_FILES_GROWTH_LIMIT = 4


@dataclass
class Sample:
    rss_kib: dict[int, int]
    open_files: dict[int, int]
    connections: int


@dataclass
class Load:
    base: str
    headers: dict[str, str]
    stop: threading.Event = field(default_factory=threading.Event)
    statuses: Counter[int] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def client(self, number: int) -> None:
        """A mix like real traffic: reads of oneself and of lists, item writes, logins (right and wrong), 404s."""
        with httpx.Client(base_url=f"{self.base}/api/v1", timeout=10) as http:
            turn = 0
            while not self.stop.is_set():
                turn += 1
                answers = [
                    http.get("/users/me", headers=self.headers),
                    http.get("/items/", params={"limit": 20}, headers=self.headers),
                    http.get(f"/items/{uuid.uuid4()}", headers=self.headers),
                    http.get("/no-such-route"),
                ]
                created = http.post("/items/", json={"title": f"soak {number}-{turn}"}, headers=self.headers)
                answers.append(created)
                if created.status_code == 200:
                    answers.append(http.delete(f"/items/{created.json()['id']}", headers=self.headers))
                if turn % 10 == 0:
                    form = {"username": SUPERUSER_EMAIL, "password": "not-the-password"}
                    answers.append(http.post("/login/access-token", data=form))
                with self.lock:
                    self.statuses.update(answer.status_code for answer in answers)


def sample(workers: list[int], database: Database) -> Sample:
    def rss(pid: int) -> int:
        line = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("VmRSS"))
        return int(line.split()[1])

    name = make_url(database.url).database
    connections = database.scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = :name", name=name)
    return Sample(
        rss_kib={pid: rss(pid) for pid in workers},
        open_files={pid: len(os.listdir(f"/proc/{pid}/fd")) for pid in workers},
        connections=int(connections) - 1,  # the sampling connection itself
    )


def serve(database: Database, port: int, log: Path) -> subprocess.Popen[str]:
    """`just serve` with production settings; its output to a file (a pipe nobody reads would fill and stall it)."""
    environ = clean_environment(
        DATABASE_URL=database.url,
        SECRET_KEY="soak-test-secret-key-of-enough-length",
        FIRST_SUPERUSER=SUPERUSER_EMAIL,
        FIRST_SUPERUSER_PASSWORD=SUPERUSER_PASSWORD,
        HOST="127.0.0.1",
        PORT=str(port),
        WORKERS="2",
    )
    with log.open("w") as output:
        return subprocess.Popen(
            ["uv", "run", "just", "serve"],
            cwd=ROOT,
            env=environ,
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )


def test_memory_files_and_connections_stay_flat_under_a_mixed_load(postgres_database: Database, tmp_path: Path) -> None:
    port = free_port()
    process = serve(postgres_database, port, tmp_path / "serve.log")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(base, process)
        workers = worker_processes(uvicorn_master(process.pid))
        assert len(workers) == 2
        with httpx.Client(base_url=f"{base}/api/v1") as http:
            load = Load(base=base, headers=login(http, SUPERUSER_EMAIL, SUPERUSER_PASSWORD))
        threads = [threading.Thread(target=load.client, args=(number,)) for number in range(CLIENTS)]
        for thread in threads:
            thread.start()
        time.sleep(SOAK_SECONDS / 4)
        warm = sample(workers, postgres_database)
        time.sleep(SOAK_SECONDS * 3 / 4)
        end = sample(workers, postgres_database)
        load.stop.set()
        for thread in threads:
            thread.join(timeout=30)
    finally:
        stop(process)

    requests = sum(load.statuses.values())
    print(f"soak: {requests} requests in {SOAK_SECONDS:.0f} s {dict(load.statuses)}; warm {warm}; end {end}")
    # 400: the wrong passwords, 429 once they pass the account's limit; nothing else, above all no 5xx.
    assert set(load.statuses) <= {200, 400, 404, 429}, load.statuses
    assert requests > 1000, load.statuses
    for pid in workers:
        growth = end.rss_kib[pid] - warm.rss_kib[pid]
        assert growth < RSS_GROWTH_LIMIT_KIB, (pid, warm.rss_kib[pid], end.rss_kib[pid], requests)
        assert end.open_files[pid] - warm.open_files[pid] <= OPEN_FILES_GROWTH_LIMIT, (warm, end)
    # The pools are fixed (20 a worker, no overflow): however many the load's peaks open, a leak would pass that.
    # (Not "as many as after the warm-up": a pool opens connections as concurrency peaks, and on a busy machine a
    # later peak is higher; 6 then 8 seen.)
    assert end.connections <= 2 * 20, (warm.connections, end.connections)
