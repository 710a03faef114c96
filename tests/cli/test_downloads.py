"""`dcgan jobs download` (cli.downloads) and `dcgan datasets upload|list` (cli.datasets) against a fake API on
loopback (tests/cli/fake_api.py), standing in for the platform so that hostile listings, corrupted bytes and
redirects to another host can be staged: names that would leave DIR are refused before anything is written,
bytes that do not match their sha256 are never kept, and the API key never follows a redirect to another
origin."""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
import json

import pytest

from cli.main import main
from tests.cli.fake_api import JOB_ID, KEY, Answer, FakeApi, json_answer

FILES = {"grid.png": b"\x89PNG grid", "generator.safetensors": b"weights",
         "samples/step-0000100.png": b"\x89PNG 100", "checkpoints/step-0000200.pt": b"checkpoint"}


@pytest.fixture
def api(fake_apis):
    return fake_apis


def serve_job(fake: FakeApi, files: dict[str, bytes], names: dict[str, str] | None = None,
              sha256: dict[str, str] | None = None) -> None:
    """The job's artifact list and downloads; `names` lists a file under another name, `sha256` lies."""
    listing = []
    for index, (name, body) in enumerate(files.items()):
        path = f"/v1/jobs/{JOB_ID}/artifacts/{index}"
        listing.append({"id": str(index), "name": (names or {}).get(name, name), "size": len(body),
                        "sha256": (sha256 or {}).get(name, hashlib.sha256(body).hexdigest()),
                        "content_type": "application/octet-stream", "step": None, "download_url": path})
        fake.routes[f"GET {path}"] = lambda h, body=body: Answer(200, body)
    fake.routes[f"GET /v1/jobs/{JOB_ID}/artifacts"] = lambda h: json_answer({"artifacts": listing})
    fake.routes[f"GET /v1/jobs/{JOB_ID}/grid"] = lambda h: Answer(200, files["grid.png"])
    fake.routes[f"GET /v1/jobs/{JOB_ID}/generator"] = lambda h: Answer(200, files["generator.safetensors"])


def test_download_writes_the_grid_the_generator_and_every_artifact_under_its_name(api, tmp_path, capsys):
    fake = api()
    serve_job(fake, FILES)
    out_dir = tmp_path / "run"
    assert main(["jobs", "download", JOB_ID, "--grid", str(tmp_path / "g.png"), "--generator",
                 str(tmp_path / "G.safetensors"), "--artifacts", str(out_dir)]) == 0
    assert (tmp_path / "g.png").read_bytes() == FILES["grid.png"]
    assert (tmp_path / "G.safetensors").read_bytes() == FILES["generator.safetensors"]
    written = {str(p.relative_to(out_dir)): p.read_bytes() for p in out_dir.rglob("*") if p.is_file()}
    assert written == FILES  # and no temporary file left behind
    out = capsys.readouterr().out
    sample = "samples/step-0000100.png"
    assert f"wrote {out_dir / sample} ({len(FILES[sample])} bytes, sha256 " in out and len(out.splitlines()) == 6


@pytest.mark.parametrize("name", ["../escaped.png", "/tmp/absolute.png", "samples/../../escaped.png",
                                  "samples\\..\\escaped.png", "samples//x.png"])
