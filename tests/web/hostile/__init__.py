"""The hostile-input tables (acceptance 8 of issue 4): archives, images, generator checkpoints, JSON bodies,
headers and ids -- each answered with its own status and problem type, on SQLite and PostgreSQL. One module
per kind of input; this one holds what they share: how a case is sent, the other tenant's rows, and the
check every case gets.

After every case: a refused request left the artifact store exactly as it was (and created no dataset,
generator or job); an accepted upload wrote only under its own dataset's prefix; /healthz still answers.
"""

from __future__ import annotations

import io
import json
import os
import uuid
from dataclasses import dataclass
from typing import Callable

from core import jobs
from core.archives import Limits
from core.db import Dataset, Generator, Tenant
from core.storage import dataset_prefix, uploaded_generator_key
from tests.web.hostile.builders import CONFIG, TRAIN


@dataclass(frozen=True)
class Foreign:
    """Rows of another tenant (database only)."""
    dataset: str
    job: str
    generator: str


@dataclass(frozen=True)
class Context:
    api: object
    foreign: Foreign


@dataclass(frozen=True)
class Case:
    name: str
    send: Callable[[Context], object]
    status: int
    type: str | None  # None: accepted (an upload that must stay under its own prefix)
    limits: Limits | None = None
    max_content_length: int | None = None
    rejected: int | None = None  # an accepted upload's num_rejected


def dataset(data: Callable[[], bytes] | bytes, filename: str = "set.zip", **form) -> Callable[[Context], object]:
    def send(c: Context):
        body = data() if callable(data) else data
        return c.api.post("/v1/datasets", data={"file": (io.BytesIO(body), filename), **form},
                          content_type="multipart/form-data")
    return send


def generator(data: Callable[[], bytes] | bytes, config=CONFIG, **form) -> Callable[[Context], object]:
    def send(c: Context):
        body = data() if callable(data) else data
        fields = {"file": (io.BytesIO(body), "g.safetensors"),
                  "config": config if isinstance(config, str) else json.dumps(config), **form}
        return c.api.post("/v1/generators", data=fields, content_type="multipart/form-data")
    return send


def post_json(path: str, body) -> Callable[[Context], object]:
    return lambda c: c.api.post(path, json=body(c.foreign) if callable(body) else body)


def post_raw(path: str, raw: bytes | str, content_type: str = "application/json") -> Callable[[Context], object]:
    return lambda c: c.api.post(path, data=raw, content_type=content_type)


def get(path: Callable[[Foreign], str] | str, method: str = "get") -> Callable[[Context], object]:
    return lambda c: getattr(c.api, method)(path(c.foreign) if callable(path) else path)


def with_auth(authorization: Callable[[Context], str | None], headers: dict[str, str] | None = None):
    """POST a valid train job with another Authorization header (None: no header at all)."""
    def send(c: Context):
        client = c.api.application.test_client()  # without the fixture's key
        value = authorization(c)
        extra = {**({"Authorization": value} if value is not None else {}), **(headers or {})}
        return client.post("/v1/jobs/train", json=TRAIN, headers=extra)
    return send


def revoked_key(c: Context) -> str:
    from core.auth import create_key, revoke_key

    with c.api.application.extensions["dcgan"]["sessions"]() as session:
        _, secret = create_key(session, "revoked-in-hostile-table")
        revoke_key(session, secret)
        session.commit()
    return f"Bearer {secret}"


def lying_content_length(path: str) -> Callable[[Context], object]:
    """A few bytes of body under a Content-Length of 1 TB: refused on the header, nothing read."""
    return lambda c: c.api.post(path, data=b"--b--\r\n", content_type="multipart/form-data; boundary=b",
                                environ_overrides={"CONTENT_LENGTH": str(10**12)})


def chunked(data: bytes) -> Callable[[Context], object]:
    """No Content-Length: the server ends the stream (as waitress does for chunked bodies) and reading past
    MAX_CONTENT_LENGTH fails."""
    body = (b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.zip\"\r\n\r\n" + data
            + b"\r\n--b--\r\n")
    return lambda c: c.api.post("/v1/datasets", input_stream=io.BytesIO(body),
                                content_type="multipart/form-data; boundary=b",
                                headers={"Transfer-Encoding": "chunked"},
                                environ_overrides={"wsgi.input_terminated": True})


NOISE = os.urandom(400_000)  # incompressible: counts against the size limits, never the ratio


def make_foreign(api) -> Foreign:
    with api.application.extensions["dcgan"]["sessions"]() as session:
        tenant = Tenant(id=uuid.uuid4(), name=f"other-{uuid.uuid4().hex[:8]}")
        session.add(tenant)
        session.flush()
        data = Dataset(id=uuid.uuid4(), tenant_id=tenant.id, name="theirs", source="upload",
                       storage_prefix=dataset_prefix(tenant.id, uuid.uuid4()), num_images=1)
        weights = Generator(id=uuid.uuid4(), tenant_id=tenant.id, name="theirs", config=CONFIG,
                            storage_key=uploaded_generator_key(tenant.id, uuid.uuid4()), size_bytes=1, sha256="0" * 64)
        session.add_all([data, weights])
        job = jobs.create_job(session, tenant.id, "train", CONFIG, {"dataset": "builtin:digits"})
        job.status = "succeeded"
        session.commit()
        return Foreign(str(data.id), str(job.id), str(weights.id))


def visible_rows(api) -> dict:
    return {path: api.get(path).json for path in ("/v1/datasets", "/v1/generators", "/v1/jobs")}


def check(api, case: Case) -> None:
    app = api.application
    if case.limits is not None:
        app.config["ARCHIVE_LIMITS"] = case.limits
    if case.max_content_length is not None:
        app.config["MAX_CONTENT_LENGTH"] = case.max_content_length
    foreign = make_foreign(api)
    store = app.extensions["dcgan"]["store"]
    objects_before = set(store.list(""))
    rows_before = visible_rows(api)

    response = case.send(Context(api, foreign))

    assert response.status_code == case.status, response.get_data(as_text=True)[:1000]
    new_objects = set(store.list("")) - objects_before
    if case.type is None:
        prefix = dataset_prefix(api.tenant_id, response.json["id"])
        assert new_objects and all(key.startswith(prefix) for key in new_objects), new_objects
        assert (response.json["num_images"], response.json["num_rejected"]) == (1, case.rejected)
    else:
        assert response.mimetype == "application/problem+json"
        problem = response.json
        assert problem["type"] == f"/problems/{case.type}", problem
        assert problem["status"] == case.status and problem["detail"] and "Traceback" not in problem["detail"]
        assert len(problem["detail"]) < 2000  # never an echo of the whole hostile input
        assert set(store.list("")) == objects_before
        assert visible_rows(api) == rows_before
    assert api.get("/healthz").status_code == 200
