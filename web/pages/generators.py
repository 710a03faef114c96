"""The generator pages: the registry (the tenant's versions grouped by name, each with its aliases, lineage and
scores), one version (its evaluations, and forms to generate images, score it and point an alias at it), and
the seed browser (web/static/seeds.js), which samples a version while you wait through
GET /v1/generators/<ref>/images/<seed>.png and /interpolate.

Every change goes through the /v1 API in-process (web.pages.api): an alias is set with
PUT /v1/generators/<name>/aliases/<alias> and removed with DELETE; images and scores are jobs
(POST /v1/jobs/generate, /v1/jobs/evaluate). A refused form comes back on the page it was sent from (the
registry, or the version named by its `back` field) with the API's messages beside its fields.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from flask import abort, redirect, render_template, request, url_for

from core.gan.seeds import DEFAULT_TRUNCATION, TRUNCATION_MAX
from core.request_models import MAX_LIST_LIMIT

from . import api, bp
from .jobs import DEFAULT_NROW, DEFAULT_SEEDS, dataset_names
from .new_job import dataset_choices

# The seed browser's page of thumbnails, and its truncation slider's step.
SEEDS_PER_PAGE = 16
TRUNCATION_STEP = 0.05
# Where a seed page may start: the browser's numbers are exact up to 2^53 (JavaScript's safe integers).
MAX_START_SEED = 2**53 - 1 - SEEDS_PER_PAGE
# What the interpolation form proposes (`dcgan sample --interpolate` renders 16 frames by default).
DEFAULT_FRAMES = 16


@dataclass(frozen=True)
class Group:
    """One registry name: its versions, newest first, and its aliases as (alias, version)."""

    name: str
    versions: list[dict[str, Any]]

    @property
    def aliases(self) -> list[tuple[str, int]]:
        return sorted((alias, v["version"]) for v in self.versions for alias in v["aliases"])


def grouped(versions: list[dict[str, Any]]) -> list[Group]:
    """Versions grouped by name; the API lists them newest first, so the name with the newest version leads."""
    names: dict[str, list[dict[str, Any]]] = {}
    for version in versions:
        names.setdefault(version["name"], []).append(version)
    return [Group(name, sorted(found, key=lambda v: -v["version"])) for name, found in names.items()]


def version_or_404(ref: str) -> dict[str, Any]:
    """The tenant's version that `ref` (an id, name:version or name@alias) names, with its evaluations."""
    return api.found(f"/v1/generators/{quote(ref, safe='')}", f"There is no generator {ref[:100]} here.")


def _forms(errors: dict[str, dict[str, str]] | None, values: dict[str, dict[str, str]] | None) -> dict[str, Any]:
    """What every form on a generator page needs: the defaults, the choices, and a refused form's errors and
    values keyed by form (`generate:<id>`, `evaluate:<id>`, `alias:<name>`)."""
    evaluate = api.schema("EvaluateJobRequest")["properties"]
    builtins, uploads = dataset_choices()
    return {"errors": errors or {}, "values": values or {}, "seeds": DEFAULT_SEEDS, "nrow": DEFAULT_NROW,
            "eval_num": evaluate["num"], "eval_nets": evaluate["net"]["enum"],
            "eval_net": evaluate["net"].get("default", "auto"), "builtins": builtins, "uploads": uploads,
            "dataset_names": dataset_names(), "idempotency_key": str(uuid.uuid4())}


@bp.get("/generators")
def generators(errors: dict[str, dict[str, str]] | None = None, values: dict[str, dict[str, str]] | None = None,
               status: int = 200):
    versions = api.get("/v1/generators", limit=MAX_LIST_LIMIT).body["generators"]
    return render_template("generators.html", groups=grouped(versions), shown_limit=MAX_LIST_LIMIT,
                           truncated=len(versions) >= MAX_LIST_LIMIT, **_forms(errors, values)), status


@bp.get("/generators/<ref>")
def generator(ref: str, errors: dict[str, dict[str, str]] | None = None,
              values: dict[str, dict[str, str]] | None = None, status: int = 200):
    version = version_or_404(ref)
    answer = api.get("/v1/generators", name=version["name"])
    siblings = grouped(answer.body["generators"])[0] if answer.ok and answer.body["generators"] else None
    return render_template("generator.html", version=version, asked=ref, group=siblings,
                           **_forms(errors, values)), status


