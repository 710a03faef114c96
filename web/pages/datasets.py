"""The datasets and generators pages: the tenant's uploads, each with what can be done with it next (train
on a dataset; generate images from an uploaded generator)."""

from __future__ import annotations

import uuid
from typing import Any

from flask import abort, redirect, render_template, request, url_for

from . import api, bp
from .jobs import DEFAULT_NROW, DEFAULT_SEEDS


@bp.get("/datasets")
def datasets():
    return render_template("datasets.html", datasets=api.get("/v1/datasets").body["datasets"])


@bp.get("/generators")
def generators(errors: dict[str, dict[str, str]] | None = None, status: int = 200):
    return render_template("generators.html", generators=api.get("/v1/generators").body["generators"],
                           errors=errors or {}, seeds=DEFAULT_SEEDS, nrow=DEFAULT_NROW,
                           idempotency_key=str(uuid.uuid4())), status


@bp.post("/generators/<generator_id>/generate")
def generate_from_upload(generator_id: str):
    if not api.get(f"/v1/generators/{generator_id}").ok:
        abort(404, f"There is no generator {generator_id[:100]} here.")
    body: dict[str, Any] = {"generator": generator_id, "seeds": request.form.get("seeds", "").strip()}
    if nrow := request.form.get("nrow", "").strip():
        body["nrow"] = api.typed(nrow, int)
    answer = api.post("/v1/jobs/generate", body, idempotency_key=request.form.get("idempotency_key") or None)
    if answer.ok:
        return redirect(url_for("pages.job", job_id=answer.body["id"]), code=303)
    return generators({generator_id: answer.errors() or {"": answer.detail}}, answer.status)
