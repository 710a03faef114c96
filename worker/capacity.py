"""Does a job fit this worker's device? The check a worker makes before it claims a job (worker.tasks).

The API refused at submission every job whose estimate (core.gan.cost) passes the deployment's
DCGAN_MAX_JOB_MEMORY_BYTES; a worker estimates the same job again for its own device and the precision it
resolves there (`auto` is bf16 on CPUs with native bf16, fp32 elsewhere) and compares it with what the device
has. What a user is best served by, decided per case:

- The estimate is above the device's whole memory (its capacity): no worker like this one can ever run the job,
  and waiting would keep the user waiting for nothing. The job is failed at once, unclaimed, with error_type
  `insufficient_memory` and a detail giving the estimate, the device's memory and the fields to lower. (An
  operator whose workers are smaller than DCGAN_MAX_JOB_MEMORY_BYTES should lower that limit to their size:
  the API then refuses such jobs with 422 before they are queued.)
- The estimate fits the device but not what is free right now (another process holds memory): the job is not
  claimed and stays queued, with one `waiting_for_memory` event on its timeline; the reaper sends its task
  again (DCGAN_REPUBLISH_SECONDS, backing off) and this worker or another one takes it once memory is free.

CUDA: torch.cuda.mem_get_info (free, total). CPU: /proc/meminfo's MemAvailable and MemTotal, within the cgroup's
memory limit when the worker runs in a container. DCGAN_WORKER_MEMORY_BYTES (an operator override) lowers both
to a figure of the operator's: to keep memory for other processes on the machine, or in tests.
Only queued jobs are checked; an expired lease's job (it ran here or elsewhere before) is resumed as it was.
Evaluate jobs are not estimated: their cost is the feature network's, the same for every job.

A worker that runs several jobs at once (`dcgan worker --jobs-per-gpu N`: threads of one process) counts the
jobs it already runs: each admitted job holds its estimate in RESERVATIONS until it ends, and a new job is
admitted only if it fits in what is free minus what the running jobs may still take. Measuring and reserving
happen under one lock, so two claims cannot both pass on the same free memory. On CUDA the memory this process's
allocator already holds (torch.cuda.memory_reserved: the running jobs' tensors and its cache) counts as free
for this sum, as the running jobs' estimates stand for it; on a CPU it does not (a running job's use is then
subtracted twice, once from MemAvailable and once as its estimate: cautious, and exact with the override).
"""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch
from sqlalchemy.orm import Session

from core import jobs
from core.db import Dataset, Job, JobStatus, JobType
from core.gan.catalog import builtin_size
from core.gan.config import ConfigError, TrainConfig
from core.gan.cost import Estimate, estimate_generate, estimate_train, human_bytes
from core.gan.sample import MICRO_BATCH
from core.gan.seeds import GENERATE_CHUNK, SampleError
from core.gan.train import resolve_device, resolve_precision
from core.request_models import GenerateJobRequest
from core.settings import Settings

log = logging.getLogger(__name__)
INSUFFICIENT_MEMORY = "insufficient_memory"
WAITING_FOR_MEMORY = "waiting_for_memory"
CGROUP = Path("/sys/fs/cgroup")


class Reservations:
    """The memory estimates of the jobs this worker process runs now, by job id, and the jobs one of its threads
    is admitting or running (`take`): two threads woken at once may pick the same best job (core.scheduling),
    and the one that loses the claim must not release the winner's reservation."""

    def __init__(self) -> None:
        self.lock = threading.Lock()  # held from measuring free memory to reserving it
        self.held: dict[uuid.UUID, int] = {}
        self.taken: set[uuid.UUID] = set()

    def total(self) -> int:
        return sum(self.held.values())

    def take(self, job_id: uuid.UUID) -> bool:
        """Mark the job as this thread's to admit and run; False when another thread of this process has it."""
        with self.lock:
            if job_id in self.taken:
                return False
            self.taken.add(job_id)
            return True

    def release(self, job_id: uuid.UUID) -> None:
        with self.lock:
            self.held.pop(job_id, None)
            self.taken.discard(job_id)


# Process-wide, like the device: every job thread of this worker admits against the same ledger.
RESERVATIONS = Reservations()


@dataclass(frozen=True)
class DeviceMemory:
    device: str
    available: int  # free for a job now
    capacity: int  # the device's whole memory, as far as this worker may use it


