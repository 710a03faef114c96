import io
import tarfile
import uuid
import zipfile

import pytest
from PIL import Image

from core.archives import ArchiveError, Limits, read_images


def png(color=(200, 10, 10), size=(12, 9)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (8, 8), 90).save(buffer, format="JPEG")
    return buffer.getvalue()


def make_zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def make_tar(members: dict[str, bytes], mode="w:gz", symlink: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        if symlink:
            info = tarfile.TarInfo(symlink)
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            archive.addfile(info)
    return buffer.getvalue()


def upload(api, data: bytes, filename: str, **form):
    return api.post("/v1/datasets", data={"file": (io.BytesIO(data), filename), **form},
                    content_type="multipart/form-data")


def test_zip_upload_keeps_only_images(api, tmp_path):
    archive = make_zip({"a/one.png": png(), "two.jpg": jpeg(), "notes.txt": b"hello", "bad.png": b"\x89PNGxx",
                        "__MACOSX/._one.png": b"junk", "dir/": b""})
    response = upload(api, archive, "faces.zip", name="faces")
    assert response.status_code == 201, response.json
    body = response.json
    assert (body["name"], body["num_images"], body["num_rejected"]) == ("faces", 2, 3)
    assert response.headers["Location"] == f"/v1/datasets/{body['id']}"
    assert api.get(f"/v1/datasets/{body['id']}").json["num_images"] == 2
    assert [d["id"] for d in api.get("/v1/datasets").json["datasets"]] == [body["id"]]
    stored = sorted(p.relative_to(tmp_path / "artifacts").as_posix()
                    for p in (tmp_path / "artifacts").rglob("*") if p.is_file())
    prefix = f"tenants/{api.tenant_id}/datasets/{body['id']}/images"
    assert stored == [f"{prefix}/000001.png", f"{prefix}/000002.jpg"]
    job = api.post("/v1/jobs/train", json={"dataset": body["id"], "config": {"steps": 5, "img_size": 32}})
    assert job.status_code == 202 and job.json["request"]["dataset"] == body["id"]


def test_tar_gz_upload(api):
    response = upload(api, make_tar({"x/1.png": png(), "x/2.png": png((0, 0, 255))}), "set.tar.gz")
    assert response.status_code == 201 and response.json["num_images"] == 2


@pytest.mark.parametrize("data,filename,message", [
    (make_zip({"../escape.png": png()}), "a.zip", "parent-relative"),
    (make_zip({"/abs.png": png()}), "a.zip", "absolute"),
    (make_tar({"ok.png": png()}, symlink="link.png"), "a.tar.gz", "link"),
    (make_zip({"notes.txt": b"no images"}), "a.zip", "0 decodable images"),
    (b"this is not a zip", "a.zip", "not a readable zip"),
    (b"\x1f\x8b garbage", "a.tar.gz", "tar"),
    (make_zip({"one.png": png()}), "a.rar", "not one of"),
])
def test_hostile_archives_are_422_and_store_nothing(api, tmp_path, data, filename, message):
    response = upload(api, data, filename)
    assert response.status_code == 422 and response.mimetype == "application/problem+json"
    assert response.json["errors"][0]["field"] == "file" and message in response.json["errors"][0]["message"]
    assert not (tmp_path / "artifacts" / "datasets").exists() or not any((tmp_path / "artifacts").rglob("*.png"))
    assert api.get("/v1/datasets").json["datasets"] == []


def test_request_shape_errors(api):
    assert api.post("/v1/datasets", json={"file": "x"}).status_code == 415
    missing = api.post("/v1/datasets", data={"name": "x"}, content_type="multipart/form-data")
    assert missing.status_code == 422 and missing.json["errors"][0]["field"] == "file"
    extra = upload(api, make_zip({"one.png": png()}), "a.zip", owner="someone-else")
    assert extra.status_code == 422 and extra.json["errors"][0] == {"field": "owner", "message": "unknown field"}
    for path in (f"/v1/datasets/{uuid.uuid4()}", "/v1/datasets/not-an-id"):
        assert api.get(path).status_code == 404


def test_limits_are_counted_while_streaming():
    many = make_zip({f"{i}.png": png() for i in range(5)})
    with pytest.raises(ArchiveError, match="more than 3 members"):
        read_images(io.BytesIO(many), "zip", Limits(max_members=3))
    bomb = make_zip({"zeros.png": b"\0" * 200_000})  # compresses to a few hundred bytes
    assert len(bomb) < 5_000
    with pytest.raises(ArchiveError, match="larger than 100000 bytes"):
        read_images(io.BytesIO(bomb), "zip", Limits(max_member_bytes=100_000))
    with pytest.raises(ArchiveError, match="in all"):
        read_images(io.BytesIO(many), "zip", Limits(max_total_bytes=len(png()) * 2))


def test_encrypted_zip_member_is_refused():
    data = bytearray(make_zip({"one.png": png()}))
    # Set the "encrypted" flag in both the local header and the central directory entry.
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = data.index(signature) + offset
        data[at] |= 0x1
    with pytest.raises(ArchiveError, match="encrypted"):
        read_images(io.BytesIO(bytes(data)), "zip")


def test_upload_over_the_limit_is_413_before_reading(engine, tmp_path, redis_client):
    from core.settings import Settings
    from tests.web.conftest import TEST_REDIS_URL, authorized_client
    from web import create_app

    url = engine.url.render_as_string(hide_password=False)
    app = create_app(Settings(data_dir=tmp_path, database_url=url, redis_url=TEST_REDIS_URL,
                              max_upload_bytes=10_000).with_defaults())
    import os

    archive = make_zip({"noise.bin": os.urandom(20_000)})  # incompressible: the body really is > 10 kB
    assert len(archive) > 10_000
    response = upload(authorized_client(app), archive, "big.zip")
    assert response.status_code == 413 and response.mimetype == "application/problem+json"
    app.extensions["dcgan"]["engine"].dispose()
