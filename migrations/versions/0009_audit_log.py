"""Audit events stored (issue 26): the table the service appends its audit events to, in batches, after the answers.

Append-only: on PostgreSQL and SQLite a trigger refuses any UPDATE of a row, whoever sends it. DELETE stays allowed:
the service's retention pruning (AUDIT_RETENTION_DAYS) deletes the oldest rows in bounded batches.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from advanced_alchemy.types import GUID, DateTimeUTC
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

TRIGGER = "audit_event_append_only"

POSTGRESQL = [
    """
    CREATE FUNCTION audit_event_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'audit_event is append-only';
    END
    $$
    """,
    "CREATE TRIGGER audit_event_append_only BEFORE UPDATE ON audit_event "
    "FOR EACH ROW EXECUTE FUNCTION audit_event_append_only()",
]

SQLITE = [
    """
    CREATE TRIGGER audit_event_append_only BEFORE UPDATE ON audit_event
    BEGIN
        SELECT RAISE(ABORT, 'audit_event is append-only');
    END
    """,
]


def upgrade() -> None:
    op.create_table(
        "audit_event",
        sa.Column("id", GUID(length=16), nullable=False),
        sa.Column("event", sa.String(length=50), nullable=False),
        sa.Column("subject_id", GUID(length=16), nullable=True),
        sa.Column("actor_id", GUID(length=16), nullable=True),
        sa.Column("details", sa.Text(), nullable=False),
        sa.Column("created_at", DateTimeUTC(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_event")),
    )
    op.create_index("ix_audit_event_created_at", "audit_event", ["created_at"])
    op.create_index("ix_audit_event_subject_id_created_at", "audit_event", ["subject_id", "created_at"])
    op.create_index("ix_audit_event_actor_id_created_at", "audit_event", ["actor_id", "created_at"])
    for statement in POSTGRESQL if op.get_bind().dialect.name == "postgresql" else SQLITE:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP TRIGGER {TRIGGER} ON audit_event")
        op.execute(f"DROP FUNCTION {TRIGGER}()")
    else:
        op.execute(f"DROP TRIGGER {TRIGGER}")
    op.drop_index("ix_audit_event_actor_id_created_at", table_name="audit_event")
    op.drop_index("ix_audit_event_subject_id_created_at", table_name="audit_event")
    op.drop_index("ix_audit_event_created_at", table_name="audit_event")
    op.drop_table("audit_event")
