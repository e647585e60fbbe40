"""A real image, built and run: the repository's Containerfile, built with podman on a Debian bookworm base
bootstrapped here (no container registry is reachable in CI), migrated by its one-shot `prestart` and served
against a fresh PostgreSQL database the way a deployment runs it.

Needs root, podman, runc and debootstrap (`.ci/run` installs them): skipped without them, except in CI, where it fails.
The base image is cached in podman's store under a tag keyed on what was bootstrapped, so only the first run pays
for debootstrap (about a minute); the dependency layer is cached by podman's build as long as uv.lock is unchanged.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import tomllib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from tests.conftest import (
    ROOT,
    SUPERUSER_EMAIL,
    SUPERUSER_PASSWORD,
    children_of,
    create_postgres_database,
    drop_postgres_database,
    free_port,
)

pytestmark = pytest.mark.needs("root", "podman", "runc", "debootstrap")

# Root podman with runc and cgroupfs: what this machine (and CI, on the same machine) can run.
PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs"]
# The sandbox may not raise limits to podman's defaults; the host network reaches PostgreSQL on 127.0.0.1.
SANDBOX = ["--network", "host", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
SUITE = "bookworm"
PACKAGES = "python3,ca-certificates"
MIRROR = os.environ.get("DEBOOTSTRAP_MIRROR", "http://deb.debian.org/debian")
BASE_KEY = hashlib.sha256(f"{SUITE} {PACKAGES} {MIRROR}".encode()).hexdigest()[:12]
BASE_IMAGE = f"localhost/accounts-api-test-base:{SUITE}-{BASE_KEY}"
# The CA bundle the host's clients trust (this network inspects TLS), mounted into the build.
CA_BUNDLE = Path(os.environ.get("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt"))
# uvicorn's drain time, from the Containerfile's CMD.
GRACEFUL_SECONDS = int(re.findall(r'"--timeout-graceful-shutdown", "(\d+)"', (ROOT / "Containerfile").read_text())[0])
LOCK = Path(tempfile.gettempdir()) / "accounts-api-test-image.lock"
SECRET = "image-test-secret-key-of-enough-length"
BUILD_COMMIT = "0123456789abcdef0123456789abcdef01234567"


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*PODMAN, *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check:
        assert result.returncode == 0, f"podman {' '.join(args)}: exit {result.returncode}\n{result.stderr}"
    return result


def ensure_base_image() -> None:
    """A Debian base with python3, as python:*-slim would be (debootstrap needs root and Debian's mirror)."""
    if podman("image", "exists", BASE_IMAGE, check=False).returncode == 0:
        return
    with tempfile.TemporaryDirectory(prefix="accounts-api-rootfs-") as rootfs:
        bootstrap = subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={PACKAGES}", SUITE, rootfs, MIRROR],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert bootstrap.returncode == 0, f"debootstrap failed:\n{bootstrap.stdout[-3000:]}{bootstrap.stderr}"
        # What Debian's own images leave out too: package lists and downloaded packages (~90 MB).
        for leftover in ("var/lib/apt/lists", "var/cache/apt"):
            shutil.rmtree(Path(rootfs, leftover))
        tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run([*PODMAN, "import", "-", BASE_IMAGE], stdin=tar.stdout, capture_output=True)
        assert tar.wait() == 0
        assert imported.returncode == 0, imported.stderr


def ensure_uv_image(uv: Path) -> str:
    """The uv binary this host runs (installed from PyPI), as the one-file image the Containerfile copies it from."""
    digest = hashlib.sha256(uv.read_bytes()).hexdigest()[:12]
    image = f"localhost/accounts-api-test-uv:{digest}"
    if podman("image", "exists", image, check=False).returncode != 0:
        with tempfile.TemporaryDirectory() as folder:
            shutil.copy(uv, Path(folder, "uv"))
            tar = subprocess.Popen(["tar", "-C", folder, "-c", "uv"], stdout=subprocess.PIPE)
            imported = subprocess.run([*PODMAN, "import", "-", image], stdin=tar.stdout, capture_output=True)
            assert tar.wait() == 0
            assert imported.returncode == 0, imported.stderr
    return image


def host_uv() -> Path:
    # `uv run` names its own binary in UV; `which uv` may be a shim (pyenv) rather than the binary.
    uv = Path(os.environ.get("UV") or shutil.which("uv") or "uv")
    assert uv.is_file(), f"no uv at {uv}: set UV=/path/to/uv"
    assert uv.read_bytes()[:4] == b"\x7fELF", f"{uv} is not the uv binary (a shim?): set UV=/path/to/uv"
    return uv


@dataclass
class Built:
    tag: str
    base_seconds: float  # bootstrapping and importing the base images; 0 when cached
    build_seconds: float


@pytest.fixture(scope="module")
def built() -> Iterator[Built]:
    started = time.monotonic()
    with LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one bootstrap at a time when suites run side by side
        ensure_base_image()
        uv_image = ensure_uv_image(host_uv())
    base_seconds = time.monotonic() - started
    tag = f"localhost/accounts-api-test:{uuid.uuid4().hex[:12]}"
    # The package index the host's uv uses, if it is told one (this host uses PyPI, the default).
    index = os.environ.get("UV_DEFAULT_INDEX") or os.environ.get("UV_INDEX_URL") or ""
    started = time.monotonic()
    # As `just image` builds (--format docker keeps the HEALTHCHECK), with the base images and the network's
    # CA bundle as build arguments.
    podman(
        "build",
        "--format",
        "docker",
        *SANDBOX,
        "--volume",
        f"{CA_BUNDLE.parent}:{CA_BUNDLE.parent}:ro",
        "--build-arg",
        f"PYTHON_IMAGE={BASE_IMAGE}",
        "--build-arg",
        f"UV_IMAGE={uv_image}",
        "--build-arg",
        f"CA_BUNDLE={CA_BUNDLE}",
        "--build-arg",
        f"INDEX_URL={index}",
        "--build-arg",
        f"BUILD_COMMIT={BUILD_COMMIT}",
        "-f",
        str(ROOT / "Containerfile"),
        "-t",
        tag,
        str(ROOT),
        timeout=600,
    )
    yield Built(tag, base_seconds, time.monotonic() - started)
    # Only the tag goes: the layers below it stay as the next build's cache.
    podman("untag", tag, check=False)


@pytest.fixture
def database_url() -> Iterator[str]:
    url = create_postgres_database()
    yield url
    drop_postgres_database(url)


def environment(database_url: str, port: int) -> list[str]:
    values = {
        "DATABASE_URL": database_url,
        "SECRET_KEY": SECRET,
        "FIRST_SUPERUSER": SUPERUSER_EMAIL,
        "FIRST_SUPERUSER_PASSWORD": SUPERUSER_PASSWORD,
        "UVICORN_HOST": "127.0.0.1",  # the host's network: not on every interface of the machine
        "UVICORN_PORT": str(port),
        "METRICS_ENABLED": "true",
    }
    return [argument for name, value in values.items() for argument in ("--env", f"{name}={value}")]


def wait_until_healthy(base: str, name: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{base}/api/v1/utils/health-check/", timeout=1).json() is True:
                return
        except httpx.TransportError:
            pass
        state = podman("inspect", "--format", "{{.State.Status}}", name).stdout.strip()
        assert state == "running", f"the container is {state}:\n{podman('logs', name).stderr}"
        assert time.monotonic() < deadline, f"not healthy within {timeout} s:\n{podman('logs', name).stderr}"
        time.sleep(0.2)


def process_uid(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])


def test_image_migrates_serves_runs_unprivileged_and_drains_on_sigterm(
    built: Built, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    image = built.tag
    config = json.loads(podman("image", "inspect", image).stdout)[0]
    assert config["Config"]["User"] == "10001:10001"
    # podman's default (OCI) image format has no HEALTHCHECK and drops it without a word.
    healthcheck = config.get("Healthcheck")
    assert healthcheck, "the image has no HEALTHCHECK: built without --format docker?"
    assert "health-check" in " ".join(healthcheck["Test"])

    port = free_port()
    base = f"http://127.0.0.1:{port}"

    # The one-shot job: migrations and the first superuser.
    prestart = podman(
        "run", "--rm", *SANDBOX, *environment(database_url, port), image,
        "litestar", "--app", "app.main:create_app", "prestart",
        timeout=180, check=False,
    )  # fmt: skip
    assert prestart.returncode == 0, prestart.stdout + prestart.stderr

    name = f"accounts-api-test-{uuid.uuid4().hex[:12]}"
    podman("run", "--detach", "--name", name, *SANDBOX, *environment(database_url, port), image)
    try:
        wait_until_healthy(base, name)
        assert podman("healthcheck", "run", name, check=False).returncode == 0, "the HEALTHCHECK command fails"

        # Every process of the service (uvicorn's supervisor and its workers) runs as 10001, not root.
        # (Read from the host's /proc: the image has no ps for `podman top`.)
        main_pid = int(podman("inspect", "--format", "{{.State.Pid}}", name).stdout)
        processes = [main_pid, *children_of(main_pid)]
        assert len(processes) >= 3, processes  # the supervisor and WEB_CONCURRENCY=2 workers
        assert {process_uid(pid) for pid in processes} == {10001}

        form = {"username": SUPERUSER_EMAIL, "password": SUPERUSER_PASSWORD}
        response = httpx.post(f"{base}/api/v1/login/access-token", data=form, timeout=10)
        assert response.status_code == 200, response.text
        token = response.json()["access_token"]
        me = httpx.get(f"{base}/api/v1/users/me", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert me.status_code == 200
        assert me.json()["email"] == SUPERUSER_EMAIL
        # The build it is: the project's version and the commit given at build time.
        version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
        metrics = httpx.get(f"{base}/metrics", timeout=10).text
        build = [line for line in metrics.splitlines() if line.startswith("build_info{")]
        assert len(build) == 1, metrics[-2000:]
        assert f'version="{version}"' in build[0], build
        assert f'commit="{BUILD_COMMIT}"' in build[0], build
        assert build[0].endswith(" 1.0"), build

        # SIGTERM with a request in flight: its head is read, its body not yet whole when `podman stop` signals.
        body = urlencode(form)
        head = (
            f"POST /api/v1/login/access-token HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        with socket.create_connection(("127.0.0.1", port), timeout=30) as client:
            client.sendall(head.encode() + body[:10].encode())
            time.sleep(0.5)  # the worker has the request
            stopped: dict[str, Any] = {}

            def stop() -> None:
                began = time.monotonic()
                stopped["result"] = podman("stop", "--time", str(GRACEFUL_SECONDS + 10), name, check=False)
                stopped["seconds"] = time.monotonic() - began

            stopper = threading.Thread(target=stop)
            stopper.start()
            wait_for_log(name, "Waiting for connections to close")
            client.sendall(body[10:].encode())
            answer = read_response(client)
            stopper.join(timeout=GRACEFUL_SECONDS + 20)
        assert answer.startswith(b"HTTP/1.1 200"), answer
        assert b'"access_token"' in answer, answer
        assert not stopper.is_alive(), "podman stop did not return"
        assert stopped["result"].returncode == 0, stopped["result"].stderr
        # Within uvicorn's graceful timeout: podman did not have to SIGKILL it (that would be exit 137).
        assert stopped["seconds"] < GRACEFUL_SECONDS
        exit_code = podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
        logs = podman("logs", name).stderr + podman("logs", name).stdout
        assert exit_code == "0", logs
        assert logs.count("Application shutdown complete") == 2, logs
        assert "Traceback" not in logs, logs
        with capsys.disabled():  # shown without -s: the numbers the README quotes
            print(
                f"\nimage {config['Size'] / 1e6:.0f} MB on the Debian {SUITE} base; base images ready in "
                f"{built.base_seconds:.0f} s, built in {built.build_seconds:.0f} s, "
                f"stopped in {stopped['seconds']:.1f} s"
            )
    finally:
        podman("rm", "--force", name, check=False)


def wait_for_log(name: str, text: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = podman("logs", name)
        if text in result.stdout + result.stderr:
            return
        assert time.monotonic() < deadline, f"no {text!r} in the logs:\n{result.stdout}{result.stderr}"
        time.sleep(0.1)


def read_response(client: socket.socket) -> bytes:
    """The whole response: uvicorn closes the connection after it, as the server is shutting down."""
    chunks = []
    while chunk := client.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)
