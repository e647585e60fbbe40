"""Sessions (issue 25): a row per login, which its access token names (`sid`), so one login can be listed and ended.

- user_session: one row per login; the index (user_id, created_at) serves a user's list, newest first.
- user.kept_session_id: the session that changed its own password survives the token_version bump (the role
  kept_token_digest played for tokens; that column stays, for the legacy tokens below).
- One legacy session per existing user (id = db.models.legacy_session_id(user id), computed here in Python, as the
  app computes it for a token without `sid`): the tokens already issued, the template's and ours, belong to it
  and keep working until it ends or expires (8 days from now, the default token lifetime). Where a user's
  kept_token_digest is set, their kept session is that legacy session.

On SQLite the columns are added with ALTER TABLE (no batch operation, which would rebuild "user" and drop the
triggers of 0005 and 0006).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from advanced_alchemy.types import GUID, DateTimeUTC
from alembic import op

from db.models import LEGACY_SESSION_LABEL, legacy_session_id

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

LEGACY_LIFETIME = timedelta(days=8)
BATCH = 1000


def upgrade() -> None:
    op.create_table(
        "user_session",
        sa.Column("id", GUID(length=16), nullable=False),
        sa.Column("user_id", GUID(length=16), nullable=False),
        sa.Column("last_used_at", DateTimeUTC(timezone=True), nullable=False),
        sa.Column("expires_at", DateTimeUTC(timezone=True), nullable=False),
        sa.Column("ended_at", DateTimeUTC(timezone=True), nullable=True),
        sa.Column("label", sa.String(length=100), nullable=False),
        sa.Column("client_network", sa.String(length=50), nullable=False),
        sa.Column("token_version", sa.Integer(), nullable=False),
        sa.Column("refresh_digest", sa.String(length=64), nullable=True),
        sa.Column("refresh_generation", sa.Integer(), nullable=False),
        sa.Column("legacy", sa.Boolean(), nullable=False),
        sa.Column("created_at", DateTimeUTC(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["user.id"], name=op.f("fk_user_session_user_id_user"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_session")),
    )
    op.create_index("ix_user_session_user_id_created_at", "user_session", ["user_id", "created_at"], unique=False)
    op.add_column("user", sa.Column("kept_session_id", GUID(length=16), nullable=True))

    users = sa.table(
        "user",
        sa.column("id", GUID(length=16)),
        sa.column("token_version", sa.Integer()),
        sa.column("kept_token_digest", sa.String()),
        sa.column("kept_session_id", GUID(length=16)),
    )
    sessions = sa.table(
        "user_session",
        *(sa.column(name, GUID(length=16)) for name in ("id", "user_id")),
        *(sa.column(name, DateTimeUTC(timezone=True)) for name in ("created_at", "last_used_at", "expires_at")),
        sa.column("label", sa.String()),
        sa.column("client_network", sa.String()),
        *(sa.column(name, sa.Integer()) for name in ("token_version", "refresh_generation")),
        sa.column("legacy", sa.Boolean()),
    )
    connection = op.get_bind()
    now = datetime.now(UTC)
    rows = connection.execute(sa.select(users.c.id, users.c.token_version, users.c.kept_token_digest)).all()
    legacy = [
        {
            "id": legacy_session_id(user_id),
            "user_id": user_id,
            "created_at": now,
            "last_used_at": now,
            "expires_at": now + LEGACY_LIFETIME,
            "label": LEGACY_SESSION_LABEL,
            "client_network": "",
            "token_version": token_version,
            "refresh_generation": 0,
            "legacy": True,
        }
        for user_id, token_version, _ in rows
    ]
    kept = [{"user_id": user_id, "session_id": legacy_session_id(user_id)} for user_id, _, digest in rows if digest]
    for start in range(0, len(legacy), BATCH):
        connection.execute(sessions.insert(), legacy[start : start + BATCH])
    if kept:
        keep = (
            users.update()
            .where(users.c.id == sa.bindparam("user_id"))
            .values(kept_session_id=sa.bindparam("session_id"))
        )
        connection.execute(keep, kept)


def downgrade() -> None:
    op.drop_column("user", "kept_session_id")
    op.drop_index("ix_user_session_user_id_created_at", table_name="user_session")
    op.drop_table("user_session")
