import dataclasses

import pytest
from flask import Flask, request

from core.gan.config import TrainConfig
from core.request_models import TrainJobRequest
from web.openapi import openapi_document
from web.problems import Problem, register_error_handlers
from web.validation import json_body, validated


@pytest.fixture()
def client():
    app = Flask(__name__)
    register_error_handlers(app)

    @app.post("/train")
    def train():
        submitted = validated(TrainJobRequest, json_body(request))
        return {"dataset": submitted.dataset, "steps": submitted.config.steps}

    return app.test_client()


def test_valid_request(client):
    response = client.post("/train", json={"dataset": "builtin:digits", "config": {"steps": 5, "img_size": 32}})
    assert response.json == {"dataset": "builtin:digits", "steps": 5}


def test_wrong_content_type_is_415(client):
    response = client.post("/train", data="dataset=x", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415 and response.mimetype == "application/problem+json"


@pytest.mark.parametrize("raw", ["{not json", "[1, 2]", "null"])
def test_malformed_json_is_400(client, raw):
    response = client.post("/train", data=raw, content_type="application/json")
    assert response.status_code == 400 and response.json["type"] == "/problems/malformed-json"


def test_every_bad_field_is_named(client):
    response = client.post("/train", json={"dataset": "builtin:imagenet", "status": "succeeded",
                                           "config": {"steps": 5, "img_size": 48, "lr": "fast", "stepz": 3}})
    assert response.status_code == 422
    fields = {e["field"]: e["message"] for e in response.json["errors"]}
    assert set(fields) == {"dataset", "config.stepz", "config.lr", "status"}  # ranges wait for valid types
    again = client.post("/train", json={"dataset": "builtin:digits", "config": {"steps": 0, "img_size": 48}})
    assert {e["field"] for e in again.json["errors"]} == {"config.steps", "config.img_size"}
    assert fields["status"] == "unknown field"  # no mass assignment of read-only fields


def test_missing_fields(client):
    response = client.post("/train", json={})
    assert {e["field"] for e in response.json["errors"]} == {"dataset", "config"}


def test_openapi_config_schema_matches_the_engine():
    document = openapi_document()
    schema = document["components"]["schemas"]["TrainConfig"]
    assert set(schema["properties"]) == {f.name for f in dataclasses.fields(TrainConfig)}
    assert schema["additionalProperties"] is False
    assert schema["properties"]["lr"]["default"] == TrainConfig.lr and schema["properties"]["img_size"]["enum"] == [
        32, 64, 128]
    assert document["openapi"].startswith("3.")


def test_openapi_is_served(tmp_path):
    from core.settings import Settings
    from web import create_app

    client = create_app(Settings(data_dir=tmp_path).with_defaults()).test_client()
    assert client.get("/v1/openapi.json").json["info"]["title"] == "dcgan-platform"


def test_problem_carries_extra_members():
    problem = Problem(409, "already finished", slug="illegal-transition", job_status="succeeded")
    assert problem.extra == {"job_status": "succeeded"} and problem.status == 409


def test_openapi_lists_every_route_the_app_serves(tmp_path):
    """Every API route (/v1 and the health checks) is in the document; the dashboard's pages are not API."""
    import re

    from core.settings import Settings
    from web import create_app

    app = create_app(Settings(data_dir=tmp_path).with_defaults())
    served = {re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule) for rule in app.url_map.iter_rules()
              if rule.rule.startswith("/v1/") or rule.rule in ("/healthz", "/readyz")}
    assert served == set(openapi_document()["paths"])
    assert "/v1/jobs/{job_id}/samples/{step}" in served
