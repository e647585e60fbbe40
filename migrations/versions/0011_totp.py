"""TOTP second factor (issue 26): a user's encrypted secret and their single-use recovery codes (digests only), and
`user.totp_enabled`, which the login reads with the user's row (false for everyone until they confirm a secret).

On SQLite the column is added with ALTER TABLE (no batch operation, which would rebuild "user" and drop the
triggers of 0005, 0006 and 0008).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from advanced_alchemy.types import GUID, DateTimeUTC
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("user", sa.Column("totp_enabled", sa.Boolean(), server_default=sa.false(), nullable=False))
    op.create_table(
        "user_totp",
        sa.Column("user_id", GUID(length=16), nullable=False),
        # Fernet tokens of the base32 secret (advanced-alchemy's EncryptedString stores them as text).
        sa.Column("secret", sa.String(), nullable=False),
        sa.Column("confirmed_at", DateTimeUTC(timezone=True), nullable=True),
        sa.Column("last_used_step", sa.Integer(), nullable=False),
        sa.Column("created_at", DateTimeUTC(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["user.id"], name=op.f("fk_user_totp_user_id_user"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_user_totp")),
    )
    op.create_table(
        "user_recovery_code",
        sa.Column("id", GUID(length=16), nullable=False),
        sa.Column("user_id", GUID(length=16), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("used_at", DateTimeUTC(timezone=True), nullable=True),
        sa.Column("created_at", DateTimeUTC(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["user.id"], name=op.f("fk_user_recovery_code_user_id_user"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_recovery_code")),
    )
    op.create_index("ix_user_recovery_code_user_id", "user_recovery_code", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_user_recovery_code_user_id", table_name="user_recovery_code")
    op.drop_table("user_recovery_code")
    op.drop_table("user_totp")
    op.drop_column("user", "totp_enabled")
