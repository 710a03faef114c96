"""The dashboard's pages through Flask's test client, on SQLite and PostgreSQL with the real Redis: signing in
and out, the session cookie's flags and contents, CSRF refusals (forms and cookie-authenticated /v1 calls),
the security headers, tenant isolation, the new-job form, which answers with the API's own validation, and
the generator registry's pages (versions, aliases, evaluations, the seed browser's markup). The pages in a
real browser are tests/e2e/test_browser.py and tests/e2e/test_seed_browser.py."""

from __future__ import annotations

import base64
import io
import json
import re
import stat
import uuid
import zlib
from html.parser import HTMLParser


from core import registry
from core.auth import create_key, revoke_key
from core.db import Job, JobStatus
from core.gan.config import TrainConfig
from tests.core.test_weights import generator_arrays, safetensors_bytes
from tests.web.conftest import make_app
from tests.web.hostile.builders import png, zip_of
from tests.web.test_generators import CONFIG
from web.auth import KeyCache
from web.pages import seed_ranges
from web.pages.jobs import PAGE_SIZE
from web.session_auth import SECRET_KEY_FILE

TRAIN = {"dataset": "builtin:digits", "config": {"steps": 20, "img_size": 32, "img_channels": 1}}


def new_key(app, tenant: str = "tests") -> str:
    with app.extensions["dcgan"]["sessions"]() as session:
        _, secret = create_key(session, tenant)
        session.commit()
    return secret


def csrf_token(client, path: str = "/signin") -> str:
    page = client.get(path).get_data(as_text=True)
    return re.search(r'<meta name="csrf-token" content="([^"]+)"', page).group(1)


def signed_in(app, tenant: str = "tests"):
    """A test client with a dashboard session of `tenant`; `.api_key` is the key it signed in with."""
    client = app.test_client()
    client.api_key = new_key(app, tenant)
    response = client.post("/signin", data={"api_key": client.api_key, "csrf_token": csrf_token(client),
                                            "next": "/"})
    assert response.status_code == 303, response.get_data(as_text=True)
    return client


def bearer(app, client) -> dict[str, str]:
    return {"Authorization": f"Bearer {client.api_key}"}


def submit_job(app, client) -> str:
    response = app.test_client().post("/v1/jobs/train", json=TRAIN, headers=bearer(app, client))
    assert response.status_code == 202, response.json
    return response.json["id"]


class _Scripts(HTMLParser):
    """Every <script> element's attributes, and every element attribute that is an inline event handler."""

    def __init__(self):
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []
        self.handlers: list[str] = []
        self.styles: list[str] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "script":
            self.scripts.append(attributes)
        self.handlers += [f"{tag} {name}" for name in attributes if name.startswith("on")]
        self.styles += [tag for name in attributes if name == "style"]


def test_pages_need_a_session_and_send_their_security_headers(api_app):
    client = api_app.test_client()
    for path in ("/", "/jobs/new", f"/jobs/{uuid.uuid4()}", "/compare", "/datasets", "/generators",
                 "/generators/faces:1", "/generators/faces:1/browse"):
        response = client.get(path)
        assert response.status_code == 302, path
        assert response.headers["Location"].startswith("/signin?next=")
    page = client.get("/signin")
    assert page.status_code == 200
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy and "unsafe-inline" not in policy
    assert page.headers["X-Content-Type-Options"] == "nosniff"


def test_no_page_has_an_inline_script_handler_or_style(api_app):
    client = signed_in(api_app)
    job_id = submit_job(api_app, client)
    version = upload_generator(api_app, client, "faces")
    evaluate = client.post("/v1/jobs/evaluate", json={"generator": "faces:1", "dataset": "builtin:digits"},
                           headers=bearer(api_app, client)).json["id"]
    paths = ["/", "/jobs/new", f"/jobs/{job_id}", f"/jobs/{job_id}/cancel", f"/compare?job={job_id}",
             "/datasets", "/generators", "/signin", f"/generators/{version['id']}", "/generators/faces:1/browse",
             f"/jobs/{evaluate}", "/?sort=best_fid"]
    for path in paths:
        response = client.get(path)
        assert response.status_code == 200, path
        assert "script-src 'self'" in response.headers["Content-Security-Policy"], path
        parsed = _Scripts()
        parsed.feed(response.get_data(as_text=True))
        assert parsed.scripts and all(s.get("src", "").startswith("/static/") for s in parsed.scripts), path
        assert parsed.handlers == [] and parsed.styles == [], (path, parsed.handlers, parsed.styles)


