"""What a request may see: the tenant it acts for (set by web.auth from its API key) and lookups scoped to it.

Another tenant's rows answer exactly as rows that do not exist: None here, 404 or 422 at the API.
"""

from __future__ import annotations

import uuid
from typing import Callable, TypeVar

from flask import g, request
from sqlalchemy import select

from .resources import db

T = TypeVar("T")


def get_by_id(model: type[T], raw_id: str, belongs: Callable[[T], bool]) -> T | None:
    """The row of `model` with id `raw_id` if it exists and `belongs` (its tenant, its job) says it is
    visible here; None for a malformed id, a missing row or someone else's row alike (no existence oracle)."""
    try:
        row = db().get(model, uuid.UUID(str(raw_id)))
    except ValueError:
        return None
    return row if row is not None and belongs(row) else None


def newest_of_tenant(model: type[T], limit: int = 200) -> list[T]:
    """The request's tenant's rows of `model` (datasets, generators), newest first."""
    return list(db().scalars(select(model).where(model.tenant_id == tenant_id())
                             .order_by(model.created_at.desc(), model.id.desc()).limit(limit)))


def tenant_id() -> uuid.UUID:
    """The tenant a request acts for: the owner of its API key, set by web.auth before the view runs."""
    if "tenant_id" not in g:
        raise RuntimeError(f"{request.path} acts for a tenant but is not behind web.auth's API key check")
    return g.tenant_id
