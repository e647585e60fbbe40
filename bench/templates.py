"""Serve one generation of full-stack-fastapi-template's own backend, for `just bench --reference NAME=URL`.

    uv run python -m bench.templates <june|current> [PORT] [--workers 2] [--check] [--keep-database]

Checks out the generation's commit of the template's git mirror (TEMPLATE_MIRROR, or TPL_MIRROR as the e2e harness
names it; default the `fetch` of github:fastapi/full-stack-fastapi-template) into bench/.templates/<name>/ (its
backend/, workspace pyproject.toml and uv.lock; no .env, so nothing but the environment below configures it),
makes its venv there with uv from its own lock, creates a fresh database bench_template_<name> on the bench's
PostgreSQL (BENCH_POSTGRES_DSN, default postgresql://postgres@127.0.0.1:5432/postgres), runs its own prestart
(backend/scripts/prestart.sh: wait for the database, alembic upgrade head, first superuser admin@example.com /
changethis) and serves it as its Dockerfile does (`fastapi run`, here with --workers 2 on 127.0.0.1:PORT). Once it
answers a health check and a login, it prints `ready` and serves until Ctrl-C / SIGTERM, then drops its database.
`--check`: stop right after that smoke test (exit 0 when it passed).

Generations (the e2e harness's two, /work/shared/tools/template-e2e):
- june: f459c20a (2026-06-16), ENVIRONMENT/POSTGRES_* settings, requires Python >= 3.10.
- current: 68adb40d (2026-08-21, after 0.12.0), FASTAPI_ENV/DATABASE_URL settings, requires Python >= 3.14; with
  only a 3.13 at hand its lock's versions are installed with `uv pip install -c` into a 3.13 venv and the scratch
  copy is patched for 3.13 (requires-python; one PEP 758 `except A, B:`; one annotation PEP 649 defers), as the
  e2e harness does. The report says which.

Both run in the template's development mode (ENVIRONMENT=local / FASTAPI_ENV=development): the only mode in which it
accepts the superuser password changethis; it changes nothing on the request path but adding the /private route.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench import seed_large

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".templates"
HOST = "127.0.0.1"
DEFAULT_MIRROR = Path("/work/.mirror/fastapi+full-stack-fastapi-template/repo")
SUPERUSER = "admin@example.com"
PASSWORD = "changethis"
# Settings of either generation: dropped from the inherited environment, so that only what is set here counts.
TEMPLATE_SETTINGS = re.compile(
    r"^(PROJECT_NAME|SECRET_KEY|ENVIRONMENT|FASTAPI_ENV|DATABASE_URL|POSTGRES_.*|SMTP_.*|EMAILS?_.*|FIRST_SUPERUSER.*"
    r"|BACKEND_CORS_ORIGINS|FRONTEND_HOST|SENTRY_DSN|ACCESS_TOKEN_EXPIRE_MINUTES|VIRTUAL_ENV|UV_PROJECT_ENVIRONMENT)$"
)


@dataclass(frozen=True)
class Generation:
    name: str
    commit: str
    port: int

    def settings(self, database: str) -> dict[str, str]:
        if self.name == "june":
            return {
                "ENVIRONMENT": "local",
                "POSTGRES_SERVER": HOST,
                "POSTGRES_PORT": "5432",
                "POSTGRES_USER": "postgres",
                "POSTGRES_PASSWORD": "",
                "POSTGRES_DB": database,
            }
        return {"FASTAPI_ENV": "development", "DATABASE_URL": f"postgresql://postgres@{HOST}:5432/{database}"}


GENERATIONS = {
    "june": Generation("june", "f459c20a173cf629b3d57b5b2e2de290d96b5698", 8101),
    "current": Generation("current", "68adb40d37425f6f8668ec7e5a054500d045e43e", 8102),
}


def say(text: str) -> None:
    print(f"bench-template: {text}", flush=True)


def run(command: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
    say("$ " + " ".join(command))
    subprocess.run(command, cwd=cwd, env=env, check=True)


def mirror() -> Path:
    for candidate in (os.environ.get("TEMPLATE_MIRROR"), os.environ.get("TPL_MIRROR"), str(DEFAULT_MIRROR)):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    raise SystemExit(
        "no template mirror: set TEMPLATE_MIRROR to the git dir that the search tool's fetch of "
        "github:fastapi/full-stack-fastapi-template gives"
    )


def checkout(generation: Generation, folder: Path) -> None:
    """The commit's backend/, pyproject.toml and uv.lock in `folder` (kept while the commit is the same)."""
    stamp = folder / ".commit"
    if stamp.is_file() and stamp.read_text().strip() == generation.commit and (folder / ".requires-python").is_file():
        return
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "--git-dir", str(mirror()), "archive", generation.commit, "backend", "pyproject.toml", "uv.lock"],
        capture_output=True,
        check=True,
    )
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    # As the commit says it: patching the copy for an older Python (below) must not change what it requires.
    spec = tomllib.loads((folder / "backend/pyproject.toml").read_text())["project"]["requires-python"]
    (folder / ".requires-python").write_text(spec)
    stamp.write_text(generation.commit + "\n")
    say(f"checked out {generation.commit[:8]} into {folder}")