def _back(errors: dict[str, dict[str, str]], values: dict[str, dict[str, str]], status: int):
    """The page a refused form came from, shown again with its errors."""
    back = request.form.get("back", "")
    if back:
        return generator(back, errors, values, status)
    return generators(errors, values, status)


def _done(anchor: str = ""):
    back = request.form.get("back", "")
    target = url_for("pages.generator", ref=back) if back else url_for("pages.generators")
    return redirect(target + (f"#{anchor}" if anchor else ""), code=303)


@bp.post("/generators/<ref>/generate")
def generate_from_generator(ref: str):
    version = version_or_404(ref)
    values = {field: request.form.get(field, "").strip() for field in ("seeds", "nrow")}
    body: dict[str, Any] = {"generator": version["ref"], "seeds": values["seeds"]}
    if values["nrow"]:
        body["nrow"] = api.typed(values["nrow"], int)
    answer = api.post("/v1/jobs/generate", body, idempotency_key=request.form.get("idempotency_key") or None)
    if answer.ok:
        return redirect(url_for("pages.job", job_id=answer.body["id"]), code=303)
    key = f"generate:{version['id']}"
    return _back({key: answer.errors() or {"": answer.detail}}, {key: values}, answer.status)


@bp.post("/generators/<ref>/evaluate")
def evaluate(ref: str):
    version = version_or_404(ref)
    values = {field: request.form.get(field, "").strip() for field in ("dataset", "num", "net")}
    body: dict[str, Any] = {"generator": version["ref"], "dataset": values["dataset"]}
    if values["num"]:
        body["num"] = api.typed(values["num"], int)
    if values["net"]:
        body["net"] = values["net"]
    answer = api.post("/v1/jobs/evaluate", body, idempotency_key=request.form.get("idempotency_key") or None)
    if answer.ok:
        return redirect(url_for("pages.job", job_id=answer.body["id"]), code=303)
    key = f"evaluate:{version['id']}"
    return _back({key: answer.errors() or {"": answer.detail}}, {key: values}, answer.status)


def _name_or_404(name: str) -> None:
    answer = api.get("/v1/generators", name=name, limit=1)
    if not answer.ok or not answer.body["generators"]:
        abort(404, f"There is no generator named {name[:100]} here.")


@bp.post("/generators/<name>/aliases")
def set_alias(name: str):
    _name_or_404(name)
    values = {field: request.form.get(field, "").strip() for field in ("alias", "version")}
    key = f"alias:{name}"
    if not values["alias"]:  # an alias is a part of the API's path: there is no request to send without one
        return _back({key: {"alias": "required"}}, {key: values}, 422)
    answer = api.call("PUT", f"/v1/generators/{quote(name, safe='')}/aliases/{quote(values['alias'], safe='')}",
                      json={"version": api.typed(values["version"], int)})
    if answer.ok:
        return _done(f"name-{name}")
    errors = answer.errors() or {"version" if answer.status == 404 else "": answer.detail}
    return _back({key: errors}, {key: values}, answer.status)


@bp.post("/generators/<name>/aliases/<alias>/delete")
def delete_alias(name: str, alias: str):
    answer = api.call("DELETE", f"/v1/generators/{quote(name, safe='')}/aliases/{quote(alias, safe='')}")
    if answer.status == 404:
        abort(404, f"There is no alias {name[:100]}@{alias[:100]} here.")
    if not answer.ok:
        abort(answer.status, answer.detail)
    return _done(f"name-{name}")


@bp.get("/generators/<ref>/browse")
def browse(ref: str):
    version = version_or_404(ref)
    start = _number(request.args.get("start"), int, 0)
    truncation = _number(request.args.get("truncation"), float, DEFAULT_TRUNCATION)
    start = min(max(start, 0), MAX_START_SEED)
    if not 0 < truncation <= TRUNCATION_MAX:
        truncation = DEFAULT_TRUNCATION
    return render_template("browse.html", version=version, asked=ref, start=start, truncation=truncation,
                           seeds=range(start, start + SEEDS_PER_PAGE), per_page=SEEDS_PER_PAGE,
                           truncation_max=TRUNCATION_MAX, truncation_step=TRUNCATION_STEP,
                           max_start=MAX_START_SEED, frames=DEFAULT_FRAMES)


def _number(text: str | None, kind: type, default: Any) -> Any:
    """A query's number for where the browser starts; anything else starts it where it would start anyway."""
    try:
        return kind(text) if text else default
    except ValueError:
        return default
