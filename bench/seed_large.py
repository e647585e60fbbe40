"""Seed a large data set straight with SQL: 10,000 users (`seed<N>@bench.example.com`, all with the password
`bench-seed-password`) owning 1,000,000 items, 100 each, interleaved in the table the way real traffic writes.

    uv run python -m bench.seed_large [--database bench_large] [--users 10000] [--items 1000000]

The database is created and migrated (the service's own `prestart`) when it does not exist; seeding is skipped
when the users are already there. Used by `just bench-seed-large` and by `just bench --large`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import time
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
ADMIN_DSN = os.environ.get("BENCH_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
SEED_PASSWORD = "bench-seed-password"
# argon2id with the service's parameters (RFC 9106 low memory) of SEED_PASSWORD: seeded users can log in, and
# their hash does not need a rehash.
SEED_HASH = "$argon2id$v=19$m=65536,t=3,p=4$BDySffUAdMsecwDD72lIaA$nJ0kMf7xsIiqjtfY+ztigaxvA8jIu9MsDwhRneZkj+E"
EMAIL_DOMAIN = "bench.example.com"


def seed_email(n: int) -> str:
    return f"seed{n}@{EMAIL_DOMAIN}"


def dsn_for(database: str) -> str:
    return ADMIN_DSN.rsplit("/", 1)[0] + "/" + database


def sqlalchemy_url(dsn: str) -> str:
    return dsn.replace("postgresql://", "postgresql+asyncpg://", 1)


async def admin_execute(sql: str) -> None:
    connection = await asyncpg.connect(ADMIN_DSN)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


async def vacuum(dsn: str) -> None:
    """VACUUM ANALYZE the whole database of `dsn` (outside a transaction, as VACUUM must be)."""
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute("VACUUM (ANALYZE)")
    finally:
        await connection.close()


async def database_exists(database: str) -> bool:
    connection = await asyncpg.connect(ADMIN_DSN)
    try:
        return bool(await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database))
    finally:
        await connection.close()


def migrate(dsn: str) -> None:
    """The service's own prestart: migrations and the first superuser."""
    env = {
        **os.environ,
        "DATABASE_URL": sqlalchemy_url(dsn),
        "ENVIRONMENT": "local",
        "LOG_LEVEL": "WARNING",
        "FIRST_SUPERUSER": "admin@example.com",
        "FIRST_SUPERUSER_PASSWORD": "bench-admin-password",
    }
    subprocess.run(
        ["uv", "run", "--no-dev", "litestar", "--app", "app.main:create_app", "prestart"], cwd=ROOT, env=env, check=True
    )


async def seed(dsn: str, users: int = 10_000, items: int = 1_000_000) -> float:
    """Insert the users and items unless they exist; returns the seconds it took (0 when skipped)."""
    connection = await asyncpg.connect(dsn)
    try:
        present = await connection.fetchval('SELECT count(*) FROM "user" WHERE email LIKE $1', f"seed%@{EMAIL_DOMAIN}")
        if present >= users:
            return 0.0
        started = time.perf_counter()
        async with connection.transaction():
            # The addresses are ASCII and lowercase, so their identity (db/identity.py's email_key) is the address.
            await connection.execute(
                """
                INSERT INTO "user" (id, email, email_key, is_active, is_superuser, full_name, hashed_password,
                                    token_version, created_at)
                SELECT gen_random_uuid(), 'seed' || n || '@' || $1, 'seed' || n || '@' || $1, true, false,
                       'Seed user ' || n, $2, 0, now() - interval '30 days' + n * interval '1 second'
                FROM generate_series(1, $3::int) AS n
                ON CONFLICT DO NOTHING
                """,
                EMAIL_DOMAIN,
                SEED_HASH,
                users,
            )
            await connection.execute(
                f"""
                CREATE TEMP TABLE seed_owner ON COMMIT DROP AS
                SELECT id, row_number() OVER (ORDER BY created_at) - 1 AS slot
                FROM "user" WHERE email LIKE 'seed%@{EMAIL_DOMAIN}'
                """
            )
            await connection.execute("CREATE INDEX ON seed_owner (slot)")
            # Item n belongs to owner n % users: each user's items are spread over the whole table.
            await connection.execute(
                """
                INSERT INTO item (id, title, description, owner_id, created_at)
                SELECT gen_random_uuid(), 'Seeded item ' || n, 'Item number ' || n || ' of the large data set',
                       seed_owner.id, now() - interval '20 days' + n * interval '1 millisecond'
                FROM generate_series(0, $1::int - 1) AS n
                JOIN seed_owner ON seed_owner.slot = n % $2::int
                ORDER BY n
                """,
                items,
                users,
            )
        await connection.execute('ANALYZE "user"')
        await connection.execute("ANALYZE item")
        return time.perf_counter() - started
    finally:
        await connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", default="bench_large", help="database name (created when missing)")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--items", type=int, default=1_000_000)
    args = parser.parse_args()
    dsn = dsn_for(args.database)
    if not asyncio.run(database_exists(args.database)):
        asyncio.run(admin_execute(f'CREATE DATABASE "{args.database}"'))
    migrate(dsn)
    seconds = asyncio.run(seed(dsn, args.users, args.items))
    if seconds:
        print(f"seeded {args.users} users and {args.items} items into {args.database} in {seconds:.1f} s")
    else:
        print(f"{args.database} already holds the seeded users: nothing to do")
    print(f"serve it with DATABASE_URL={sqlalchemy_url(dsn)}; log in as {seed_email(1)} / {SEED_PASSWORD}")


if __name__ == "__main__":
    main()
