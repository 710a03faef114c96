"""The artifact store, each behaviour run against both backends: LocalStore on a temp directory and S3Store
talking boto3 over HTTP to an S3 server.

moto's standalone server stands in for real S3 here: production and docker-compose use MinIO (or AWS), but
this machine has no Docker engine. moto speaks the same wire protocol (SigV4, multipart, presigned GETs), so
the requests boto3 makes are the real ones; what moto cannot show is MinIO's own quirks.
"""

from __future__ import annotations

import hashlib
import io
import os
import socket
import urllib.request
import uuid
from pathlib import Path

import pytest

from core.settings import Settings
from core.storage import (LocalStore, ObjectNotFound, S3Store, StorageError, checkpoint_key, content_type_for,
                          dataset_key, generator_key, grid_key, open_store, sample_key,
                          uploaded_generator_key)

MiB = 1024 * 1024
# Small enough that a 12 MiB upload takes the multipart path in three 5 MiB parts (S3's minimum part size).
PART = 5 * MiB


@pytest.fixture(scope="module")
def s3_client(s3_endpoint):
    """One client, built by S3Store itself, shared by the tests: building one takes ~0.4 s of CPU."""
    return S3Store("unused", endpoint_url=s3_endpoint)._client


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalStore(tmp_path / "artifacts")
    # A fresh bucket per test, and a prefix so the tests see that keys come back without it.
    client = request.getfixturevalue("s3_client")
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    return S3Store(bucket, "artifacts/", client=client, multipart_threshold=PART, multipart_chunksize=PART)


def write_random(path: Path, size: int) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


def test_put_bytes_round_trip_reports_size_and_sha256(store):
    data = b"\x89PNG fake grid bytes"
    stored = store.put_bytes("jobs/7/grid.png", data, "image/png")
    assert (stored.key, stored.size, stored.sha256, stored.content_type) == (
        "jobs/7/grid.png", len(data), hashlib.sha256(data).hexdigest(), "image/png")
    assert store.get_bytes("jobs/7/grid.png") == data
    assert store.exists("jobs/7/grid.png") and not store.exists("jobs/7/other.png")
    with store.open("jobs/7/grid.png") as f:
        assert f.read(4) + f.read() == data


def test_overwrite_replaces_the_object(store):
    store.put_bytes("jobs/1/grid.png", b"old")
    store.put_bytes("jobs/1/grid.png", b"new")
    assert store.get_bytes("jobs/1/grid.png") == b"new"
    assert store.list("jobs/1/") == ["jobs/1/grid.png"]


def test_put_file_streams_a_multi_mib_file(store, tmp_path):
    data = write_random(tmp_path / "ckpt.pt", 3 * MiB + 17)
    stored = store.put_file(checkpoint_key("t", 3, 1200), tmp_path / "ckpt.pt")
    assert stored.size == len(data) and stored.sha256 == hashlib.sha256(data).hexdigest()
    assert stored.content_type == "application/octet-stream"
    with store.open("tenants/t/jobs/3/checkpoints/step-0001200.pt") as f:
        assert b"".join(iter(lambda: f.read(MiB), b"")) == data


def test_get_file_streams_an_object_to_disk_with_its_hash(store, tmp_path):
    data = write_random(tmp_path / "up.pt", 3 * MiB + 5)
    stored = store.put_file("jobs/1/up.pt", tmp_path / "up.pt")
    fetched = store.get_file("jobs/1/up.pt", tmp_path / "down.pt")
    assert (fetched.size, fetched.sha256) == (stored.size, stored.sha256)
    assert (tmp_path / "down.pt").read_bytes() == data
    with pytest.raises(ObjectNotFound):
        store.get_file("jobs/1/missing.pt", tmp_path / "missing.pt")
    assert not (tmp_path / "missing.pt").exists()


def test_large_file_goes_up_in_parts_and_arrives_intact(store, tmp_path):
    data = write_random(tmp_path / "big.pt", 12 * MiB + 5)
    stored = store.put_file("jobs/1/big.pt", tmp_path / "big.pt")
    assert stored.size == len(data) and stored.sha256 == hashlib.sha256(data).hexdigest()
    assert hashlib.sha256(store.get_bytes("jobs/1/big.pt")).hexdigest() == stored.sha256
    if isinstance(store, S3Store):
        # A multipart object's ETag ends in -<parts>: proves the threshold sent it up in three parts.
        head = store._client.head_object(Bucket=store.bucket, Key="artifacts/jobs/1/big.pt")
        assert head["ETag"].strip('"').endswith("-3")


def test_list_is_sorted_and_scoped_to_the_prefix(store):
    for step in (1200, 100, 50):
        store.put_bytes(f"jobs/1/samples/step-{step:07d}.png", b"png")
    store.put_bytes("jobs/1/grid.png", b"png")
    store.put_bytes("jobs/10/grid.png", b"png")
    store.put_bytes("datasets/d1/images.zip", b"zip")
    assert store.list("jobs/1/") == ["jobs/1/grid.png", "jobs/1/samples/step-0000050.png",
                                     "jobs/1/samples/step-0000100.png", "jobs/1/samples/step-0001200.png"]
    assert store.list("jobs/1/samples/step-00001") == ["jobs/1/samples/step-0000100.png"]
    # A plain string prefix, as S3 has it: "jobs/1" also matches "jobs/10/".
    assert store.list("jobs/1") == store.list("jobs/1/") + ["jobs/10/grid.png"]
    assert store.list("datasets/") == ["datasets/d1/images.zip"]
    assert store.list("nothing/") == []
    assert len(store.list()) == 6


