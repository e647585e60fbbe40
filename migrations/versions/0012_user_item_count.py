"""user_item_count: each user's item count moves from `user.item_count` to a table of its own (issue 23's counter).

Migration 0006 kept the count in the user's row. Every INSERT of an item checks its foreign key with a KEY SHARE
lock on the owner's row, and the count's trigger then UPDATEs that same row: under concurrent inserts by one user,
PostgreSQL has to record the share lockers and the updater together in a MultiXact for every update (the sessions
wait on MultiXactMemberSLRU and on each other's transaction ids), and item creation fell below the template's rate,
which keeps no count at all. In a table of its own, the counter's row is locked only by the counter's updates, and
the foreign-key checks on "user" share their lock with nobody who writes: on a scratch copy, single-row inserts at
concurrency 32 went from 700-1076/s to 1915/s. The user row stays free of the counter's updates.

- user_item_count: one row per user who has (or had) items; a user without a row owns none (the readers coalesce to
  0). Deleted with its user. Filled here once from the items that exist.
- PostgreSQL: the same triggers as 0006, writing the new table. The AFTER INSERT statement trigger upserts each
  owner's rows once per statement (INSERT … ON CONFLICT DO UPDATE: the first item of a user makes their row); AFTER
  DELETE subtracts with an UPDATE only (the cascade of a user's delete may already have removed their counter:
  nothing to do); the row trigger on UPDATE OF owner_id moves one; TRUNCATE empties the table. Concurrent writes of
  one owner queue on the counter's row lock, and READ COMMITTED re-reads the row they waited for (ON CONFLICT re-checks
  it): no increment is lost.
- SQLite: row triggers doing the same (INSERT … ON CONFLICT DO UPDATE needs SQLite ≥ 3.24).

The column is dropped with ALTER TABLE … DROP COLUMN (SQLite ≥ 3.35), not a batch operation, which on SQLite would
rebuild "user" and drop the triggers of 0005 and 0008. The downgrade puts 0006's column and triggers back, the column
filled from this table.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-08
"""

import importlib.util
from pathlib import Path
from types import ModuleType

import sqlalchemy as sa
from advanced_alchemy.types import GUID
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def _migration_0006() -> ModuleType:
    """Migration 0006, loaded from its file (the versions directory is no package): its trigger names (kept here) and
    the statements that made its triggers and functions, which the downgrade runs again."""
    spec = importlib.util.spec_from_file_location("_migration_0006", Path(__file__).with_name("0006_item_count.py"))
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


previous = _migration_0006()

POSTGRESQL = [
    """
    INSERT INTO user_item_count (user_id, item_count)
    SELECT owner_id, count(*) FROM item GROUP BY owner_id
    """,
    """
    CREATE FUNCTION item_count_insert() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO user_item_count (user_id, item_count)
        SELECT owner_id, count(*) FROM item_count_new GROUP BY owner_id
        ON CONFLICT (user_id) DO UPDATE SET item_count = user_item_count.item_count + EXCLUDED.item_count;
        RETURN NULL;
    END
    $$
    """,
    """
    CREATE FUNCTION item_count_delete() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE user_item_count SET item_count = user_item_count.item_count - removed.n
        FROM (SELECT owner_id, count(*) AS n FROM item_count_old GROUP BY owner_id) AS removed
        WHERE user_item_count.user_id = removed.owner_id;
        RETURN NULL;
    END
    $$
    """,
    """
    CREATE FUNCTION item_count_owner() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE user_item_count SET item_count = item_count - 1 WHERE user_id = OLD.owner_id;
        INSERT INTO user_item_count (user_id, item_count) VALUES (NEW.owner_id, 1)
        ON CONFLICT (user_id) DO UPDATE SET item_count = user_item_count.item_count + 1;
        RETURN NULL;
    END
    $$
    """,
    """
    CREATE FUNCTION item_count_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        DELETE FROM user_item_count;
        RETURN NULL;
    END
    $$
    """,
    "CREATE TRIGGER item_count_insert AFTER INSERT ON item REFERENCING NEW TABLE AS item_count_new "
    "FOR EACH STATEMENT EXECUTE FUNCTION item_count_insert()",
    "CREATE TRIGGER item_count_delete AFTER DELETE ON item REFERENCING OLD TABLE AS item_count_old "
    "FOR EACH STATEMENT EXECUTE FUNCTION item_count_delete()",
    "CREATE TRIGGER item_count_owner AFTER UPDATE OF owner_id ON item FOR EACH ROW "
    "WHEN (OLD.owner_id IS DISTINCT FROM NEW.owner_id) EXECUTE FUNCTION item_count_owner()",
    "CREATE TRIGGER item_count_truncate AFTER TRUNCATE ON item FOR EACH STATEMENT EXECUTE FUNCTION item_count_truncate()",
]

