"""Scaling out: three replicas of the service (separate uvicorn servers on their own ports, as separate pods would be)
behind HAProxy, sharing one PostgreSQL database (through PgBouncer in transaction mode) and one Redis. What one
replica knows, all know: the failed-login limit counts across replicas, a password change on one ends the other
sessions on all, recovery limits are shared; a replica killed under load loses no acknowledged write while the
balancer routes around it; and the replicas' pools share a few server connections."""

from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy import make_url

from tests.conftest import (
    ROOT,
    SECRET_KEY,
    SUPERUSER_EMAIL,
    SUPERUSER_PASSWORD,
    Database,
    create_postgres_database,
    drop_postgres_database,
    free_port,
    login,
    prepare,
    tool_path,
)

pytestmark = pytest.mark.needs("haproxy", "pgbouncer")

REPLICAS = 3
PGBOUNCER_POOL = 4  # server connections PgBouncer opens to the database, for the replicas' 3 x 5 pooled ones
API = "/api/v1"
CONNECTION_CLOSED = 0  # no answer at all: the balancer closed the connection of a request that died with a replica
# How long the cluster may take to reach a state it waits for (replicas up, the balancer seeing them, a kill noticed):
# only a deadline for a condition polled, generous for a loaded machine; a healthy run waits far less.
DEADLINE = 60


@dataclass
class Cluster:
    balancer: str  # base URL of HAProxy
    replicas: list[str]  # base URL of each replica
    processes: list[subprocess.Popen[bytes]]
    database: Database
    stats: Path  # HAProxy's stats socket
    logs: list[Path] = field(default_factory=list)

    def client(self, base: str) -> httpx.Client:
        return httpx.Client(base_url=base + API, timeout=30)

    def servers(self) -> dict[str, dict[str, str]]:
        return balancer_servers(self.stats)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = DEADLINE, interval: float = 0.05) -> None:
    """Poll `condition` until it holds; fail with `what` if it does not within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(interval)


def start_replica(port: int, environment: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory", "--port", str(port)]
    command += ["--loop", "uvloop", "--http", "app.server:HttpProtocol", "--no-access-log"]
    with log.open("wb") as output:
        return subprocess.Popen(command, cwd=ROOT, env=environment, stdout=output, stderr=subprocess.STDOUT)


def ready(url: str, process: subprocess.Popen[bytes] | None = None, log: Path | None = None) -> bool:
    """Whether `url` answers its readiness route with a 200 (a process that stopped fails at once, with its log)."""
    if process is not None and process.poll() is not None:
        output = log.read_text(errors="replace")[-4000:] if log else ""
        raise AssertionError(f"{url} stopped ({process.returncode}) before it was ready:\n{output}")
    try:
        return httpx.get(url + API + "/utils/ready", timeout=10).status_code == 200
    except httpx.TransportError:
        return False


def haproxy_config(port: int, replica_ports: list[int], stats: Path) -> str:
    """Round robin over the replicas, each checked on the readiness route every 200 ms: a check may take 2 s (a
    loaded machine answers slowly), a replica is taken out after 3 failed checks in a row and back in after 2
    passed, so one slow answer never takes one out, and a killed replica (its connections refused at once) is out
    within a second. A request whose connection to a replica fails goes to another (only then: a request a replica
    may have started on is never sent twice). The stats socket tells the tests what the balancer thinks of each."""
    servers = "\n".join(
        f"    server replica{n} 127.0.0.1:{replica} check inter 200ms fall 3 rise 2"
        for n, replica in enumerate(replica_ports)
    )
    return f"""
global
    maxconn 512
    stats socket {stats} mode 600

defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    timeout check 2s
    retries 3
    retry-on conn-failure
    option redispatch

frontend api
    bind 127.0.0.1:{port}
    default_backend replicas