def _session_payload(cookie_value: str) -> dict:
    """The JSON inside Flask's signed cookie (itsdangerous: optional '.' + base64, zlib when it starts with '.')."""
    compressed = cookie_value.startswith(".")
    data = cookie_value.lstrip(".").split(".")[0]
    raw = base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
    return json.loads(zlib.decompress(raw) if compressed else raw)


def test_signing_in_sets_a_signed_httponly_samesite_cookie_without_the_key(api_app):
    client = api_app.test_client()
    key = new_key(api_app)
    response = client.post("/signin", data={"api_key": key, "csrf_token": csrf_token(client), "next": "/datasets"})
    assert response.status_code == 303 and response.headers["Location"] == "/datasets"
    [set_cookie] = [h for h in response.headers.getlist("Set-Cookie") if h.startswith("dcgan_session=")]
    flags = [part.strip().lower() for part in set_cookie.split(";")]
    assert "httponly" in flags and "samesite=lax" in flags and "secure" not in flags  # plain http: no Secure
    value = set_cookie.split(";")[0].split("=", 1)[1]
    assert key not in set_cookie
    payload = _session_payload(value)
    assert set(payload) >= {"tenant", "key_hash"} and key not in json.dumps(payload)
    assert client.get("/datasets").status_code == 200
    # Over https the same cookie is marked Secure (and Flask-WTF wants a same-origin Referer there).
    https = api_app.test_client()
    page = https.get("/signin", base_url="https://localhost").get_data(as_text=True)
    token = re.search(r'<meta name="csrf-token" content="([^"]+)"', page).group(1)
    response = https.post("/signin", base_url="https://localhost", headers={"Referer": "https://localhost/signin"},
                          data={"api_key": key, "csrf_token": token, "next": "/"})
    [set_cookie] = [h for h in response.headers.getlist("Set-Cookie") if h.startswith("dcgan_session=")]
    assert "secure" in [part.strip().lower() for part in set_cookie.split(";")]


def test_a_next_target_off_this_site_is_ignored(api_app):
    client = api_app.test_client()
    response = client.post("/signin", data={"api_key": new_key(api_app), "csrf_token": csrf_token(client),
                                            "next": "//evil.example/x"})
    assert response.status_code == 303 and response.headers["Location"] == "/"


def test_a_bad_or_revoked_key_does_not_sign_in(api_app):
    client = api_app.test_client()
    for key in ("dcg_" + "x" * 43, "not-a-key", ""):
        response = client.post("/signin", data={"api_key": key, "csrf_token": csrf_token(client)})
        assert response.status_code == 401 and "unknown or revoked" in response.get_data(as_text=True)
        assert client.get("/").status_code == 302
    revoked = new_key(api_app)
    with api_app.extensions["dcgan"]["sessions"]() as session:
        revoke_key(session, revoked)
        session.commit()
    response = client.post("/signin", data={"api_key": revoked, "csrf_token": csrf_token(client)})
    assert response.status_code == 401 and client.get("/").status_code == 302


def test_revoking_the_key_ends_its_sessions(api_app):
    api_app.extensions["dcgan"]["key_cache"] = KeyCache(seconds=0.001)  # no grace: check the database each time
    client = signed_in(api_app)
    assert client.get("/").status_code == 200 and client.get("/v1/jobs").status_code == 200
    with api_app.extensions["dcgan"]["sessions"]() as session:
        revoke_key(session, client.api_key)
        session.commit()
    assert client.get("/").status_code == 302
    assert client.get("/v1/jobs").status_code == 401


def test_forms_without_the_csrf_token_are_refused(api_app):
    client = signed_in(api_app)
    job_id = submit_job(api_app, client)
    for path, data in [(f"/jobs/{job_id}/cancel", {}), ("/jobs/new", {"dataset": "builtin:digits"}),
                       ("/signout", {}), (f"/jobs/{job_id}/cancel", {"csrf_token": "forged"})]:
        response = client.post(path, data=data)
        assert response.status_code == 400, path
        assert response.mimetype == "text/html" and "CSRF" in response.get_data(as_text=True)
    assert client.get(f"/v1/jobs/{job_id}").json["status"] == "queued"  # nothing was cancelled
    assert len(client.get("/v1/jobs").json["jobs"]) == 1  # nor submitted
    assert client.get("/").status_code == 200  # still signed in
    # With the token the same cancel works, and signing out ends the session.
    token = csrf_token(client, "/")
    assert client.post(f"/jobs/{job_id}/cancel", data={"csrf_token": token}).status_code == 303
    assert client.get(f"/v1/jobs/{job_id}").json["status"] == "cancelled"
    assert client.post("/signout", data={"csrf_token": token}).status_code == 303
    assert client.get("/").status_code == 302 and client.get("/v1/jobs").status_code == 401


