"""The artifact store: where checkpoints, sample grids, generators and uploaded datasets live.

One interface, `ArtifactStore`, two backends: `LocalStore` (a directory, the embedded default) and `S3Store`
(S3 or anything that speaks it: MinIO, moto). `open_store(settings)` picks one from `settings.storage_url`.
This module also owns the key layout (`checkpoint_key`, `sample_key`, ...): keys are made by the server,
sort in step order and never come from user input unchecked.

Keys are relative, '/'-separated and limited to `[A-Za-z0-9._-]` segments; a segment may not start with '.'
(that keeps `..` out and leaves dot-names to LocalStore's temp files). The same rule holds on both backends,
so a key that works embedded works on S3. Writes stream and hash in one pass: every put returns the object's
size and sha256, which the caller records; the store itself keeps only bytes and (on S3) the content type.

Imports no torch, flask, celery or sqlalchemy; boto3 is imported inside S3Store, so the API starts fast.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Iterator, Protocol
from urllib.parse import unquote, urlparse

from .error_text import first_line

if TYPE_CHECKING:
    from .settings import Settings

_CHUNK = 1024 * 1024
_MAX_KEY_LENGTH = 1024  # S3's limit, applied to the local store too so keys stay portable.
_SEGMENT = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
# Only the types the platform writes; anything else is served as bytes. A fixed table rather than
# `mimetypes`, whose answers depend on the host's /etc/mime.types.
_CONTENT_TYPES = {
    ".png": "image/png", ".gif": "image/gif", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
    ".json": "application/json", ".jsonl": "application/x-ndjson", ".zip": "application/zip",
    ".pt": "application/octet-stream", ".safetensors": "application/octet-stream",
}


class StorageError(Exception):
    """The store cannot do what was asked: a bad key, an unreachable backend, a failed write. Names which."""


class ObjectNotFound(StorageError):
    """No object under the key (the API answers 404)."""


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    sha256: str
    content_type: str


class ArtifactStore(Protocol):
    def put_file(self, key: str, path: str | os.PathLike, content_type: str | None = None) -> StoredObject:
        """Stream the file at `path` into `key`; content_type None means `content_type_for(key)`."""

    def put_stream(self, key: str, stream: BinaryIO, content_type: str | None = None) -> StoredObject:
        """Stream a readable binary file object, read once from its position to EOF, into `key`."""

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> StoredObject: ...

    def open(self, key: str) -> BinaryIO:
        """A streaming reader of the object; close it (it is a context manager). ObjectNotFound if absent."""

    def get_bytes(self, key: str) -> bytes: ...

    def get_file(self, key: str, path: str | os.PathLike) -> StoredObject:
        """Stream the object into the file at `path`; its size and sha256 as read. ObjectNotFound if absent
        (and then no file is created)."""

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str = "") -> list[str]:
        """Sorted keys that start with `prefix` (a plain string prefix, as in S3)."""

    def delete(self, key: str) -> None:
        """Remove the object; no error when it is already gone."""

    def delete_prefix(self, prefix: str) -> None:
        """Remove every object under `prefix`, which must end in '/' so 'jobs/1/' never takes 'jobs/10/'."""

    def presigned_url(self, key: str, expires_seconds: int = 300) -> str | None:
        """A URL a client can GET the object from, or None when the API must stream it (LocalStore)."""

    def check(self) -> None:
        """Raise StorageError when the store cannot be reached or written (for /readyz)."""


# -- keys ---------------------------------------------------------------------------------------------------

def validate_key(key: str) -> str:
    """Return `key` if it is a valid object key, else raise StorageError naming it and the rule it breaks."""
    if not isinstance(key, str) or not key:
        raise StorageError(f"invalid key {key!r}: must be a non-empty string")
    if len(key) > _MAX_KEY_LENGTH:
        raise StorageError(f"invalid key {key[:40]!r}...: longer than {_MAX_KEY_LENGTH} characters")
    if "\\" in key:
        raise StorageError(f"invalid key {key!r}: backslashes are not allowed, use '/'")
    if key.startswith("/"):
        raise StorageError(f"invalid key {key!r}: must be relative (no leading '/')")
    for segment in key.split("/"):
        if not segment:
            raise StorageError(f"invalid key {key!r}: empty path segment")
        if segment.startswith("."):
            raise StorageError(f"invalid key {key!r}: segment {segment!r} starts with '.'")
        if not _SEGMENT.fullmatch(segment):
            raise StorageError(f"invalid key {key!r}: only letters, digits and '._-' are allowed in segments")
    return key


def validate_prefix(prefix: str) -> str:
    """A prefix is '' or a key, optionally ending in '/'; the same characters are allowed."""
    if prefix != "":
        validate_key(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


def content_type_for(key: str) -> str:
    """The content type the platform uses for a key, from its extension (what LocalStore serves with)."""
    return _CONTENT_TYPES.get(os.path.splitext(key)[1].lower(), "application/octet-stream")


def tenant_prefix(tenant_id: int | str) -> str:
    """Every key a tenant's data lives under: its jobs, datasets and uploaded generators.

    Keys are made only by the functions below, so one tenant's objects can never be addressed through
    another's prefix, and deleting a tenant is deleting one prefix.
    """
    return f"tenants/{_id_segment(tenant_id, 'tenant_id')}/"


def job_prefix(tenant_id: int | str, job_id: int | str) -> str:
    return f"{tenant_prefix(tenant_id)}jobs/{_id_segment(job_id, 'job_id')}/"


def dataset_prefix(tenant_id: int | str, dataset_id: int | str) -> str:
    return f"{tenant_prefix(tenant_id)}datasets/{_id_segment(dataset_id, 'dataset_id')}/"


def _id_segment(value: int | str, what: str) -> str:
    text = str(value)
    if "/" in text or not _SEGMENT.fullmatch(text):
        raise StorageError(f"invalid {what} {value!r}: must be one key segment of letters, digits and '._-'")
    return text


def _step(step: int) -> str:
    # Seven digits keep keys sorting in step order; a wider number would sort before its predecessors.
    if not isinstance(step, int) or not 0 <= step < 10**7:
        raise StorageError(f"invalid step {step!r}: must be an integer in [0, 9999999]")
    return f"step-{step:07d}"


def checkpoint_key(tenant_id: int | str, job_id: int | str, step: int) -> str:
    return f"{job_prefix(tenant_id, job_id)}checkpoints/{_step(step)}.pt"


def sample_key(tenant_id: int | str, job_id: int | str, step: int) -> str:
    return f"{job_prefix(tenant_id, job_id)}samples/{_step(step)}.png"


def grid_key(tenant_id: int | str, job_id: int | str) -> str:
    return f"{job_prefix(tenant_id, job_id)}grid.png"


def generator_key(tenant_id: int | str, job_id: int | str) -> str:
    return f"{job_prefix(tenant_id, job_id)}generator.safetensors"


def dataset_key(tenant_id: int | str, dataset_id: int | str, name: str) -> str:
    return validate_key(f"{dataset_prefix(tenant_id, dataset_id)}{name}")


def uploaded_generator_key(tenant_id: int | str, generator_id: int | str) -> str:
    """An uploaded generator's weights (POST /v1/generators)."""
    return f"{tenant_prefix(tenant_id)}generators/{_id_segment(generator_id, 'generator_id')}.safetensors"


