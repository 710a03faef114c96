import pytest

from core.settings import Settings
from web import create_app


@pytest.fixture()
def app(tmp_path, redis_client):
    from tests.web.conftest import TEST_REDIS_URL

    app = create_app(Settings(data_dir=tmp_path, max_upload_bytes=1024, redis_url=TEST_REDIS_URL).with_defaults())

    @app.post("/echo")
    def echo():  # a test-only route to exercise body limits and unexpected errors
        from flask import request
        if request.args.get("boom"):
            raise RuntimeError("secret internals")
        return {"size": len(request.get_data())}

    return app


def test_health(app):
    client = app.test_client()
    assert client.get("/healthz").json == {"status": "ok"}
    assert client.get("/readyz").json == {"status": "ready"}


def test_readyz_reports_an_unreachable_broker(tmp_path):
    import socket

    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app = create_app(Settings(data_dir=tmp_path, redis_url=f"redis://127.0.0.1:{port}/0").with_defaults())
    response = app.test_client().get("/readyz")
    assert response.status_code == 503 and set(response.json["checks"]) == {"broker"}


def test_readyz_names_what_is_down(app):
    def broken():
        raise ConnectionError("connection refused")

    app.config["READINESS_CHECKS"] = {"database": lambda: None, "broker": broken}
    response = app.test_client().get("/readyz")
    assert response.status_code == 503 and response.mimetype == "application/problem+json"
    assert response.headers["Retry-After"] == "5"
    assert response.json["checks"] == {"broker": "ConnectionError: connection refused"}


def test_unknown_route_is_a_problem(app):
    response = app.test_client().get("/v1/nothing-here")
    assert response.status_code == 404 and response.mimetype == "application/problem+json"
    assert response.json["type"] == "/problems/not-found" and response.json["instance"] == "/v1/nothing-here"


def test_wrong_method_lists_allowed(app):
    response = app.test_client().delete("/healthz")
    assert response.status_code == 405 and "GET" in response.headers["Allow"]


def test_oversized_body_is_413_before_reading(app):
    response = app.test_client().post("/echo", data=b"x" * 2048)
    assert response.status_code == 413 and response.json["type"] == "/problems/payload-too-large"
    assert app.test_client().post("/echo", data=b"x" * 10).json == {"size": 10}


def test_unexpected_error_has_no_stack_trace(app):
    app.config["PROPAGATE_EXCEPTIONS"] = False
    response = app.test_client().post("/echo?boom=1")
    body = response.get_data(as_text=True)
    assert response.status_code == 500 and response.mimetype == "application/problem+json"
    assert "Traceback" not in body and "secret internals" not in body
