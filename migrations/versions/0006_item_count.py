"""user.item_count: how many items the user owns, kept by the database on every write of `item` (issue 23).

A normal user's page of items carried its total as `count(*) OVER ()` over the owner's index range: it read every
row the owner has (122 ms for a first page of 100 at 100,000 own items), and the superuser's page counted the whole
table. The contract's `count` is the exact total (clients page by it), so it is not capped: it is kept. Each
owner's count is one indexed row read (`SELECT item_count FROM "user" WHERE id = …`), and the total of all items
is the sum over users (a read of the user table, however many items there are).

Triggers keep it exact for every writer (the API, the template's own code, a raw statement, the cascade of a user's
delete), in the same transaction as the write, so a statement sees counts that agree with the rows it sees:

- PostgreSQL: AFTER INSERT and AFTER DELETE statement triggers with transition tables add and subtract each owner's
  rows once per statement (a bulk insert of a million items updates each owner once, not a million times); a row
  trigger on UPDATE OF owner_id (only when it changes; the API never changes it) moves one; TRUNCATE sets every
  count to 0. Concurrent writes of one owner queue on that user's row lock for the rest of their transaction, and
  READ COMMITTED re-reads the row they waited for: no increment is lost.
- SQLite (no statement triggers): row triggers; writes are serialised by the database anyway.

The UPDATE of "user" the triggers run sets only item_count, so migration 0005's triggers (UPDATE OF email,
email_key) do not fire. Rows deleted by the cascade of a user's delete find their user gone: nothing to update. On
SQLite the column is added with ALTER TABLE (no batch operation, which would rebuild the table and drop 0005's
triggers). Existing items are counted once, here.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

POSTGRESQL = [
    """
    UPDATE "user" SET item_count = owned.n
    FROM (SELECT owner_id, count(*) AS n FROM item GROUP BY owner_id) AS owned
    WHERE "user".id = owned.owner_id
    """,
    """
    CREATE FUNCTION item_count_insert() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE "user" SET item_count = "user".item_count + added.n
        FROM (SELECT owner_id, count(*) AS n FROM item_count_new GROUP BY owner_id) AS added
        WHERE "user".id = added.owner_id;
        RETURN NULL;
    END
    $$
    """,
    """
    CREATE FUNCTION item_count_delete() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE "user" SET item_count = "user".item_count - removed.n
        FROM (SELECT owner_id, count(*) AS n FROM item_count_old GROUP BY owner_id) AS removed
        WHERE "user".id = removed.owner_id;
        RETURN NULL;
    END
    $$
    """,
    """
    CREATE FUNCTION item_count_owner() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE "user" SET item_count = item_count - 1 WHERE id = OLD.owner_id;
        UPDATE "user" SET item_count = item_count + 1 WHERE id = NEW.owner_id;
        RETURN NULL;
    END
    $$
    """,
    """
    CREATE FUNCTION item_count_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE "user" SET item_count = 0 WHERE item_count <> 0;
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
    'UPDATE "user" SET item_count = (SELECT count(*) FROM item WHERE item.owner_id = "user".id)',
    """
    CREATE TRIGGER item_count_insert AFTER INSERT ON item
    BEGIN
        UPDATE "user" SET item_count = item_count + 1 WHERE id = NEW.owner_id;
    END
    """,
    """
    CREATE TRIGGER item_count_delete AFTER DELETE ON item
    BEGIN
        UPDATE "user" SET item_count = item_count - 1 WHERE id = OLD.owner_id;
    END
    """,
    """
    CREATE TRIGGER item_count_owner AFTER UPDATE OF owner_id ON item WHEN OLD.owner_id IS NOT NEW.owner_id
    BEGIN
        UPDATE "user" SET item_count = item_count - 1 WHERE id = OLD.owner_id;
        UPDATE "user" SET item_count = item_count + 1 WHERE id = NEW.owner_id;
    END
    """,
]

TRIGGERS = {
    "postgresql": ["item_count_insert", "item_count_delete", "item_count_owner", "item_count_truncate"],
    "sqlite": ["item_count_insert", "item_count_delete", "item_count_owner"],
}


def upgrade() -> None:
    op.add_column("user", sa.Column("item_count", sa.Integer(), server_default="0", nullable=False))
    dialect = op.get_bind().dialect.name
    for statement in POSTGRESQL if dialect == "postgresql" else SQLITE:
        op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for trigger in TRIGGERS[dialect]:
        op.execute(f"DROP TRIGGER {trigger} ON item" if dialect == "postgresql" else f"DROP TRIGGER {trigger}")
        if dialect == "postgresql":
            op.execute(f"DROP FUNCTION {trigger}()")
    # A plain ALTER TABLE … DROP COLUMN (SQLite ≥ 3.35), not a batch operation: 0005's triggers stay.
    op.drop_column("user", "item_count")
