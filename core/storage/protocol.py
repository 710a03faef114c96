"""What every artifact store is: the `ArtifactStore` interface, its errors and `StoredObject`, and the
pieces both backends share -- a reader that hashes what passes through, and the put/get helpers built on
`put_stream` and `open`.

Writes stream and hash in one pass: every put returns the object's size and sha256, which the caller
records; the store itself keeps only bytes and (on S3) the content type.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO, Protocol

CHUNK = 1024 * 1024
# Only the types the platform writes; anything else is served as bytes. A fixed table rather than
# `mimetypes`, whose answers depend on the host's /etc/mime.types.
_CONTENT_TYPES = {
    ".png": "image/png", ".gif": "image/gif", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
    ".json": "application/json", ".jsonl": "application/x-ndjson", ".zip": "application/zip",
    ".tar": "application/x-tar",
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


@dataclass(frozen=True)
class ListedObject:
    """An object as a listing shows it: the orphan reaper (core.orphans) needs its age, GET /v1/usage none."""

    key: str
    size: int
    modified: datetime  # timezone-aware UTC: the last write (LocalStore: the file's mtime)


def content_type_for(key: str) -> str:
    """The content type the platform uses for a key, from its extension (what LocalStore serves with)."""
    return _CONTENT_TYPES.get(os.path.splitext(key)[1].lower(), "application/octet-stream")


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

    def list_objects(self, prefix: str = "", start_after: str = "", limit: int | None = None) -> list[ListedObject]:
        """`list`, with each object's size and last-modified time, sorted by key: the first `limit` (None: all)
        of those whose key sorts after `start_after`, so a caller can walk a large store in batches."""

    def delete(self, key: str) -> None:
        """Remove the object; no error when it is already gone."""

    def delete_prefix(self, prefix: str) -> None:
        """Remove every object under `prefix`, which must end in '/' so 'jobs/1/' never takes 'jobs/10/'."""

    def presigned_url(self, key: str, expires_seconds: int = 300, content_type: str | None = None,
                      content_disposition: str | None = None) -> str | None:
        """A URL a client can GET the object from, answering with these Content-Type / Content-Disposition
        headers when given, or None when the API must stream it (LocalStore)."""

    def check(self) -> None:
        """Raise StorageError when the store cannot be reached or written (for /readyz)."""


class HashingReader:
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
            chunk = self._source.read(min(wanted, CHUNK))
            if not chunk:
                break
            parts.append(chunk)
            wanted -= len(chunk)
        return b"".join(parts)

    def stored(self, key: str, content_type: str) -> StoredObject:
        return StoredObject(key=key, size=self.size, sha256=self.sha256.hexdigest(), content_type=content_type)


class StoreMixin:
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
            reader = HashingReader(source)
            shutil.copyfileobj(reader, out, CHUNK)
        return reader.stored(key, content_type_for(key))
