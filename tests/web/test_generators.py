"""POST/GET /v1/generators and generate jobs that name an uploaded generator, on SQLite and PostgreSQL with
the real Redis broker and a LocalStore. The worker side is tests/worker/test_generators.py; hostile uploads
are rows of tests/web/test_hostile.py."""

from __future__ import annotations

import hashlib
import io
import json
import uuid

import pytest

from core import jobs
from core.db import Generator, Job, Tenant
from core.storage import uploaded_generator_key
from tests.core.test_weights import TINY, generator_arrays, safetensors_bytes

CONFIG = {**TINY, "steps": 10}


def other_tenant_generator(api) -> uuid.UUID:
    """A generator row of a tenant that is not the client's."""
    with api.application.extensions["dcgan"]["sessions"]() as session:
        tenant = Tenant(id=uuid.uuid4(), name=f"other-{uuid.uuid4().hex[:8]}")
        row = Generator(id=uuid.uuid4(), tenant_id=tenant.id, name="theirs", config=CONFIG,
                        storage_key=uploaded_generator_key(tenant.id, uuid.uuid4()), size_bytes=1, sha256="0" * 64)
        session.add(tenant)
        session.flush()
        session.add(row)
        session.commit()
        return row.id


def upload(api, data: bytes, config, filename: str = "g.safetensors", **form):
    fields = {"file": (io.BytesIO(data), filename), **form}
    if config is not None:
        fields["config"] = config if isinstance(config, str) else json.dumps(config)
    return api.post("/v1/generators", data=fields, content_type="multipart/form-data")


def test_upload_list_get_and_generate(api, redis_client):
    data = safetensors_bytes(generator_arrays())
    response = upload(api, data, CONFIG, name="mine")
    assert response.status_code == 201, response.json
    body = response.json
    assert response.headers["Location"] == f"/v1/generators/{body['id']}" == body["links"]["self"]
    assert (body["name"], body["size_bytes"], body["sha256"]) == ("mine", len(data), hashlib.sha256(data).hexdigest())
    assert body["config"]["z_dim"] == 8 and body["config"]["lr"] == 8e-4  # the full validated config
    assert (body["version"], body["ref"], body["source"], body["aliases"], body["lineage"]) == (1, "mine:1", "upload",
                                                                                               [], None)
    # One version read alone also lists the evaluate jobs that scored it (none yet).
    assert api.get(f"/v1/generators/{body['id']}").json == {**body, "evaluations": []}
    assert api.get("/v1/generators/mine:1").json["id"] == body["id"]
    assert [g["id"] for g in api.get("/v1/generators").json["generators"]] == [body["id"]]
    store = api.application.extensions["dcgan"]["store"]
    key = uploaded_generator_key(api.tenant_id, body["id"])
    assert store.list("") == [key] and store.get_bytes(key) == data

    job = api.post("/v1/jobs/generate", json={"generator": body["id"], "seeds": "0-3", "nrow": 2})
    assert job.status_code == 202, job.json
    assert job.json["request"] == {"generator": body["id"], "generator_id": body["id"], "seeds": "0-3",
                                   "truncation": 1.0, "nrow": 2}
    assert job.json["config"] == body["config"]
    with api.application.extensions["dcgan"]["sessions"]() as session:
        row = session.get(Job, uuid.UUID(job.json["id"]))
        assert (row.generator_id, row.parent_job_id) == (uuid.UUID(body["id"]), None)
    assert [json.loads(m)["headers"]["task"] for m in redis_client.lrange("generate", 0, -1)] == ["dcgan.generate"]


def test_our_exported_generator_and_its_config_upload(api, tmp_path):
    from core.gan.checkpoint import export_generator
    from core.gan.config import TrainConfig
    from core.gan.models import build_generator

    config = TrainConfig.from_dict(CONFIG)
    path = tmp_path / "generator.safetensors"
    export_generator(path, build_generator(config), config)
    response = upload(api, path.read_bytes(), config.to_dict())
    assert response.status_code == 201, response.json
    assert response.json["config"] == config.to_dict()


def test_config_without_steps_is_an_architecture(api):
    response = upload(api, safetensors_bytes(generator_arrays()), TINY)
    assert response.status_code == 201, response.json
    assert response.json["config"]["steps"] == 1


@pytest.mark.parametrize("config,field", [
    ({**CONFIG, "stepz": 3}, "config.stepz"),
    ({**CONFIG, "img_size": 48}, "config.img_size"),
    ({**CONFIG, "z_dim": "eight"}, "config.z_dim"),
    ("{not json", "config"),
    ("[1, 2]", "config"),
    (None, "config"),
])
def test_bad_config_is_422_naming_the_field(api, config, field):
    response = upload(api, safetensors_bytes(generator_arrays()), config)
    assert response.status_code == 422 and response.json["type"] == "/problems/validation-error"
    assert field in {e["field"] for e in response.json["errors"]}
    assert api.application.extensions["dcgan"]["store"].list("") == []