def version_of(python: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run(
            [python, "-c", "import sys; print(*sys.version_info[:2])"], capture_output=True, text=True, check=True
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        return None
    return int(out[0]), int(out[1])


def interpreters() -> list[str]:
    """Pythons on this machine: on PATH, uv's, pyenv's."""
    found = [shutil.which(f"python3.{minor}") for minor in range(16, 9, -1)]
    for minor in range(16, 9, -1):
        uv = subprocess.run(["uv", "python", "find", f"3.{minor}"], capture_output=True, text=True, check=False)
        found.append(uv.stdout.strip() if uv.returncode == 0 else None)
    found += [str(p) for p in sorted(Path.home().glob(".pyenv/versions/3.*/bin/python3.*")) if p.name[-1].isdigit()]
    return list(dict.fromkeys(p for p in found if p))


def pick_python(minimum: tuple[int, int], given: str | None) -> tuple[str, tuple[int, int]]:
    """The given Python, else the newest one that meets `minimum`, else the newest 3.13 (patched for below)."""
    candidates = [given] if given else interpreters()
    versions = [(python, v) for python in candidates if (v := version_of(python))]
    if not versions:
        raise SystemExit(f"no usable Python among {candidates}")
    versions.sort(key=lambda pair: pair[1], reverse=True)
    if given or versions[0][1] >= minimum:
        return versions[0]
    fallback = [pair for pair in versions if pair[1] >= (3, 13)]
    if not fallback:
        raise SystemExit(f"the template needs Python >= {minimum[0]}.{minimum[1]} (or 3.13, patched); found {versions}")
    return fallback[0]


def patch_for_313(backend: Path) -> None:
    """What the current template's code needs of 3.14 that 3.13 lacks (as the e2e harness patches it)."""
    pyproject = backend / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('requires-python = ">=3.14,<4.0"', 'requires-python = ">=3.13"'))
    deps = backend / "app/api/deps.py"
    deps.write_text(
        deps.read_text().replace(
            "except InvalidTokenError, ValidationError:", "except (InvalidTokenError, ValidationError):"
        )
    )
    models = backend / "app/models.py"
    models.write_text(
        models.read_text().replace("    items: list[Item] = Relationship", '    items: list["Item"] = Relationship')
    )


def venv(folder: Path, given_python: str | None) -> tuple[Path, str]:
    """The generation's venv (folder/.venv) from its uv.lock, and a description of how it was made."""
    backend = folder / "backend"
    spec = (folder / ".requires-python").read_text()
    low = re.search(r">=\s*(\d+)\.(\d+)", spec)
    minimum = (int(low.group(1)), int(low.group(2))) if low else (3, 10)
    python, version = pick_python(minimum, given_python)
    patched = version < minimum
    how = f"Python {version[0]}.{version[1]} ({python}), " + (
        f"lock's versions pinned with uv pip install -c, code patched for 3.13 (it requires {spec})"
        if patched
        else "uv sync --frozen of its uv.lock"
    )
    stamp = folder / ".venv-ok"
    if stamp.is_file() and stamp.read_text() == how:
        return folder / ".venv", how
    shutil.rmtree(folder / ".venv", ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "UV_PROJECT"))}
    if not patched:
        run(["uv", "sync", "--frozen", "--no-dev", "--package", "app", "--python", python], cwd=folder, env=env)
    else:
        say(f"NOTE: no Python >= {minimum[0]}.{minimum[1]} here; using {python} with the scratch copy patched")
        patch_for_313(backend)
        lock = tomllib.loads((folder / "uv.lock").read_text())
        pins = [f"{p['name']}=={p['version']}" for p in lock["package"] if "registry" in p.get("source", {})]
        (backend / "constraints.txt").write_text("\n".join(pins) + "\n")
        run(["uv", "venv", "--python", python, str(folder / ".venv")], env=env)
        run(
            ["uv", "pip", "install", "--python", str(folder / ".venv/bin/python"), "-c", "constraints.txt", "-e", "."],
            cwd=backend,
            env=env,
        )
    stamp.write_text(how)
    return folder / ".venv", how


