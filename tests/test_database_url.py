"""`DATABASE_URL` as hosted databases hand it out, `?sslmode=…` and certificates included, against a real PostgreSQL
that speaks TLS: a cluster of the test's own (the shared one has `ssl = off`), with a certificate authority made here.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from app.cli import prestart
from app.config import Settings, load_settings
from app.database import sqlalchemy_config
from app.main import create_app
from tests.conftest import (
    POSTGRES_BIN,
    SECRET_KEY,
    SUPERUSER_EMAIL,
    SUPERUSER_PASSWORD,
    LiveServer,
    free_port,
    login,
    run,
)

# Root to run a cluster as postgres, PostgreSQL's server binaries (POSTGRES_BIN) and openssl for the certificates.
pytestmark = pytest.mark.needs("root", "postgresql-server", "openssl")


@dataclass(frozen=True)
class TlsCluster:
    port: int
    ca: Path
    other_ca: Path

    def url(self, host: str = "127.0.0.1", query: str = "") -> str:
        return f"postgresql://postgres@{host}:{self.port}/postgres" + (f"?{query}" if query else "")


def openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


def certificate_authority(folder: Path, name: str) -> tuple[Path, Path]:
    key, certificate = folder / f"{name}.key", folder / f"{name}.pem"
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
            "-keyout", key, "-out", certificate)  # fmt: skip
    return key, certificate


@pytest.fixture(scope="module")
def tls_cluster() -> Iterator[TlsCluster]:
    assert POSTGRES_BIN is not None
    # Not under pytest's temporary folder: that one is root's alone, and the server runs as postgres.
    folder = Path(tempfile.mkdtemp(prefix="tls-cluster-"))
    ca_key, ca = certificate_authority(folder, "test-ca")
    _, other_ca = certificate_authority(folder, "other-ca")
    server_key, request, server = folder / "server.key", folder / "server.csr", folder / "server.crt"
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", server_key, "-out", request)
    extensions = folder / "san.cnf"
    extensions.write_text("subjectAltName=DNS:localhost\n")
    openssl("x509", "-req", "-in", request, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-days", "2",
            "-extfile", extensions, "-out", server)  # fmt: skip
    data = folder / "data"
    data.mkdir()
    for path in (folder, data, server, server_key):
        shutil.chown(path, "postgres", "postgres")
    server_key.chmod(0o600)
    as_postgres = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*as_postgres, POSTGRES_BIN / "initdb", "-D", data, "-U", "postgres", "-A", "trust"],
                   check=True, capture_output=True)  # fmt: skip
    port = free_port()
    server_process = subprocess.Popen(
        [*as_postgres, POSTGRES_BIN / "postgres", "-D", data, "-p", str(port), "-k", folder,
         "-c", "listen_addresses=127.0.0.1", "-c", "ssl=on", "-c", f"ssl_cert_file={server}",
         "-c", f"ssl_key_file={server_key}", "-c", "fsync=off"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while subprocess.run([POSTGRES_BIN / "pg_isready", "-h", "127.0.0.1", "-p", str(port)], check=False,
                         capture_output=True).returncode != 0:  # fmt: skip
        assert server_process.poll() is None, server_process.stderr.read() if server_process.stderr else ""
        assert time.monotonic() < deadline, "the TLS cluster did not start"
        time.sleep(0.2)
    yield TlsCluster(port=port, ca=ca, other_ca=other_ca)
    server_process.terminate()
    server_process.wait(timeout=30)
    shutil.rmtree(folder, ignore_errors=True)


def settings_for(url: str) -> Settings:
    environ = {
        "DATABASE_URL": url,
        "SECRET_KEY": SECRET_KEY,
        "FIRST_SUPERUSER": SUPERUSER_EMAIL,
        "FIRST_SUPERUSER_PASSWORD": SUPERUSER_PASSWORD,
        "ENVIRONMENT": "staging",
        "LOG_LEVEL": "WARNING",
    }
    return load_settings(environ=environ, env_file=None)


def connection_is_encrypted(url: str) -> bool:
    """Whether the service's own engine, built from `url` as start-up builds it, reaches the server over TLS."""
    engine = sqlalchemy_config(settings_for(url)).get_engine()

    async def ask() -> bool:
        try:
            async with engine.connect() as connection:
                query = text("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                return bool((await connection.execute(query)).scalar_one())
        finally:
            await engine.dispose()

    return bool(run(ask()))


@pytest.mark.parametrize(
    ("query", "encrypted"),
    [
        ("sslmode=require", True),
        ("sslmode=prefer", True),
        ("", True),  # asyncpg prefers TLS, as libpq does
        ("sslmode=disable", False),
        ("sslmode=verify-ca&sslrootcert={ca}", True),
    ],
)
def test_sslmode_is_honoured(tls_cluster: TlsCluster, query: str, encrypted: bool) -> None:
    url = tls_cluster.url(query=query.format(ca=tls_cluster.ca))
    assert connection_is_encrypted(url) is encrypted


def test_verify_full_checks_the_host_name(tls_cluster: TlsCluster) -> None:
    query = f"sslmode=verify-full&sslrootcert={tls_cluster.ca}"
    assert connection_is_encrypted(tls_cluster.url(host="localhost", query=query)) is True
    # The certificate names localhost, not 127.0.0.1.
    with pytest.raises(Exception, match=r"(?i)certificate|hostname|IP address mismatch"):
        connection_is_encrypted(tls_cluster.url(host="127.0.0.1", query=query))


def test_a_server_certificate_of_another_authority_is_refused(tls_cluster: TlsCluster) -> None:
    query = f"sslmode=verify-ca&sslrootcert={tls_cluster.other_ca}"
    with pytest.raises(Exception, match=r"(?i)certificate verify failed"):
        connection_is_encrypted(tls_cluster.url(query=query))


def test_the_service_runs_on_a_require_url(tls_cluster: TlsCluster) -> None:
    """`postgresql://…?sslmode=require`, as a hosted database hands it out: migrated, seeded and served."""
    database = f"app_{free_port()}"
    subprocess.run([POSTGRES_BIN / "createdb", "-h", "127.0.0.1", "-p", str(tls_cluster.port), "-U", "postgres",
                    database], check=True)  # fmt: skip
    url = tls_cluster.url(query="sslmode=require&application_name=accounts-tls-test").replace(
        "/postgres?", f"/{database}?"
    )
    settings = settings_for(url)
    prestart(sqlalchemy_config(settings), settings)
    with LiveServer(create_app(settings)) as server, httpx.Client(base_url=f"{server.url}/api/v1") as http:
        headers = login(http, SUPERUSER_EMAIL, SUPERUSER_PASSWORD)
        assert http.get("/users/me", headers=headers).json()["email"] == SUPERUSER_EMAIL
        assert http.get("/utils/ready").status_code == 200


def test_require_against_a_server_without_tls_is_refused() -> None:
    """The shared server has `ssl = off`: `require` must not fall back to a plain connection."""
    shared = "postgresql://postgres@127.0.0.1:5432/postgres"
    assert connection_is_encrypted(shared) is False
    with pytest.raises(Exception, match=r"(?i)ssl|rejected"):
        connection_is_encrypted(f"{shared}?sslmode=require")
