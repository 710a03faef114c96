"""Liveness and readiness (/healthz: the process answers; /readyz: what a request needs) and the OpenAPI
document at /v1/openapi.json.

Readiness checks are added as the platform grows (database, broker, storage); each is a named callable
on `app.config["READINESS_CHECKS"]` that raises on failure, so /readyz names what is down.
"""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from .problems import UNAVAILABLE_RETRY_AFTER_SECONDS, Problem
from .schemas import openapi_document

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    failures = {}
    for name, check in current_app.config.get("READINESS_CHECKS", {}).items():
        try:
            check()
        except Exception as exc:  # each check's failure is reported by name, not raised
            failures[name] = f"{exc.__class__.__name__}: {(str(exc).splitlines() or [''])[0][:200]}"
    if failures:
        raise Problem(503, f"not ready: {', '.join(sorted(failures))} unavailable", checks=failures,
                      headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER_SECONDS)})
    return jsonify(status="ready")


@bp.get("/v1/openapi.json")
def openapi():
    return jsonify(openapi_document())
