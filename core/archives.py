"""Reading an uploaded image archive (.zip, .tar, .tar.gz) member by member, safely.

Never `extractall`, and no member is ever written to disk. The archive as a whole is refused, with an
`ArchiveError` whose `slug` names the kind of refusal, for:

- `archive-format`: not a .zip/.tar/.tar.gz name, `archive-corrupt`: unreadable, truncated, bad CRC;
- `archive-unsafe-path`: an absolute path, a `..` segment or a drive letter in a member's name;
- `archive-link`: a symlink or hardlink (tar) or a zip member whose mode marks a symlink;
- `archive-special-file`: a device, fifo or socket; `archive-encrypted`: an encrypted zip member;
- `archive-too-many-members`: more than `max_members` (for a zip, its central directory is sized up before
  zipfile parses it, so a directory of millions of entries is refused without building them);
- `archive-too-large`: more than `max_member_bytes` in one member or `max_total_bytes` in all, counted on
  the bytes actually decompressed while they stream: header sizes are never trusted. For a .tar.gz the
  whole decompressed stream is counted, tar headers and pax records included;
- `archive-ratio`: more than `max_ratio` times as many bytes out as in (a zip bomb), per zip member and
  over the whole archive, once past `ratio_floor_bytes` so a small text file cannot trip it;
- `archive-nested`: a member that is itself an archive (zip, gzip, tar, bzip2, xz, 7z, rar);
- `too-few-images`: fewer than `min_images` members decode as images.

Single members that are not images are not an error: they are counted as rejected. Images are opened only
by Pillow's plugins for the allowed formats (`IMAGE_FORMATS`: the format is the decoder's, never the file
name's), refused above `max_image_pixels` before any pixel is decoded (Pillow's own decompression-bomb
warning and error are rejections too), and decoded in full, so a truncated file is rejected here rather
than at training time. Torch-free: the API uses it.
"""

from __future__ import annotations

import gzip
import io
import re
import struct
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import IO, Iterator

from PIL import Image

# Decoded format -> stored suffix. MPO is the multi-picture JPEG some cameras write; its first frame is a
# plain JPEG. Formats outside this list (TIFF, ICO, PSD, EPS, SVG, JPEG 2000, ...) are never even parsed:
# their decoders are larger attack surfaces and a DCGAN needs none of them.
IMAGE_FORMATS = {"PNG": ".png", "JPEG": ".jpg", "MPO": ".jpg", "BMP": ".bmp", "GIF": ".gif", "WEBP": ".webp"}
_OPEN_FORMATS = ["PNG", "JPEG", "BMP", "GIF", "WEBP"]  # the plugins Image.open may try (JPEG yields MPO too)
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")
MAX_IMAGE_PIXELS = 4096 * 4096
_CHUNK = 1024 * 1024
# A zip's central directory is parsed whole by zipfile; each entry is at least 46 bytes. Allowing this
# many bytes per permitted member keeps generous names legal and bounds what zipfile builds in memory.
_DIRECTORY_BYTES_PER_MEMBER = 512
# Leading bytes of archive formats, for refusing an archive inside the archive.
_NESTED = (("zip", re.compile(rb"PK(\x03\x04|\x05\x06|\x07\x08)")), ("gzip", re.compile(rb"\x1f\x8b")),
           ("bzip2", re.compile(rb"BZh[1-9]1AY&SY")), ("xz", re.compile(rb"\xfd7zXZ\x00")),
           ("7z", re.compile(rb"7z\xbc\xaf\x27\x1c")), ("rar", re.compile(rb"Rar!\x1a\x07")))

TITLES = {
    "archive-format": "Unsupported archive format",
    "archive-corrupt": "Unreadable archive",
    "archive-unsafe-path": "Unsafe path in archive",
    "archive-link": "Link in archive",
    "archive-special-file": "Special file in archive",
    "archive-encrypted": "Encrypted archive member",
    "archive-too-many-members": "Too many archive members",
    "archive-too-large": "Archive too large uncompressed",
    "archive-ratio": "Archive compression ratio too high",
    "archive-nested": "Archive inside the archive",
    "too-few-images": "Too few images",
}