def test_the_api_takes_the_session_cookie_with_a_csrf_header_for_unsafe_methods(api_app):
    client = signed_in(api_app)
    job_id = submit_job(api_app, client)
    read = client.get(f"/v1/jobs/{job_id}")
    assert read.status_code == 200 and "Set-Cookie" not in read.headers  # reads need only the cookie
    refused = client.post(f"/v1/jobs/{job_id}/cancel")
    assert refused.status_code == 403 and refused.mimetype == "application/problem+json"
    assert refused.json["type"] == "/problems/csrf-failed"
    assert client.post(f"/v1/jobs/{job_id}/cancel", headers={"X-CSRFToken": "forged"}).status_code == 403
    assert client.get(f"/v1/jobs/{job_id}").json["status"] == "queued"
    accepted = client.post(f"/v1/jobs/{job_id}/cancel", headers={"X-CSRFToken": csrf_token(client, "/")})
    assert accepted.status_code == 202 and accepted.json["status"] == "cancelled"
    # A Bearer request needs no token, cookie or not: the key is no ambient credential.
    other = submit_job(api_app, client)
    response = client.post(f"/v1/jobs/{other}/cancel", headers=bearer(api_app, client))
    assert response.status_code == 202


def test_a_tenant_sees_only_its_own_jobs(api_app):
    first, second = signed_in(api_app, "first"), signed_in(api_app, "second")
    job_id = submit_job(api_app, first)
    assert job_id in first.get("/").get_data(as_text=True)
    assert job_id not in second.get("/").get_data(as_text=True)
    for path in (f"/jobs/{job_id}", f"/jobs/{job_id}/cancel", f"/compare?job={job_id}", "/jobs/not-a-uuid"):
        response = second.get(path)
        assert response.status_code == 404 and response.mimetype == "text/html", path
        assert 'data-error-status="404"' in response.get_data(as_text=True)
    token = csrf_token(second, "/")
    assert second.post(f"/jobs/{job_id}/cancel", data={"csrf_token": token}).status_code == 404
    assert second.get(f"/v1/jobs/{job_id}").status_code == 404
    assert second.post(f"/v1/jobs/{job_id}/cancel", headers={"X-CSRFToken": token}).status_code == 404
    assert first.get(f"/v1/jobs/{job_id}").json["status"] == "queued"


def _rows(page: str) -> list[str]:
    return re.findall(r'<tr data-job-id="([^"]+)"', page)


def test_the_jobs_page_filters_and_pages(api_app):
    client = signed_in(api_app)
    submitted = [submit_job(api_app, client) for _ in range(PAGE_SIZE + 2)]
    cancelled = submitted[3]
    assert client.post(f"/v1/jobs/{cancelled}/cancel", headers=bearer(api_app, client)).status_code == 202
    first = client.get("/").get_data(as_text=True)
    assert _rows(first) == submitted[::-1][:PAGE_SIZE]  # newest first
    next_page = re.search(r'<a href="([^"]+)" data-page="next">', first).group(1).replace("&amp;", "&")
    second = client.get(next_page).get_data(as_text=True)
    assert _rows(second) == submitted[::-1][PAGE_SIZE:] and 'data-page="next"' not in second
    assert 'data-first-page="false"' in second  # its script updates these rows and adds none
    assert _rows(client.get("/?status=cancelled&type=train").get_data(as_text=True)) == [cancelled]
    assert _rows(client.get("/?type=generate").get_data(as_text=True)) == []
    # A filter the API refuses says so and shows the first page unfiltered.
    refused = client.get("/?status=bogus").get_data(as_text=True)
    assert "data-filter-error" in refused and "status: one of" in refused and len(_rows(refused)) == PAGE_SIZE


def test_the_new_job_form_shows_every_config_field_with_its_default(api_app):
    page = signed_in(api_app).get("/jobs/new").get_data(as_text=True)
    for name, prop in TrainConfig.json_schema()["properties"].items():
        assert f'name="config.{name}"' in page, name
        if "enum" in prop:
            assert re.search(rf'<select id="config\.{name}" name="config\.{name}">', page), name
            for choice in prop["enum"]:
                assert f'<option value="{choice}"' in page, (name, choice)
    assert '<option value="builtin:digits" selected>' in page
    assert 'name="config.z_dim" type="number" value="100"' in page and 'min="1"' in page and 'max="4096"' in page


def _form(client, **config) -> dict[str, str]:
    page = client.get("/jobs/new").get_data(as_text=True)
    key = re.search(r'name="idempotency_key" value="([^"]+)"', page).group(1)
    data = {"csrf_token": csrf_token(client, "/jobs/new"), "idempotency_key": key, "dataset": "builtin:digits"}
    data.update({f"config.{name}": str(value) for name, value in config.items()})
    return data


