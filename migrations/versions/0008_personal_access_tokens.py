"""Personal access tokens (issue 25): a user's tokens for SDKs, CLIs and CI jobs, kept by their digest only.

A deactivation ends them: a row trigger on "user" (UPDATE OF is_active, from true to false) sets `revoked_at` on
the user's unrevoked tokens, in the statement that deactivates, for every writer (the API, the template's code, a
raw statement). So the deactivation route stays one statement, and a reactivation does not bring them back. A
password change leaves them alone. The tokens go with their user (ON DELETE CASCADE).

It depends on nothing of 0007 (sessions). On SQLite the trigger is created on the table as it is: a later revision that rebuilds "user" there
(batch_alter_table) must create it again, as 0005's.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from advanced_alchemy.types import GUID, DateTimeUTC
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TRIGGER = "personal_access_token_revoke"

POSTGRESQL = [
    """
    CREATE FUNCTION personal_access_token_revoke() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE personal_access_token SET revoked_at = now() WHERE user_id = NEW.id AND revoked_at IS NULL;
        RETURN NULL;
    END
    $$
    """,
    'CREATE TRIGGER personal_access_token_revoke AFTER UPDATE OF is_active ON "user" FOR EACH ROW '
    "WHEN (OLD.is_active AND NOT NEW.is_active) EXECUTE FUNCTION personal_access_token_revoke()",
]

# The time as SQLAlchemy's SQLite DATETIME text, `YYYY-MM-DD HH:MM:SS.ffffff` in UTC, as DateTimeUTC stores it
# (`%f` is `SS.SSS`: its milliseconds, padded to microseconds).
SQLITE = [
    """
    CREATE TRIGGER personal_access_token_revoke AFTER UPDATE OF is_active ON "user"
    WHEN OLD.is_active AND NOT NEW.is_active
    BEGIN
        UPDATE personal_access_token
        SET revoked_at = strftime('%Y-%m-%d %H:%M:%S', 'now') || '.' || substr(strftime('%f', 'now'), 4) || '000'
        WHERE user_id = NEW.id AND revoked_at IS NULL;
    END
    """,
]


def upgrade() -> None:
    op.create_table(
        "personal_access_token",
        sa.Column("id", GUID(length=16), nullable=False),
        sa.Column("user_id", GUID(length=16), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("scope", sa.String(length=10), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("last_used_at", DateTimeUTC(timezone=True), nullable=True),
        sa.Column("expires_at", DateTimeUTC(timezone=True), nullable=False),
        sa.Column("revoked_at", DateTimeUTC(timezone=True), nullable=True),
        sa.Column("created_at", DateTimeUTC(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["user.id"], name=op.f("fk_personal_access_token_user_id_user"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_personal_access_token")),
    )
    op.create_index("ix_personal_access_token_user_id_created_at", "personal_access_token", ["user_id", "created_at"])
    op.create_index("ix_personal_access_token_digest", "personal_access_token", ["digest"], unique=True)
    for statement in POSTGRESQL if op.get_bind().dialect.name == "postgresql" else SQLITE:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f'DROP TRIGGER {TRIGGER} ON "user"')
        op.execute(f"DROP FUNCTION {TRIGGER}()")
    else:
        op.execute(f"DROP TRIGGER {TRIGGER}")
    op.drop_index("ix_personal_access_token_digest", table_name="personal_access_token")
    op.drop_index("ix_personal_access_token_user_id_created_at", table_name="personal_access_token")
    op.drop_table("personal_access_token")