class ArchiveError(ValueError):
    """The archive as a whole is refused; the message says why and names the member.

    `slug` is one of TITLES (the API's problem type); `too_large` marks refusals about size (413).
    """

    def __init__(self, slug: str, message: str, member: str | None = None):
        super().__init__(f"file: {message}")
        self.slug = slug
        self.title = TITLES[slug]
        self.member = member
        self.too_large = slug == "archive-too-large"


@dataclass(frozen=True)
class Limits:
    max_members: int = 20_000
    max_member_bytes: int = 64 * 1024 * 1024
    max_total_bytes: int = 2 * 1024 * 1024 * 1024
    # Bytes out per byte in. PNG and JPEG barely compress (about 1x); deflate peaks near 1032x.
    max_ratio: float = 100.0
    ratio_floor_bytes: int = 1024 * 1024
    min_images: int = 1
    max_image_pixels: int = MAX_IMAGE_PIXELS


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
    raise ArchiveError("archive-format", f"{filename!r} is not one of {', '.join(ARCHIVE_SUFFIXES)}")


def read_images(stream: IO[bytes], kind: str, limits: Limits = Limits()) -> tuple[list[AcceptedImage], int]:
    """All decodable images of the archive and the number of rejected members. `stream` must be seekable
    (an upload spooled by the web framework is): its size is the denominator of the compression ratio."""
    stream.seek(0, io.SEEK_END)
    budget = _Budget(limits, stream.tell())
    stream.seek(0)
    members = _zip_members(stream, budget) if kind == "zip" else _tar_members(stream, budget)
    accepted: list[AcceptedImage] = []
    rejected: list[str] = []
    for name, data in members:
        nested = _nested_archive(data)
        if nested:
            raise ArchiveError("archive-nested", f"member {name!r} is itself an archive ({nested}); upload the "
                                                 f"images themselves", member=name)
        image, reason = _decode(name, data, limits)
        if image is None:
            rejected.append(f"{name!r}: {reason}")
        else:
            accepted.append(image)
    if len(accepted) < limits.min_images:
        examples = "; ".join(rejected[:3]) + ("; ..." if len(rejected) > 3 else "")
        raise ArchiveError("too-few-images", f"{len(accepted)} decodable images (need at least {limits.min_images}); "
                                             f"{len(rejected)} other files" + (f": {examples}" if rejected else ""))
    return accepted, len(rejected)