# -- streaming with a running hash ----------------------------------------------------------------------------

class _HashingReader:
    """Reads a source once, front to back, counting and hashing what passes through.

    It has no seek/tell on purpose: boto3 then treats it as a one-pass stream and never re-reads it for a
    retry (it buffers each part instead), so the hash is of exactly the bytes that were stored.
    """

    def __init__(self, source: BinaryIO) -> None:
        self._source = source
        self.sha256 = hashlib.sha256()
        self.size = 0
        self.source_failed = False  # tells a caller whether an error came from the source or the store

    def read(self, amount: int = -1) -> bytes:
        try:
            data = self._read(amount)
        except BaseException:
            self.source_failed = True
            raise
        self.sha256.update(data)
        self.size += len(data)
        return data

    def _read(self, amount: int | None) -> bytes:
        if amount is None or amount < 0:
            return self._source.read()
        # Fill the request: a short read from a pipe would make an S3 part below the 5 MiB minimum.
        parts, wanted = [], amount
        while wanted > 0:
            chunk = self._source.read(min(wanted, _CHUNK))
            if not chunk:
                break
            parts.append(chunk)
            wanted -= len(chunk)
        return b"".join(parts)

    def stored(self, key: str, content_type: str) -> StoredObject:
        return StoredObject(key=key, size=self.size, sha256=self.sha256.hexdigest(), content_type=content_type)