backend replicas
    balance roundrobin
    option httpchk GET {API}/utils/ready
{servers}
"""


def balancer_servers(stats: Path) -> dict[str, dict[str, str]]:
    """Each server of the replicas backend by name, with its fields of HAProxy's `show stat` (its CSV)."""
    with socket.socket(socket.AF_UNIX) as connection:
        connection.settimeout(10)
        connection.connect(str(stats))
        connection.sendall(b"show stat\n")
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    rows = csv.DictReader(answer.decode().removeprefix("# ").splitlines())
    return {
        row["svname"]: row
        for row in rows
        if row["pxname"] == "replicas" and row["svname"] not in {"FRONTEND", "BACKEND"}
    }


def fully_up(server: dict[str, str]) -> bool:
    """UP after a passed check, and at full health: only `fall` failed checks in a row would take it out. (HAProxy
    starts a server UP on trust, one failed check away from DOWN, before any check has passed.)"""
    health, rise, fall = (int(server[name] or 0) for name in ("check_health", "check_rise", "check_fall"))
    return server["status"] == "UP" and server["check_status"] == "L7OK" and health == rise + fall - 1


def balancer_sees_every_replica(stats: Path, haproxy: subprocess.Popen[bytes]) -> bool:
    assert haproxy.poll() is None, f"HAProxy stopped ({haproxy.returncode})"
    try:
        servers = balancer_servers(stats)
    except OSError:  # the socket is not there yet
        return False
    return len(servers) == REPLICAS and all(fully_up(server) for server in servers.values())


