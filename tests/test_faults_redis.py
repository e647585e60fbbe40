"""Redis going away under load, and coming back: the service keeps answering, and its rate limits degrade and recover.

Two app instances (two workers) share a PostgreSQL database of their own and a redis-server of the test's own (the
shared Redis on 6379 is never touched). A few threads send a mixed load to both: correct logins, wrong passwords
against one victim, password recoveries, signups, item creates and reads, `/users/me`, `/utils/ready`. In the middle
Redis is stopped (SIGKILL, or `SHUTDOWN NOSAVE`) and started again, empty, on the same port. This proves:

- every answer is one the call may give (a 429 only where a limit applies), never a 5xx nor a dropped connection,
  and nothing is logged as an error;
- while Redis is down, `/utils/ready` is 200 and says the limits are kept per process, and they are: a fresh victim
  gets the limit's 5 evaluated guesses on each worker, no more;
- over the whole run each worker evaluated at most 5 of the load's guesses at its victim (each worker counts its own
  events, whatever Redis does), and at most 5 in all while Redis answered every call;
- once Redis is back, both workers say so within the retry interval (plus a margin for a loaded machine), and the
  limits are shared through it again: 3 guesses on one worker and 3 on the other make the 6th a 429, and Redis
  holds the 5 counted;
- every write that was acknowledged (an item created, an account signed up) is there afterwards.

And, without load: readiness itself tries Redis again when its retry is due, so a quiet service reports Redis's
return too (and does not claim "redis" while Redis is still down).
"""

from __future__ import annotations

import logging
import random
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from app.ratelimit import REDIS_RETRY_INTERVAL_S, identity_key
from db.identity import email_identity
from tests.conftest import (
    SUPERUSER_EMAIL,
    SUPERUSER_PASSWORD,
    Account,
    Database,
    LiveServer,
    Records,
    create_account,
    create_app,
    free_port,
    login,
    make_settings,
    random_email,
)

pytestmark = pytest.mark.needs("redis-server")  # a redis-server of the test's own, and its redis-cli

DEGRADED = "process (redis unavailable)"
LIMIT = 5  # LOGIN_FAILURES_PER_ACCOUNT_PER_MINUTE here
MARGIN_S = 10.0  # on top of REDIS_RETRY_INTERVAL_S: generous, for a loaded 2-core machine
# What each call of the load may answer. Nothing else, whatever Redis does.
ALLOWED = {
    "login": {200},
    "wrong password": {400, 429},  # 429 once the victim's limit is reached
    "recovery": {200, 429},  # 429 once the per-client limit is reached
    "signup": {200},  # its limit is set far above what the load sends: the limiter is consulted, never refuses
    "create item": {200},
    "read item": {200},
    "me": {200},
    "ready": {200},
}