class _StoreMixin:
    """What both backends share: put_file and put_bytes in terms of put_stream, get_bytes and get_file via
    open."""

    def put_file(self, key: str, path: str | os.PathLike, content_type: str | None = None) -> StoredObject:
        with open(path, "rb") as f:
            return self.put_stream(key, f, content_type)

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> StoredObject:
        return self.put_stream(key, io.BytesIO(data), content_type)

    def get_bytes(self, key: str) -> bytes:
        with self.open(key) as f:
            return f.read()

    def get_file(self, key: str, path: str | os.PathLike) -> StoredObject:
        with self.open(key) as source, open(path, "wb") as out:
            reader = _HashingReader(source)
            shutil.copyfileobj(reader, out, _CHUNK)
        return reader.stored(key, content_type_for(key))


# -- local directory --------------------------------------------------------------------------------------

class LocalStore(_StoreMixin):
    """Objects are files under `root`. Each write goes to a temp file beside its target, is fsynced and
    renamed over it, so a reader sees the old object or the new one, never part of one.

    Content types are not recorded: the API serves a local object with `content_type_for(key)`, which is also
    what puts default to. A key cannot be both an object and a prefix of others here ('a/b' and 'a/b/c'),
    as it can on S3; the platform's key helpers never make such pairs.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self._resolved_root = self.root.resolve()

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        path = (self._resolved_root / validate_key(key)).resolve()
        # The key rules already exclude '..'; this catches a symlink inside root that points out of it.
        if not path.is_relative_to(self._resolved_root):
            raise StorageError(f"invalid key {key!r}: resolves outside the store root {self.root}")
        return path

    def put_stream(self, key: str, stream: BinaryIO, content_type: str | None = None) -> StoredObject:
        path = self._path(key)
        reader = _HashingReader(stream)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        except OSError as exc:
            raise StorageError(f"cannot write {key!r} under {self.root}: {exc}") from None
        try:
            with os.fdopen(fd, "wb") as out:
                # mkstemp makes the file 0600; artifacts must be readable by the API if it runs as another user.
                os.fchmod(out.fileno(), 0o644)
                while chunk := reader.read(_CHUNK):
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException as exc:
            Path(tmp).unlink(missing_ok=True)
            # The source's own read errors pass through unchanged; only the store's failures are StorageError.
            if isinstance(exc, OSError) and not reader.source_failed:
                raise StorageError(f"cannot write {key!r} under {self.root}: {exc}") from None
            raise
        _fsync_dir(path.parent)
        return reader.stored(key, content_type or content_type_for(key))

    def open(self, key: str) -> BinaryIO:
        try:
            return open(self._path(key), "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(f"no object {key!r} in {self.root}") from None
        except OSError as exc:
            raise StorageError(f"cannot read {key!r} in {self.root}: {exc}") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> list[str]:
        validate_prefix(prefix)
        # Walk only the directory the prefix names, then filter by string prefix, as S3 does.
        base = self._resolved_root / prefix.rpartition("/")[0]
        keys = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                if name.startswith("."):  # a temp file of a write in progress, never an object
                    continue
                key = Path(dirpath, name).relative_to(self._resolved_root).as_posix()
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except IsADirectoryError:
            pass  # a prefix, not an object: nothing stored under this exact key
        except OSError as exc:
            raise StorageError(f"cannot delete {key!r} in {self.root}: {exc}") from None

    def delete_prefix(self, prefix: str) -> None:
        _check_delete_prefix(prefix)
        directory = self._path(prefix.rstrip("/"))  # resolved and checked: rmtree must not leave the root
        try:
            shutil.rmtree(directory)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StorageError(f"cannot delete {prefix!r} in {self.root}: {exc}") from None

    def presigned_url(self, key: str, expires_seconds: int = 300) -> str | None:
        validate_key(key)
        return None

    def check(self) -> None:
        # A real write, because a read-only or full volume is what makes this store unusable.
        try:
            self._resolved_root.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self._resolved_root, prefix=".check."):
                pass
        except OSError as exc:
            raise StorageError(f"local store {self.root} is not writable: {exc}") from None


def _fsync_dir(directory: Path) -> None:
    # The rename is durable only once the directory entry is on disk.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_delete_prefix(prefix: str) -> None:
    validate_prefix(prefix)
    if not prefix.endswith("/"):
        raise StorageError(f"invalid prefix {prefix!r} for delete_prefix: must be non-empty and end with '/'")


# -- S3 and S3-compatible servers -------------------------------------------------------------------------

class S3Store(_StoreMixin):
    """Objects are `s3://<bucket>/<prefix><key>`. Content types are stored on the object, so presigned GETs
    serve them. boto3 retries transient failures (throttling, 5xx, dropped connections) with backoff in its
    "standard" mode; what still fails becomes one StorageError naming the object. Uploads at or above
    `multipart_threshold` go up in parallel parts; a failed multipart upload is aborted, leaving nothing.

    `connect_timeout` and `max_attempts` apply to the client built here, not to a `client` passed in.
    Presigned URLs name `public_endpoint_url` when given: a SigV4 signature covers the host, so a link that
    clients reach by another address than the servers must be signed for that address (no request is sent).
    """

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None, client=None, *,
                 public_endpoint_url: str | None = None, connect_timeout: float = 5.0, max_attempts: int = 3,
                 multipart_threshold: int = 16 * 1024 * 1024, multipart_chunksize: int = 8 * 1024 * 1024) -> None:
        from boto3.s3.transfer import TransferConfig

        if not bucket:
            raise StorageError("S3 store: no bucket given (STORAGE_URL must be s3://bucket/prefix)")
        self.bucket = bucket
        prefix = prefix.strip("/")
        self.prefix = f"{validate_key(prefix)}/" if prefix else ""
        self.endpoint_url = endpoint_url or None
        self._client = client if client is not None else self._make_client(connect_timeout, max_attempts)
        self.public_endpoint_url = public_endpoint_url or None
        self._signer = self._client
        if self.public_endpoint_url and self.public_endpoint_url != self.endpoint_url:
            self._signer = self._make_client(connect_timeout, max_attempts, self.public_endpoint_url)
        # A one-pass source is buffered part by part in memory (see _HashingReader), so the threshold and
        # part size bound memory: at most the threshold for a single PUT, a few parts in flight otherwise.
        self._transfer = TransferConfig(multipart_threshold=multipart_threshold,
                                        multipart_chunksize=multipart_chunksize, max_concurrency=4)

    def __repr__(self) -> str:
        return f"S3Store({self._url('')!r}, endpoint_url={self.endpoint_url!r})"

    def _make_client(self, connect_timeout: float, max_attempts: int, endpoint_url: str | None = None):
        import boto3
        from botocore.config import Config

        endpoint_url = endpoint_url or self.endpoint_url
        config = Config(
            connect_timeout=connect_timeout,
            retries={"mode": "standard", "max_attempts": max_attempts},
            # MinIO and moto are reached by host name or IP, where bucket.host virtual addressing cannot resolve.
            s3={"addressing_style": "path"} if endpoint_url else None,
        )
        # A session of our own: boto3's default session is shared module state and not thread-safe to build.
        return boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=config)

    def _url(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{key}"

    def _full(self, key: str) -> str:
        return self.prefix + validate_key(key)

    @contextlib.contextmanager
    def _errors(self, action: str, key: str, missing_is_not_found: bool = False) -> Iterator[None]:
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = error.get("Code", "Unknown")
            if missing_is_not_found and code in ("NoSuchKey", "404", "NotFound"):
                raise ObjectNotFound(f"no object {self._url(key)}") from exc
            message = error.get("Message") or ""
            raise StorageError(f"cannot {action} {self._url(key)}: {code} {message}".strip()) from exc
        except (BotoCoreError, Boto3Error) as exc:
            raise StorageError(f"cannot {action} {self._url(key)}: {first_line(exc)}") from exc

    def put_stream(self, key: str, stream: BinaryIO, content_type: str | None = None) -> StoredObject:
        full = self._full(key)
        content_type = content_type or content_type_for(key)
        reader = _HashingReader(stream)
        # The source's own read errors pass through unchanged; _errors converts only boto's.
        with self._errors("upload", key):
            self._client.upload_fileobj(reader, self.bucket, full, ExtraArgs={"ContentType": content_type},
                                        Config=self._transfer)
        return reader.stored(key, content_type)

    def open(self, key: str) -> BinaryIO:
        full = self._full(key)
        with self._errors("read", key, missing_is_not_found=True):
            return self._client.get_object(Bucket=self.bucket, Key=full)["Body"]

    def exists(self, key: str) -> bool:
        full = self._full(key)
        try:
            with self._errors("stat", key, missing_is_not_found=True):
                self._client.head_object(Bucket=self.bucket, Key=full)
        except ObjectNotFound:
            return False
        return True

    def list(self, prefix: str = "") -> list[str]:
        full = self.prefix + validate_prefix(prefix)
        keys = []
        with self._errors("list", prefix):
            for page in self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
                keys.extend(obj["Key"][len(self.prefix):] for obj in page.get("Contents", []))
        return sorted(keys)

    def delete(self, key: str) -> None:
        full = self._full(key)
        with self._errors("delete", key):
            self._client.delete_object(Bucket=self.bucket, Key=full)

    def delete_prefix(self, prefix: str) -> None:
        _check_delete_prefix(prefix)
        keys = self.list(prefix)
        for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys a call
            batch = [{"Key": self.prefix + key} for key in keys[start:start + 1000]]
            with self._errors("delete", prefix):
                response = self._client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
            if response.get("Errors"):
                first = response["Errors"][0]
                raise StorageError(f"cannot delete {len(response['Errors'])} objects under {self._url(prefix)}, "
                                   f"first s3://{self.bucket}/{first.get('Key')}: {first.get('Code')}")

    def presigned_url(self, key: str, expires_seconds: int = 300) -> str | None:
        full = self._full(key)
        if not 1 <= expires_seconds <= 7 * 24 * 3600:  # SigV4's limit
            raise StorageError(f"presigned URL for {key!r}: expires_seconds must be 1..604800, got {expires_seconds}")
        with self._errors("sign", key):
            return self._signer.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": full}, ExpiresIn=expires_seconds)

    def check(self) -> None:
        with self._errors("reach bucket", ""):
            self._client.head_bucket(Bucket=self.bucket)


# -- from settings --------------------------------------------------------------------------------------------

def open_store(settings: Settings) -> ArtifactStore:
    """The store `settings.storage_url` names: file:///path -> LocalStore, s3://bucket/prefix -> S3Store."""
    url = urlparse(settings.storage_url)
    if url.scheme == "file":
        if url.netloc not in ("", "localhost"):
            raise StorageError(f"STORAGE_URL: file URLs name a local path (file:///path), got {settings.storage_url!r}")
        return LocalStore(Path(unquote(url.path)))
    if url.scheme == "s3":
        return S3Store(url.netloc, url.path, endpoint_url=settings.s3_endpoint_url or None,
                       public_endpoint_url=settings.s3_public_endpoint_url or None)
    raise StorageError(f"STORAGE_URL: must start with file:// or s3://, got {settings.storage_url!r}")
