"""The generator registry: names with increasing versions, movable aliases, and references to them.

Every generator a tenant can sample is a version of a name (core.db.Generator): uploads (POST /v1/generators)
and the final and best generators of each succeeded training job (registered by the worker in the same
transaction that marks the job succeeded). A *reference* names one version wherever a generator is accepted:

    <uuid>            the version's id
    <name>:<version>  e.g. digits:3
    <name>@<alias>    e.g. digits@champion -- whatever version the alias points at when the reference is read

Names and aliases are limited to letters, digits and `._-` (a name starts with a letter or digit, an alias
with a letter), so `:` and `@` can only be the separators and a reference parses one way. Another tenant's
names resolve exactly as names that do not exist. Torch-free: the API and the worker both use it.
"""

from __future__ import annotations

import re
import uuid
from typing import Any, NamedTuple

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.db import Artifact, Generator, GeneratorAlias, Job, upsert_insert, utcnow

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
ALIAS_RE = re.compile(r"[A-Za-z][A-Za-z0-9._-]{0,63}")
NAME_RULE = "1-100 letters, digits and ._- starting with a letter or digit"
ALIAS_RULE = "1-64 letters, digits and ._- starting with a letter"
MAX_VERSION = 2**31 - 1
_REGISTER_TRIES = 5


class Ref(NamedTuple):
    """A parsed reference: exactly one of `id`, `version` (with `name`) and `alias` (with `name`) is set."""

    id: uuid.UUID | None = None
    name: str | None = None
    version: int | None = None
    alias: str | None = None


def registry_name(text: str | None, fallback: str = "generator") -> str:
    """A usable registry name made from a file or dataset name: `faces v2.safetensors` -> `faces-v2`."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", (text or "").removesuffix(".safetensors")).strip("-._")[:100]
    return cleaned or fallback


def parse_ref(text: str) -> Ref | None:
    """The reference `text` spells, or None when it spells none (the caller answers 404 / 422)."""
    if not isinstance(text, str) or len(text) > 200:
        return None
    try:
        return Ref(id=uuid.UUID(text)) if len(text) == 36 else _named(text)
    except ValueError:
        return _named(text)


def _named(text: str) -> Ref | None:
    if "@" in text:
        name, _, alias = text.partition("@")
        return Ref(name=name, alias=alias) if NAME_RE.fullmatch(name) and ALIAS_RE.fullmatch(alias) else None
    name, _, version = text.partition(":")
    if NAME_RE.fullmatch(name) and version.isascii() and version.isdigit() and 0 < int(version) <= MAX_VERSION:
        return Ref(name=name, version=int(version))
    return None


def resolve(session: Session, tenant_id: uuid.UUID, text: str) -> Generator | None:
    """The tenant's generator version that `text` references now, or None."""
    ref = parse_ref(text)
    if ref is None:
        return None
    if ref.id is not None:
        row = session.get(Generator, ref.id)
        return row if row is not None and row.tenant_id == tenant_id else None
    if ref.version is not None:
        return session.scalars(select(Generator).where(Generator.tenant_id == tenant_id, Generator.name == ref.name,
                                                       Generator.version == ref.version)).one_or_none()
    return session.scalars(select(Generator).join(GeneratorAlias, GeneratorAlias.generator_id == Generator.id)
                           .where(GeneratorAlias.tenant_id == tenant_id, GeneratorAlias.name == ref.name,
                                  GeneratorAlias.alias == ref.alias)).one_or_none()


def is_immutable(text: str) -> bool:
    """Whether the reference always names the same version (an id or name:version; an alias moves)."""
    ref = parse_ref(text)
    return ref is not None and ref.alias is None


def register(session: Session, tenant_id: uuid.UUID, name: str, **fields: Any) -> Generator:
    """Add the next version of `name` for the tenant (1 for a new name); `fields` are the row's other
    columns. Two registrations of one name at once get different versions: the loser of the unique
    (tenant, name, version) constraint tries again with the next number, inside a savepoint so the caller's
    transaction survives."""
    if not NAME_RE.fullmatch(name):
        raise ValueError(f"name {name!r}: {NAME_RULE}")
    for _ in range(_REGISTER_TRIES):
        version = 1 + session.scalar(select(func.coalesce(func.max(Generator.version), 0))
                                     .where(Generator.tenant_id == tenant_id, Generator.name == name))
        row = Generator(id=fields.pop("id", None) or uuid.uuid4(), tenant_id=tenant_id, name=name, version=version,
                        created_at=utcnow(), **fields)
        try:
            with session.begin_nested():
                session.add(row)
        except IntegrityError:
            fields["id"] = row.id
            continue
        return row
    raise RuntimeError(f"could not allocate a version of {name!r} after {_REGISTER_TRIES} tries")