def start_pgbouncer(folder: Path, port: int, upstream: str) -> subprocess.Popen[bytes]:
    """PgBouncer from Debian's package, in transaction mode, in front of the test database's server."""
    pgbouncer = tool_path("pgbouncer")  # the module needs it (pytestmark)
    assert pgbouncer
    target = make_url(upstream)
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)  # PgBouncer refuses to run as root: it drops to the postgres user, who must read this
    (folder / "userlist.txt").write_text(f'"{target.username}" ""\n')
    (folder / "pgbouncer.ini").write_text(
        f"""[databases]
{target.database} = host={target.host} port={target.port or 5432}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {folder / "userlist.txt"}
pool_mode = transaction
default_pool_size = {PGBOUNCER_POOL}
max_client_conn = 200
"""
    )
    for file in folder.iterdir():
        file.chmod(0o644)
    as_user = ["-u", "postgres"] if os.geteuid() == 0 else []
    process = subprocess.Popen(
        [pgbouncer, *as_user, str(folder / "pgbouncer.ini")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )

    def listening() -> bool:
        assert process.poll() is None, "PgBouncer stopped"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        except OSError:
            return False
        return True

    wait_until(listening, "PgBouncer listens")
    return process


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    haproxy = tool_path("haproxy")  # the module needs it (pytestmark)
    assert haproxy
    url = create_postgres_database()
    folder = tmp_path_factory.mktemp("replicas")
    processes: list[subprocess.Popen[bytes]] = []
    try:
        # Once per release, as the migration job does, straight to PostgreSQL (DDL needs no pooler).
        prepare(url)
        pgbouncer_port = free_port()
        processes.append(start_pgbouncer(folder / "pgbouncer", pgbouncer_port, url))
        pooled = make_url(url).set(host="127.0.0.1", port=pgbouncer_port).render_as_string(hide_password=False)
        environment = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("COV_", "PYTEST"))},
            "DATABASE_URL": pooled,
            "DB_TRANSACTION_POOLING": "true",
            "SECRET_KEY": SECRET_KEY,
            "ENVIRONMENT": "local",
            "PASSWORD_HASH_PROFILE": "CHEAPEST",  # as the rest of the suite's (tests/conftest.py)
            "LOG_LEVEL": "WARNING",
            "DB_POOL_SIZE": "5",
            "REDIS_URL": "redis://127.0.0.1:6379/0",
            "REDIS_NAMESPACE": f"replicas-test-{uuid.uuid4().hex[:8]}",
            "RATE_LIMIT_ENABLED": "true",
            # Behind a balancer every request comes from its address: per-client limits would count everyone.
            "LOGIN_FAILURES_PER_CLIENT_PER_MINUTE": "0",
            "RECOVERY_PER_CLIENT_PER_HOUR": "0",
        }
        ports = [free_port() for _ in range(REPLICAS)]
        logs = [folder / f"replica{n}.log" for n in range(REPLICAS)]
        processes += [start_replica(port, environment, log) for port, log in zip(ports, logs, strict=True)]
        replicas = [f"http://127.0.0.1:{port}" for port in ports]
        for replica, process, log in zip(replicas, processes[1:], logs, strict=True):
            wait_until(
                lambda replica=replica, process=process, log=log: ready(replica, process, log), f"{replica} ready"
            )
        balancer_port = free_port()
        config, stats = folder / "haproxy.cfg", folder / "haproxy.sock"
        config.write_text(haproxy_config(balancer_port, ports, stats))
        balancing = subprocess.Popen(
            [haproxy, "-f", str(config), "-db"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        processes.append(balancing)
        # Before any test (its first login through the balancer included): every replica in, by HAProxy's checks.
        wait_until(lambda: balancer_sees_every_replica(stats, balancing), "HAProxy sees every replica up")
        balancer = f"http://127.0.0.1:{balancer_port}"
        wait_until(lambda: ready(balancer), "the balancer answers")
        yield Cluster(balancer, replicas, processes[1 : REPLICAS + 1], Database(url), stats, logs)
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        drop_postgres_database(url)


def new_account(cluster: Cluster) -> tuple[str, str]:
    email, password = f"replica-{uuid.uuid4().hex[:8]}@example.com", "a-good-password"
    with cluster.client(cluster.balancer) as http:
        created = http.post("/users/signup", json={"email": email, "password": password})
        assert created.status_code == 200, created.text
    return email, password


def test_every_replica_shares_its_limits_through_redis(cluster: Cluster) -> None:
    for base in [cluster.balancer, *cluster.replicas]:
        with cluster.client(base) as http:
            answer = http.get("/utils/ready")
        assert (answer.status_code, answer.json()["rate_limits"]) == (200, "redis"), base


def test_the_replicas_share_a_few_server_connections_through_pgbouncer(cluster: Cluster) -> None:
    """Concurrent reads on every replica (each a pool of 5): PostgreSQL sees at most PgBouncer's pool."""
    with cluster.client(cluster.balancer) as http:
        headers = login(http, SUPERUSER_EMAIL, SUPERUSER_PASSWORD)

    def read(base: str) -> list[int]:
        with cluster.client(base) as http:
            return [http.get("/items/", headers=headers).status_code for _ in range(20)]

    threads_results: list[list[int]] = []
    threads = [
        threading.Thread(target=lambda base=base: threads_results.append(read(base)))
        for base in cluster.replicas
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert [status for statuses in threads_results for status in statuses] == [200] * 20 * 4 * REPLICAS
    server_connections = cluster.database.scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    assert 1 <= server_connections <= PGBOUNCER_POOL


def test_the_failed_login_limit_counts_across_replicas(cluster: Cluster) -> None:
    """5 failed logins per account in all, wherever they land: 2 on each replica, then the 7th is refused."""
    email, _ = new_account(cluster)
    statuses = []
    for attempt in range(7):
        with cluster.client(cluster.replicas[attempt % REPLICAS]) as http:
            statuses.append(
                http.post("/login/access-token", data={"username": email, "password": "wrong-guess"}).status_code
            )
    assert statuses == [400] * 5 + [429] * 2


def test_a_password_change_on_one_replica_ends_the_other_sessions_on_all(cluster: Cluster) -> None:
    email, password = new_account(cluster)
    first, second, third = (cluster.client(replica) for replica in cluster.replicas)
    with first, second, third:
        changing = login(first, email, password)
        other = login(second, email, password)
        for http in (first, second, third):
            assert http.get("/users/me", headers=other).status_code == 200
        body = {"current_password": password, "new_password": "a-new-password"}
        assert first.patch("/users/me/password", json=body, headers=changing).status_code == 200
        for http in (first, second, third):
            assert http.get("/users/me", headers=other).json() == {"detail": "Could not validate credentials"}
            assert http.get("/users/me", headers=changing).status_code == 200


def test_recovery_limits_are_shared(cluster: Cluster) -> None:
    """RECOVERY_PER_EMAIL_PER_HOUR (3) for one address, asked of a different replica each time."""
    email, _ = new_account(cluster)
    statuses = []
    for attempt in range(4):
        with cluster.client(cluster.replicas[attempt % REPLICAS]) as http:
            statuses.append(http.post(f"/password-recovery/{email}").status_code)
    assert statuses == [200, 200, 200, 429]


def test_a_replica_killed_under_load_loses_no_acknowledged_write(cluster: Cluster) -> None:
    """Writers create items through the balancer while one replica is killed (SIGKILL): what was answered 200 is in
    the database; what was not is a 502/503 from the balancer or a connection it closed (the request died with the
    replica: not acknowledged), nothing else; and once the balancer has noticed (its stats say the replica is DOWN),
    every call succeeds on the two replicas left. Each step waits for what it needs, not for a time: 10 writes
    acknowledged before the kill, the balancer noticing, 10 more acknowledged after."""
    with cluster.client(cluster.balancer) as http:
        headers = login(http, SUPERUSER_EMAIL, SUPERUSER_PASSWORD)
    acknowledged: list[tuple[str, str]] = []
    statuses: list[tuple[float, int]] = []
    stop = threading.Event()

    def write(worker: int) -> None:
        with cluster.client(cluster.balancer) as http:
            sequence = 0
            while not stop.is_set():
                sequence += 1
                title = f"writer {worker} item {sequence}"
                sent = time.monotonic()
                try:
                    response = http.post("/items/", json={"title": title}, headers=headers)
                except httpx.TransportError:
                    statuses.append((sent, CONNECTION_CLOSED))
                    continue
                statuses.append((sent, response.status_code))
                if response.status_code == 200:
                    acknowledged.append((response.json()["id"], title))

    writers = [threading.Thread(target=write, args=(n,)) for n in range(4)]

    def acknowledged_since(moment: float) -> int:
        return sum(status == 200 for sent, status in list(statuses) if sent > moment)

    for writer in writers:
        writer.start()
    try:
        wait_until(lambda: len(acknowledged) >= 10, "10 writes acknowledged before the kill")
        cluster.processes[0].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        wait_until(lambda: cluster.servers()["replica0"]["status"] == "DOWN", "the balancer notices the kill")
        noticed = time.monotonic()
        wait_until(lambda: acknowledged_since(noticed) >= 10, "10 writes acknowledged after the balancer noticed")
    finally:
        stop.set()
        for writer in writers:
            writer.join(timeout=DEADLINE)

    assert {status for _, status in statuses} <= {200, 502, 503, CONNECTION_CLOSED}, statuses
    assert sum(status == 200 for sent, status in statuses if sent < killed) >= 10
    # Once the balancer has taken the killed replica out, nothing fails any more.
    assert all(status == 200 for sent, status in statuses if sent > noticed), statuses
    assert {name: server["status"] for name, server in cluster.servers().items()} == {
        "replica0": "DOWN",
        "replica1": "UP",
        "replica2": "UP",
    }
    titles = dict(acknowledged)
    stored = cluster.database.scalar(
        'SELECT count(*) FROM item WHERE owner_id = (SELECT id FROM "user" WHERE email = :email)',
        email=SUPERUSER_EMAIL,
    )
    assert stored >= len(titles)
    with cluster.client(cluster.balancer) as http:
        for item_id, title in titles.items():
            found = http.get(f"/items/{item_id}", headers=headers)
            assert (found.status_code, found.json()["title"]) == (200, title)