SQLITE = [
    """
    INSERT INTO user_item_count (user_id, item_count)
    SELECT owner_id, count(*) FROM item GROUP BY owner_id
    """,
    """
    CREATE TRIGGER item_count_insert AFTER INSERT ON item
    BEGIN
        INSERT INTO user_item_count (user_id, item_count) VALUES (NEW.owner_id, 1)
        ON CONFLICT (user_id) DO UPDATE SET item_count = item_count + 1;
    END
    """,
    """
    CREATE TRIGGER item_count_delete AFTER DELETE ON item
    BEGIN
        UPDATE user_item_count SET item_count = item_count - 1 WHERE user_id = OLD.owner_id;
    END
    """,
    """
    CREATE TRIGGER item_count_owner AFTER UPDATE OF owner_id ON item WHEN OLD.owner_id IS NOT NEW.owner_id
    BEGIN
        UPDATE user_item_count SET item_count = item_count - 1 WHERE user_id = OLD.owner_id;
        INSERT INTO user_item_count (user_id, item_count) VALUES (NEW.owner_id, 1)
        ON CONFLICT (user_id) DO UPDATE SET item_count = item_count + 1;
    END
    """,
]

# The downgrade's: 0006's column filled from this table, before 0006's triggers are made again.
BACKFILL_USER = {
    "postgresql": """
    UPDATE "user" SET item_count = user_item_count.item_count
    FROM user_item_count WHERE "user".id = user_item_count.user_id
    """,
    "sqlite": """
    UPDATE "user" SET item_count = coalesce(
        (SELECT item_count FROM user_item_count WHERE user_item_count.user_id = "user".id), 0
    )
    """,
}


def drop_triggers(dialect: str) -> None:
    for trigger in previous.TRIGGERS[dialect]:
        op.execute(f"DROP TRIGGER {trigger} ON item" if dialect == "postgresql" else f"DROP TRIGGER {trigger}")
        if dialect == "postgresql":
            op.execute(f"DROP FUNCTION {trigger}()")


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.create_table(
        "user_item_count",
        sa.Column("user_id", GUID(length=16), nullable=False),
        sa.Column("item_count", sa.Integer(), server_default="0", nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["user.id"], name=op.f("fk_user_item_count_user_id_user"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_user_item_count")),
    )
    drop_triggers(dialect)
    for statement in POSTGRESQL if dialect == "postgresql" else SQLITE:
        op.execute(statement)
    # A plain ALTER TABLE … DROP COLUMN (SQLite ≥ 3.35), not a batch operation: the triggers on "user" stay.
    op.drop_column("user", "item_count")


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    drop_triggers(dialect)
    op.add_column("user", sa.Column("item_count", sa.Integer(), server_default="0", nullable=False))
    op.execute(BACKFILL_USER[dialect])
    # 0006's statements without their first, the backfill from a count of the items (done above, from this table).
    for statement in (previous.POSTGRESQL if dialect == "postgresql" else previous.SQLITE)[1:]:
        op.execute(statement)
    op.drop_table("user_item_count")