def set_alias(session: Session, tenant_id: uuid.UUID, name: str, alias: str, generator_id: uuid.UUID) -> None:
    """Point `name@alias` at a version of `name` (creating the alias or moving it)."""
    now = utcnow()
    statement = upsert_insert(session)(GeneratorAlias).values(tenant_id=tenant_id, name=name, alias=alias,
                                                              generator_id=generator_id, updated_at=now)
    session.execute(statement.on_conflict_do_update(
        index_elements=[GeneratorAlias.tenant_id, GeneratorAlias.name, GeneratorAlias.alias],
        set_={"generator_id": generator_id, "updated_at": now}))


def delete_alias(session: Session, tenant_id: uuid.UUID, name: str, alias: str) -> bool:
    row = session.get(GeneratorAlias, (tenant_id, name, alias))
    if row is None:
        return False
    session.delete(row)
    session.flush()
    return True


def aliases_by_generator(session: Session, generator_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[str]]:
    """The aliases pointing at each of these versions, sorted."""
    found: dict[uuid.UUID, list[str]] = {}
    if generator_ids:
        rows = session.execute(select(GeneratorAlias.generator_id, GeneratorAlias.alias)
                               .where(GeneratorAlias.generator_id.in_(generator_ids))
                               .order_by(GeneratorAlias.alias))
        for generator_id, alias in rows:
            found.setdefault(generator_id, []).append(alias)
    return found


def of_job(session: Session, tenant_id: uuid.UUID, job_id: uuid.UUID) -> list[Generator]:
    """The versions a training job registered, in version order."""
    return list(session.scalars(select(Generator).where(Generator.tenant_id == tenant_id, Generator.job_id == job_id)
                                .order_by(Generator.version)))


def default_name(dataset_reference: str, dataset_display_name: str | None = None) -> str:
    """A training job's registry name when its request gives none: the dataset's name (`builtin:digits` ->
    `digits`; an uploaded dataset's display name without its archive suffix)."""
    if dataset_reference.startswith("builtin:"):
        return registry_name(dataset_reference.removeprefix("builtin:"))
    stem = re.sub(r"(\.tar\.gz|\.tgz|\.tar|\.zip)$", "", dataset_display_name or "", flags=re.IGNORECASE)
    return registry_name(stem, "dataset")


def register_job_generators(session: Session, job: Job, dataset_sha256: str | None,
                            final_scores: dict[str, Any] | None) -> list[Generator]:
    """Register a succeeded training job's final generator, and its best one when that is another step, as
    the next versions of the job's name. Called in the transaction that marks the job succeeded."""
    name = job.request.get("name") or default_name(job.request.get("dataset", ""))
    artifacts = {a.key.rsplit("/", 1)[-1]: a for a in session.scalars(select(Artifact).where(
        Artifact.job_id == job.id, Artifact.name.in_(("generator.safetensors", "best-generator.safetensors"))))}
    lineage = dict(tenant_id=job.tenant_id, job_id=job.id, config=job.config, dataset=job.request.get("dataset"),
                   dataset_sha256=dataset_sha256)
    registered = []
    final = artifacts.get("generator.safetensors")
    if final is not None:
        scores = final_scores or {}
        if job.best_step is not None and job.best_step == final.step:
            scores = {"fid": job.best_fid, "kid": job.best_kid}
        registered.append(register(session, name=name, source="final", step=final.step, storage_key=final.key,
                                   size_bytes=final.size, sha256=final.sha256, fid=scores.get("fid"),
                                   kid=scores.get("kid"), **lineage))
    best = artifacts.get("best-generator.safetensors")
    if best is not None and job.best_step is not None and (final is None or job.best_step != final.step):
        registered.append(register(session, name=name, source="best", step=job.best_step, storage_key=best.key,
                                   size_bytes=best.size, sha256=best.sha256, fid=job.best_fid, kid=job.best_kid,
                                   **lineage))
    return registered
