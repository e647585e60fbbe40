"""One identity per account: user.email_key, computed in Python (db/identity.py), replaces lower(email).

PostgreSQL's lower() and Python's disagreed (`İ`, final sigma, and SQLite folds ASCII only), so an address could
block another's signup and log in as it. Existing rows get their key from the same function the service uses; rows
that would share one are listed and the upgrade refused, with nothing changed.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from advanced_alchemy.types import GUID
from alembic import op

from db.adopt import RENAME_COMMAND, AdoptionError, accounts_sharing_an_email, duplicate_listing
from db.identity import email_identity

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# As in db/models.py when this revision was written.
EMAIL_KEY_LENGTH = 1536


def upgrade() -> None:
    connection = op.get_bind()
    # Refused before the first change, so SQLite (whose batch operations copy tables) is left as it was too.
    if groups := accounts_sharing_an_email(connection):
        raise AdoptionError(
            f"cannot upgrade to revision 0004: {len(groups)} email address(es) belong to several accounts each, and "
            "this service now has one account per address, whatever its case or Unicode form (README: Emails and "
            "identity):\n"
            + duplicate_listing(groups)
            + f"\nGive all but one account of each group another email ({RENAME_COMMAND}), then upgrade again. "
            "Nothing was changed"
        )
    op.drop_index("ix_user_email_lower", table_name="user")
    with op.batch_alter_table("user") as batch_op:
        batch_op.add_column(sa.Column("email_key", sa.String(length=EMAIL_KEY_LENGTH), nullable=True))
    user = sa.table("user", sa.column("id", GUID()), sa.column("email", sa.String()), sa.column("email_key"))
    keys = [
        {"user_id": row.id, "key": email_identity(row.email)}
        for row in connection.execute(sa.select(user.c.id, user.c.email))
    ]
    if keys:
        connection.execute(
            user.update().where(user.c.id == sa.bindparam("user_id")).values(email_key=sa.bindparam("key")), keys
        )
    with op.batch_alter_table("user") as batch_op:
        batch_op.alter_column("email_key", existing_type=sa.String(length=EMAIL_KEY_LENGTH), nullable=False)
    op.create_index("ix_user_email_key", "user", ["email_key"], unique=True)


def downgrade() -> None:
    # Fails if two emails share a lower(email) (PostgreSQL folds `İ` to `i`): rename one first.
    op.drop_index("ix_user_email_key", table_name="user")
    with op.batch_alter_table("user") as batch_op:
        batch_op.drop_column("email_key")
    op.create_index("ix_user_email_lower", "user", [sa.text("lower(email)")], unique=True)
