"""Reliability and uploads: uploaded generators, generate jobs that use them, and the reaper's bookkeeping.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28

`jobs.published_at` / `publish_count` let the reaper re-send the task message of a job that stays queued
(a Redis restart or flush loses messages; the job row does not), with a growing pause between sends.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "generators",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("config", JSON, nullable=False),
        sa.Column("storage_key", sa.String(1024), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_generators"),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name="fk_generators_tenant_id_tenants"),
    )
    op.create_index("ix_generators_tenant_id_created_at_id", "generators", ["tenant_id", "created_at", "id"])
    # batch_alter_table: SQLite can add a foreign key only by rebuilding the table.
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("generator_id", sa.Uuid(), nullable=True))
        batch.add_column(sa.Column("published_at", TIMESTAMP, nullable=True))
        batch.add_column(sa.Column("publish_count", sa.Integer(), nullable=False, server_default="0"))
        batch.create_foreign_key("fk_jobs_generator_id_generators", "generators", ["generator_id"], ["id"],
                                 ondelete="SET NULL")
        batch.create_index("ix_jobs_generator_id", ["generator_id"])
        batch.create_index("ix_jobs_status_published_at", ["status", "published_at"])
    with op.batch_alter_table("jobs") as batch:
        batch.alter_column("publish_count", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_status_published_at")
        batch.drop_index("ix_jobs_generator_id")
        batch.drop_constraint("fk_jobs_generator_id_generators", type_="foreignkey")
        batch.drop_column("publish_count")
        batch.drop_column("published_at")
        batch.drop_column("generator_id")
    op.drop_index("ix_generators_tenant_id_created_at_id", table_name="generators")
    op.drop_table("generators")
