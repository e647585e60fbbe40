"""What reaches Sentry: errors, never credentials. Real envelopes, captured by a local HTTP endpoint standing in
for Sentry, from the app served by uvicorn in a process of its own (Sentry's init patches Litestar globally)."""

import gzip
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.conftest import ROOT, Served, login

pytestmark = pytest.mark.system  # every test here starts a process

SCRIPT = """
import json, sys
import httpx, sentry_sdk
given = json.load(sys.stdin)
from litestar import Request, post
from app.main import create_app
from app.config import load_settings
from tests.conftest import LiveServer

@post("/boom", sync_to_thread=False)
def boom(request: Request) -> None:
    reset_link = "http://localhost:5173/reset-password?token=" + given["password"]
    raise RuntimeError("the handler failed")

app = create_app(load_settings(environ=given["environ"], env_file=None))
app.register(boom)
with LiveServer(app) as server:
    headers = {"Authorization": "Bearer " + given["token"], "Cookie": "session=" + given["token"]}
    response = httpx.post(server.url + "/boom", headers=headers, json={"password": given["password"]})
    print(response.status_code)
sentry_sdk.flush(timeout=5)
"""


class Envelopes(BaseHTTPRequestHandler):
    received: list[bytes] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        self.received.append(body)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def sentry_endpoint() -> Iterator[tuple[str, list[bytes]]]:
    Envelopes.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Envelopes)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://public@127.0.0.1:{server.server_address[1]}/1", Envelopes.received
    server.shutdown()


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_sentry_events_carry_no_credentials(served: Served, sentry_endpoint: tuple[str, list[bytes]]) -> None:
    dsn, received = sentry_endpoint
    with served.client() as http:
        token = login(http, "admin@example.com", "superuser-password")["Authorization"].split()[1]
    secret_password = "a-password-that-must-not-leak"
    environ = {
        "DATABASE_URL": served.database.url,
        "SECRET_KEY": served.settings.SECRET_KEY,
        "FIRST_SUPERUSER_PASSWORD": "not-the-default",
        "POSTGRES_PASSWORD": "not-the-default",
        "ENVIRONMENT": "staging",
        "SENTRY_DSN": dsn,
        "LOG_LEVEL": "WARNING",
    }
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        # On stdin, not argv: Sentry reports a process's argv with every event.
        input=json.dumps({"environ": environ, "token": token, "password": secret_password}),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.stdout.strip().splitlines()[-1] == "500", result.stderr
    events = b"".join(received).decode()
    assert "the handler failed" in events  # the error itself reached the stand-in Sentry
    for secret in (token, secret_password, "reset-password?token=", "superuser-password"):
        assert secret not in events
    assert '"Bearer' not in events
