# Recipes for developing, testing and running the service. `just --list` shows them.
set dotenv-load := false

app := "app.main:create_app"

# Start on the embedded SQLite database (data/app.db; or DATABASE_URL) with migrations, first superuser, auto-reload, on HOST:PORT (127.0.0.1:8000).
dev:
    uv sync --quiet
    uv run litestar --app {{app}} prestart
    @echo "API docs: http://${HOST:-127.0.0.1}:${PORT:-8000}/docs  (superuser: ${FIRST_SUPERUSER:-admin@example.com})"
    uv run uvicorn {{app}} --factory --http app.server:HttpProtocol --reload --reload-dir app --reload-dir db --host "${HOST:-127.0.0.1}" --port "${PORT:-8000}"

# Production style: wait for the database, migrate, first superuser, then WORKERS uvicorn workers on HOST:PORT.
serve:
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

# The whole test suite, on PostgreSQL (TEST_DATABASE_URL) and SQLite, with coverage.
test *args:
    uv run pytest {{args}}

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

# Write the OpenAPI document to a file (default: openapi.json).
openapi file="openapi.json":
    uv run python -m app.openapi {{file}}

# Build the container image with podman or docker.
image tag="accounts-api:latest":
    #!/usr/bin/env sh
    set -eu
    if command -v podman >/dev/null 2>&1; then tool=podman; else tool=docker; fi
    "$tool" build -f Containerfile -t "{{tag}}" .

# Rebuild the HTML emails (app/templates/build/*.html) from their MJML sources (app/templates/src/*.mjml); commit both.
emails:
    npx --yes mjml@4.18.0 app/templates/src/*.mjml --output app/templates/build/ --config.validationLevel strict

# Generate a Python client (openapi-python-client) from the OpenAPI document into sdk/ (git-ignored).
sdk:
    uv run python -m app.openapi sdk-openapi.json
    uv run openapi-python-client generate --path sdk-openapi.json --meta none --output-path sdk --overwrite
    rm -f sdk-openapi.json

# Load benchmark on PostgreSQL: `just serve` (2 workers) against a raw asyncpg ceiling, wrk scenarios and checks
# (`just bench --help`; results in bench/RESULTS.md). Installs wrk from Debian's packages when missing.
bench *args:
    command -v wrk >/dev/null 2>&1 || apt-get install -y wrk || (apt-get update && apt-get install -y wrk)
    uv run python -m bench.run {{args}}

# Seed 1,000,000 items across 10,000 users with SQL (default database bench_large, created and migrated if missing).
bench-seed-large *args:
    uv run python -m bench.seed_large {{args}}
