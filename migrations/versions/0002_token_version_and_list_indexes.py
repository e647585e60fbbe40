"""Token revocation counter and the indexes the list queries need.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("user") as batch_op:
        batch_op.add_column(sa.Column("token_version", sa.Integer(), server_default="0", nullable=False))
    op.create_index("ix_user_created_at", "user", ["created_at"])
    op.create_index("ix_item_created_at", "item", ["created_at"])
    op.create_index("ix_item_owner_id_created_at", "item", ["owner_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_item_owner_id_created_at", table_name="item")
    op.drop_index("ix_item_created_at", table_name="item")
    op.drop_index("ix_user_created_at", table_name="user")
    with op.batch_alter_table("user") as batch_op:
        batch_op.drop_column("token_version")