def test_form_shape_errors(api):
    data = safetensors_bytes(generator_arrays())
    extra = upload(api, data, CONFIG, owner="someone")
    assert extra.status_code == 422 and {"field": "owner", "message": "unknown field"} in extra.json["errors"]
    missing = api.post("/v1/generators", data={"config": json.dumps(CONFIG)}, content_type="multipart/form-data")
    assert missing.status_code == 422 and missing.json["errors"][0]["field"] == "file"
    assert api.post("/v1/generators", json={"config": CONFIG}).status_code == 415


def test_weights_that_do_not_fit_the_config_are_refused(api):
    response = upload(api, safetensors_bytes(generator_arrays()), {**CONFIG, "z_dim": 9})
    assert response.status_code == 422 and response.json["type"] == "/problems/weights-shape"
    assert response.json["errors"] == [{"field": "file", "message": response.json["detail"]}]
    assert "main.0.weight" in response.json["detail"]
    assert api.get("/v1/generators").json["generators"] == []


def test_ids_of_other_tenants_and_malformed_ids_are_404(api):
    theirs = other_tenant_generator(api)
    for path in (f"/v1/generators/{theirs}", "/v1/generators/not-a-uuid", f"/v1/generators/{uuid.uuid4()}"):
        response = api.get(path)
        assert response.status_code == 404 and response.json["type"] == "/problems/not-found"
    assert api.get("/v1/generators").json["generators"] == []


def test_generate_names_exactly_one_generator_of_this_tenant(api, redis_client):
    mine = upload(api, safetensors_bytes(generator_arrays()), CONFIG).json["id"]
    theirs = str(other_tenant_generator(api))
    with api.application.extensions["dcgan"]["sessions"]() as session:
        train = jobs.create_job(session, api.tenant_id, "train", CONFIG, {"dataset": "builtin:digits"})
        session.commit()
        train_id = str(train.id)
    cases = [
        ({"seeds": "0-3"}, "generator", "exactly one"),
        ({"generator": mine, "generator_job": train_id, "seeds": "0-3"}, "generator", "exactly one"),
        ({"generator": theirs, "seeds": "0-3"}, "generator", "no generator"),
        ({"generator": "../../etc/passwd", "seeds": "0-3"}, "generator", "no generator"),
        ({"generator": 12, "seeds": "0-3"}, "generator", "no generator"),
        ({"generator": "x" * 10_000, "seeds": "0-3"}, "generator", "no generator"),
    ]
    for body, field, message in cases:
        response = api.post("/v1/jobs/generate", json=body)
        assert response.status_code == 422, body
        errors = {e["field"]: e["message"] for e in response.json["errors"]}
        assert message in errors[field] and len(errors[field]) < 300
    assert redis_client.lrange("generate", 0, -1) == []


def test_a_chunked_body_over_the_limit_is_413(api):
    """No Content-Length to refuse up front: the server terminates the stream (wsgi.input_terminated, as
    waitress does for chunked bodies) and reading past MAX_CONTENT_LENGTH fails with 413."""
    api.application.config["MAX_CONTENT_LENGTH"] = 10_000
    boundary = "x1y2z3"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"config\"\r\n\r\n{json.dumps(CONFIG)}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"g.safetensors\"\r\n\r\n"
            ).encode() + safetensors_bytes(generator_arrays()) + f"\r\n--{boundary}--\r\n".encode()
    assert len(body) > 10_000
    response = api.post("/v1/generators", input_stream=io.BytesIO(body),
                        content_type=f"multipart/form-data; boundary={boundary}",
                        headers={"Transfer-Encoding": "chunked"}, environ_overrides={"wsgi.input_terminated": True})
    assert response.status_code == 413 and response.json["type"] == "/problems/payload-too-large"
    assert api.application.extensions["dcgan"]["store"].list("") == []
    api.application.config["MAX_CONTENT_LENGTH"] = len(body) + 1  # the same body under the limit is taken
    response = api.post("/v1/generators", input_stream=io.BytesIO(body),
                        content_type=f"multipart/form-data; boundary={boundary}",
                        headers={"Transfer-Encoding": "chunked"}, environ_overrides={"wsgi.input_terminated": True})
    assert response.status_code == 201, response.json


def test_idempotent_upload(api):
    data = safetensors_bytes(generator_arrays())
    first = api.post("/v1/generators", data={"file": (io.BytesIO(data), "g.safetensors"), "config": json.dumps(CONFIG)},
                     content_type="multipart/form-data", headers={"Idempotency-Key": "gen-1"})
    again = api.post("/v1/generators", data={"file": (io.BytesIO(data), "g.safetensors"), "config": json.dumps(CONFIG)},
                     content_type="multipart/form-data", headers={"Idempotency-Key": "gen-1"})
    assert first.status_code == again.status_code == 201 and first.json["id"] == again.json["id"]
    assert len(api.get("/v1/generators").json["generators"]) == 1
    assert len(api.application.extensions["dcgan"]["store"].list("")) == 1