def test_a_refused_submission_shows_each_error_beside_its_field(api_app):
    client = signed_in(api_app)
    data = _form(client, img_size=48, z_dim=0, steps="", lr=2)
    data["dataset"] = str(uuid.uuid4())
    response = client.post("/jobs/new", data=data)
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    for field in ("dataset", "config.img_size", "config.z_dim", "config.lr", "config.steps"):
        assert f'data-error-for="{field}"' in page, field
    assert re.search(r'id="config.img_size" name="config.img_size">.*<option value="48" selected', page, re.S) is None
    assert 'name="config.z_dim" type="number" value="0"' in page  # what was sent is kept
    # Text that is not a number goes to the API as it is, and its message comes back.
    response = client.post("/jobs/new", data=_form(client, z_dim="many"))
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert re.search(r'data-error-for="config.z_dim">expected int, got &#39;many&#39;<', page)
    assert client.get("/v1/jobs").json["jobs"] == []


def test_a_submission_makes_one_job_with_the_form_config(api_app, redis_client):
    client = signed_in(api_app)
    data = _form(client, img_size=32, img_channels=1, z_dim=8, steps=30, spectral_norm="true",
                 diffaugment="translation")
    response = client.post("/jobs/new", data=data)
    assert response.status_code == 303, response.get_data(as_text=True)
    job_id = response.headers["Location"].rsplit("/", 1)[-1]
    job = client.get(f"/v1/jobs/{job_id}").json
    assert job["config"]["z_dim"] == 8 and job["config"]["steps"] == 30 and job["config"]["spectral_norm"] is True
    assert job["config"]["diffaugment"] == "translation" and job["config"]["compile"] is False
    assert redis_client.llen("train") == 1
    # The same form sent twice (a double click, a reload) is one job: the form carries an Idempotency-Key.
    again = client.post("/jobs/new", data=data)
    assert again.headers["Location"] == response.headers["Location"]
    assert len(client.get("/v1/jobs").json["jobs"]) == 1 and redis_client.llen("train") == 1


def test_the_job_page_has_its_hooks_and_a_succeeded_job_offers_generate(api_app, redis_client):
    client = signed_in(api_app)
    job_id = submit_job(api_app, client)
    page = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    for hook in ('data-chart="losses"', 'data-chart="d-outputs"', "data-grid", "data-step-slider", "data-events",
                 "data-cancel"):
        assert hook in page, hook
    with api_app.extensions["dcgan"]["sessions"]() as session:
        session.get(Job, uuid.UUID(job_id)).status = JobStatus.SUCCEEDED
        session.commit()
    page = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert "data-cancel" not in page and re.search(r"<section class=\"generate\" data-generate\s*>", page)
    token = csrf_token(client, "/")
    refused = client.post(f"/jobs/{job_id}/generate", data={"csrf_token": token, "seeds": "3-1", "nrow": "4"})
    assert refused.status_code == 422 and 'data-error-for="seeds"' in refused.get_data(as_text=True)
    made = client.post(f"/jobs/{job_id}/generate", data={"csrf_token": token, "seeds": "0-7", "nrow": "4"})
    assert made.status_code == 303
    generate = client.get("/v1/jobs/" + made.headers["Location"].rsplit("/", 1)[-1]).json
    assert generate["type"] == "generate" and generate["request"]["generator_job"] == job_id
    page = client.get(made.headers["Location"]).get_data(as_text=True)
    assert "<dd data-seeds>8: <code>0-7</code></dd>" in page  # the count, and the seeds as the job keeps them
    # A job stored before seeds were kept as ranges shows the same way.
    assert (seed_ranges([1, 2, 3, 7]).count, str(seed_ranges([1, 2, 3, 7])), seed_ranges(None)) == (4, "1-3,7", None)


