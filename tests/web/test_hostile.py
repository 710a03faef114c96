"""Acceptance 8: a table of hostile inputs -- archives, images, generator checkpoints, JSON bodies, headers
and ids -- each answered with its own status and problem type, on SQLite and PostgreSQL.

After every case: a refused request left the artifact store exactly as it was (and created no dataset,
generator or job); an accepted upload wrote only under its own dataset's prefix; /healthz still answers.
"""

from __future__ import annotations

import functools
import io
import json
import os
import pickle
import struct
import tarfile
import uuid
import zipfile
import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest
from PIL import Image

from core import jobs
from core.archives import Limits
from core.db import Dataset, Generator, Tenant
from core.storage import dataset_prefix, uploaded_generator_key
from tests.core.test_weights import TINY, generator_arrays, safetensors_bytes, with_value

CONFIG = {**TINY, "steps": 10}
TRAIN = {"dataset": "builtin:digits", "config": CONFIG}


# ----- archive and image builders -----

def png(size=(12, 9), color=(200, 10, 10)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def truncated_png() -> bytes:
    """A noisy PNG cut in half: Pillow identifies it, decoding it fails."""
    buffer = io.BytesIO()
    Image.frombytes("L", (64, 64), bytes(range(256)) * 16).rotate(7).save(buffer, format="PNG")
    return buffer.getvalue()[:len(buffer.getvalue()) // 2]


def image_as(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (0, 90, 0)).save(buffer, format=fmt)
    return buffer.getvalue()


def zip_of(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def zip_with_mode(name: str, mode: int, data: bytes = b"/etc/passwd") -> bytes:
    """A zip whose member `name` carries the Unix mode `mode` (a symlink, a fifo) next to a good image."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        info = zipfile.ZipInfo(name)
        info.external_attr = mode << 16
        archive.writestr(info, data)
        archive.writestr("ok.png", png())
    return buffer.getvalue()


def encrypted_zip() -> bytes:
    data = bytearray(zip_of({"one.png": png()}))
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # the flag in both headers
        data[data.index(signature) + offset] |= 0x1
    return bytes(data)


def zip_lying_about_size() -> bytes:
    """Both headers say the member is 10 bytes; it inflates to 4 MiB."""
    data = bytearray(zip_of({"ok.png": png(), "small.png": b"\0" * (4 << 20)}))
    local = data.index(b"PK\x03\x04", 4)
    data[local + 22:local + 26] = struct.pack("<L", 10)
    central = data.index(b"PK\x01\x02", data.index(b"PK\x01\x02") + 4)
    data[central + 24:central + 28] = struct.pack("<L", 10)
    return bytes(data)


def tar_entry(name: str, data: bytes = b"", type: bytes = tarfile.REGTYPE, linkname: str = ""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = type, linkname
    info.size = len(data) if type == tarfile.REGTYPE else 0
    return info, data


def tar_of(*entries, mode: str = "w:gz") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as archive:
        for info, data in entries:
            archive.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buffer.getvalue()


def tar_lying_about_size() -> bytes:
    """The header says 1 MiB; the archive ends after the member's first block."""
    raw = bytearray(tar_of(tar_entry("a.png", png()), mode="w"))
    raw[124:136] = b"%011o\0" % (1 << 20)
    raw[148:156] = b"        "
    raw[148:156] = b"%06o\0 " % sum(raw[:512])
    return bytes(raw[:1024])


@functools.cache
def pixel_bomb() -> bytes:
    """A valid 30000x30000 1-bit PNG of zeros: 900 million pixels in about 100 kB."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    size = 30_000
    compressor = zlib.compressobj(9)
    rows = (b"\0" * (1 + size // 8)) * 1000
    idat = b"".join(compressor.compress(rows) for _ in range(size // 1000)) + compressor.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


@functools.cache
def many_members_zip() -> bytes:
    return zip_of({f"{i}.txt": b"" for i in range(Limits().max_members + 1)}, zipfile.ZIP_STORED)


def torch_zip_checkpoint() -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save({"main.0.weight": torch.zeros(8, 32, 4, 4)}, buffer)
    return buffer.getvalue()


def _overlap(header: dict) -> None:
    begin, end = header["main.1.weight"]["data_offsets"]
    header["main.1.weight"]["data_offsets"] = [begin - 4, end - 4]


def _extra(header: dict) -> None:
    header["main.99.weight"] = {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}


GOOD_WEIGHTS = functools.cache(lambda: safetensors_bytes(generator_arrays()))


# ----- the other tenant, and how requests are sent -----

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

CASES = [
    # archives
    Case("zip slip", dataset(zip_of({"../../../tmp/evil.png": png()})), 422, "archive-unsafe-path"),
    Case("absolute path in zip", dataset(zip_of({"/etc/cron.d/evil.png": png()})), 422, "archive-unsafe-path"),
    Case("absolute path in tar", dataset(tar_of(tar_entry("/abs.png", png())), "a.tar.gz"), 422,
         "archive-unsafe-path"),
    Case("windows drive in zip", dataset(zip_of({"C:\\Windows\\evil.png": png()})), 422, "archive-unsafe-path"),
    Case("tar symlink", dataset(tar_of(tar_entry("ok.png", png()), tar_entry("l.png", type=tarfile.SYMTYPE,
                                                                              linkname="/etc/passwd")), "a.tgz"),
         422, "archive-link"),
    Case("tar hardlink", dataset(tar_of(tar_entry("ok.png", png()), tar_entry("h.png", type=tarfile.LNKTYPE,
                                                                               linkname="ok.png")), "a.tar"),
         422, "archive-link"),
    Case("zip symlink member", dataset(zip_with_mode("link.png", 0o120777)), 422, "archive-link"),
    Case("tar device", dataset(tar_of(tar_entry("sda.png", type=tarfile.CHRTYPE)), "a.tar.gz"), 422,
         "archive-special-file"),
    Case("tar fifo", dataset(tar_of(tar_entry("pipe.png", type=tarfile.FIFOTYPE)), "a.tar.gz"), 422,
         "archive-special-file"),
    Case("zip fifo member", dataset(zip_with_mode("pipe.png", 0o010644, b"")), 422, "archive-special-file"),
    Case("encrypted zip member", dataset(encrypted_zip()), 422, "archive-encrypted"),
    Case("too many members (zip directory)", dataset(many_members_zip), 422, "archive-too-many-members"),
    Case("too many members (tar, counted)", dataset(tar_of(*(tar_entry(f"{i}.png", png()) for i in range(11))),
                                                    "a.tar.gz"), 422, "archive-too-many-members",
         limits=Limits(max_members=10)),
    Case("zip bomb by ratio", dataset(zip_of({"ok.png": png(), "zeros.png": b"\0" * (8 << 20)})), 422,
         "archive-ratio"),
    Case("tar.gz bomb by ratio", dataset(tar_of(tar_entry("zeros.png", b"\0" * (8 << 20))), "a.tar.gz"), 422,
         "archive-ratio"),
    Case("over the total size", dataset(zip_of({f"{i}.bin": NOISE for i in range(3)}, zipfile.ZIP_STORED)), 413,
         "archive-too-large", limits=Limits(max_total_bytes=1 << 20)),
    Case("member over its size", dataset(zip_of({"big.png": NOISE})), 413, "archive-too-large",
         limits=Limits(max_member_bytes=256 << 10)),
    Case("zip header lying about size", dataset(zip_lying_about_size()), 422, "archive-corrupt"),
    Case("tar header lying about size", dataset(tar_lying_about_size(), "a.tar"), 422, "archive-corrupt"),
    Case("nested zip", dataset(zip_of({"ok.png": png(), "inner.zip": zip_of({"a.png": png()})})), 422,
         "archive-nested"),
    Case("nested tar.gz in a tar", dataset(tar_of(tar_entry("in.tgz", tar_of(tar_entry("a.png", png()))),
                                                  mode="w"), "a.tar"), 422, "archive-nested"),
    Case("no images at all", dataset(zip_of({"notes.txt": b"hello", "run.sh": b"rm -rf /"})), 422,
         "too-few-images"),
    Case("fewer than the minimum", dataset(zip_of({"a.png": png(), "b.png": png()})), 422, "too-few-images",
         limits=Limits(min_images=3)),
    Case("truncated image", dataset(zip_of({"cut.png": truncated_png()})), 422, "too-few-images"),
    Case("TIFF renamed .png", dataset(zip_of({"t.png": image_as("TIFF")})), 422, "too-few-images"),
    Case("ICO renamed .png", dataset(zip_of({"i.png": image_as("ICO")})), 422, "too-few-images"),
    Case("SVG renamed .png", dataset(zip_of({"s.png": b'<svg xmlns="http://www.w3.org/2000/svg" width="9" '
                                                      b'height="9"><script>alert(1)</script></svg>'})),
         422, "too-few-images"),
    Case("HTML renamed .jpg", dataset(zip_of({"h.jpg": b"<html><script>alert(1)</script></html>"})), 422,
         "too-few-images"),
    Case("pixel bomb PNG", dataset(lambda: zip_of({"bomb.png": pixel_bomb()})), 422, "too-few-images"),
    Case("not an archive", dataset(b"MZ\x90\x00 not a zip at all"), 422, "archive-corrupt"),
    Case("unsupported archive type", dataset(zip_of({"a.png": png()}), "set.rar"), 422, "archive-format"),
    Case("truncated image beside a good one", dataset(zip_of({"cut.png": truncated_png(), "ok.png": png()})), 201,
         None, rejected=1),
    Case("TIFF and pixel bomb beside a good one",
         dataset(lambda: zip_of({"t.png": image_as("TIFF"), "bomb.png": pixel_bomb(), "ok.png": png()})), 201, None,
         rejected=2),
    Case("NUL in a dataset name", dataset(zip_of({"a.png": png()}), name="faces\x00; DROP TABLE jobs"), 422,
         "validation-error"),
    Case("NUL in the file name", dataset(zip_of({"a.png": png()}), "a\x00b.zip"), 201, None,
         rejected=0),
    # generator checkpoints
    Case("pickle .pt", generator(pickle.dumps({"main.0.weight": [0.0]}, protocol=2)), 422, "weights-pickle"),
    Case("torch.save zip", generator(torch_zip_checkpoint), 422, "weights-pickle"),
    Case("wrong shapes", generator(GOOD_WEIGHTS, {**CONFIG, "g_channels": 16}), 422, "weights-shape"),
    Case("wrong dtype", generator(lambda: safetensors_bytes({**generator_arrays(),
                                                             "main.1.weight": ("F64", np.ones(32))})),
         422, "weights-dtype"),
    Case("NaN weights", generator(lambda: safetensors_bytes(with_value("main.3.weight", np.nan))), 422,
         "weights-non-finite"),
    Case("Inf weights (bf16)", generator(lambda: safetensors_bytes(with_value("main.9.weight", np.inf, "BF16"))),
         422, "weights-non-finite"),
    Case("header length past EOF", generator(lambda: safetensors_bytes(generator_arrays(), header_length=900_000)),
         422, "weights-header"),
    Case("huge header", generator(lambda: safetensors_bytes(generator_arrays(), header_length=1 << 40)), 422,
         "weights-header"),
    Case("overlapping offsets", generator(lambda: safetensors_bytes(generator_arrays(), edit_header=_overlap)), 422,
         "weights-offsets"),
    Case("extra tensor", generator(lambda: safetensors_bytes(generator_arrays(), edit_header=_extra)), 422,
         "weights-unexpected-tensor"),
    Case("missing tensor", generator(lambda: safetensors_bytes(
        generator_arrays(), edit_header=lambda h: h.pop("main.4.running_var"))), 422, "weights-missing-tensor"),
    Case("bad config JSON", generator(GOOD_WEIGHTS, '{"z_dim": 8,'), 422, "validation-error"),
    Case("unknown config field", generator(GOOD_WEIGHTS, {**CONFIG, "exec": "rm -rf /"}), 422, "validation-error"),
    Case("read-only field in the upload form", generator(GOOD_WEIGHTS, tenant_id=str(uuid.uuid4())), 422,
         "validation-error"),
    Case("NUL in a generator name", generator(GOOD_WEIGHTS, name="g\x00"), 422, "validation-error"),
    # JSON bodies
    Case("NUL in a JSON string", post_json("/v1/jobs/train", {**TRAIN, "dataset": "builtin:\x00digits"}), 422,
         "validation-error"),
    Case("unknown field", post_json("/v1/jobs/train", {**TRAIN, "priority": 1}), 422, "validation-error"),
    Case("mass assignment of read-only fields", post_json("/v1/jobs/train", {
        **TRAIN, "status": "succeeded", "id": str(uuid.uuid4()), "attempt": 3}), 422, "validation-error"),
    Case("mass assignment of the tenant", post_json("/v1/jobs/generate", lambda f: {
        "generator_job": f.job, "seeds": "0-3", "tenant_id": str(uuid.uuid4())}), 422, "validation-error"),
    Case("wrong types", post_json("/v1/jobs/train", {"dataset": 5, "config": {"steps": "many", "lr": [1]}}), 422,
         "validation-error"),
    Case("deeply nested", post_raw("/v1/jobs/train", "[" * 100_000 + "]" * 100_000), 400, "malformed-json"),
    Case("not an object", post_raw("/v1/jobs/generate", "[1, 2, 3]"), 400, "malformed-json"),
    Case("invalid UTF-8", post_raw("/v1/jobs/train", b'{"dataset": "\xff\xfe\xfd"}'), 400, "malformed-json"),
    Case("huge integer", post_json("/v1/jobs/train", {**TRAIN, "config": {**CONFIG, "steps": 10**40}}), 422,
         "validation-error"),
    Case("integer beyond the parser's digit limit", post_raw("/v1/jobs/generate",
                                                             '{"seeds": [' + "9" * 5000 + "]}"), 400,
         "malformed-json"),
    Case("huge float", post_json("/v1/jobs/generate", lambda f: {"generator_job": f.job, "seeds": "0-3",
                                                                 "truncation": 1e308 * 10}), 422, "validation-error"),
    Case("another tenant's generator", post_json("/v1/jobs/generate", lambda f: {
        "generator": f.generator, "seeds": "0-3"}), 422, "validation-error"),
    Case("another tenant's train job", post_json("/v1/jobs/generate", lambda f: {
        "generator_job": f.job, "seeds": "0-3"}), 422, "validation-error"),
    Case("another tenant's dataset", post_json("/v1/jobs/train", lambda f: {**TRAIN, "dataset": f.dataset}), 422,
         "validation-error"),
    # headers
    Case("Content-Length over the limit (dataset)", lying_content_length("/v1/datasets"), 413,
         "payload-too-large"),
    Case("Content-Length over the limit (generator)", lying_content_length("/v1/generators"), 413,
         "payload-too-large"),
    Case("chunked body over the limit", chunked(NOISE), 413, "payload-too-large", max_content_length=100_000),
    Case("wrong Content-Type (job)", post_raw("/v1/jobs/train", "dataset=builtin:digits", "text/plain"), 415,
         "unsupported-media-type"),
    Case("wrong Content-Type (dataset)", post_json("/v1/datasets", {"file": "a.zip"}), 415,
         "unsupported-media-type"),
    Case("wrong Content-Type (generator)", post_raw("/v1/generators", "config={}",
                                                    "application/x-www-form-urlencoded"), 415,
         "unsupported-media-type"),
    Case("no Authorization header", with_auth(lambda c: None), 401, "unauthorized"),
    Case("Basic instead of Bearer", with_auth(lambda c: "Basic dXNlcjpwYXNzd29yZA=="), 401, "unauthorized"),
    Case("unknown API key", with_auth(lambda c: "Bearer dcg_" + "A" * 43), 401, "unauthorized"),
    Case("API key with trailing junk", with_auth(lambda c: f"Bearer {c.api.api_key} x"), 401, "unauthorized"),
    Case("revoked API key", with_auth(revoked_key), 401, "unauthorized"),
    Case("Idempotency-Key too long", with_auth(lambda c: f"Bearer {c.api.api_key}", {"Idempotency-Key": "k" * 300}),
         400, "invalid-idempotency-key"),
    Case("Idempotency-Key with a control character", with_auth(lambda c: f"Bearer {c.api.api_key}",
                                                               {"Idempotency-Key": "a\x01b"}),
         400, "invalid-idempotency-key"),
    # ids
    Case("malformed job id", get("/v1/jobs/not-a-uuid"), 404, "not-found"),
    Case("another tenant's job", get(lambda f: f"/v1/jobs/{f.job}"), 404, "not-found"),
    Case("cancel another tenant's job", get(lambda f: f"/v1/jobs/{f.job}/cancel", "post"), 404, "not-found"),
    Case("another tenant's job grid", get(lambda f: f"/v1/jobs/{f.job}/grid"), 404, "not-found"),
    Case("another tenant's dataset id", get(lambda f: f"/v1/datasets/{f.dataset}"), 404, "not-found"),
    Case("another tenant's generator id", get(lambda f: f"/v1/generators/{f.generator}"), 404, "not-found"),
    Case("path traversal in an id", get("/v1/jobs/..%2F..%2F..%2Fetc%2Fpasswd"), 404, "not-found"),
    Case("path traversal in an artifact id", get(lambda f: f"/v1/jobs/{f.job}/artifacts/..%2F..%2Fsecret"), 404,
         "not-found"),
    Case("very long id", get("/v1/datasets/" + "7" * 20_000), 404, "not-found"),
]


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


def test_table_is_large_enough():
    assert len(CASES) >= 30 and len({c.name for c in CASES}) == len(CASES)
    assert {c.type for c in CASES if c.type} >= {"archive-unsafe-path", "archive-link", "archive-too-large",
                                                  "archive-ratio", "weights-pickle", "payload-too-large"}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_input(api, case: Case):
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
