"""The HTTP server's bounds (app/server.py), over raw sockets as hostile clients send them: oversized heads get 431
without being read whole, and a request that does not arrive in time gets 408 and loses its connection."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, SECRET_KEY, LiveServer, create_app, free_port, make_settings, prepare

HEALTH = "/api/v1/utils/health-check/"
SMALL_HEAD = 4096
READ_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('server') / 'app.db'}"
    prepare(url)
    return url


@pytest.fixture(scope="module")
def bounded(sqlite_url: str) -> Iterator[LiveServer]:
    """The app with small bounds, so that tests can cross them quickly."""
    settings = make_settings(
        sqlite_url, MAX_REQUEST_HEADER_BYTES=str(SMALL_HEAD), REQUEST_READ_TIMEOUT=str(READ_TIMEOUT)
    )
    with LiveServer(create_app(settings)) as server:
        yield server


def connect(server: LiveServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def read_answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of the one answer on `sock` (read until the server closes or the body is in)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"closed without an answer after {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    while len(body) < int(headers.get("content-length", 0)):
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(status_line.split()[1]), headers, body


def is_closed(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def get(path: str, *headers: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: test", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# ---------------------------------------------------------------- head size


def test_a_head_within_the_limit_is_served(bounded: LiveServer) -> None:
    padding = "x" * (SMALL_HEAD - 200)
    with connect(bounded) as sock:
        sock.sendall(get(HEALTH, f"X-Padding: {padding}"))
        status, _, body = read_answer(sock)
    assert (status, json.loads(body)) == (200, True)


@pytest.mark.parametrize("where", ["one header", "many headers", "the url"])
def test_a_head_over_the_limit_is_431(bounded: LiveServer, where: str) -> None:
    if where == "one header":
        request = get(HEALTH, "Authorization: Bearer " + "a" * SMALL_HEAD)
    elif where == "many headers":
        request = get(HEALTH, *(f"X-Header-{n}: {'v' * 100}" for n in range(SMALL_HEAD // 100)))
    else:
        request = get(HEALTH + "?q=" + "a" * SMALL_HEAD)
    with connect(bounded) as sock:
        sock.sendall(request)
        status, headers, body = read_answer(sock)
        assert (status, json.loads(body)) == (431, {"detail": "Request Header Fields Too Large"})
        assert headers["connection"] == "close"
        assert is_closed(sock, within=5)
    assert httpx.get(bounded.url + HEALTH).status_code == 200


def test_the_default_limit_refuses_a_50_mb_header_without_reading_it(sqlite_url: str) -> None:
    """The attack as reported: a 50 MB `Authorization` header was read whole and answered 403 after 2.8 s. Now the
    answer comes while the client is still sending, long before it could have sent it all."""
    with LiveServer(create_app(make_settings(sqlite_url))) as server, connect(server) as sock:
        answers: list[tuple[int, dict[str, str], bytes]] = []
        reader = threading.Thread(target=lambda: answers.append(read_answer(sock)), daemon=True)
        reader.start()
        started, sent = time.monotonic(), 0
        sock.sendall(b"GET /api/v1/users/me HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer ")
        try:
            while sent < 50 * 1024 * 1024 and reader.is_alive():
                sock.sendall(b"a" * 65536)
                sent += 65536
        except (BrokenPipeError, ConnectionResetError):
            pass
        reader.join(timeout=10)
        elapsed = time.monotonic() - started
    assert [status for status, _, _ in answers] == [431]
    assert sent < 10 * 1024 * 1024, f"{sent} bytes were taken before the answer"
    assert elapsed < 2, elapsed


def test_the_head_limit_is_a_setting() -> None:
    from app.config import SettingsError

    assert make_settings("sqlite+aiosqlite://", MAX_REQUEST_HEADER_BYTES="65536").MAX_REQUEST_HEADER_BYTES == 65536
    with pytest.raises(SettingsError, match="MAX_REQUEST_HEADER_BYTES"):
        make_settings("sqlite+aiosqlite://", MAX_REQUEST_HEADER_BYTES="100")
    with pytest.raises(SettingsError, match="REQUEST_READ_TIMEOUT"):
        make_settings("sqlite+aiosqlite://", REQUEST_READ_TIMEOUT="0")


# ---------------------------------------------------------------- read time


def test_a_body_shorter_than_its_content_length_is_408_and_closed(
    bounded: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    body = b'{"email": "slow@example.com", "password": "a-good-password"}'
    request = (
        b"POST /api/v1/users/signup HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body) + 10}\r\n\r\n".encode()
        + body
    )
    started = time.monotonic()  # before connecting: the server's read time may start with the connection
    with connect(bounded) as sock:
        sock.sendall(request)
        status, _, answer = read_answer(sock)
        elapsed = time.monotonic() - started
        assert (status, json.loads(answer)) == (408, {"detail": "Request Timeout"})
        assert is_closed(sock, within=5)
    assert READ_TIMEOUT <= elapsed < READ_TIMEOUT + 3, elapsed
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]
    # Nothing half-written: the signup whose body never arrived did not happen.
    login = httpx.post(
        bounded.url + "/api/v1/login/access-token", data={"username": "slow@example.com", "password": "a-good-password"}
    )
    assert login.status_code == 400


def test_a_trickled_head_is_408_within_the_read_timeout(bounded: LiveServer) -> None:
    """Slowloris: a byte now and then keeps any idle timeout happy; the whole request has one deadline."""
    with connect(bounded) as sock:
        started = time.monotonic()
        sock.sendall(b"GET " + HEALTH.encode() + b" HTTP/1.1\r\nHost: test\r\n")
        answer: tuple[int, dict[str, str], bytes] | None = None
        while time.monotonic() - started < READ_TIMEOUT + 3:
            try:
                sock.sendall(b"X")
            except (BrokenPipeError, ConnectionResetError):
                break
            sock.settimeout(0.2)
            try:
                answer = read_answer(sock)
                break
            except TimeoutError:
                continue
        elapsed = time.monotonic() - started
    assert answer is not None
    assert answer[0] == 408, answer
    assert elapsed < READ_TIMEOUT + 2, elapsed


def test_a_connection_that_sends_nothing_is_closed_without_an_answer(bounded: LiveServer) -> None:
    with connect(bounded) as sock:
        sock.settimeout(READ_TIMEOUT + 3)
        assert sock.recv(65536) == b""


def test_keep_alive_requests_each_get_their_own_deadline(bounded: LiveServer) -> None:
    """Requests on one connection for longer than the read timeout in all: the deadline is per request."""
    with httpx.Client(base_url=bounded.url) as http:
        started = time.monotonic()
        while time.monotonic() - started < READ_TIMEOUT * 2.5:
            assert http.get(HEALTH).status_code == 200
            time.sleep(READ_TIMEOUT / 3)
        assert http.get(HEALTH).status_code == 200


# ---------------------------------------------------------------- memory


def rss_bytes(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.system
def test_memory_stays_bounded_under_oversized_and_stalled_requests(sqlite_url: str) -> None:
    """The service as `just serve` runs it (uvicorn, uvloop, our protocol), one worker: 20 clients each pushing a
    50 MB header and 20 stalled bodies hardly move its resident memory."""
    port = free_port()
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("COV_", "PYTEST"))},
        "DATABASE_URL": sqlite_url,
        "SECRET_KEY": SECRET_KEY,
        "ENVIRONMENT": "local",
        "LOG_LEVEL": "WARNING",
        "REQUEST_READ_TIMEOUT": "2",
    }
    command = [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory", "--port", str(port)]
    command += ["--loop", "uvloop", "--http", "app.server:HttpProtocol", "--no-access-log"]
    service = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}{HEALTH}").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
            assert service.poll() is None, "the service stopped"
            assert time.monotonic() < deadline, "the service did not start"
        before = rss_bytes(service.pid)

        def push_header() -> None:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(b"GET /api/v1/users/me HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer ")
                try:
                    for _ in range(50 * 16):
                        sock.sendall(b"a" * 65536)
                except OSError:
                    return

        def stall_body() -> None:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(b"POST /api/v1/users/signup HTTP/1.1\r\nHost: test\r\nContent-Length: 1000000\r\n\r\n{")
                sock.settimeout(10)
                try:
                    while sock.recv(65536):
                        pass
                except OSError:
                    return

        threads = [threading.Thread(target=push_header) for _ in range(20)]
        threads += [threading.Thread(target=stall_body) for _ in range(20)]
        for thread in threads:
            thread.start()
        peak = before
        while any(thread.is_alive() for thread in threads):
            peak = max(peak, rss_bytes(service.pid))
            time.sleep(0.05)
        assert httpx.get(f"http://127.0.0.1:{port}{HEALTH}").status_code == 200
    finally:
        service.terminate()
        output = service.communicate(timeout=20)[0].decode()
    assert peak - before < 30 * 1024 * 1024, f"resident memory grew by {(peak - before) // 1024} KiB"
    assert "Traceback" not in output, output


def test_a_client_leaving_mid_body_is_no_error(bounded: LiveServer, caplog: pytest.LogCaptureFixture) -> None:
    """It sent half its body and closed: nothing is written, nothing is logged as an error, the server serves on."""
    caplog.set_level(logging.INFO)
    body = b'{"email": "gone@example.com", "password": "a-good-password"}'
    with connect(bounded) as sock:
        sock.sendall(
            b"POST /api/v1/users/signup HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[:20]
        )
        time.sleep(0.2)  # the app is waiting for the rest
    deadline = time.monotonic() + 5
    while not any("client disconnected" in record.getMessage() for record in caplog.records):
        assert time.monotonic() < deadline, [record.getMessage() for record in caplog.records]
        time.sleep(0.05)
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]
    login = httpx.post(
        bounded.url + "/api/v1/login/access-token", data={"username": "gone@example.com", "password": "a-good-password"}
    )
    assert login.status_code == 400
