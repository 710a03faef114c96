"""The generator registry over the API (SQLite and PostgreSQL): versions per name, name:version and name@alias
references, aliases that move, another tenant's names answering as missing, and ranking train jobs by their
best FID. Training jobs registering their generators, and evaluate jobs, run on a real worker in
tests/worker/test_evaluation.py."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import event

from core import jobs, registry
from core.db import Job, JobStatus
from tests.web.conftest import authorized_client
from tests.web.test_generators import CONFIG, upload
from tests.core.test_weights import generator_arrays, safetensors_bytes


def upload_version(api, name: str, seed: int) -> dict:
    response = upload(api, safetensors_bytes(generator_arrays(seed=seed)), CONFIG, name=name)
    assert response.status_code == 201, response.json
    return response.json


def test_uploads_of_one_name_get_increasing_versions_and_refs_resolve(api):
    first, second = upload_version(api, "faces", 1), upload_version(api, "faces", 2)
    other = upload_version(api, "other", 3)
    assert (first["version"], second["version"], other["version"]) == (1, 2, 1)
    assert api.get("/v1/generators/faces:1").json["id"] == first["id"]
    assert api.get("/v1/generators/faces:2").json["id"] == second["id"]
    assert api.get(f"/v1/generators/{second['id']}").json["ref"] == "faces:2"
    listed = api.get("/v1/generators", query_string={"name": "faces"}).json["generators"]
    assert [g["ref"] for g in listed] == ["faces:2", "faces:1"]
    for missing in ("faces:3", "faces@champion", "nobody:1", "faces:0", "faces:x", "a:b:c", "%40x"):
        response = api.get(f"/v1/generators/{missing}")
        assert response.status_code == 404 and response.mimetype == "application/problem+json", missing


def test_an_upload_without_a_name_is_named_after_its_file(api):
    response = upload(api, safetensors_bytes(generator_arrays()), CONFIG, filename="my faces v2.safetensors")
    assert response.status_code == 201 and response.json["ref"] == "my-faces-v2:1"
    refused = upload(api, safetensors_bytes(generator_arrays()), CONFIG, name="has space")
    assert refused.status_code == 422 and [e["field"] for e in refused.json["errors"]] == ["name"]


def test_an_alias_resolves_moves_and_is_removed(api):
    first, second = upload_version(api, "digits", 1), upload_version(api, "digits", 2)
    set_first = api.put("/v1/generators/digits/aliases/champion", json={"version": 1})
    assert set_first.status_code == 200 and set_first.json["aliases"] == ["champion"]
    assert api.get("/v1/generators/digits@champion").json["id"] == first["id"]
    assert api.put("/v1/generators/digits/aliases/champion", json={"version": 2}).status_code == 200
    assert api.get("/v1/generators/digits@champion").json["id"] == second["id"]  # moved
    assert api.get("/v1/generators/digits:1").json["aliases"] == []
    # Generate jobs take the reference and keep the version it named when they were submitted.
    job = api.post("/v1/jobs/generate", json={"generator": "digits@champion", "seeds": "0-3"})
    assert job.status_code == 202 and job.json["request"]["generator_id"] == second["id"]
    assert api.delete("/v1/generators/digits/aliases/champion").status_code == 204
    assert api.get("/v1/generators/digits@champion").status_code == 404
    assert api.delete("/v1/generators/digits/aliases/champion").status_code == 404


@pytest.mark.parametrize("body, field", [({"version": 9}, None), ({"version": 0}, "version"),
                                         ({"version": "1"}, "version"), ({}, "version"),
                                         ({"version": 1, "x": 1}, "x")])
def test_setting_an_alias_to_a_version_that_does_not_exist_is_refused(api, body, field):
    upload_version(api, "digits", 1)
    response = api.put("/v1/generators/digits/aliases/champion", json=body)
    assert response.status_code == (404 if field is None else 422), response.json
    if field:
        assert [e["field"] for e in response.json["errors"]] == [field]
    assert api.put("/v1/generators/digits/aliases/9lives", json={"version": 1}).status_code == 422


def test_another_tenants_names_and_aliases_are_404(api):
    mine = upload_version(api, "digits", 1)
    assert api.put("/v1/generators/digits/aliases/champion", json={"version": 1}).status_code == 200
    other = authorized_client(api.application, tenant=f"other-{uuid.uuid4().hex[:8]}")
    for ref in ("digits@champion", "digits:1", mine["id"]):
        assert other.get(f"/v1/generators/{ref}").status_code == 404, ref
        assert other.post("/v1/jobs/generate", json={"generator": ref, "seeds": "0-1"}).status_code == 422, ref
        assert other.post("/v1/jobs/evaluate", json={"generator": ref, "dataset": "builtin:digits"}).status_code \
            == 422, ref
    assert other.put("/v1/generators/digits/aliases/champion", json={"version": 1}).status_code == 404
    assert other.delete("/v1/generators/digits/aliases/champion").status_code == 404
    assert other.get("/v1/generators").json["generators"] == []
    # Their own "digits" is a name of their own, versioned from 1.
    theirs = upload(other, safetensors_bytes(generator_arrays()), CONFIG, name="digits").json
    assert theirs["version"] == 1 and api.get("/v1/generators/digits@champion").json["id"] == mine["id"]


def test_an_evaluate_job_is_queued_on_its_own_queue_with_the_version_it_named(api, redis_client):
    version = upload_version(api, "digits", 1)
    response = api.post("/v1/jobs/evaluate", json={"generator": "digits:1", "dataset": "builtin:digits",
                                                   "num": 100, "net": "digits"})
    assert response.status_code == 202, response.json
    assert response.json["type"] == "evaluate"
    assert response.json["request"] == {"generator": "digits:1", "generator_id": version["id"],
                                        "dataset": "builtin:digits", "num": 100, "net": "digits"}
    assert redis_client.llen("evaluate") == 1 and redis_client.llen("train") == 0
    for body, field in [({"dataset": "builtin:digits"}, "generator"), ({"generator": "digits:1"}, "dataset"),
                        ({"generator": "digits:1", "dataset": "builtin:nope"}, "dataset"),
                        ({"generator": "digits:1", "dataset": "builtin:digits", "num": 1}, "num"),
                        ({"generator": "digits:1", "dataset": "builtin:digits", "net": "vgg"}, "net")]:
        refused = api.post("/v1/jobs/evaluate", json=body)
        assert refused.status_code == 422 and field in [e["field"] for e in refused.json["errors"]], body


def _with_best_fid(api, fids: list[float | None]) -> list[str]:
    """Train jobs whose best evaluated FIDs are `fids` (None: never evaluated), oldest first."""
    made = []
    with api.application.extensions["dcgan"]["sessions"]() as session:
        for fid in fids:
            job = jobs.create_job(session, api.tenant_id, "train", {}, {"dataset": "builtin:digits"})
            if fid is not None:
                job.best_step, job.best_fid, job.best_kid, job.status = 100, fid, 0.1, JobStatus.SUCCEEDED
            made.append(str(job.id))
        session.commit()
    return made


def test_sort_best_fid_ranks_evaluated_runs_lowest_first_across_pages(api):
    fids = [30.5, None, 12.25, 99.0, 12.25, 7.0]
    made = _with_best_fid(api, fids)
    expected = sorted((fid, job_id) for fid, job_id in zip(fids, made) if fid is not None)
    seen, cursor = [], None
    while True:
        page = api.get("/v1/jobs", query_string={"type": "train", "sort": "best_fid", "limit": 2,
                                                 **({"cursor": cursor} if cursor else {})}).json
        seen += [(job["best"]["fid"], job["id"]) for job in page["jobs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [job_id for _, job_id in seen] == [job_id for _, job_id in sorted(expected, key=lambda p: (p[0],
                                                                                                    uuid.UUID(p[1])))]
    assert [fid for fid, _ in seen] == [7.0, 12.25, 12.25, 30.5, 99.0]
    newest_cursor = api.get("/v1/jobs", query_string={"limit": 1}).json["next_cursor"]
    bad = api.get("/v1/jobs", query_string={"sort": "best_fid", "cursor": newest_cursor})
    assert bad.status_code == 422 and [e["field"] for e in bad.json["errors"]] == ["cursor"]
    assert api.get("/v1/jobs", query_string={"sort": "worst"}).status_code == 422


def test_register_takes_the_next_version_when_a_concurrent_registration_won(api, backend):
    """Two registrations of one name racing: the loser's insert conflicts with the winner's version and it
    takes the next number, inside a savepoint, so the rest of its transaction survives. (PostgreSQL: SQLite
    has one writer at a time, so its registrations cannot interleave like this.)"""
    if backend != "postgresql":
        pytest.skip("SQLite serialises writers; the race needs PostgreSQL")
    sessions = api.application.extensions["dcgan"]["sessions"]
    fields = dict(source="upload", config={}, storage_key="k", size_bytes=0, sha256="0" * 64)
    with sessions() as winner, sessions() as loser:
        job = jobs.create_job(loser, api.tenant_id, "train", {}, {"dataset": "builtin:digits"})
        interleaved = []

        @event.listens_for(loser, "do_orm_execute")
        def _after_the_losers_read(state):
            if state.is_select and not interleaved:  # the loser has read "no versions yet": the winner commits 1
                result = state.invoke_statement()
                interleaved.append(registry.register(winner, api.tenant_id, "race", **fields))
                winner.commit()
                return result

        lost = registry.register(loser, api.tenant_id, "race", **fields)
        loser.commit()
        assert (interleaved[0].version, lost.version) == (1, 2)
        assert loser.get(Job, job.id) is not None  # the transaction around the conflict was kept
