"""The template's own frontend, type-checked against a client generated from OUR served OpenAPI document.

The current full-stack-fastapi-template (commit TEMPLATE_COMMIT) generates its frontend's client with
@hey-api/openapi-ts from its backend's document (`bun run generate-client`, its own openapi-ts.config.ts, then
`bun run lint`, as its scripts/generate-client.sh does). Here the same generator reads the document we serve, and the
frontend must type-check against the result (`tsc -p tsconfig.build.json`, the build's check) with no error. The
client must also offer everything the template's committed client offers (the one its own backend's document
gives): the same SDK methods with the same verbs and URLs, the same types, which may differ only by what we document
beyond the template (the `HTTPError` answers of each operation, `/utils/ready`).

Nothing of the template is kept in this repository: its frontend is read from a mirror of its git repository
(TEMPLATE_MIRROR) at run time. Its dependencies are installed once per template commit with bun (from the npm
registry, as the `bun` package) into a cache under /tmp (TEMPLATE_CLIENT_CACHE), which later runs reuse.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.main import create_app
from tests.conftest import TEMPLATE_MIRROR, LiveServer, make_settings

# The template's git mirror (TEMPLATE_MIRROR), and npm to install bun.
pytestmark = pytest.mark.needs("template-mirror", "npm")

TEMPLATE_COMMIT = "68adb40d"
BUN_VERSION = "1.3.12"  # the bun the template's CI installs
CACHE = Path(os.environ.get("TEMPLATE_CLIENT_CACHE", "/tmp/template-client-cache"))
# What the frontend build needs of the template: its workspace (the frontend and the packages it names).
WORKSPACE = ["frontend", "packages", "package.json", "bun.lock"]
CLIENT = Path("frontend/src/client")

# Ours, beyond the template's client: the types of /utils/ready, our error body, and the error types of operations
# the template documents no error for (we document their authentication answers).
EXTRA_TYPES = {
    "HTTPError",
    "Readiness",
    "utilsReadyData",
    "utilsReadyError",
    "utilsReadyErrors",
    "utilsReadyResponse",
    "utilsReadyResponses",
    "loginTestTokenError",
    "loginTestTokenErrors",
    "usersDeleteUserMeError",
    "usersDeleteUserMeErrors",
    "usersReadUserMeError",
    "usersReadUserMeErrors",
    # Sessions and refresh tokens (README "Sessions and tokens"): their bodies, and each operation's five types.
    "RefreshForm",
    "SessionPublic",
    "SessionsPublic",
    "TokenPair",
    # Personal access tokens (README "Personal access tokens").
    "PersonalAccessTokenCreate",
    "PersonalAccessTokenCreated",
    "PersonalAccessTokenPublic",
    "PersonalAccessTokensPublic",
    # The audit trail (README "Audit trail").
    "AuditEventPublic",
    "AuditEventsPublic",
    # Email verification (README "Email verification").
    "VerifyEmail",
    # The TOTP second factor (README "Two-factor authentication (TOTP)").
    "TotpConfirm",
    "TotpDisable",
    "TotpEnrolment",
    "TotpRecoveryCodes",
    *(
        f"{operation}{suffix}"
        for operation in (
            "loginRefreshAccessToken",
            "usersReadSessionsMe",
            "usersDeleteSessionsMe",
            "usersDeleteSessionMe",
            "usersReadUserSessions",
            "usersDeleteUserSessions",
            "usersDeleteUserSession",
            "usersCreatePersonalAccessToken",
            "usersReadPersonalAccessTokens",
            "usersRevokePersonalAccessToken",
            "auditReadAuditEvents",
            "usersVerifyEmail",
            "usersResendVerificationEmail",
            "usersEnrolTotp",
            "usersConfirmTotp",
            "usersDisableTotp",
            "usersRemoveUserTotp",
        )
        for suffix in ("Data", "Error", "Errors", "Response", "Responses")
    ),
}
EXTRA_METHODS = {
    "UtilsService.ready": "GET /api/v1/utils/ready",
    # Sessions and refresh tokens (README "Sessions and tokens").
    "LoginService.refreshAccessToken": "POST /api/v1/login/refresh",
    "UsersService.readSessionsMe": "GET /api/v1/users/me/sessions",
    "UsersService.deleteSessionsMe": "DELETE /api/v1/users/me/sessions",
    "UsersService.deleteSessionMe": "DELETE /api/v1/users/me/sessions/{session_id}",
    "UsersService.readUserSessions": "GET /api/v1/users/{user_id}/sessions",
    "UsersService.deleteUserSessions": "DELETE /api/v1/users/{user_id}/sessions",
    "UsersService.deleteUserSession": "DELETE /api/v1/users/{user_id}/sessions/{session_id}",
    "UsersService.createPersonalAccessToken": "POST /api/v1/users/me/tokens",
    "UsersService.readPersonalAccessTokens": "GET /api/v1/users/me/tokens",
    "UsersService.revokePersonalAccessToken": "DELETE /api/v1/users/me/tokens/{token_id}",
    "AuditService.readAuditEvents": "GET /api/v1/audit",
    # Email verification (README "Email verification").
    "UsersService.verifyEmail": "POST /api/v1/users/verify-email",
    "UsersService.resendVerificationEmail": "POST /api/v1/users/verify-email/resend/{email}",
    "UsersService.enrolTotp": "POST /api/v1/users/me/totp",
    "UsersService.confirmTotp": "POST /api/v1/users/me/totp/confirm",
    "UsersService.disableTotp": "POST /api/v1/users/me/totp/disable",
    "UsersService.removeUserTotp": "DELETE /api/v1/users/{user_id}/totp",
}
# A line our client may add to a type the template's has: an error answer we document (`{"detail": "..."}`), or the
# login form's optional second factor (README "Two-factor authentication (TOTP)"), which the template's never sends.
EXTRA_LINE = re.compile(r"^((400|401|403|404|409|429|502|503): HTTPError|(otp|recovery_code)\?: string \| null);$")


def git(*args: str) -> bytes:
    return subprocess.run(["git", "-C", str(TEMPLATE_MIRROR), *args], check=True, capture_output=True).stdout


def run(command: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "PATH": f"{CACHE / 'tools/node_modules/.bin'}:{os.environ['PATH']}"}
    environ["BUN_INSTALL_CACHE_DIR"] = str(CACHE / "bun-install-cache")
    environ.pop("NODE_OPTIONS", None)
    return subprocess.run(command, cwd=cwd, env=environ, capture_output=True, text=True, timeout=timeout)


def extract(commit: str, target: Path) -> None:
    """The template's workspace files at `commit` into `target` (git archive: no checkout of the mirror)."""
    target.mkdir(parents=True, exist_ok=True)
    archive = subprocess.Popen(
        ["git", "-C", str(TEMPLATE_MIRROR), "archive", commit, *WORKSPACE], stdout=subprocess.PIPE
    )
    subprocess.run(["tar", "-x", "-C", str(target)], stdin=archive.stdout, check=True)
    assert archive.wait() == 0


