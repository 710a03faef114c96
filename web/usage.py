"""GET /v1/usage: what the tenant of the request's key uses -- stored bytes by kind, jobs by status and compute
seconds by device kind (core.usage says how each is counted)."""

from __future__ import annotations

from flask import Blueprint

from core.usage import tenant_usage

from .openapi import operation
from .resources import db
from .tenancy import tenant_id

bp = Blueprint("usage", __name__, url_prefix="/v1")


@bp.get("/usage")
@operation("the tenant's stored bytes (datasets, job artifacts, generators), jobs by status (deleted ones "
           "counted apart) and compute seconds by device kind (cpu, cuda)",
           {200: "stored_bytes, jobs and compute_seconds"})
def usage():
    return tenant_usage(db(), tenant_id())
