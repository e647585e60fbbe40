# Recipes for developing, testing and running the service. `just --list` shows them.
set dotenv-load := false

app := "app.main:create_app"

# Start in development (ENVIRONMENT=local unless the environment says otherwise; .env's FASTAPI_ENV=development
# agrees) on the embedded SQLite database (data/app.db; or DATABASE_URL) with migrations, first superuser,
# auto-reload, on HOST:PORT (127.0.0.1:8000).
dev:
    uv sync --quiet --compile-bytecode
    ENVIRONMENT="${ENVIRONMENT:-local}" uv run litestar --app {{app}} prestart
    @echo "API docs: http://${HOST:-127.0.0.1}:${PORT:-8000}/docs  (superuser: ${FIRST_SUPERUSER:-admin@example.com})"
    ENVIRONMENT="${ENVIRONMENT:-local}" uv run uvicorn {{app}} --factory --http app.server:HttpProtocol --reload --reload-dir app --reload-dir db --host "${HOST:-127.0.0.1}" --port "${PORT:-8000}"

# Production (unless ENVIRONMENT or FASTAPI_ENV says otherwise): wait for the database, migrate, first superuser,
# then WORKERS uvicorn workers on HOST:PORT.
serve:
    @uv sync --no-dev --inexact --compile-bytecode --quiet
    uv run --no-dev litestar --app {{app}} prestart
    uv run --no-dev uvicorn {{app}} --factory --host "${HOST:-0.0.0.0}" --port "${PORT:-8000}" --workers "${WORKERS:-2}" --loop uvloop --http app.server:HttpProtocol --no-access-log --timeout-graceful-shutdown 20

# Apply migrations up to the newest revision.
migrate:
    uv run litestar --app {{app}} database upgrade --no-prompt

# Adopt a database the full-stack-fastapi-template created, as `serve` would (README "Moving from the template");
# `just adopt --check` only lists the steps.
adopt *args:
    uv run litestar --app {{app}} adopt {{args}}

# Give a user another email, e.g. to resolve emails that differ only in case before adopting: just rename-user-email <user-id> <new-email>
rename-user-email user_id new_email:
    uv run litestar --app {{app}} rename-user-email "{{user_id}}" "{{new_email}}"

# Autogenerate a migration from the models: just makemigration "add a column"
makemigration message:
    uv run litestar --app {{app}} database make-migrations --autogenerate --no-prompt -m "{{message}}"

# The whole test suite, on PostgreSQL (TEST_DATABASE_URL) and SQLite, with coverage, in parallel processes. The
# environment may forbid writing bytecode (PYTHONDONTWRITEBYTECODE): compiled once here, each server process the
# suite starts imports in half the time. pytest's arguments pass as given: `just test -m "not system" --no-cov` is
# the in-process inner loop (no server, CLI or tool started; README "Development").
[positional-arguments]
test *args:
    uv sync --locked --compile-bytecode --quiet
    uv run pytest --numprocesses 3 --dist loadscope "$@"

# ruff, ruff format, mypy (strict on app/ and db/) and hadolint on the Containerfile.
lint:
    uv run ruff check .
    uv run ruff format --check .
    uv run mypy
    uv run hadolint Containerfile

# Format the code.
fmt:
    uv run ruff check --fix .
    uv run ruff format .

# Install the git pre-commit hooks.
hooks:
    uv run pre-commit install

# Write the OpenAPI document the app serves to a file (default: openapi.json), with Litestar's `schema openapi`.
openapi file="openapi.json":
    uv run litestar --app {{app}} schema openapi --output "{{file}}"

# Build the container image with podman (else docker); build options after the tag, e.g. --build-arg PYTHON_IMAGE=… (README "Deployment").
image tag="accounts-api:latest" *args:
    #!/usr/bin/env sh
    set -eu
    # podman's default (OCI) format silently drops HEALTHCHECK; docker's builder has only its own format.
    if command -v podman >/dev/null 2>&1; then set -- podman build --format docker; else set -- docker build; fi
    "$@" -f Containerfile -t "{{tag}}" --build-arg "BUILD_COMMIT=$(git rev-parse HEAD 2>/dev/null || true)" {{args}} .

