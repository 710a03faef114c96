"""The generate task's body: a generator's images for a job's seeds, rendered, encoded and written as they are made.

Memory stays bounded whatever the seed count. The seeds are walked as the ranges the job row keeps
(core.gan.seeds.SeedRanges), GENERATE_CHUNK at a time; each chunk becomes uint8 pixels and PNGs at once, and
the PNGs are appended to a tar on local disk, one entry per seed (`seed-000000123.png`) in the order asked.
Only the first GRID_MAX images are kept, as uint8 pixels, for the grid.

A job of at most GRID_MAX seeds gets its grid alone (grid.png, byte for byte what it always was and what
GET /v1/generators/<ref>/images renders for the same seeds); a larger one gets the grid of its first GRID_MAX
seeds and every image in `images.tar` (core.storage.images_key, GET /v1/jobs/<id>/images). The tar headers
are written here rather than through tarfile.TarFile, which keeps a TarInfo for every member it wrote: memory
that would grow with the seed count. The heartbeat and the cancel check run between chunks.
"""

from __future__ import annotations

import tarfile
import tempfile
import time
import uuid
from pathlib import Path

import torch

from core.db import Job, JobStatus
from core.gan.data import to_uint8
from core.gan.sample import Sampler, SampleError, grid_image, image_list, png_bytes
from core.gan.seeds import GENERATE_CHUNK, GRID_MAX
from core.request_models import GenerateJobRequest
from core.storage import ObjectNotFound, generator_key, grid_key, images_key

from worker.attempt import Attempt, FencedOut
from worker.loading import load_version


def run_generation(run: Attempt) -> None:
    job = run.job()
    asked = GenerateJobRequest.from_stored(job.request)  # SampleError: FAILED as sample_error
    parent = job.parent_job_id or asked.generator_job
    if not parent and job.generator_id is None:
        raise SampleError("generator_job: the job names no train job or uploaded generator to sample from")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory(prefix="dcgan-generate-") as tmp:
        sampler = _load_sampler(run, job, parent, Path(tmp) / "generator.safetensors", device)
        archive = SeedArchive(Path(tmp) / "images.tar") if asked.seeds.count > GRID_MAX else None
        try:
            grid_pixels = _render(run, sampler, asked, archive)
        finally:
            if archive is not None:
                archive.file.close()
        if grid_pixels is None:
            run.finish(JobStatus.CANCELLED)
            return
        grid = png_bytes(grid_image(torch.cat(grid_pixels), nrow=asked.nrow))
        if archive is not None:
            run.upload(images_key(run.tenant_id, run.job_id), archive.path)
    run.upload_bytes(grid_key(run.tenant_id, run.job_id), grid)
    run.finish(JobStatus.SUCCEEDED)


def _render(run: Attempt, sampler: Sampler, asked: GenerateJobRequest,
            archive: SeedArchive | None) -> list[torch.Tensor] | None:
    """Every seed rendered, GENERATE_CHUNK at a time, into the archive (if any); the uint8 pixels of the first
    GRID_MAX images, or None when the job was cancelled meanwhile."""
    grid_pixels: list[torch.Tensor] = []
    in_grid = 0
    for chunk in asked.seeds.chunks(GENERATE_CHUNK):
        if run.should_stop():
            if run.cancel_requested():
                return None
            raise FencedOut(f"job {run.job_id}: attempt {run.attempt} no longer holds it")
        pixels = to_uint8(sampler.images_for_seeds(chunk, asked.truncation))
        if in_grid < GRID_MAX:
            grid_pixels.append(pixels[:GRID_MAX - in_grid].clone())  # a copy: a view would keep the whole chunk
            in_grid += len(grid_pixels[-1])
        if archive is not None:
            for seed, image in zip(chunk, image_list(pixels)):
                archive.add(seed_entry_name(seed), png_bytes(image))
        run.heartbeat()
    if archive is not None:
        archive.finish()
    return grid_pixels


def _load_sampler(run: Attempt, job: Job, parent: uuid.UUID | str | None, path: Path, device: str) -> Sampler:
    if job.generator_id is not None:
        return load_version(run, job.generator_id, path, device)
    try:
        run.store.get_file(generator_key(run.tenant_id, parent), path)
    except ObjectNotFound:
        raise SampleError(f"generator_job {parent}: has no exported generator (has it succeeded?)") from None
    return Sampler.from_file(path, device=device)


def seed_entry_name(seed: int) -> str:
    """An image's name in the archive: nine digits at least, so the first billion seeds sort by number."""
    return f"seed-{seed:09d}.png"


class SeedArchive:
    """A ustar archive written member by member to a file: a member costs its bytes on disk and nothing in
    memory once written. `finish` writes the end-of-archive blocks; the caller closes `file`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = open(path, "wb")
        self.mtime = int(time.time())
        self.written = 0

    def add(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), self.mtime, 0o644
        self._write(info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict"))
        self._write(data)
        self._write(bytes(-len(data) % tarfile.BLOCKSIZE))

    def finish(self) -> None:
        # Two zero blocks end the archive; tar programs read whole records, so the last one is filled out.
        self._write(bytes(2 * tarfile.BLOCKSIZE))
        self._write(bytes(-self.written % tarfile.RECORDSIZE))
        self.file.flush()

    def _write(self, data: bytes) -> None:
        self.file.write(data)
        self.written += len(data)
