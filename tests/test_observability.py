"""Logs are one JSON object per line outside `local`; Sentry starts only when configured outside `local`."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.system  # every test here starts a process

SCRIPT = """
import json, logging, sys
import structlog
from app.config import load_settings
from app.observability import configure_logging, init_sentry
settings = load_settings(environ=json.loads(sys.argv[1]), env_file=None)
configure_logging(settings)
init_sentry(settings)
import sentry_sdk
structlog.get_logger("probe").warning("hello", answer=42)
try:
    raise ValueError("boom")
except ValueError:
    structlog.get_logger("probe").exception("failed")
import warnings
warnings.warn("a library warns", UserWarning)
print("SENTRY", sentry_sdk.get_client().is_active(), file=sys.stderr)
"""


def run_probe(**environ: str) -> tuple[list[str], str]:
    base = {
        "SECRET_KEY": "a-secret-key-of-at-least-32-bytes!",
        "FIRST_SUPERUSER_PASSWORD": "a-first-superuser-password",
        "POSTGRES_PASSWORD": "p",
    }
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps({**base, **environ})],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip().splitlines(), result.stderr


def test_json_lines_outside_local() -> None:
    lines, _ = run_probe(ENVIRONMENT="production")
    events = [json.loads(line) for line in lines]
    assert events[0]["event"] == "hello"
    assert events[0]["answer"] == 42
    assert events[0]["level"] == "warning"
    assert "timestamp" in events[0]
    assert "ValueError: boom" in events[1]["exception"]
    assert events[2]["logger"] == "py.warnings"
    assert "UserWarning: a library warns" in events[2]["event"]


def test_python_warnings_are_log_lines_not_raw_stderr() -> None:
    _, stderr = run_probe(ENVIRONMENT="production")
    assert "a library warns" not in stderr


def test_pretty_console_in_local() -> None:
    lines, _ = run_probe(ENVIRONMENT="local")
    assert "hello" in lines[0]
    with pytest.raises(json.JSONDecodeError):
        json.loads(lines[0])


@pytest.mark.parametrize(("environment", "active"), [("production", True), ("staging", True), ("local", False)])
def test_sentry_only_with_a_dsn_outside_local(environment: str, active: bool) -> None:
    _, stderr = run_probe(ENVIRONMENT=environment, SENTRY_DSN="http://public@127.0.0.1:9/1")
    assert f"SENTRY {active}" in stderr


def test_no_sentry_without_a_dsn() -> None:
    _, stderr = run_probe(ENVIRONMENT="production")
    assert "SENTRY False" in stderr


STARTUP_SCRIPT = """
import uuid
from datetime import timedelta
from litestar.testing import TestClient
from app.config import get_settings
from app.main import create_app
from app.security import create_access_token
settings = get_settings()
app = create_app(settings)
print("BUILT", flush=True)  # building the app (as every CLI command does) says nothing yet
with TestClient(app):
    # PyJWT warns about a short HMAC key here, unless filtered
    create_access_token(uuid.uuid4(), 0, settings.SECRET_KEY, timedelta(minutes=5))
"""


def test_dev_default_warnings_are_one_log_line_each_at_start_up_and_pyjwt_s_is_folded_into_ours(
    tmp_path: Path,
) -> None:
    environ = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": ".",
        "ENVIRONMENT": "local",
        "SECRET_KEY": "short",
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'app.db'}",
    }
    result = subprocess.run(
        [sys.executable, "-W", "default", "-c", STARTUP_SCRIPT],
        cwd=ROOT,
        env={**environ, "LOG_JSON": "true", "ENV_FILE": "/nonexistent"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # nothing printed by Python's own warning display: no source lines
    built, started = result.stdout.split("BUILT\n")
    assert built == ""
    events = [json.loads(line) for line in started.splitlines()]
    # The script's database has no tables: the session pruner's first run (at start-up) warns of that, apart.
    events = [event for event in events if event["logger"] != "app.sessions"]
    warned = [event["event"] for event in events if event["level"] == "warning"]
    # Each once, in the order the checks run; PyJWT's InsecureKeyLengthWarning is not among them.
    assert warned == [
        'The value of FIRST_SUPERUSER_PASSWORD is "changethis", for security, please change it.',
        "SECRET_KEY: 5 bytes is too short to sign tokens, use at least 32 (e.g. the output of "
        "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`)",
    ]
    assert all(event["logger"] == "app.config" for event in events if event["level"] == "warning")
