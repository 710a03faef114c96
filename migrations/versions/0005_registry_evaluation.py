"""Evaluation and the generator registry: evaluate jobs, a job's best generator, versions and aliases.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

- `jobs.type` may be `evaluate`; `jobs.best_step / best_fid / best_kid` hold a train job's best evaluated
  step (GET /v1/jobs?sort=best_fid ranks by it, hence the index), `jobs.result` an evaluate job's scores.
- `generators` becomes the registry: `version` per (tenant, name), `source` (upload / final / best) and the
  lineage of a job's generator (job, step, dataset and its content hash, FID / KID). Existing uploads become
  versions 1, 2, ... of their name in upload order; names that a reference cannot spell (`name:version`,
  `name@alias`) are rewritten with core.registry's rule.
- `generator_aliases`: movable labels on versions.
"""

from __future__ import annotations

import re
from collections import defaultdict

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIMESTAMP = sa.DateTime(timezone=True)
TYPES_BEFORE = "type IN ('train', 'generate')"
TYPES_AFTER = "type IN ('train', 'generate', 'evaluate')"


def _registry_name(name: str) -> str:
    # The rule of core.registry.registry_name as it was at this revision (a migration must not change
    # with later code).
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", name.removesuffix(".safetensors")).strip("-._")[:100]
    return cleaned or "generator"


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint("ck_jobs_type", type_="check")
        batch.create_check_constraint("ck_jobs_type", sa.text(TYPES_AFTER))
        batch.add_column(sa.Column("best_step", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("best_fid", sa.Float(), nullable=True))
        batch.add_column(sa.Column("best_kid", sa.Float(), nullable=True))
        batch.add_column(sa.Column("result", JSON, nullable=True))
        batch.create_index("ix_jobs_tenant_id_best_fid_id", ["tenant_id", "best_fid", "id"])
    with op.batch_alter_table("generators") as batch:
        batch.add_column(sa.Column("version", sa.Integer(), nullable=False, server_default="1"))
        batch.add_column(sa.Column("source", sa.String(16), nullable=False, server_default="upload"))
        batch.add_column(sa.Column("job_id", sa.Uuid(), nullable=True))
        batch.add_column(sa.Column("step", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("dataset", sa.String(100), nullable=True))
        batch.add_column(sa.Column("dataset_sha256", sa.String(64), nullable=True))
        batch.add_column(sa.Column("fid", sa.Float(), nullable=True))
        batch.add_column(sa.Column("kid", sa.Float(), nullable=True))
        batch.create_index("ix_generators_job_id", ["job_id"])
    connection = op.get_bind()
    rows = connection.execute(sa.text("SELECT id, tenant_id, name FROM generators ORDER BY created_at, id")).all()
    versions: dict[tuple, int] = defaultdict(int)
    for row in rows:
        name = _registry_name(row.name)
        versions[(row.tenant_id, name)] += 1
        connection.execute(sa.text("UPDATE generators SET name = :name, version = :version WHERE id = :id"),
                           {"name": name, "version": versions[(row.tenant_id, name)], "id": row.id})
    with op.batch_alter_table("generators") as batch:
        batch.alter_column("version", server_default=None)
        batch.alter_column("source", server_default=None)
        batch.create_unique_constraint("uq_generators_tenant_id_name_version", ["tenant_id", "name", "version"])
    op.create_table(
        "generator_aliases",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("alias", sa.String(64), nullable=False),
        sa.Column("generator_id", sa.Uuid(), nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "name", "alias", name="pk_generator_aliases"),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name="fk_generator_aliases_tenant_id_tenants",
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["generator_id"], ["generators.id"],
                                name="fk_generator_aliases_generator_id_generators", ondelete="CASCADE"),
    )
    op.create_index("ix_generator_aliases_generator_id", "generator_aliases", ["generator_id"])


def downgrade() -> None:
    op.drop_index("ix_generator_aliases_generator_id", table_name="generator_aliases")
    op.drop_table("generator_aliases")
    with op.batch_alter_table("generators") as batch:
        batch.drop_constraint("uq_generators_tenant_id_name_version", type_="unique")
        batch.drop_index("ix_generators_job_id")
        for column in ("kid", "fid", "dataset_sha256", "dataset", "step", "job_id", "source", "version"):
            batch.drop_column(column)
    op.execute("DELETE FROM jobs WHERE type = 'evaluate'")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_tenant_id_best_fid_id")
        for column in ("result", "best_kid", "best_fid", "best_step"):
            batch.drop_column(column)
        batch.drop_constraint("ck_jobs_type", type_="check")
        batch.create_check_constraint("ck_jobs_type", sa.text(TYPES_BEFORE))
