"""Open event streams beside the poll load of bench/load_test.py (issue 9): does a dashboard or `dcgan jobs
follow` on 50 jobs slow the API's answers to status polls?

`Streams` holds N connections on GET /v1/jobs/<id>/stream (one job each), reading and counting the events
the API sends. Without a worker the jobs would stay queued and their streams silent, which tests nothing, so
`write_progress` (run in a process of its own, so its work does not slow the measuring client) plays the
worker for those N jobs on the stack's own database: it claims each one and records its progress once a
second through core.jobs, exactly the writes a training worker makes (one progress document, its event and
its logged step per job and second), spread over the second as independent workers' writes are. The streams
therefore deliver about N events per second in all.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import socket
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class StreamStats:
    opened: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    events: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        events = ", ".join(f"{name} {count}" for name, count in sorted(self.events.items())) or "none"
        return (f"streams: {self.opened} opened (answers {dict(sorted(self.statuses.items()))}); events "
                f"received: {events}; errors {len(self.errors)}")


class Streams:
    """N open event streams; `open()` connects them all, `close()` drops them (the server frees their threads
    at its next write)."""

    def __init__(self, base_url: str, key: str | None, job_ids: list[str]):
        parts = urlsplit(base_url)
        self.host, self.port, self.prefix = parts.hostname or "127.0.0.1", parts.port or 80, parts.path.rstrip("/")
        self.key, self.job_ids = key, job_ids
        self.stats = StreamStats()
        self.tasks: list[asyncio.Task] = []
        self.writers: list[asyncio.StreamWriter] = []

    async def open(self) -> None:
        opened = [asyncio.Event() for _ in self.job_ids]
        self.tasks = [asyncio.create_task(self._follow(job_id, ready)) for job_id, ready in zip(self.job_ids, opened)]
        await asyncio.wait_for(asyncio.gather(*(ready.wait() for ready in opened)), 30)

    async def _follow(self, job_id: str, ready: asyncio.Event) -> None:
        try:
            reader, writer = await asyncio.open_connection(self.host, self.port)
            writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.writers.append(writer)
            auth = f"Authorization: Bearer {self.key}\r\n" if self.key else ""
            writer.write(f"GET {self.prefix}/v1/jobs/{job_id}/stream HTTP/1.1\r\nHost: {self.host}\r\n{auth}"
                         f"Accept: text/event-stream\r\n\r\n".encode("latin-1"))
            await writer.drain()
            status = int((await reader.readuntil(b"\r\n")).split(b" ", 2)[1])
            self.stats.statuses[status] = self.stats.statuses.get(status, 0) + 1
            self.stats.opened += 1
            ready.set()
            if status != 200:
                self.stats.errors.append(f"stream of {job_id}: {status}")
                return
            while line := await reader.readline():  # chunk sizes and event lines alike; events are counted
                if line.startswith(b"event: "):
                    name = line[7:].strip().decode()
                    self.stats.events[name] = self.stats.events.get(name, 0) + 1
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            self.stats.errors.append(f"stream of {job_id}: {exc!r}")
        finally:
            ready.set()

    async def close(self) -> None:
        for writer in self.writers:
            writer.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks, self.writers = [], []


def write_progress(database_url: str, job_ids: list[str], stop, seconds: float = 1.0) -> None:
    """Claim `job_ids` and record their progress every `seconds` until `stop` is set (a worker's writes)."""
    import uuid

    from core import jobs
    from core.db import make_engine, make_session_factory

    engine = make_engine(database_url)
    sessions = make_session_factory(engine)
    attempts: dict[uuid.UUID, int] = {}
    with sessions() as session:
        for job_id in map(uuid.UUID, job_ids):
            attempt = jobs.claim_job(session, job_id, "bench-progress-writer", lease_seconds=3600)
            if attempt is not None:
                attempts[job_id] = attempt
        session.commit()
    # Independent workers do not write in step: each job's write comes at its own moment of the second.
    pause = seconds / max(len(attempts), 1)
    values = {"loss_d": 1.0, "loss_g": 1.0, "d_real": 0.5, "d_fake": 0.5, "images_per_second": 100.0}
    step = 0
    with sessions() as session:
        while not stop.is_set():
            step += 10
            for job_id, attempt in attempts.items():
                jobs.record_progress(session, job_id, attempt, {"step": step, "total_steps": 10**6, **values},
                                     [(step, values)])
                session.commit()
                if stop.wait(pause):
                    break
    engine.dispose()


class ProgressWriter:
    """`write_progress` in a process of its own, for the duration of a `with` block."""

    def __init__(self, database_url: str, job_ids: list[str]):
        context = multiprocessing.get_context("spawn")
        self.stop = context.Event()
        self.process = context.Process(target=write_progress, args=(database_url, job_ids, self.stop), daemon=True)

    def __enter__(self) -> "ProgressWriter":
        self.process.start()
        time.sleep(2.0)  # its claims are made before the first stream opens
        return self

    def __exit__(self, *_exc) -> None:
        self.stop.set()
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()
