"""`LocalStore`: artifacts as files under a directory, the embedded default."""

from __future__ import annotations

import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO

from .keys import check_delete_prefix, validate_key, validate_prefix
from .protocol import (CHUNK, HashingReader, ListedObject, ObjectNotFound, StorageError, StoredObject, StoreMixin,
                       content_type_for)


class LocalStore(StoreMixin):
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
        reader = HashingReader(stream)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        except OSError as exc:
            raise StorageError(f"cannot write {key!r} under {self.root}: {exc}") from None
        try:
            with os.fdopen(fd, "wb") as out:
                # mkstemp makes the file 0600; artifacts must be readable by the API if it runs as another user.
                os.fchmod(out.fileno(), 0o644)
                while chunk := reader.read(CHUNK):
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

    def list_objects(self, prefix: str = "", start_after: str = "", limit: int | None = None) -> list[ListedObject]:
        found = []
        for key in self.list(prefix):
            if key <= start_after:
                continue
            if limit is not None and len(found) >= limit:
                break
            try:
                stat = (self._resolved_root / key).stat()
            except FileNotFoundError:  # deleted between the walk and the stat
                continue
            found.append(ListedObject(key, stat.st_size, datetime.fromtimestamp(stat.st_mtime, timezone.utc)))
        return found

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except IsADirectoryError:
            pass  # a prefix, not an object: nothing stored under this exact key
        except OSError as exc:
            raise StorageError(f"cannot delete {key!r} in {self.root}: {exc}") from None

    def delete_prefix(self, prefix: str) -> None:
        check_delete_prefix(prefix)
        directory = self._path(prefix.rstrip("/"))  # resolved and checked: rmtree must not leave the root
        try:
            shutil.rmtree(directory)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StorageError(f"cannot delete {prefix!r} in {self.root}: {exc}") from None

    def presigned_url(self, key: str, expires_seconds: int = 300, content_type: str | None = None,
                      content_disposition: str | None = None) -> str | None:
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
