"""Training history: job_metrics, one row per logged step of a job (GET /v1/jobs/<id>/metrics).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

The job row keeps only the newest progress document; the dashboard's loss charts and the metrics endpoint
need every logged step, kept where a worker crash cannot lose it. The primary key (job_id, step) is what
makes a resumed attempt's rewrite of a step replace the old row instead of adding a second one. No new
column on job_events: progress, sample, checkpoint and completed events are new values of its `kind`.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "job_metrics",
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("values", JSON, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("job_id", "step", name="pk_job_metrics"),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_job_metrics_job_id_jobs", ondelete="CASCADE"),
    )


def downgrade() -> None:
    op.drop_table("job_metrics")