def test_delete_and_delete_prefix(store):
    for step in (1, 2, 3):
        store.put_bytes(f"jobs/1/checkpoints/{step}.pt", b"ckpt")
    store.put_bytes("jobs/1/generator.safetensors", b"g")
    store.put_bytes("jobs/10/generator.safetensors", b"g")
    store.delete("jobs/1/checkpoints/2.pt")
    store.delete("jobs/1/checkpoints/2.pt")  # already gone: not an error
    assert store.list("jobs/1/checkpoints/") == ["jobs/1/checkpoints/1.pt", "jobs/1/checkpoints/3.pt"]
    store.delete_prefix("jobs/1/")
    assert store.list() == ["jobs/10/generator.safetensors"]
    store.delete_prefix("jobs/1/")  # nothing left under it: not an error
    with pytest.raises(StorageError, match="end with '/'"):
        store.delete_prefix("jobs/1")  # would also take jobs/10/
    with pytest.raises(StorageError, match="end with '/'"):
        store.delete_prefix("")


def test_missing_object_is_object_not_found(store):
    with pytest.raises(ObjectNotFound, match="jobs/9/grid.png"):
        store.get_bytes("jobs/9/grid.png")
    with pytest.raises(ObjectNotFound):
        store.open("jobs/9/grid.png")


@pytest.mark.parametrize("key", ["../x", "/abs", "a//b", "a\\b", "", "a/../b", "a/./b", "a/", ".hidden",
                                 "a b", "jobs/1/grid.png\n"])
def test_invalid_keys_are_rejected_naming_the_key(store, key):
    for attempt in (lambda: store.put_bytes(key, b"x"), lambda: store.get_bytes(key),
                    lambda: store.exists(key), lambda: store.delete(key), lambda: store.presigned_url(key)):
        with pytest.raises(StorageError, match="invalid key") as info:
            attempt()
        assert repr(key) in str(info.value)
    assert store.list() == []


def test_a_failed_read_of_the_source_leaves_no_object(store):
    class BreaksAfter:
        """A source that fails after handing out `limit` bytes, like a disk error or a dropped upload."""

        def __init__(self, limit):
            self._inner, self._limit = io.BytesIO(os.urandom(limit + MiB)), limit

        def read(self, amount=-1):
            if self._inner.tell() >= self._limit:
                raise OSError("simulated read error")
            return self._inner.read(min(amount, self._limit - self._inner.tell()) if amount >= 0 else
                                    self._limit - self._inner.tell())

    store.put_bytes("jobs/1/grid.png", b"previous")
    # 2 MiB fails inside what would be one PUT; 7 MiB fails after S3Store has begun a multipart upload.
    for limit in (2 * MiB, PART + 2 * MiB):
        with pytest.raises(OSError, match="simulated read error"):
            store.put_stream("jobs/1/grid.png", BreaksAfter(limit))
        with pytest.raises(OSError, match="simulated read error"):
            store.put_stream("jobs/1/new.pt", BreaksAfter(limit))
    assert store.get_bytes("jobs/1/grid.png") == b"previous"
    assert store.list() == ["jobs/1/grid.png"]
    if isinstance(store, S3Store):  # the multipart upload was aborted, not left to accrue storage
        assert "Uploads" not in store._client.list_multipart_uploads(Bucket=store.bucket)
    else:
        assert [p.name for p in store.root.rglob("*") if p.is_file()] == ["grid.png"]


def test_local_writes_leave_no_temp_files(tmp_path):
    store = LocalStore(tmp_path)
    write_random(tmp_path.parent / "src.bin", 2 * MiB)
    store.put_file("jobs/1/checkpoints/step-0000001.pt", tmp_path.parent / "src.bin")
    store.put_bytes("jobs/1/grid.png", b"a")
    store.put_bytes("jobs/1/grid.png", b"b")
    store.check()
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert files == ["jobs/1/checkpoints/step-0000001.pt", "jobs/1/grid.png"]
    assert (tmp_path / "jobs/1/grid.png").stat().st_mode & 0o777 == 0o644


def test_local_list_skips_a_write_in_progress(tmp_path):
    store = LocalStore(tmp_path)
    store.put_bytes("jobs/1/grid.png", b"png")
    (tmp_path / "jobs/1/.grid.png.abc123.tmp").write_bytes(b"half")  # what a concurrent put looks like
    assert store.list() == ["jobs/1/grid.png"]


def test_local_store_stays_under_its_root_through_symlinks(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"s")
    store = LocalStore(tmp_path / "root")
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "link").symlink_to(outside)
    for attempt in (lambda: store.get_bytes("link/secret"), lambda: store.put_bytes("link/new", b"x"),
                    lambda: store.delete_prefix("link/")):
        with pytest.raises(StorageError, match="outside the store root"):
            attempt()
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]