def test_a_job_that_starts_while_its_page_is_made_shows_running_and_its_stream_replays_the_start(
        api_app, redis_client, monkeypatch):
    # The page reads the job and its timeline in two calls; a worker may claim the job between them. Its status
    # and the stream's starting event must agree: a page saying "queued" whose stream starts after the job's
    # "running" event would show "queued" until the job ends (seen in the browser test on a slow CPU).
    from core.jobs import claim_job, newest_event_id
    from web.pages import api as page_api

    client = signed_in(api_app)
    job_id = submit_job(api_app, client)
    calls = page_api.call
    claimed: list = []

    def a_worker_claims_after_the_first_read(method, path, **request_args):
        answer = calls(method, path, **request_args)
        if path.startswith(f"/v1/jobs/{job_id}") and not claimed:
            with api_app.extensions["dcgan"]["sessions"]() as session:
                claimed.append(claim_job(session, uuid.UUID(job_id), "worker-1", lease_seconds=60))
                session.commit()
        return answer

    monkeypatch.setattr(page_api, "call", a_worker_claims_after_the_first_read)
    page = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert claimed == [1]
    status = re.search(r'data-status="([^"]+)"', page).group(1)
    last_event_id = int(re.search(r'data-last-event-id="(\d+)"', page).group(1))
    with api_app.extensions["dcgan"]["sessions"]() as session:
        newest = newest_event_id(session, uuid.UUID(job_id))
    # The job is read last, so it shows running, and the stream replays the start after the timeline's last event.
    assert status == "running" and last_event_id < newest, (status, last_event_id, newest)


def test_the_openapi_document_has_no_pages(api_app):
    paths = api_app.test_client().get("/v1/openapi.json").json["paths"]
    assert "/v1/jobs" in paths and not [p for p in paths if p.startswith(("/jobs", "/signin", "/compare", "/static"))]


def test_the_secret_key_is_kept_in_the_data_dir_or_taken_from_settings(engine, tmp_path, redis_client):
    first = make_app(engine, tmp_path)
    path = tmp_path / SECRET_KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(path.read_text().strip()) >= 32
    client = signed_in(first)
    # A second process of the same data dir reads the same key, so the first one's cookie is good there.
    second = make_app(engine, tmp_path)
    assert second.secret_key == first.secret_key
    cookie = client.get_cookie("dcgan_session")
    other = second.test_client()
    other.set_cookie("dcgan_session", cookie.value)
    assert other.get("/").status_code == 200
    configured = make_app(engine, tmp_path, secret_key="from-the-environment-" + "x" * 20)
    assert configured.secret_key.startswith("from-the-environment-")
    other = configured.test_client()
    other.set_cookie("dcgan_session", cookie.value)
    assert other.get("/").status_code == 302  # signed with another key: no session
    for app in (first, second, configured):
        app.extensions["dcgan"]["engine"].dispose()


def test_an_upload_through_the_cookie_shows_in_its_tenants_lists_only(api_app):
    owner, stranger = signed_in(api_app, "owner"), signed_in(api_app, "stranger")
    archive = zip_of({"a.png": png(), "b.png": png(color=(0, 200, 0)), "notes.txt": b"not an image"})
    # The page's script uploads with the cookie and the CSRF header, as a form would.
    refused = owner.post("/v1/datasets", data={"file": (io.BytesIO(archive), "faces.zip")})
    assert refused.status_code == 403
    response = owner.post("/v1/datasets", data={"file": (io.BytesIO(archive), "faces.zip")},
                          headers={"X-CSRFToken": csrf_token(owner, "/")})
    assert response.status_code == 201 and (response.json["num_images"], response.json["num_rejected"]) == (2, 1)
    dataset_id = response.json["id"]
    for path in ("/datasets", "/jobs/new"):
        assert dataset_id in owner.get(path).get_data(as_text=True), path
        assert dataset_id not in stranger.get(path).get_data(as_text=True), path
    assert "No generators yet" in owner.get("/generators").get_data(as_text=True)


def test_with_s3_storage_the_policy_lets_grids_come_from_the_store():
    """The API answers a grid with a 302 to a presigned URL on S3; the page's <img> must be allowed to follow."""
    from core.settings import Settings
    from web.pages import _content_security_policy

    local = _content_security_policy(Settings().with_defaults())
    assert "img-src 'self' blob: data:;" in local
    minio = Settings(storage_url="s3://bucket/prefix", s3_endpoint_url="http://minio:9000",
                     s3_public_endpoint_url="http://localhost:9000/").with_defaults()
    assert "img-src 'self' blob: data: http://localhost:9000;" in _content_security_policy(minio)
    aws = Settings(storage_url="s3://bucket/prefix").with_defaults()
    assert "https://*.amazonaws.com" in _content_security_policy(aws)



# ----- the generator registry's pages -----

def upload_generator(app, client, name: str, seed: int = 0) -> dict:
    response = app.test_client().post(
        "/v1/generators", headers=bearer(app, client), content_type="multipart/form-data",
        data={"file": (io.BytesIO(safetensors_bytes(generator_arrays(seed=seed))), "g.safetensors"),
              "config": json.dumps(CONFIG), "name": name})
    assert response.status_code == 201, response.json
    return response.json


def tenant_of(app, client) -> uuid.UUID:
    from core.auth import authenticate

    with app.extensions["dcgan"]["sessions"]() as session:
        return authenticate(session, client.api_key)


