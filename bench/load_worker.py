"""How soon an idle worker starts a submitted job (issue 12): the start-latency phase of bench/load_test.py.

The script's own stack first cancels the jobs its earlier phases left queued, then runs one real worker
(`dcgan worker`: the Celery worker on the train and generate queues, solo pool) and waits until it is ready
and has drained those jobs' messages, so it is idle. Then N small training jobs are submitted one after
another, each once the previous one has finished: the time from sending the submission to the first
GET /v1/jobs/<id> that answers `running` (polled every POLL_SECONDS) is the start latency. Each job is
cancelled as soon as it runs, so the next one waits seconds, not a whole training run. The job's own
`started_at` (the worker's claim, on the same clock) is printed beside it as a check on the polling.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.load_test import Client, Phase, Stack

POLL_SECONDS = 0.01
FINISHED = frozenset({"succeeded", "failed", "cancelled"})
WORKER_READY_SECONDS = 180
JOB_SECONDS = 120


async def cancel_queued(client: "Client", job_ids: list[str]) -> None:
    """Cancel the earlier phases' jobs (all still queued: no worker ran), so the worker only skips them."""
    for start in range(0, len(job_ids), 16):
        await asyncio.gather(*(client.request("POST", f"/v1/jobs/{job_id}/cancel")
                               for job_id in job_ids[start:start + 16]))


async def measure_start_latency(client: "Client", stack: "Stack", jobs: int, config: dict,
                                phase: "Phase") -> list[float]:
    """Start the worker, then time `jobs` submissions to `running` into `phase`; returns the latencies by
    `started_at` (ms) beside them."""
    started_at_ms: list[float] = []
    await asyncio.to_thread(stack.start_worker, WORKER_READY_SECONDS)
    for i in range(jobs):
        body = {"dataset": "builtin:digits", "config": {**config, "seed": 7_000_000 + i}}
        sent_wall, sent = time.time(), time.monotonic()
        response = await client.request("POST", "/v1/jobs/train", body)
        if response.status != 202:
            phase.record(str(response.status), (time.monotonic() - sent) * 1000, False,
                         f"{response.status}: {response.body[:300]!r}")
            continue
        job_id = response.json()["id"]
        job = await _wait(client, job_id, lambda status: status != "queued", JOB_SECONDS)
        seen_ms = (time.monotonic() - sent) * 1000
        status = job["status"] if job else "timeout"
        if job is not None and job.get("started_at"):
            started_at_ms.append((datetime.fromisoformat(job["started_at"]).timestamp() - sent_wall) * 1000)
        # A job that finished between two polls ran too: its started_at says when (the polls cannot).
        ok = status == "running" or (status in FINISHED and job.get("started_at") is not None)
        phase.record(status, seen_ms if status == "running" or not started_at_ms else started_at_ms[-1], ok,
                     f"job {job_id}: {status} {(job or {}).get('error')}")
        if status == "running":
            await client.request("POST", f"/v1/jobs/{job_id}/cancel")
        if await _wait(client, job_id, lambda status: status in FINISHED, JOB_SECONDS) is None:
            phase.errors.append(f"job {job_id} did not finish within {JOB_SECONDS} s")
            break
    return started_at_ms


async def _wait(client: "Client", job_id: str, done, seconds: float) -> dict | None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        response = await client.request("GET", f"/v1/jobs/{job_id}")
        if response.status == 200 and done((job := response.json())["status"]):
            return job
        await asyncio.sleep(POLL_SECONDS)
    return None
