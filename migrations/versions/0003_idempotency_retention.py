"""Idempotency records expire: an index on their age, for the reaper's delete, and no more unique
(tenant_id, idempotency_key) on jobs.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28

A record answers its Idempotency-Key for `DCGAN_IDEMPOTENCY_HOURS` (24 h) at least; the reaper then deletes
it, so the table holds about one day of keyed requests instead of every one ever made. After that the key
is free: a new request with it makes a new job, which the constraint on jobs would refuse. Within the window
the record's primary key (tenant_id, key), written in the job's transaction, keeps the key to one job.
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_idempotency_records_created_at", "idempotency_records", ["created_at"])
    with op.batch_alter_table("jobs") as batch:  # SQLite rebuilds the table
        batch.drop_constraint("uq_jobs_tenant_id_idempotency_key", type_="unique")


def downgrade() -> None:
    # Fails if a key was reused after its record expired: two jobs share it, which the old schema forbids.
    with op.batch_alter_table("jobs") as batch:
        batch.create_unique_constraint("uq_jobs_tenant_id_idempotency_key", ["tenant_id", "idempotency_key"])
    op.drop_index("ix_idempotency_records_created_at", table_name="idempotency_records")