def installed(commit: str) -> Path:
    """bun, and the template's workspace with its dependencies installed (lockfile-exact), cached per commit."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / "install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one install at a time, whatever runs the suite
        bun = CACHE / "tools/node_modules/.bin/bun"
        if not bun.exists():
            npm = ["npm", "install", "--prefix", str(CACHE / "tools"), "--cache", str(CACHE / "npm-cache")]
            result = run([*npm, "--no-audit", "--no-fund", f"bun@{BUN_VERSION}"], cwd=CACHE)
            assert result.returncode == 0, result.stdout + result.stderr
        workspace = CACHE / commit
        if not (workspace / ".installed").exists():
            shutil.rmtree(workspace, ignore_errors=True)
            extract(commit, workspace)
            result = run([str(bun), "install", "--frozen-lockfile"], cwd=workspace, timeout=1200)
            assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
            (workspace / ".installed").touch()
        return workspace


@pytest.fixture(scope="module")
def document() -> Iterator[bytes]:
    """The OpenAPI document as we serve it (over HTTP, from the app as `just serve` builds it)."""
    with LiveServer(create_app(make_settings("sqlite+aiosqlite:///:memory:"))) as server:
        response = httpx.get(f"{server.url}/api/v1/openapi.json")
        assert response.status_code == 200
        yield response.content


@pytest.fixture(scope="module")
def frontend(document: bytes, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The template's workspace with its client generated from our document (and formatted as the template's
    script does), its dependencies those of the cache."""
    commit = git("rev-parse", "--verify", f"{TEMPLATE_COMMIT}^{{commit}}").decode().strip()
    cached = installed(commit)
    workspace = tmp_path_factory.mktemp("template")
    extract(commit, workspace)
    (workspace / "node_modules").symlink_to(cached / "node_modules")
    (workspace / "frontend/openapi.json").write_bytes(document)
    shutil.rmtree(workspace / CLIENT)
    bun = str(CACHE / "tools/node_modules/.bin/bun")
    generated = run([bun, "run", "generate-client"], cwd=workspace / "frontend")
    assert generated.returncode == 0, generated.stdout + generated.stderr
    assert (workspace / CLIENT / "sdk.gen.ts").exists(), generated.stdout
    linted = run([bun, "run", "lint"], cwd=workspace)  # biome formats the generated files, as the script does
    assert (workspace / CLIENT / "sdk.gen.ts").exists(), linted.stdout + linted.stderr
    return workspace