class _Budget:
    """Counts members and real bytes against the limits; every refusal about size is raised from here."""

    def __init__(self, limits: Limits, archive_bytes: int):
        self.limits = limits
        self.archive_bytes = max(archive_bytes, 1)
        self.members = 0
        self.total = 0  # member bytes read
        self.stream_total = 0  # decompressed tar stream bytes, headers included (.tar.gz only)

    def member(self, name: str) -> None:
        self.members += 1
        if self.members > self.limits.max_members:
            raise ArchiveError("archive-too-many-members", f"more than {self.limits.max_members} members "
                                                           f"(member {name!r} is one too many)", member=name)
        normalized = name.replace("\\", "/")
        parts = PurePosixPath(normalized).parts
        # absolute, parent-relative, or a Windows drive ("C:") -- none may leave the dataset's own prefix
        if not parts or normalized.startswith("/") or ".." in parts or ":" in parts[0] or "\0" in name:
            raise ArchiveError("archive-unsafe-path", f"member {name!r} has an absolute or parent-relative path",
                               member=name)

    def read(self, name: str, source: IO[bytes], compressed: int | None = None) -> bytes:
        """Read a member in chunks, counting real bytes against the limits. `compressed`: the member's
        compressed size where the format has one (zip), capped by the archive's real size."""
        chunks, size = [], 0
        while block := source.read(_CHUNK):
            size += len(block)
            self.total += len(block)
            if size > self.limits.max_member_bytes:
                raise ArchiveError("archive-too-large", f"member {name!r} is larger than "
                                                        f"{self.limits.max_member_bytes} bytes uncompressed",
                                   member=name)
            if self.total > self.limits.max_total_bytes:
                raise ArchiveError("archive-too-large", f"more than {self.limits.max_total_bytes} bytes uncompressed "
                                                        f"in all (reached in member {name!r})", member=name)
            if compressed is not None:
                self._ratio(size, min(max(compressed, 1), self.archive_bytes), f"member {name!r}", name)
            self._ratio(self.total, self.archive_bytes, f"the archive (reached in member {name!r})", name)
            chunks.append(block)
        return b"".join(chunks)

    def stream_read(self, count: int) -> None:
        """Bytes of a decompressed tar stream, counted before tarfile sees them (pax and long-name records
        are read into memory by tarfile itself, so they must be bounded here)."""
        self.stream_total += count
        # Every member may add a header block and padding on top of its data.
        allowance = self.limits.max_total_bytes + 1024 * (self.limits.max_members + 2)
        if self.stream_total > allowance:
            raise ArchiveError("archive-too-large", f"more than {allowance} bytes in the decompressed tar stream")
        self._ratio(self.stream_total, self.archive_bytes, "the archive", None)

    def _ratio(self, out: int, into: int, what: str, name: str | None) -> None:
        if out > self.limits.ratio_floor_bytes and out > self.limits.max_ratio * into:
            raise ArchiveError("archive-ratio", f"{what} expands more than {self.limits.max_ratio:g} times "
                                                f"({out} bytes from {into}): a zip bomb?", member=name)


def _zip_members(stream: IO[bytes], budget: _Budget) -> Iterator[tuple[str, bytes]]:
    _check_zip_directory(stream, budget.limits)
    try:
        archive = zipfile.ZipFile(stream)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, struct.error) as exc:
        raise ArchiveError("archive-corrupt", f"not a readable zip archive ({exc})") from None
    with archive:
        for info in archive.infolist():
            name = info.filename
            budget.member(name)
            mode = info.external_attr >> 16  # the Unix mode, when a Unix zip tool wrote one
            kind = mode & 0o170000
            if kind == 0o120000:
                raise ArchiveError("archive-link", f"member {name!r} is a symbolic link", member=name)
            if mode and kind not in (0, 0o100000, 0o040000):
                raise ArchiveError("archive-special-file", f"member {name!r} is a device, fifo or socket, not a "
                                                           f"regular file", member=name)
            if info.flag_bits & 0x1:
                raise ArchiveError("archive-encrypted", f"member {name!r} is encrypted", member=name)
            if info.is_dir() or kind == 0o040000:
                continue
            try:
                with archive.open(info) as member:
                    data = budget.read(name, member, compressed=info.compress_size)
            except ArchiveError:
                raise
            except (zipfile.BadZipFile, OSError, NotImplementedError, EOFError, zlib.error, ValueError) as exc:
                raise ArchiveError("archive-corrupt", f"member {name!r} cannot be read ({exc})", member=name) from None
            yield name, data


def _check_zip_directory(stream: IO[bytes], limits: Limits) -> None:
    """Refuse a zip whose end record declares more entries, or a larger central directory, than
    `max_members` allows -- before zipfile reads the directory and builds an object per entry. A lying
    record gains nothing: zipfile parses exactly the directory size declared here, and members are
    counted again while they are read."""
    stream.seek(0, io.SEEK_END)
    size = stream.tell()
    tail_size = min(size, 22 + 65535)
    stream.seek(size - tail_size)
    tail = stream.read(tail_size)
    stream.seek(0)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        return  # zipfile reports the archive unreadable
    entries, directory_bytes = struct.unpack("<HL", tail[at + 10:at + 16])
    if (entries == 0xFFFF or directory_bytes == 0xFFFFFFFF) and at >= 20 and tail[at - 20:at - 16] == b"PK\x06\x07":
        (offset,) = struct.unpack("<Q", tail[at - 12:at - 4])
        if offset <= size - 56:
            stream.seek(offset)
            record = stream.read(56)
            stream.seek(0)
            if record[:4] == b"PK\x06\x06":
                entries, directory_bytes = struct.unpack("<QQ", record[32:48])
    if entries > limits.max_members:
        raise ArchiveError("archive-too-many-members", f"the zip's directory lists {entries} members, "
                                                       f"more than {limits.max_members} members")
    if directory_bytes > limits.max_members * _DIRECTORY_BYTES_PER_MEMBER:
        raise ArchiveError("archive-too-many-members", f"the zip's central directory is {directory_bytes} bytes, "
                                                       f"too large for {limits.max_members} members")


