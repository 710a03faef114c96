"""Hostile inputs, built in memory: archives that lie or escape, images that bomb, weights that are not what
they claim. Used by the hostile-input tables in this package."""

from __future__ import annotations

import functools
import io
import struct
import tarfile
import zipfile
import zlib

from PIL import Image

from core.archives import Limits
from tests.core.test_weights import TINY, generator_arrays, safetensors_bytes

CONFIG = {**TINY, "steps": 10}
TRAIN = {"dataset": "builtin:digits", "config": CONFIG}


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