def finished_training(app, client, fid: float | None = 31.25, step: int = 200) -> tuple[str, list[str]]:
    """A train job made succeeded with a best step at `step` (none when `fid` is None) and the final and best
    versions of `digits` registered for it, as the worker registers them; returns (job id, their refs)."""
    job_id = submit_job(app, client)
    with app.extensions["dcgan"]["sessions"]() as session:
        job = session.get(Job, uuid.UUID(job_id))
        job.status = JobStatus.SUCCEEDED
        lineage = dict(job_id=job.id, config=job.config, dataset="builtin:digits", dataset_sha256="ab" * 32,
                       storage_key="k", size_bytes=2048, sha256="cd" * 32)
        refs = [registry.register(session, job.tenant_id, "digits", source="final", step=400, fid=40.5, kid=0.05,
                                  **lineage)]
        if fid is not None:
            job.best_step, job.best_fid, job.best_kid = step, fid, 0.0125
            refs.append(registry.register(session, job.tenant_id, "digits", source="best", step=step, fid=fid,
                                          kid=0.0125, **lineage))
        refs = [f"{row.name}:{row.version}" for row in refs]
        session.commit()
    return job_id, refs


def _versions(page: str) -> list[str]:
    return re.findall(r'<tr data-generator-id="[^"]+" data-ref="([^"]+)"', page)


def test_the_registry_page_groups_versions_by_name_with_aliases_lineage_and_scores(api_app):
    client = signed_in(api_app)
    upload_generator(api_app, client, "faces", 1)
    upload_generator(api_app, client, "faces", 2)
    job_id, refs = finished_training(api_app, client)
    assert refs == ["digits:1", "digits:2"]
    assert client.put("/v1/generators/faces/aliases/champion", json={"version": 1},
                      headers=bearer(api_app, client)).status_code == 200
    page = client.get("/generators").get_data(as_text=True)
    # Newest name first, each name's versions newest first.
    assert re.findall(r'data-generator-name="([^"]+)"', page) == ["digits", "faces"]
    assert _versions(page) == ["digits:2", "digits:1", "faces:2", "faces:1"]
    faces = page[page.index('data-generator-name="faces"'):]
    assert 'data-alias="champion"' in faces and "@champion → 1" in faces
    best = page[page.index('data-ref="digits:2"'):page.index('data-ref="digits:1"')]
    assert f'href="/jobs/{job_id}" data-lineage-job' in best and "step 200" in best and "builtin:digits" in best
    assert "abababababab" in best and '<td data-field="fid">31.25</td>' in best and "0.0125" in best
    assert 'href="/generators/digits:2/browse" data-browse' in best
    uploaded = page[page.index('data-ref="faces:1"'):]
    assert "data-lineage" not in uploaded and "uploaded" in uploaded
    assert 'action="/generators/faces/aliases"' in page and 'action="/generators/faces:1/evaluate"' in page


def test_the_alias_form_sets_moves_and_removes_an_alias_and_needs_its_csrf_token(api_app):
    client = signed_in(api_app)
    first, second = upload_generator(api_app, client, "faces", 1), upload_generator(api_app, client, "faces", 2)
    refused = client.post("/generators/faces/aliases", data={"alias": "champion", "version": "1"})
    assert refused.status_code == 400 and "CSRF" in refused.get_data(as_text=True)
    assert client.get("/v1/generators/faces@champion").status_code == 404
    token = csrf_token(client, "/generators")
    made = client.post("/generators/faces/aliases", data={"csrf_token": token, "alias": "champion", "version": "1"})
    assert made.status_code == 303 and made.headers["Location"] == "/generators#name-faces"
    assert client.get("/v1/generators/faces@champion").json["id"] == first["id"]
    # From the version page: the alias moves to that version, and the answer goes back there.
    moved = client.post("/generators/faces/aliases", data={"csrf_token": token, "alias": "champion", "version": "2",
                                                           "back": second["id"]})
    assert moved.status_code == 303 and moved.headers["Location"] == f"/generators/{second['id']}#name-faces"
    assert client.get("/v1/generators/faces@champion").json["id"] == second["id"]
    assert "@champion" in client.get("/generators/faces@champion").get_data(as_text=True)
    # The API's refusals come back beside the form's fields, on the page the form was on.
    for data, status, field in [({"alias": "9lives", "version": "1"}, 422, "alias"),
                                ({"alias": "ok", "version": "9"}, 404, "version"),
                                ({"alias": "ok", "version": "two"}, 422, "version"),
                                ({"alias": "", "version": "1"}, 422, "alias")]:
        response = client.post("/generators/faces/aliases", data={"csrf_token": token, **data})
        page = response.get_data(as_text=True)
        assert response.status_code == status and f'data-error-for="{field}"' in page, (data, page[-2000:])
        assert "<h1>Generators</h1>" in page
    on_version = client.post("/generators/faces/aliases", data={"csrf_token": token, "alias": "9lives",
                                                                "version": "1", "back": "faces:1"})
    assert on_version.status_code == 422 and 'data-ref="faces:1"' in on_version.get_data(as_text=True)
    # Removing it: a form per alias, with the token too.
    assert client.post("/generators/faces/aliases/champion/delete").status_code == 400
    removed = client.post("/generators/faces/aliases/champion/delete", data={"csrf_token": token})
    assert removed.status_code == 303 and client.get("/v1/generators/faces@champion").status_code == 404
    assert client.post("/generators/faces/aliases/champion/delete", data={"csrf_token": token}).status_code == 404