class _CountingReader(io.RawIOBase):
    """A one-pass reader over the decompressed tar stream that reports every byte to the budget."""

    def __init__(self, source: IO[bytes], budget: _Budget):
        self.source, self.budget = source, budget

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self.source.read(_CHUNK if size is None or size < 0 else min(size, _CHUNK * 16))
        self.budget.stream_read(len(data))
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


def _tar_members(stream: IO[bytes], budget: _Budget) -> Iterator[tuple[str, bytes]]:
    # Decompressed here, not by tarfile, so every decompressed byte is counted; read as a stream ("r|"):
    # one pass, no seeking back, each member read before the next header.
    compressed = stream.read(2) == b"\x1f\x8b"
    stream.seek(0)
    source: IO[bytes] = gzip.GzipFile(fileobj=stream, mode="rb") if compressed else stream
    try:
        archive = tarfile.open(fileobj=_CountingReader(source, budget), mode="r|")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise ArchiveError("archive-corrupt", f"not a readable tar archive ({exc})") from None
    with archive:
        try:
            for info in archive:
                name = info.name
                budget.member(name)
                if info.issym() or info.islnk():
                    raise ArchiveError("archive-link", f"member {name!r} is a {'symbolic' if info.issym() else 'hard'} "
                                                       f"link to {info.linkname!r}", member=name)
                if info.isdir():
                    continue
                if not info.isreg():
                    raise ArchiveError("archive-special-file", f"member {name!r} is a device, fifo or other special "
                                                               f"file, not a regular file", member=name)
                member = archive.extractfile(info)
                if member is None:
                    raise ArchiveError("archive-corrupt", f"member {name!r} cannot be read", member=name)
                yield name, budget.read(name, member)
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            raise ArchiveError("archive-corrupt", f"the tar archive is truncated or corrupt ({exc})") from None


def _nested_archive(data: bytes) -> str | None:
    for name, magic in _NESTED:
        if magic.match(data):
            return name
    if len(data) >= 262 and data[257:262] == b"ustar":
        return "tar"
    return None


def _decode(name: str, data: bytes, limits: Limits) -> tuple[AcceptedImage | None, str]:
    """The image, or None and why it was rejected."""
    if PurePosixPath(name.replace("\\", "/")).name.startswith("."):
        return None, "hidden file"  # __MACOSX/._x, .DS_Store and friends
    # Pillow's global limit is not changed here (request threads would race on it), only respected.
    max_pixels = min(limits.max_image_pixels, Image.MAX_IMAGE_PIXELS or limits.max_image_pixels)
    try:
        with Image.open(io.BytesIO(data), formats=_OPEN_FORMATS) as image:
            width, height = image.size
            if width * height > max_pixels:  # checked on the header, before any pixel is decoded
                return None, f"{width}x{height} pixels, more than {max_pixels}"
            image_format = image.format
            image.load()  # a truncated file fails here, not at training time
    except Image.UnidentifiedImageError:
        return None, "not a PNG, JPEG, BMP, GIF or WebP image"
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return None, f"decompression bomb ({exc})"
    except (OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError, TypeError, zlib.error) as exc:
        return None, f"truncated or corrupt ({exc})"
    if image_format not in IMAGE_FORMATS:
        return None, f"{image_format} is not an allowed format"
    return AcceptedImage(name, data, IMAGE_FORMATS[image_format]), ""