def test_a_name_that_would_leave_the_directory_refuses_the_whole_download(api, tmp_path, capsys, name):
    fake = api()
    serve_job(fake, FILES, names={"checkpoints/step-0000200.pt": name})
    out_dir = tmp_path / "inside" / "run"
    assert main(["jobs", "download", JOB_ID, "--artifacts", str(out_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"dcgan jobs: refused artifact name {name!r}") and err.count("\n") == 1
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
    assert fake.paths() == [f"/v1/jobs/{JOB_ID}/artifacts"]  # checked before a single download


def test_bytes_that_do_not_match_their_sha256_are_not_kept(api, tmp_path, capsys):
    fake = api()
    serve_job(fake, FILES, sha256={"samples/step-0000100.png": "0" * 64})
    out_dir = tmp_path / "run"
    (out_dir / "samples").mkdir(parents=True)
    (out_dir / "samples" / "step-0000100.png").write_bytes(b"kept from before")
    assert main(["jobs", "download", JOB_ID, "--artifacts", str(out_dir)]) == 2
    err = capsys.readouterr().err
    assert "step-0000100.png: sha256" in err and f"is not the listed {'0' * 64}; not written" in err
    assert (out_dir / "samples" / "step-0000100.png").read_bytes() == b"kept from before"
    assert sorted(p.name for p in (out_dir / "samples").iterdir()) == ["step-0000100.png"]  # no .part left


def test_a_redirect_to_another_host_is_followed_without_the_api_key(api, tmp_path):
    """As the API answers with S3: 302 to a presigned URL, whose signature is its credential."""
    fake, store = api(), FakeApi()
    try:
        serve_job(fake, FILES)
        presigned = "/bucket/grid.png?X-Amz-Signature=abc"
        store.routes[f"GET {presigned}"] = lambda h: Answer(200, b"\x89PNG from the store")
        fake.routes[f"GET /v1/jobs/{JOB_ID}/grid"] = lambda h: Answer(302, b"", {"Location": store.url + presigned})
        local = f"/v1/jobs/{JOB_ID}/generator"
        fake.routes[f"GET /v1/jobs/{JOB_ID}/moved"] = lambda h: Answer(302, b"", {"Location": local})
        fake.routes[f"GET /v1/jobs/{JOB_ID}/artifacts/1"] = lambda h: Answer(302, b"", {
            "Location": f"/v1/jobs/{JOB_ID}/moved"})
        assert main(["jobs", "download", JOB_ID, "--grid", str(tmp_path / "g.png"), "--artifacts",
                     str(tmp_path / "run")]) == 0
        assert (tmp_path / "g.png").read_bytes() == b"\x89PNG from the store"
        assert (tmp_path / "run" / "generator.safetensors").read_bytes() == FILES["generator.safetensors"]
        assert [r["path"] for r in store.requests] == [presigned]
        assert "authorization" not in store.requests[0]["headers"]
        # On its own origin the key goes along, redirects included.
        assert all(r["headers"]["authorization"] == f"Bearer {KEY}" for r in fake.requests)
        assert f"/v1/jobs/{JOB_ID}/moved" in fake.paths()
    finally:
        store.close()


def test_nothing_asked_for_is_an_error(api, capsys):
    api()
    assert main(["jobs", "download", JOB_ID]) == 2
    assert capsys.readouterr().err.startswith("dcgan jobs: nothing to download")


def test_datasets_upload_sends_the_file_as_multipart_and_prints_the_answer(api, tmp_path, capsys):
    fake = api()
    answer = {"id": "d1", "name": "faces", "num_images": 64, "num_rejected": 2}
    fake.routes["POST /v1/datasets"] = lambda h: json_answer(answer, 201)
    archive = tmp_path / 'my "faces".zip'
    archive.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 4096)  # 1 MiB: more than one chunk
    assert main(["datasets", "upload", str(archive), "--name", "faces"]) == 0
    assert json.loads(capsys.readouterr().out) == answer
    request = fake.requests[0]
    assert request["headers"]["idempotency-key"].startswith("cli-")
    assert int(request["headers"]["content-length"]) == len(request["body"])
    form = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {request['headers']['content-type']}\r\n\r\n".encode() + request["body"])
    parts = {part.get_param("name", header="content-disposition"): part for part in form.iter_parts()}
    assert parts["name"].get_content() == "faces"
    assert parts["file"].get_filename() == "my %22faces%22.zip"
    assert parts["file"].get_payload(decode=True) == archive.read_bytes()


def test_datasets_upload_of_a_missing_file_is_one_line(api, tmp_path, capsys):
    fake = api()
    assert main(["datasets", "upload", str(tmp_path / "nope.zip")]) == 2
    assert capsys.readouterr().err == f"dcgan datasets: {tmp_path / 'nope.zip'}: No such file or directory\n"
    assert fake.requests == []


def test_datasets_list(api, capsys):
    fake = api()
    fake.routes["GET /v1/datasets"] = lambda h: json_answer({"datasets": [{"id": "d1"}]})
    assert main(["datasets", "list"]) == 0
    assert json.loads(capsys.readouterr().out) == {"datasets": [{"id": "d1"}]}
