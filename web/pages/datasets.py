"""The datasets page: the tenant's uploads, each with what can be done with it next (train on it)."""

from __future__ import annotations

from flask import render_template

from . import api, bp


@bp.get("/datasets")
def datasets():
    return render_template("datasets.html", datasets=api.get("/v1/datasets").body["datasets"])