def smoke(url: str, password: str) -> str:
    """A health check and a login of the superuser, or SystemExit."""
    with httpx.Client(base_url=url, timeout=30) as client:
        health = client.get("/api/v1/utils/health-check/")
        login = client.post("/api/v1/login/access-token", data={"username": SUPERUSER, "password": password})
        if health.status_code != 200 or login.status_code != 200:
            raise SystemExit(f"smoke test failed: health {health.status_code}, login {login.status_code} {login.text}")
        me = client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {login.json()['access_token']}"})
        me.raise_for_status()
    return f"health-check {health.status_code} {health.text}, login {login.status_code}, users/me {me.json()['email']}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", choices=sorted(GENERATIONS))
    parser.add_argument("port", nargs="?", type=int, help="default: june 8101, current 8102")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--commit", help="another commit of the mirror for this generation's settings")
    parser.add_argument("--python", help="the interpreter for its venv (default: the newest it accepts)")
    parser.add_argument("--check", action="store_true", help="stop after the smoke test (health check, login)")
    parser.add_argument("--keep-database", action="store_true", help="do not drop its database at the end")
    args = parser.parse_args()
    generation = GENERATIONS[args.name]
    if args.commit:
        generation = Generation(generation.name, args.commit, generation.port)
    port = args.port or generation.port
    folder = CACHE / generation.name
    checkout(generation, folder)
    environment, how = venv(folder, args.python)

    database = f"bench_template_{generation.name}"
    asyncio.run(seed_large.admin_execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
    asyncio.run(seed_large.admin_execute(f'CREATE DATABASE "{database}"'))
    env = {k: v for k, v in os.environ.items() if not TEMPLATE_SETTINGS.match(k)}
    env.update(
        PATH=f"{environment / 'bin'}:{env.get('PATH', '')}",
        VIRTUAL_ENV=str(environment),
        PROJECT_NAME="Full Stack FastAPI Project",
        SECRET_KEY=secrets.token_urlsafe(32),
        FIRST_SUPERUSER=SUPERUSER,
        FIRST_SUPERUSER_PASSWORD=PASSWORD,
        **generation.settings(database),
    )
    backend = folder / "backend"
    server: subprocess.Popen[bytes] | None = None
    try:
        run(["bash", "scripts/prestart.sh"], cwd=backend, env=env)
        command = ["fastapi", "run", "--host", HOST, "--port", str(port), "--workers", str(args.workers), "app/main.py"]
        say("$ " + " ".join(command))
        server = subprocess.Popen(command, cwd=backend, env=env, start_new_session=True)
        url = f"http://{HOST}:{port}"
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                raise SystemExit(f"the template's backend exited with {server.returncode}")
            try:
                checked = smoke(url, PASSWORD)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise SystemExit("the template's backend did not answer in 120 s") from None
                time.sleep(0.5)
        info = {"url": url, "commit": generation.commit, "how": how, "workers": args.workers, "database": database}
        (folder / "serving.json").write_text(json.dumps(info) + "\n")
        say(f"smoke: {checked}")
        say(f"ready: {url} = template {generation.name} {generation.commit[:8]}, {args.workers} workers, {how}")
        if args.check:
            return
        signal.signal(signal.SIGTERM, lambda *_: os.killpg(server.pid, signal.SIGTERM) if server else None)
        with contextlib.suppress(KeyboardInterrupt):
            server.wait()
    finally:
        (folder / "serving.json").unlink(missing_ok=True)
        if server is not None and server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
        if not args.keep_database:
            asyncio.run(seed_large.admin_execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
    sys.exit(0)


if __name__ == "__main__":
    main()
