"""core.archives on crafted archives: what is counted while streaming, and what each refusal is called.
(The API's answers to the same inputs are rows of tests/web/test_hostile.py.)"""

from __future__ import annotations

import io
import os
import struct
import tarfile
import zipfile

import pytest
from PIL import Image

from core.archives import ArchiveError, Limits, read_images


def png(size=(12, 9)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 10, 10)).save(buffer, format="PNG")
    return buffer.getvalue()


def zip_of(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data, compress_type=method)
    return buffer.getvalue()


def refusal(data: bytes, kind: str = "zip", limits: Limits = Limits()) -> ArchiveError:
    with pytest.raises(ArchiveError) as refused:
        read_images(io.BytesIO(data), kind, limits)
    return refused.value


def test_a_pax_header_bomb_is_stopped_while_it_streams():
    """tarfile reads a pax header into memory whole; the decompressed stream is counted before it gets there."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo("././@PaxHeader")
        info.type, info.size = tarfile.XHDTYPE, 64 << 20
        archive.addfile(info, io.BytesIO(b"\0" * info.size))
    assert len(buffer.getvalue()) < 100_000
    assert refusal(buffer.getvalue(), "tar").slug == "archive-ratio"
    too_large = refusal(buffer.getvalue(), "tar", Limits(max_ratio=1e9, max_total_bytes=1 << 20, max_members=10))
    assert too_large.slug == "archive-too-large" and too_large.too_large


def test_the_ratio_is_checked_per_zip_member_too():
    # 5 MiB of noise keeps the whole archive's ratio near 1; the zeros member alone expands 1000 times.
    data = zip_of({"noise.bin": os.urandom(5 << 20), "zeros.png": b"\0" * (2 << 20)})
    error = refusal(data)
    assert error.slug == "archive-ratio" and error.member == "zeros.png" and "member 'zeros.png'" in str(error)


def test_a_zip_end_record_that_lies_about_its_count_is_counted_anyway():
    data = bytearray(zip_of({f"{i}.png": png() for i in range(30)}))
    end = data.rindex(b"PK\x05\x06")
    data[end + 8:end + 12] = struct.pack("<HH", 1, 1)  # "1 member"
    error = refusal(bytes(data), limits=Limits(max_members=20))
    assert error.slug == "archive-too-many-members" and error.member == "20.png"


def test_an_oversized_zip_directory_is_refused_before_it_is_parsed():
    data = zip_of({"a" * 700 + ".png": png(), "b" * 700 + ".png": png()})
    error = refusal(data, limits=Limits(max_members=2))
    assert error.slug == "archive-too-many-members" and "central directory" in str(error)


def test_pixels_are_limited_on_the_header_and_pillow_is_left_alone():
    before = Image.MAX_IMAGE_PIXELS
    images, rejected = read_images(io.BytesIO(zip_of({"big.png": png((300, 300)), "small.png": png()})), "zip",
                                   Limits(max_image_pixels=10_000))
    assert [i.name for i in images] == ["small.png"] and rejected == 1
    assert Image.MAX_IMAGE_PIXELS == before
    error = refusal(zip_of({"big.png": png((300, 300))}), limits=Limits(max_image_pixels=10_000))
    assert error.slug == "too-few-images" and "300x300 pixels" in str(error)


def test_the_format_is_the_decoders_not_the_names():
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="JPEG")
    second = Image.new("RGB", (8, 8), (9, 9, 9))
    mpo = io.BytesIO()
    Image.new("RGB", (8, 8)).save(mpo, format="MPO", save_all=True, append_images=[second])
    tiff = io.BytesIO()
    Image.new("RGB", (8, 8)).save(tiff, format="TIFF")
    images, rejected = read_images(io.BytesIO(zip_of({
        "photo.png": buffer.getvalue(), "camera.jpg": mpo.getvalue(), "scan.jpg": tiff.getvalue(),
        "cut.jpg": buffer.getvalue()[:60]})), "zip")
    assert {(i.name, i.suffix) for i in images} == {("photo.png", ".jpg"), ("camera.jpg", ".jpg")}
    assert rejected == 2


def test_every_link_and_special_file_kind_has_its_type():
    def tar_with(type_: bytes, linkname: str = "") -> bytes:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as archive:
            info = tarfile.TarInfo("x.png")
            info.type, info.linkname = type_, linkname
            archive.addfile(info)
        return buffer.getvalue()

    assert refusal(tar_with(tarfile.SYMTYPE, "/etc/passwd"), "tar").slug == "archive-link"
    assert refusal(tar_with(tarfile.LNKTYPE, "y.png"), "tar").slug == "archive-link"
    for special in (tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE):
        assert refusal(tar_with(special), "tar").slug == "archive-special-file"
    for mode, slug in ((0o120777, "archive-link"), (0o020644, "archive-special-file"),
                       (0o060644, "archive-special-file"), (0o140644, "archive-special-file")):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            info = zipfile.ZipInfo("x.png")
            info.external_attr = mode << 16
            archive.writestr(info, png())
        assert refusal(buffer.getvalue()).slug == slug


def test_too_few_images_names_the_rejects():
    noisy = io.BytesIO()
    Image.frombytes("L", (64, 64), os.urandom(64 * 64)).save(noisy, format="PNG")
    error = refusal(zip_of({"a.txt": b"x", "cut.png": noisy.getvalue()[:2000]}), limits=Limits(min_images=1))
    assert error.slug == "too-few-images"
    assert "'a.txt': not a PNG, JPEG, BMP, GIF or WebP image" in str(error) and "'cut.png': truncated" in str(error)
