"""Email verification (issue 26): `user.is_verified`, whether the owner proved the address is theirs.

Every account that exists when it runs (and every row a writer that knows only the template's columns inserts) is
verified: the server default is true. The service stores False for a signup and an email change (README "Email
verification").

A plain ALTER TABLE on both engines, not a batch operation: on SQLite the triggers of 0005, 0006 and 0008 on
"user" stay as they are.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("user", sa.Column("is_verified", sa.Boolean(), server_default=sa.true(), nullable=False))


def downgrade() -> None:
    # ALTER TABLE … DROP COLUMN on SQLite too (≥ 3.35): no trigger names the column.
    op.drop_column("user", "is_verified")
