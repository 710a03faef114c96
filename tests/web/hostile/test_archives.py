"""Archives and the images inside them (POST /v1/datasets): paths that escape, links, special files,
bombs by ratio and by pixels, lies about sizes, nesting, and files that are not what their name says."""

from __future__ import annotations

import tarfile
import zipfile

import pytest

from core.archives import Limits
from tests.web.hostile import NOISE, Case, check, dataset
from tests.web.hostile.builders import (encrypted_zip, image_as, many_members_zip, pixel_bomb, png, tar_entry,
                                        tar_lying_about_size, tar_of, truncated_png, zip_lying_about_size, zip_of,
                                        zip_with_mode)

CASES = [
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
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_archives(api, case: Case):
    check(api, case)