def test_the_templates_frontend_type_checks_against_our_client(frontend: Path) -> None:
    checked = run(["../node_modules/.bin/tsc", "-p", "tsconfig.build.json"], cwd=frontend / "frontend")
    errors = [line for line in checked.stdout.splitlines() if "error TS" in line]
    assert errors == [], "\n".join(errors[:40])
    assert checked.returncode == 0, checked.stdout + checked.stderr


def without_comments(text: str) -> str:
    return re.sub(r"/\*\*.*?\*/", "", text, flags=re.S)


def sdk_methods(sdk: str) -> dict[str, str]:
    """`Class.method` → `VERB url` of a generated sdk.gen.ts."""
    methods: dict[str, str] = {}
    container = None
    for block in re.split(r"\n(?=\s*public static |export class )", sdk):
        if found := re.match(r"export class (\w+)", block):
            container = found.group(1)
        elif (found := re.match(r"\s*public static (\w+)<", block)) and container:
            verb = re.search(r"client\)\.(get|post|put|patch|delete)<", block)
            url = re.search(r"url: ['\"]([^'\"]+)['\"]", block)
            methods[f"{container}.{found.group(1)}"] = (
                f"{verb.group(1).upper() if verb else '?'} {url.group(1) if url else '?'}"
            )
    return methods


def type_definitions(types: str) -> dict[str, list[str]]:
    """Exported type name → the lines of its definition (doc comments left out)."""
    definitions = {}
    pattern = r"^export type (\w+) = (.*?);\n(?=\s*export |\s*\Z)"
    for found in re.finditer(pattern, without_comments(types), re.M | re.S):
        definitions[found.group(1)] = [line.strip() for line in found.group(2).splitlines() if line.strip()]
    return definitions


def committed(name: str) -> str:
    return git("show", f"{TEMPLATE_COMMIT}:{CLIENT / name}").decode()


def test_our_client_offers_everything_the_templates_does(frontend: Path) -> None:
    ours = sdk_methods((frontend / CLIENT / "sdk.gen.ts").read_text())
    theirs = sdk_methods(committed("sdk.gen.ts"))
    assert len(theirs) == 23
    assert {name: ours.get(name) for name in theirs} == theirs
    assert {name: ours[name] for name in ours.keys() - theirs.keys()} == EXTRA_METHODS

    our_types = type_definitions((frontend / CLIENT / "types.gen.ts").read_text())
    their_types = type_definitions(committed("types.gen.ts"))
    assert len(their_types) > 100
    assert our_types.keys() - their_types.keys() == EXTRA_TYPES
    assert their_types.keys() <= our_types.keys()
    differences = {}
    for name, theirs_lines in their_types.items():
        kept = [line for line in our_types[name] if line in theirs_lines or not EXTRA_LINE.match(line)]
        if kept != theirs_lines:
            differences[name] = {"template": theirs_lines, "ours": our_types[name]}
    assert differences == {}
