"""Reading an uploaded image archive (.zip, .tar, .tar.gz) member by member, safely.

Never `extractall`: each member is checked before anything is read (no absolute paths, no `..`, no links,
devices or other non-regular files, no encrypted zip members, at most `max_members`), its bytes are counted
while they stream (header sizes are not trusted) against a per-member and a total limit, and each image is
decoded in full with Pillow's pixel limit lowered before it is accepted. Files that are not images of an
allowed format, or do not decode, are counted as rejected rather than stored. Torch-free: the API uses it.
"""

from __future__ import annotations

import io
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import IO, Iterator

from PIL import Image

IMAGE_FORMATS = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "GIF": ".gif", "WEBP": ".webp"}
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")
MAX_IMAGE_PIXELS = 16 * 1024 * 1024


class ArchiveError(ValueError):
    """The archive as a whole is refused; the message says why (the API answers 422)."""


@dataclass(frozen=True)
class Limits:
    max_members: int = 20_000
    max_member_bytes: int = 64 * 1024 * 1024
    max_total_bytes: int = 2 * 1024 * 1024 * 1024
    min_images: int = 1


@dataclass(frozen=True)
class AcceptedImage:
    name: str  # the member's path inside the archive, for messages only
    data: bytes
    suffix: str  # from the decoded format, never from the member's name


def archive_kind(filename: str) -> str:
    lowered = filename.lower()
    for suffix in ARCHIVE_SUFFIXES:
        if lowered.endswith(suffix):
            return "zip" if suffix == ".zip" else "tar"
    raise ArchiveError(f"file: {filename!r} is not one of {', '.join(ARCHIVE_SUFFIXES)}")


def read_images(stream: IO[bytes], kind: str, limits: Limits = Limits()) -> tuple[list[AcceptedImage], int]:
    """All decodable images of the archive and the number of rejected members."""
    accepted: list[AcceptedImage] = []
    rejected = 0
    budget = _Budget(limits)
    members = _zip_members(stream, budget) if kind == "zip" else _tar_members(stream, budget)
    for name, data in members:
        image = _decode(name, data)
        if image is None:
            rejected += 1
        else:
            accepted.append(image)
    if len(accepted) < limits.min_images:
        raise ArchiveError(f"file: {len(accepted)} decodable images (need at least {limits.min_images}); "
                           f"{rejected} files were not images of an allowed format")
    return accepted, rejected


class _Budget:
    def __init__(self, limits: Limits):
        self.limits = limits
        self.members = 0
        self.total = 0

    def member(self, name: str) -> None:
        self.members += 1
        if self.members > self.limits.max_members:
            raise ArchiveError(f"file: more than {self.limits.max_members} members")
        normalized = name.replace("\\", "/")
        parts = PurePosixPath(normalized).parts
        # absolute, parent-relative, or a Windows drive ("C:") -- none may leave the dataset's own prefix
        if not parts or normalized.startswith("/") or ".." in parts or ":" in parts[0]:
            raise ArchiveError(f"file: member {name!r} has an absolute or parent-relative path")

    def read(self, name: str, source: IO[bytes]) -> bytes:
        """Read a member in chunks, counting real bytes against both limits."""
        chunks, size = [], 0
        while block := source.read(1024 * 1024):
            size += len(block)
            self.total += len(block)
            if size > self.limits.max_member_bytes:
                raise ArchiveError(f"file: member {name!r} is larger than {self.limits.max_member_bytes} bytes "
                                   f"uncompressed")
            if self.total > self.limits.max_total_bytes:
                raise ArchiveError(f"file: more than {self.limits.max_total_bytes} bytes uncompressed in all")
            chunks.append(block)
        return b"".join(chunks)


def _zip_members(stream: IO[bytes], budget: _Budget) -> Iterator[tuple[str, bytes]]:
    try:
        archive = zipfile.ZipFile(stream)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ArchiveError(f"file: not a readable zip archive ({exc})") from None
    with archive:
        for info in archive.infolist():
            budget.member(info.filename)
            if info.is_dir():
                continue
            if info.flag_bits & 0x1:
                raise ArchiveError(f"file: member {info.filename!r} is encrypted")
            mode = info.external_attr >> 16
            if mode and (mode & 0o170000) not in (0, 0o100000):  # anything but a regular file: a link, a device
                raise ArchiveError(f"file: member {info.filename!r} is not a regular file")
            try:
                with archive.open(info) as member:
                    yield info.filename, budget.read(info.filename, member)
            except (zipfile.BadZipFile, OSError, NotImplementedError, EOFError) as exc:
                raise ArchiveError(f"file: member {info.filename!r} cannot be read ({exc})") from None


def _tar_members(stream: IO[bytes], budget: _Budget) -> Iterator[tuple[str, bytes]]:
    try:
        archive = tarfile.open(fileobj=stream, mode="r:*")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ArchiveError(f"file: not a readable tar archive ({exc})") from None
    with archive:
        try:
            for info in archive:
                budget.member(info.name)
                if info.isdir():
                    continue
                if not info.isreg():
                    raise ArchiveError(f"file: member {info.name!r} is a link or special file")
                member = archive.extractfile(info)
                if member is None:
                    raise ArchiveError(f"file: member {info.name!r} cannot be read")
                yield info.name, budget.read(info.name, member)
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise ArchiveError(f"file: the archive is truncated or corrupt ({exc})") from None


def _decode(name: str, data: bytes) -> AcceptedImage | None:
    if PurePosixPath(name).name.startswith("."):
        return None  # __MACOSX/._x, .DS_Store and friends
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format not in IMAGE_FORMATS:
                return None
            image.load()  # a truncated file fails here, not at training time
            return AcceptedImage(name, data, IMAGE_FORMATS[image.format])
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError):
        return None
    finally:
        Image.MAX_IMAGE_PIXELS = previous
