"""Operating the platform: job priorities and tombstones, usage seconds, webhook endpoints and their outbox.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02

- `jobs.priority` (0-9, default 5; higher goes first among the queued jobs of one queue) and `jobs.queue_key`,
  the order the scheduler takes queued jobs in (core.scheduling), with its index. Jobs queued before this
  revision get their creation time shifted as a priority-5 job's would be.
- `jobs.deleted_at`: a deleted finished job keeps its row as a tombstone, so its id answers the same way ever
  after; `jobs.compute_seconds` / `jobs.device`: the time its attempts ran and where (GET /v1/usage).
- `webhook_endpoints`: a tenant's receivers, the events each wants, the signing secret and, during a
  rotation, the previous one with the time it stops signing.
- `webhook_messages`: the outbox. A row per (event, endpoint), written in the transaction of the state change
  it reports; its id is the `webhook-id` header of every attempt to send it.
- `webhook_attempts`: each attempt to send a message (status, latency, error).
- `ix_job_events_kind`: GET /metrics counts lease expiries, retries and resumes from job_events at every scrape.
"""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIMESTAMP = sa.DateTime(timezone=True)
AUTO_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("priority", sa.Integer(), nullable=False, server_default="5"))
        batch.add_column(sa.Column("deleted_at", TIMESTAMP, nullable=True))
        batch.add_column(sa.Column("compute_seconds", sa.Float(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("device", sa.String(32), nullable=True))
        batch.create_check_constraint("ck_jobs_priority", sa.text("priority BETWEEN 0 AND 9"))
        batch.add_column(sa.Column("queue_key", TIMESTAMP, nullable=True))
        batch.create_index("ix_jobs_status_type_queue_key", ["status", "type", "queue_key"])
    # The key core.scheduling gives a priority-5 job: its creation time less 5 priority steps of 600 s.
    if op.get_bind().dialect.name == "postgresql":
        op.execute("UPDATE jobs SET queue_key = created_at - interval '3000 seconds'")
    else:  # SQLite keeps timestamps as text in SQLAlchemy's format: shift them in Python, in that format
        jobs = sa.table("jobs", sa.column("id", sa.Uuid()), sa.column("created_at", TIMESTAMP),
                        sa.column("queue_key", TIMESTAMP))
        connection = op.get_bind()
        for row in connection.execute(sa.select(jobs.c.id, jobs.c.created_at)).all():
            connection.execute(jobs.update().where(jobs.c.id == row.id)
                               .values(queue_key=row.created_at - timedelta(seconds=3000)))
    op.create_index("ix_job_events_kind", "job_events", ["kind"])
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("events", JSON, nullable=False),
        sa.Column("description", sa.String(500), nullable=False, server_default=""),
        sa.Column("secret", sa.String(128), nullable=False),
        sa.Column("previous_secret", sa.String(128), nullable=True),
        sa.Column("previous_secret_expires_at", TIMESTAMP, nullable=True),
        sa.Column("disabled_at", TIMESTAMP, nullable=True),
        sa.Column("disabled_reason", sa.Text(), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_endpoints"),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name="fk_webhook_endpoints_tenant_id_tenants",
                                ondelete="CASCADE"),
    )
    op.create_index("ix_webhook_endpoints_tenant_id", "webhook_endpoints", ["tenant_id"])
    op.create_table(
        "webhook_messages",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("endpoint_id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=True),
        sa.Column("event_type", sa.String(32), nullable=False),
        sa.Column("payload", JSON, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_attempt_at", TIMESTAMP, nullable=True),
        sa.Column("last_attempt_at", TIMESTAMP, nullable=True),
        sa.Column("delivered_at", TIMESTAMP, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_messages"),
        sa.ForeignKeyConstraint(["endpoint_id"], ["webhook_endpoints.id"],
                                name="fk_webhook_messages_endpoint_id_webhook_endpoints", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name="fk_webhook_messages_tenant_id_tenants",
                                ondelete="CASCADE"),
        sa.CheckConstraint("status IN ('pending', 'delivered', 'failed')", name="ck_webhook_messages_status"),
    )
    op.create_index("ix_webhook_messages_status_next_attempt_at", "webhook_messages", ["status", "next_attempt_at"])
    op.create_index("ix_webhook_messages_endpoint_id_created_at", "webhook_messages", ["endpoint_id", "created_at"])
    op.create_index("ix_webhook_messages_job_id_event_type", "webhook_messages", ["job_id", "event_type"])
    op.create_table(
        "webhook_attempts",
        sa.Column("id", AUTO_ID, nullable=False, autoincrement=True),
        sa.Column("message_id", sa.String(64), nullable=False),
        sa.Column("endpoint_id", sa.Uuid(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("at", TIMESTAMP, nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("trigger", sa.String(16), nullable=False, server_default="scheduled"),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_attempts"),
        sa.ForeignKeyConstraint(["message_id"], ["webhook_messages.id"],
                                name="fk_webhook_attempts_message_id_webhook_messages", ondelete="CASCADE"),
    )
    op.create_index("ix_webhook_attempts_message_id", "webhook_attempts", ["message_id"])
    op.create_index("ix_webhook_attempts_endpoint_id_at", "webhook_attempts", ["endpoint_id", "at"])


def downgrade() -> None:
    op.drop_table("webhook_attempts")
    op.drop_index("ix_job_events_kind", table_name="job_events")
    op.drop_table("webhook_messages")
    op.drop_index("ix_webhook_endpoints_tenant_id", table_name="webhook_endpoints")
    op.drop_table("webhook_endpoints")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_status_type_queue_key")
        batch.drop_constraint("ck_jobs_priority", type_="check")
        for column in ("queue_key", "device", "compute_seconds", "deleted_at", "priority"):
            batch.drop_column(column)