def test_the_version_page_starts_an_evaluate_job_and_lists_its_evaluations(api_app, redis_client):
    client = signed_in(api_app)
    version = upload_generator(api_app, client, "faces")
    page = client.get("/generators/faces:1").get_data(as_text=True)
    assert "data-no-evaluations" in page and 'href="/generators/faces:1/browse" data-browse' in page
    token = csrf_token(client, "/generators/faces:1")
    refused = client.post("/generators/faces:1/evaluate", data={"csrf_token": token, "dataset": "builtin:digits",
                                                               "num": "1", "net": "digits", "back": version["id"]})
    assert refused.status_code == 422 and 'data-error-for="num"' in refused.get_data(as_text=True)
    made = client.post("/generators/faces:1/evaluate", data={"csrf_token": token, "dataset": "builtin:digits",
                                                            "num": "100", "net": "digits"})
    assert made.status_code == 303
    job_id = made.headers["Location"].rsplit("/", 1)[-1]
    job = client.get(f"/v1/jobs/{job_id}").json
    assert job["type"] == "evaluate" and job["request"]["generator_id"] == version["id"]
    assert job["request"]["num"] == 100 and redis_client.llen("evaluate") == 1
    # Its page names the generator and waits for a result.
    page = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert f'href="/generators/{version["id"]}" data-generator-link' in page and re.search(r"data-no-result\s*>", page)
    assert "data-grid" not in page
    result = {"fid": 12.3456, "kid_mean": 0.0123, "is_mean": 2.5, "feature_net": "digits",
              "feature_net_sha256": "ef" * 32, "num_samples": 100, "preprocess": {"size": 28}}
    with api_app.extensions["dcgan"]["sessions"]() as session:
        row = session.get(Job, uuid.UUID(job_id))
        row.status, row.result = JobStatus.SUCCEEDED, result
        session.commit()
    page = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    shown = re.findall(r'<tr data-result-field="([^"]+)"><th>[^<]+</th><td><code>([^<]*)</code>', page)
    assert shown[:3] == [("fid", "12.3456"), ("kid_mean", "0.0123"), ("is_mean", "2.5000")]
    assert ("num_samples", "100") in shown and ("preprocess", '{&#34;size&#34;:28}') in shown
    page = client.get("/generators/faces:1").get_data(as_text=True)
    assert f'data-evaluation-job="{job_id}"' in page and "12.35" in page and "data-no-evaluations" not in page


def test_generate_from_a_registry_version_names_the_version(api_app):
    client = signed_in(api_app)
    upload_generator(api_app, client, "faces", 1)
    second = upload_generator(api_app, client, "faces", 2)
    token = csrf_token(client, "/generators")
    refused = client.post("/generators/faces@latest/generate", data={"csrf_token": token, "seeds": "0-7"})
    assert refused.status_code == 404
    refused = client.post("/generators/faces:2/generate", data={"csrf_token": token, "seeds": "3-1", "nrow": "4"})
    assert refused.status_code == 422
    page = refused.get_data(as_text=True)
    assert 'data-error-for="seeds"' in page and re.search(r"<details data-version-actions\s+open>", page)
    made = client.post("/generators/faces:2/generate", data={"csrf_token": token, "seeds": "0-7", "nrow": "4"})
    assert made.status_code == 303
    job = client.get("/v1/jobs/" + made.headers["Location"].rsplit("/", 1)[-1]).json
    assert job["type"] == "generate" and job["request"]["generator_id"] == second["id"]
    page = client.get(made.headers["Location"]).get_data(as_text=True)
    assert f'href="/generators/{second["id"]}">faces:2</a>' in page