class PrivateRedis:
    """A redis-server of the test's own, without persistence, on a port fixed at the start so that it can be
    started again where the service expects it."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2, decode_responses=True)

    def start(self) -> None:
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(
            [*command, "--dir", str(self.directory)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        with self.client() as client:
            while True:
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    pass
                assert self.process.poll() is None, "redis-server exited"
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    def stop(self, how: str) -> None:
        assert self.process is not None
        if how == "SIGKILL":
            self.process.kill()
        else:  # the server closes its connections and exits; redis-cli gets no answer, which is expected
            subprocess.run(["redis-cli", "-p", str(self.port), "SHUTDOWN", "NOSAVE"], capture_output=True, timeout=10)
        self.process.wait(timeout=10)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@dataclass
class Service:
    redis: PrivateRedis
    workers: list[httpx.Client]  # two app instances sharing Redis and the database, as two workers do
    database: Database
    namespace: str
    superuser: dict[str, str]


@pytest.fixture
def service(migrated_database: str, tmp_path: Path) -> Iterator[Service]:
    private = PrivateRedis(tmp_path)
    private.start()
    namespace = f"test-{uuid.uuid4().hex}"
    settings = make_settings(
        migrated_database,
        RATE_LIMIT_ENABLED="true",
        REDIS_URL=private.url,
        REDIS_NAMESPACE=namespace,
        LOGIN_FAILURES_PER_ACCOUNT_PER_MINUTE=str(LIMIT),
        LOGIN_FAILURES_PER_CLIENT_PER_MINUTE="100",
        RECOVERY_PER_EMAIL_PER_HOUR="3",
        RECOVERY_PER_CLIENT_PER_HOUR="30",
        SIGNUP_PER_CLIENT_PER_HOUR="100000",
    )
    try:
        with (
            LiveServer(create_app(settings)) as first,
            LiveServer(create_app(settings)) as second,
            httpx.Client(base_url=first.url + "/api/v1", timeout=30) as a,
            httpx.Client(base_url=second.url + "/api/v1", timeout=30) as b,
        ):
            superuser = login(a, SUPERUSER_EMAIL, SUPERUSER_PASSWORD)
            yield Service(private, [a, b], Database(migrated_database), namespace, superuser)
    finally:
        private.close()


@dataclass
class Answer:
    call: str
    status: int  # 0: no HTTP answer at all
    sent: str  # the phase when sent, and when answered
    answered: str


class Load:
    """Threads sending the mixed load, each call to either worker, until stopped. Remembers what was acknowledged."""

    def __init__(self, service: Service, account: Account, victim: Account, threads: int = 3) -> None:
        self.urls = [str(worker.base_url) for worker in service.workers]
        self.account = account
        self.victim = victim
        self.phase = "before"  # then "outage" (Redis stopped), then "after" (Redis started again)
        self.answers: list[Answer] = []  # list.append is atomic: the threads share these lists without a lock
        self.items: list[tuple[str, str]] = []  # (id, title) of every create answered 200
        self.signups: list[tuple[str, str]] = []  # (id, email) of every signup answered 200
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(seed,), daemon=True) for seed in range(threads)]

    def __enter__(self) -> Load:
        self.started = time.monotonic()
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=30)
        assert not any(thread.is_alive() for thread in self.threads), "the load did not stop"
        self.lasted = time.monotonic() - self.started

    def wait_for_every_call(self, phase: str, timeout: float = 30) -> None:
        """Until each kind of call was sent and answered within `phase`, or nothing of that kind was tested there."""
        deadline = time.monotonic() + timeout
        while True:
            seen = {answer.call for answer in self.answers if answer.sent == phase == answer.answered}
            if seen == set(ALLOWED):
                return
            assert time.monotonic() < deadline, (phase, set(ALLOWED) - seen)
            time.sleep(0.05)

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        calls = list(ALLOWED)
        clients = [httpx.Client(base_url=url, timeout=20) for url in self.urls]
        my_items: list[str] = []
        try:
            step = seed  # the threads start at different calls, so that different calls overlap
            while not self.stopping.is_set():
                call = calls[step % len(calls)]
                step += 1
                if call == "read item" and not my_items:
                    continue
                sent = self.phase
                try:
                    status = self._send(rng.choice(clients), call, my_items)
                except httpx.TransportError:
                    status = 0
                self.answers.append(Answer(call, status, sent, self.phase))
        finally:
            for client in clients:
                client.close()

    def _send(self, http: httpx.Client, call: str, my_items: list[str]) -> int:
        account, victim = self.account, self.victim
        if call == "login":
            response = http.post("/login/access-token", data={"username": account.email, "password": account.password})
        elif call == "wrong password":
            response = http.post("/login/access-token", data={"username": victim.email, "password": "wrong-guess"})
        elif call == "recovery":
            response = http.post(f"/password-recovery/{random_email()}")
        elif call == "signup":
            email = random_email()
            response = http.post("/users/signup", json={"email": email, "password": "a-good-password"})
            if response.status_code == 200:
                self.signups.append((response.json()["id"], email))
        elif call == "create item":
            title = f"item {uuid.uuid4().hex}"
            response = http.post("/items/", json={"title": title}, headers=account.headers)
            if response.status_code == 200:
                self.items.append((response.json()["id"], title))
                my_items.append(response.json()["id"])
        elif call == "read item":
            response = http.get(f"/items/{my_items[-1]}", headers=account.headers)
        elif call == "me":
            response = http.get("/users/me", headers=account.headers)
        else:
            response = http.get("/utils/ready")
        return response.status_code


def modes(service: Service) -> list[tuple[int, str]]:
    answers = [worker.get("/utils/ready") for worker in service.workers]
    return [(answer.status_code, answer.json().get("rate_limits", "")) for answer in answers]


def wait_for_mode(service: Service, mode: str, timeout: float) -> float:
    """Seconds until every worker reports `mode`; each poll must be a 200 whatever the mode."""
    started = time.monotonic()
    while True:
        seen = modes(service)
        assert all(status == 200 for status, _ in seen), seen
        if all(reported == mode for _, reported in seen):
            return time.monotonic() - started
        assert time.monotonic() - started < timeout, (mode, seen)
        time.sleep(0.05)


def guess(http: httpx.Client, victim: Account) -> int:
    return http.post("/login/access-token", data={"username": victim.email, "password": "wrong-guess"}).status_code


def concurrent_guesses(service: Service, victim: Account, per_worker: int) -> list[list[int]]:
    """`per_worker` wrong guesses at each worker at once (the password checks queue behind the load's), sorted."""
    with ThreadPoolExecutor(per_worker * len(service.workers)) as pool:
        sent = [[pool.submit(guess, worker, victim) for _ in range(per_worker)] for worker in service.workers]
        return [sorted(future.result() for future in futures) for futures in sent]


@pytest.mark.parametrize("how", ["SIGKILL", "SHUTDOWN NOSAVE"])
def test_a_redis_restart_under_load_degrades_the_limits_and_loses_nothing(service: Service, how: str) -> None:
    a, b = service.workers
    account, victim, outage_victim, after_victim = (create_account(a, service.superuser) for _ in range(4))
    assert modes(service) == [(200, "redis")] * 2
    records = Records()
    logging.getLogger().addHandler(records)
    try:
        with Load(service, account, victim) as load:
            load.wait_for_every_call("before")

            load.phase = "outage"
            stopped, stopped_wall = time.monotonic(), time.time()  # the log records' clock is the wall clock
            service.redis.stop(how)
            wait_for_mode(service, DEGRADED, timeout=MARGIN_S)  # the load's next limited calls find it down
            # Per-process limits: each worker evaluates 5 guesses of its own (its window is empty for this victim).
            assert concurrent_guesses(service, outage_victim, LIMIT + 1) == [[400] * LIMIT + [429]] * 2
            assert modes(service) == [(200, DEGRADED)] * 2
            load.wait_for_every_call("outage")
            if how == "SIGKILL":  # a longer outage: the workers' retries of a Redis still down must fail quietly too
                time.sleep(max(0.0, stopped + REDIS_RETRY_INTERVAL_S + 1 - time.monotonic()))
                assert modes(service) == [(200, DEGRADED)] * 2

            load.phase = "after"
            service.redis.start()
            recovered_in = wait_for_mode(service, "redis", timeout=REDIS_RETRY_INTERVAL_S + MARGIN_S)
            load.wait_for_every_call("after")
    finally:
        logging.getLogger().removeHandler(records)
    # The per-process bound on the victim below holds within one 60 s window: the load must fit in one.
    assert load.lasted < 60, load.lasted

    unexpected = [(answer.call, answer.status) for answer in load.answers if answer.status not in ALLOWED[answer.call]]
    assert unexpected == []
    errors = [record.getMessage() for record in records.records if record.levelno >= logging.ERROR]
    assert errors == []
    fallbacks = [record for record in records.records if "rate limits kept per process" in record.getMessage()]
    assert fallbacks, "the outage was never noticed"

    # The load's victim: each worker counts the guesses it evaluated whatever Redis does (at most 5 each in a
    # minute), and while Redis answered every call the 5 were shared by both workers. (A reply later than 250 ms on
    # a busy machine makes a worker fall back for a moment: then only the per-process bound is promised.)
    evaluated = [answer for answer in load.answers if answer.call == "wrong password" and answer.status == 400]
    assert LIMIT <= len(evaluated) <= LIMIT * len(service.workers)
    if all(record.created >= stopped_wall for record in fallbacks):
        assert len([answer for answer in evaluated if answer.answered == "before"]) <= LIMIT

    # Redis is back and shared again: the workers' retry found it, and the counts live there.
    assert recovered_in <= REDIS_RETRY_INTERVAL_S + MARGIN_S
    assert [guess(a, after_victim) for _ in range(3)] + [guess(b, after_victim) for _ in range(3)] == [400] * 5 + [429]
    with service.redis.client() as client:
        key = identity_key("login-fail:account", email_identity(after_victim.email))
        assert client.zcard(f"{service.namespace}:{key}") == LIMIT
    assert modes(service) == [(200, "redis")] * 2

    # No acknowledged write was lost.
    owned = service.database.scalar("SELECT count(*) FROM item WHERE owner_id = :owner", owner=uuid.UUID(account.id))
    assert owned == len(load.items)
    for item_id, title in load.items:
        read = b.get(f"/items/{item_id}", headers=account.headers)
        assert (read.status_code, read.json()["title"]) == (200, title)
    for user_id, email in load.signups:
        read = a.get(f"/users/{user_id}", headers=service.superuser)
        assert (read.status_code, read.json()["email"]) == (200, email)


def test_readiness_tries_redis_again_on_a_quiet_service(service: Service) -> None:
    """With no limited request to try Redis, readiness does: it stays degraded while Redis is down, even after the
    retry interval, and says "redis" again within the retry interval of Redis answering, with no login needed."""
    a, _ = service.workers
    account = create_account(a, service.superuser)
    service.redis.stop("SIGKILL")
    assert guess(a, account) == 400  # counted per process: Redis is down
    time.sleep(REDIS_RETRY_INTERVAL_S + 0.5)
    assert modes(service)[0] == (200, DEGRADED)  # the retry is due: readiness tried Redis, which is still down
    service.redis.start()
    assert wait_for_mode(service, "redis", REDIS_RETRY_INTERVAL_S + MARGIN_S) < REDIS_RETRY_INTERVAL_S + MARGIN_S
