"""Liveness and readiness (/healthz: the process answers; /readyz: what a request needs) and the OpenAPI
document at /v1/openapi.json.

Readiness checks are added as the platform grows (database, broker, storage); each is a named callable
on `app.config["READINESS_CHECKS"]` that raises on failure, so /readyz names what is down.
"""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from .openapi import openapi_document, operation
from .problems import UNAVAILABLE_RETRY_AFTER_SECONDS, Problem

bp = Blueprint("health", __name__)


@bp.get("/healthz")
@operation("the process answers", {200: "ok"})
def healthz():
    return jsonify(status="ok")


@bp.get("/readyz")
@operation("database, broker and storage reachable", {200: "ready"}, problems=(503,))
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
@operation("this document", {200: "ok"})
def openapi():
    if "OPENAPI" not in current_app.config:  # the routes do not change once the app is built
        current_app.config["OPENAPI"] = openapi_document(current_app)
    return jsonify(current_app.config["OPENAPI"])
