"""Evaluation during training, the registry and evaluate jobs on real parts, driven through the API: the Flask
app in-process on PostgreSQL, a real `celery worker` on the train, generate and evaluate queues, Redis, and S3
over HTTP (moto).

Two digits 32x32 training jobs with `eval_every=100` record FID and KID at every 100th step, keep their best
generator, rank by `sort=best_fid` and register their generators; an evaluate job on a registry reference
gives the same numbers twice, with the network's hash.
"""

from __future__ import annotations


import pytest

from core.auth import create_key
from core.gan.classifier import CLASSIFIERS
from tests.worker.api_client import download, wait_until_finished
from tests.worker.conftest import start_worker, stop_worker
from web import create_app

TRAIN = {"dataset": "builtin:digits", "config": {
    "img_size": 32, "img_channels": 1, "z_dim": 32, "g_channels": 16, "d_channels": 16, "batch_size": 32,
    "sample_every": 0, "checkpoint_every": 100, "eval_every": 100, "eval_num": 256, "eval_net": "auto"}}


@pytest.fixture(scope="module")
def eval_worker(settings, tmp_path_factory):
    handle = start_worker(settings, tmp_path_factory.mktemp("eval-worker") / "worker.log",
                          queues="train,generate,evaluate")
    try:
        yield handle
    finally:
        stop_worker(handle)


@pytest.fixture(scope="module")
def client(settings, session_factory):
    app = create_app(settings)
    client = app.test_client()
    with session_factory() as session:
        _, key = create_key(session, "evaluation")
        session.commit()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    yield client
    app.extensions["dcgan"]["engine"].dispose()


def test_training_with_eval_every_keeps_and_ranks_its_best_and_registers_it(eval_worker, client):
    submitted = [client.post("/v1/jobs/train", json={**TRAIN, "config": {**TRAIN["config"], "steps": steps,
                                                                          "seed": seed}}).json["id"]
                 for steps, seed in ((300, 0), (200, 1))]
    finished = [wait_until_finished(client, job_id) for job_id in submitted]
    for job in finished:
        assert job["status"] == "succeeded", job
    job = finished[0]
    points = client.get(f"/v1/jobs/{job['id']}/metrics").json["points"]
    fids = {p["step"]: p["fid"] for p in points if "fid" in p}
    assert sorted(fids) == [100, 200, 300]  # FID at each 100 steps, and nowhere else
    assert all("kid" in p for p in points if "fid" in p)
    best_step = min(fids, key=fids.get)
    assert job["best"]["step"] == best_step and job["best"]["fid"] == pytest.approx(fids[best_step])
    assert job["progress"]["fid"] == pytest.approx(fids[300])  # the final step's scores are in its progress

    # The registry: the final generator, and the best one when that was another step, as versions of "digits".
    registered = {g["source"]: g for g in job["generators"]}
    assert registered["final"]["step"] == 300 and registered["final"]["fid"] == pytest.approx(fids[300])
    if best_step != 300:
        assert registered["best"]["fid"] == pytest.approx(job["best"]["fid"])
        best = client.get(f"/v1/generators/{registered['best']['id']}").json
        assert best["lineage"]["job_id"] == job["id"] and best["lineage"]["dataset"] == "builtin:digits"
        assert len(best["lineage"]["dataset_sha256"]) == 64 and best["config"]["eval_every"] == 100
        assert download(client, f"/v1/jobs/{job['id']}/best-generator")[:8] != b""
    versions = [int(g["ref"].split(":")[1]) for f in finished for g in f["generators"]]
    assert sorted(versions) == list(range(1, len(versions) + 1))  # one name, increasing versions

    ranked = client.get("/v1/jobs", query_string={"type": "train", "sort": "best_fid"}).json["jobs"]
    assert [j["id"] for j in ranked] == [j["id"] for j in sorted(finished, key=lambda j: j["best"]["fid"])]

    # An evaluate job on a registry reference (an alias), twice: the same numbers, with the network's hash.
    final_version = int(registered["final"]["ref"].split(":")[1])
    assert client.put("/v1/generators/digits/aliases/champion", json={"version": final_version}).status_code == 200
    results = []
    for _ in range(2):
        evaluation = client.post("/v1/jobs/evaluate", json={"generator": "digits@champion",
                                                            "dataset": "builtin:digits", "num": 256})
        assert evaluation.status_code == 202, evaluation.json
        done = wait_until_finished(client, evaluation.json["id"])
        assert done["status"] == "succeeded", done
        results.append(done["result"])
        stored = download(client, f"/v1/jobs/{done['id']}/artifacts/"
                                   + next(a["id"] for a in client.get(f"/v1/jobs/{done['id']}/artifacts").json[
                                       "artifacts"] if a["name"] == "evaluation.json"))
        assert b'"feature_net_sha256"' in stored
    first, second = results
    assert (first["fid"], first["kid_mean"], first["is_mean"]) == (second["fid"], second["kid_mean"],
                                                                   second["is_mean"])
    assert first["feature_net"] == "digits" and len(first["feature_net_sha256"]) == 64
    assert first["num_samples"] == 256 and first["generator"]["id"] == registered["final"]["id"]
    # The same generator, seeds and network as the training job's last evaluation: the same FID.
    assert first["fid"] == pytest.approx(fids[300], rel=1e-6)
    listed = client.get(f"/v1/generators/{registered['final']['id']}").json["evaluations"]
    assert len(listed) == 2 and listed[0]["fid"] == first["fid"]
    assert "digits" in CLASSIFIERS