def device_memory(device: torch.device, override: int = 0) -> DeviceMemory:
    """What `device` has for a job; `override` (DCGAN_WORKER_MEMORY_BYTES, 0: none) caps both figures."""
    if device.type == "cuda":
        available, capacity = torch.cuda.mem_get_info(device)
    else:
        available, capacity = _host_memory()
    if override:
        available, capacity = min(available, override), min(capacity, override)
    return DeviceMemory(str(device), int(available), int(capacity))


def _host_memory() -> tuple[int, int]:
    """(MemAvailable, MemTotal) of /proc/meminfo, within a cgroup v2 or v1 memory limit if one is set."""
    info = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, _, value = line.partition(":")
        info[name] = int(value.split()[0]) * 1024
    available, capacity = info["MemAvailable"], info["MemTotal"]
    for limit_file, usage_file in (("memory.max", "memory.current"),
                                   ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):
        try:
            limit = int((CGROUP / limit_file).read_text().strip())
            usage = int((CGROUP / usage_file).read_text().strip())
        except (OSError, ValueError):  # no such cgroup file, or "max": no limit
            continue
        if limit < capacity:
            capacity, available = limit, min(available, max(limit - usage, 0))
        break
    return available, capacity


def job_estimate(session: Session, job: Job, device: torch.device, settings: Settings) -> Estimate | None:
    """The job's estimate on `device`; None for a job with nothing to estimate (evaluate) or a request the
    job's own run will fail with a clear error anyway (a bad config or seeds)."""
    try:
        config = TrainConfig.from_dict(job.config)
        if job.type == JobType.TRAIN:
            dataset = session.get(Dataset, job.dataset_id) if job.dataset_id is not None else None
            images = dataset.num_images if dataset is not None else builtin_size(str(job.request.get("dataset")))
            return estimate_train(config, num_images=images, keep_checkpoints=settings.keep_checkpoints,
                                  precision=resolve_precision(config.precision, device))
        if job.type == JobType.GENERATE:
            seeds = GenerateJobRequest.from_stored(job.request).seeds
            return estimate_generate(config, seeds.count, GENERATE_CHUNK,
                                     micro_batch=MICRO_BATCH.get(device.type, 1))
    except (ConfigError, SampleError):
        return None
    return None


def admit(session: Session, job_id: uuid.UUID, settings: Settings, reservations: Reservations = RESERVATIONS) -> bool:
    """True when this worker should go on to claim the job; False when it must not (the job failed with
    `insufficient_memory`, or it waits queued for memory). Commits what it records. An admitted job's estimate
    stays reserved until `reservations.release(job_id)`."""
    job = session.get(Job, job_id)
    if job is None or job.status != JobStatus.QUEUED or job.cancel_requested:
        session.commit()
        return True  # claim_job says what happens to it
    device = resolve_device("auto")
    estimate = job_estimate(session, job, device, settings)
    if estimate is None:
        session.commit()
        return True
    needed = estimate.memory_bytes
    with reservations.lock:
        memory = device_memory(device, settings.worker_memory_bytes)
        available = min(memory.capacity, memory.available + _held_by_this_process(device)) - reservations.total()
        fits = needed <= available and needed <= memory.capacity
        if fits:
            reservations.held[job_id] = needed
    if fits:
        session.commit()
        return True
    if needed > memory.capacity:
        detail = (f"the job needs an estimated {human_bytes(needed)} of memory, more than this worker's "
                  f"{memory.device} has in all ({human_bytes(memory.capacity)}); lower "
                  f"{', '.join(estimate.fields('memory'))}")
        if jobs.refuse_queued(session, job_id, INSUFFICIENT_MEMORY, detail):
            log.warning("job %s: %s", job_id, detail)
        session.commit()
        return False
    available = max(available, 0)
    jobs.note_queued(session, job_id, WAITING_FOR_MEMORY,
                     {"memory_bytes": needed, "available_bytes": available, "device": memory.device})
    session.commit()
    log.info("job %s: needs %s, %s free on %s now (after %d running job(s) here); left queued", job_id,
             human_bytes(needed), human_bytes(available), memory.device, len(reservations.held))
    return False


def _held_by_this_process(device: torch.device) -> int:
    return int(torch.cuda.memory_reserved(device)) if device.type == "cuda" else 0