# Rebuild the mails' HTML layout (app/templates/build/layout.html) from its MJML source (app/templates/src/layout.mjml);
# commit both.
emails:
    npx --yes mjml@4.18.0 app/templates/src/layout.mjml --output app/templates/build/ --config.validationLevel strict

# Generate a Python client (openapi-python-client) from the OpenAPI document into sdk/ (git-ignored).
sdk:
    uv run litestar --app {{app}} schema openapi --output sdk-openapi.json
    uv run openapi-python-client generate --path sdk-openapi.json --meta none --output-path sdk --overwrite
    rm -f sdk-openapi.json

# Load benchmark on PostgreSQL: `just serve` (2 workers) on every route against raw asyncpg ceilings (and a bare
# Litestar app for health), a mixed scenario and the checks, ~9 min; `--reference [NAME=]URL` (repeatable) adds other
# implementations of the API (e.g. `just bench-template june`), `--env KEY=VALUE` sets the service's environment
# (`just bench --help`; results in bench/RESULTS.md).
# Installs wrk from Debian's packages when missing.
bench *args:
    command -v wrk >/dev/null 2>&1 || apt-get install -y wrk || (apt-get update && apt-get install -y wrk)
    uv run python -m bench.run {{args}}

# bench/templates.py: checkout in bench/.templates/, venv from its uv.lock, fresh database, its prestart, `fastapi run`
# with 2 workers on 127.0.0.1:PORT (june 8101, current 8102); `--check` stops after a health check and a login.
# Serve the template's own backend, june (f459c20a) or current (68adb40d), for `just bench --reference NAME=URL`.
bench-template name *args:
    uv run python -m bench.templates {{name}} {{args}}

# Seed 1,000,000 items across 10,000 users with SQL (default database bench_large, created and migrated if missing).
bench-seed-large *args:
    uv run python -m bench.seed_large {{args}}

# PostgreSQL, Redis, the migration job, BACKEND_REPLICAS replicas of the image (`just image` first) and Caddy on
# :80/:443, with the settings of .env; podman-compose where installed, else docker compose.
# Start the compose stack (deploy/compose.yaml); `just up dev` adds a mail catcher (:8025) and `local` settings.
up *mode:
    #!/usr/bin/env sh
    set -eu
    files="-f deploy/compose.yaml"
    if [ "{{mode}}" = "dev" ]; then files="$files -f deploy/compose.dev.yaml"; fi
    if command -v podman-compose >/dev/null 2>&1; then compose=podman-compose; else compose="docker compose"; fi
    $compose $files up -d

# Stop the compose stack (the database volume stays; `just down -v` removes it too).
down *args:
    #!/usr/bin/env sh
    set -eu
    if command -v podman-compose >/dev/null 2>&1; then compose=podman-compose; else compose="docker compose"; fi
    $compose -f deploy/compose.yaml -f deploy/compose.dev.yaml down {{args}}

# Follow the compose stack's logs (or one service's: `just logs backend`).
logs *service:
    #!/usr/bin/env sh
    set -eu
    if command -v podman-compose >/dev/null 2>&1; then compose=podman-compose; else compose="docker compose"; fi
    $compose -f deploy/compose.yaml logs -f {{service}}

# The migration Job of this release runs to completion before the Deployment rolls out.
# Release to Kubernetes with kubectl: just deploy [overlay] (deploy/k8s/overlays/production by default).
deploy overlay="production":
    #!/usr/bin/env sh
    set -eu
    dir="deploy/k8s/overlays/{{overlay}}"
    kubectl kustomize "$dir" > /dev/null
    namespace=$(kubectl kustomize "$dir" | sed -n 's/^  namespace: //p' | head -n 1)
    kubectl delete job accounts-api-migrate --namespace "$namespace" --ignore-not-found
    kubectl kustomize "$dir" | kubectl apply -f - --selector app.kubernetes.io/component!=api
    kubectl wait job/accounts-api-migrate --namespace "$namespace" --for=condition=complete --timeout=300s
    kubectl kustomize "$dir" | kubectl apply -f -
    kubectl rollout status deployment/accounts-api --namespace "$namespace" --timeout=300s