def test_another_tenants_generators_are_404_pages(api_app):
    owner, stranger = signed_in(api_app, "owner"), signed_in(api_app, "stranger")
    version = upload_generator(api_app, owner, "faces")
    assert owner.put("/v1/generators/faces/aliases/champion", json={"version": 1},
                     headers=bearer(api_app, owner)).status_code == 200
    assert "faces:1" not in stranger.get("/generators").get_data(as_text=True)
    for ref in (version["id"], "faces:1", "faces@champion", "not a ref"):
        for path in (f"/generators/{ref}", f"/generators/{ref}/browse"):
            response = stranger.get(path)
            assert response.status_code == 404 and 'data-error-status="404"' in response.get_data(as_text=True), path
    token = csrf_token(stranger, "/")
    for path, data in [("/generators/faces/aliases", {"alias": "mine", "version": "1"}),
                       ("/generators/faces/aliases/champion/delete", {}),
                       ("/generators/faces:1/generate", {"seeds": "0-3"}),
                       (f"/generators/{version['id']}/evaluate", {"dataset": "builtin:digits"})]:
        assert stranger.post(path, data={"csrf_token": token, **data}).status_code == 404, path
    assert owner.get("/v1/generators/faces@champion").json["id"] == version["id"]
    assert owner.get("/v1/generators/faces@mine").status_code == 404
    assert stranger.get("/v1/jobs").json["jobs"] == []


def test_the_seed_browser_page_has_its_hooks_and_keeps_its_place(api_app):
    client = signed_in(api_app)
    version = upload_generator(api_app, client, "faces")
    assert client.put("/v1/generators/faces/aliases/champion", json={"version": 1},
                      headers=bearer(api_app, client)).status_code == 200
    page = client.get("/generators/faces@champion/browse").get_data(as_text=True)
    assert re.findall(r'data-seed="(\d+)"', page) == [str(seed) for seed in range(16)]
    for hook in ("data-truncation", 'data-large=""', "data-interpolation", "data-sampler-error", 'data-pick="from"'):
        assert hook in page, hook
    # The pictures come from the version's immutable reference, whatever reference the page was opened with.
    assert 'data-images-url="/v1/generators/faces:1/images"' in page
    assert 'data-interpolate-url="/v1/generators/faces:1/interpolate"' in page and "data-resolved" in page
    assert '<script src="/static/seeds.js">' in page
    page = client.get(f"/generators/{version['id']}/browse?start=32&truncation=0.7").get_data(as_text=True)
    assert re.findall(r'data-seed="(\d+)"', page)[0] == "32" and 'value="0.7" data-truncation' in page
    assert "data-resolved" not in page
    for query in ("start=-5&truncation=7", "start=x&truncation=nan", "start=&truncation=0"):
        page = client.get(f"/generators/faces:1/browse?{query}").get_data(as_text=True)
        assert re.findall(r'data-seed="(\d+)"', page)[0] == "0" and 'value="1.0" data-truncation' in page, query


def test_the_job_page_shows_the_best_step_and_the_versions_it_registered(api_app):
    client = signed_in(api_app)
    job_id, refs = finished_training(api_app, client, fid=31.25, step=200)
    page = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert re.search(r'<span data-field="best">step 200 · FID 31.25 · KID 0.0125</span>', page)
    assert re.search(rf'href="/v1/jobs/{job_id}/best-generator" download data-best-download\s*>', page)
    assert re.findall(r'data-registered-ref="([^"]+)"', page) == refs
    assert 'href="/generators/digits:2/browse" data-browse' in page and 'data-fid-figure' in page
    # A run that was never evaluated says so, and offers nothing to download.
    plain = submit_job(api_app, client)
    page = client.get(f"/jobs/{plain}").get_data(as_text=True)
    assert re.search(r"data-best-download\s+hidden", page) and "not evaluated (eval_every 0)" in page
    assert re.search(r"<section class=\"registered\" data-registered\s+hidden", page)


def test_the_jobs_page_ranks_runs_by_best_fid(api_app):
    client = signed_in(api_app)
    worse, _ = finished_training(api_app, client, fid=50.0)
    better, _ = finished_training(api_app, client, fid=9.5)
    unevaluated = submit_job(api_app, client)
    page = client.get("/").get_data(as_text=True)
    assert _rows(page) == [unevaluated, better, worse] and '<option value="best_fid" >' in page
    ranked = client.get("/?sort=best_fid&type=train").get_data(as_text=True)
    assert _rows(ranked) == [better, worse] and '<option value="best_fid" selected>' in ranked
    assert re.search(rf'data-job-id="{better}".*?<td data-field="best-fid">9.50</td>', ranked, re.S)
    assert '&#34;sort&#34;: &#34;best_fid&#34;' in ranked  # the live refresh asks for the same order