def test_presigned_url_downloads_the_bytes_on_s3_and_is_none_locally(store):
    data = os.urandom(1000)
    store.put_bytes("jobs/2/grid.png", data)
    url = store.presigned_url("jobs/2/grid.png", expires_seconds=60)
    if isinstance(store, LocalStore):
        assert url is None
        return
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == data
        assert response.headers["Content-Type"] == "image/png"


def test_presigned_urls_name_the_public_endpoint_when_one_is_set(s3_client, s3_endpoint):
    """The servers reach S3 at one address, clients at another (docker-compose: minio:9000 inside,
    localhost:9000 outside): the link is signed for the public one, and works there."""
    public = s3_endpoint.replace("127.0.0.1", "localhost")
    bucket = f"public-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=bucket)
    store = S3Store(bucket, "artifacts/", client=s3_client, public_endpoint_url=public)
    store.put_bytes("jobs/3/grid.png", b"png bytes")
    url = store.presigned_url("jobs/3/grid.png", expires_seconds=60)
    assert url.startswith(f"{public}/{bucket}/artifacts/jobs/3/grid.png?")
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == b"png bytes"
    plain = S3Store(bucket, "artifacts/", client=s3_client).presigned_url("jobs/3/grid.png")
    assert plain.startswith(f"{s3_endpoint}/{bucket}/")


def test_open_store_passes_the_public_endpoint(s3_endpoint):
    settings = Settings(storage_url="s3://bucket/prefix", s3_endpoint_url=s3_endpoint,
                        s3_public_endpoint_url="http://downloads.example:9000").with_defaults()
    store = open_store(settings)
    assert store.presigned_url("k").startswith("http://downloads.example:9000/bucket/prefix/k?")


def test_check_passes_on_a_working_store(store):
    store.check()


def test_check_fails_on_an_unreachable_s3(s3_endpoint):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    # Two attempts: one retry is exercised, and the backoff before it stays under a second.
    store = S3Store("bucket", endpoint_url=f"http://127.0.0.1:{closed_port}", connect_timeout=1, max_attempts=2)
    with pytest.raises(StorageError, match=f"s3://bucket/.*127.0.0.1:{closed_port}") as info:
        store.check()
    assert "\n" not in str(info.value)


def test_check_fails_on_a_missing_bucket(s3_endpoint):
    with pytest.raises(StorageError, match="s3://no-such-bucket/"):
        S3Store("no-such-bucket", endpoint_url=s3_endpoint, max_attempts=1).check()


def test_check_fails_on_an_unwritable_local_root(tmp_path):
    (tmp_path / "file").write_bytes(b"not a directory")
    with pytest.raises(StorageError, match="not writable"):
        LocalStore(tmp_path / "file").check()


def test_key_helpers_are_sortable_predictable_and_tenant_scoped():
    assert checkpoint_key("t1", 42, 1200) == "tenants/t1/jobs/42/checkpoints/step-0001200.pt"
    assert sample_key("t1", "7f3a", 1200) == "tenants/t1/jobs/7f3a/samples/step-0001200.png"
    assert grid_key("t1", 42) == "tenants/t1/jobs/42/grid.png"
    assert generator_key("t1", 42) == "tenants/t1/jobs/42/generator.safetensors"
    assert dataset_key("t1", 5, "cats.zip") == "tenants/t1/datasets/5/cats.zip"
    assert uploaded_generator_key("t2", "g") == "tenants/t2/generators/g.safetensors"
    assert sorted(checkpoint_key("t", 1, s) for s in (1000, 50, 200)) == [
        checkpoint_key("t", 1, s) for s in (50, 200, 1000)]
    assert content_type_for(grid_key("t", 1)) == "image/png"
    for bad in (lambda: checkpoint_key("t", "../1", 1), lambda: checkpoint_key("t", 1, -1),
                lambda: sample_key("t", 1, 10**7), lambda: dataset_key("t", 5, "../../etc/passwd"),
                lambda: grid_key("t", "a/b"), lambda: grid_key("..", 1), lambda: grid_key("a/b", 1)):
        with pytest.raises(StorageError, match="invalid"):
            bad()


def test_open_store_follows_the_settings(tmp_path, s3_endpoint):
    local = open_store(Settings(data_dir=tmp_path).with_defaults())
    assert isinstance(local, LocalStore) and local.root == (tmp_path / "artifacts").resolve()
    s3 = open_store(Settings(storage_url="s3://bkt/some/prefix", s3_endpoint_url=s3_endpoint).with_defaults())
    assert isinstance(s3, S3Store) and (s3.bucket, s3.prefix, s3.endpoint_url) == ("bkt", "some/prefix/", s3_endpoint)
    s3._client.create_bucket(Bucket="bkt")
    s3.put_bytes("jobs/1/grid.png", b"x")
    assert s3._client.get_object(Bucket="bkt", Key="some/prefix/jobs/1/grid.png")["Body"].read() == b"x"
