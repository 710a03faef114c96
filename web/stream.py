"""GET /v1/jobs/<id>/stream: a job's events as Server-Sent Events, read from the database.

Every event a client sees is a row of job_events (core.db.JobEvent), and its SSE `id:` is the row's id, so a
client that reconnects with `Last-Event-ID` is sent exactly the rows after it: replayed from the database,
not from a pub/sub that forgets what it sent while nobody listened. Rows of one job are committed in id
order (core.jobs keeps that invariant), so reading "id > last" never skips a row committed late.

One thread per API process, the hub (`StreamHub`), reads the new rows of every job that has an open stream
in one query each POLL_SECONDS (a quarter second) and hands each stream its job's rows; a stream only waits
on its queue. The first version had each stream query for itself twice a second; with 50 open streams it
raised the poll p99 (bench/load_test.py --streams 50; the README's "Watching a job" has the figures), and
the hub does the same work in one query. Its reads are plain rows, at most READ_BATCH at once, because 50
streams opened together replay thousands of events, and one long read holds the GIL the polls need.
A stream sends a comment line after KEEPALIVE_SECONDS of silence so proxies keep the connection, and ends
after `completed`, or after MAX_STREAM_SECONDS without it: clients reconnect with Last-Event-ID (EventSource
does so by itself), which bounds how long one connection holds its thread.

Each open stream holds a thread of the API process. The process has `max_streams` threads for them beside
its request threads (cli.api_server) and a semaphore of the same size here: a stream beyond it is answered
503 with Retry-After instead of taking a thread that answers polls.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import uuid
from typing import Any, Iterator

from flask import Blueprint, Flask, Response, current_app, request
from sqlalchemy import and_, or_, select
from sqlalchemy.exc import SQLAlchemyError

from core import jobs
from core.db import FINISHED_STATUSES, Job, JobEvent
from core.error_text import first_line
from core.request_models import StreamQuery

from .jobs import job_or_404
from .openapi import operation
from .problems import Problem
from .resources import db
from .validation import query_input, validated

bp = Blueprint("stream", __name__, url_prefix="/v1/jobs")

POLL_SECONDS = 0.25
READ_BATCH = 500  # events the hub reads at once; more wait for its next read
KEEPALIVE_SECONDS = 15.0
MAX_STREAM_SECONDS = 600.0
RECONNECT_MILLISECONDS = 2000  # what EventSource waits before reconnecting after the stream ends
STREAMS_FULL_RETRY_SECONDS = 5
log = logging.getLogger(__name__)

# The job status each timeline event leaves the job in.
STATUS_AFTER = {"queued": "queued", "requeued": "queued", "claimed": "running", "resumed": "running",
                "started": "running", "resumed_from_step": "running", "cancel_requested": "running",
                "lease_expired": "running", **{status: status for status in FINISHED_STATUSES}}


def install(app: Flask) -> None:
    parts = app.extensions["dcgan"]
    parts["stream_slots"] = threading.BoundedSemaphore(app.config["SETTINGS"].max_streams)
    parts["stream_hub"] = StreamHub(parts["sessions"])


class Subscription:
    """One open stream's place in the hub: its job, the last event id it has, and its queue of messages."""

    def __init__(self, job_id: uuid.UUID, after: int) -> None:
        self.job_id, self.after = job_id, after
        self.messages: queue.SimpleQueue[tuple[int, str, str] | None] = queue.SimpleQueue()


class StreamHub:
    """Reads the new events of every streamed job of this process, one query per POLL_SECONDS, and puts
    each into the queues of that job's streams as (id, kind, SSE message). Its thread runs while any stream
    is open; if reading fails it puts None in every queue (those streams end, their clients reconnect)."""

    def __init__(self, sessions) -> None:
        self._sessions = sessions
        self._lock = threading.Lock()
        self._subscriptions: dict[uuid.UUID, set[Subscription]] = {}
        self._cursors: dict[uuid.UUID, int] = {}  # per job: the newest event id read for it
        self._thread: threading.Thread | None = None

    def subscribe(self, job_id: uuid.UUID, after: int) -> Subscription:
        subscription = Subscription(job_id, after)
        with self._lock:
            self._subscriptions.setdefault(job_id, set()).add(subscription)
            # Read again from the newcomer's id; those who have more skip what they have had.
            self._cursors[job_id] = min(self._cursors.get(job_id, after), after)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="stream-hub", daemon=True)
                self._thread.start()
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            streams = self._subscriptions.get(subscription.job_id, set())
            streams.discard(subscription)
            if not streams:
                self._subscriptions.pop(subscription.job_id, None)
                self._cursors.pop(subscription.job_id, None)

    def _run(self) -> None:
        try:
            while True:
                with self._lock:
                    if not self._cursors:
                        self._thread = None
                        return
                    cursors = dict(self._cursors)
                found = self._read(cursors)
                with self._lock:
                    for job_id, rows in found.items():
                        for subscription in self._subscriptions.get(job_id, ()):
                            for row in rows:
                                subscription.messages.put(row)
                        # A stream that joined meanwhile lowered the cursor to its own id: leave it there,
                        # so the next read gives it what it has not had.
                        if self._cursors.get(job_id) == cursors[job_id]:
                            self._cursors[job_id] = rows[-1][0]
                time.sleep(POLL_SECONDS)
        except SQLAlchemyError as exc:  # the database is unreachable or restarting: an outage, not a bug
            log.warning("the event stream hub could not read the database (%s); its streams end and their "
                        "clients reconnect", first_line(exc))
            self._end_all()
        except BaseException:
            log.exception("the event stream hub stopped; its streams end and their clients reconnect")
            self._end_all()
            raise

    def _end_all(self) -> None:
        """Every open stream ends (its client reconnects with Last-Event-ID); the next stream starts a new
        thread."""
        with self._lock:
            self._thread = None
            for streams in self._subscriptions.values():
                for subscription in streams:
                    subscription.messages.put(None)

    def _read(self, cursors: dict[uuid.UUID, int]) -> dict[uuid.UUID, list[tuple[int, str, str]]]:
        """The events after each job's cursor, as SSE messages, oldest first: at most READ_BATCH of them, so
        the replay for many new streams is spread over several reads instead of holding the process's GIL
        (and its polls) for one long one. Plain rows, not ORM objects: a replay is thousands of them."""
        found: dict[uuid.UUID, list[tuple[int, str, str]]] = {}
        columns = (JobEvent.id, JobEvent.job_id, JobEvent.kind, JobEvent.attempt, JobEvent.at, JobEvent.detail)
        with self._sessions() as session:
            rows = session.execute(select(*columns).where(or_(*(and_(JobEvent.job_id == job_id, JobEvent.id > after)
                                                                 for job_id, after in cursors.items())))
                                   .order_by(JobEvent.id).limit(READ_BATCH)).all()
            for row in rows:
                error = _error(session, row.job_id) if row.kind == "completed" else None
                text = message(row, f"{bp.url_prefix}/{row.job_id}", error)
                found.setdefault(row.job_id, []).append((row.id, row.kind, text))
        return found


@bp.get("/<job_id>/stream")
@operation("the job's events as Server-Sent Events (status, progress, sample, checkpoint, log, completed); "
           "send Last-Event-ID to get only the events after it",
           {200: {"description": "text/event-stream", "content": {"text/event-stream": {}}}}, query=StreamQuery,
           problems=(503,))
def stream(job_id: str):
    job = job_or_404(job_id)
    after = _last_event_id()
    slots: threading.BoundedSemaphore = current_app.extensions["dcgan"]["stream_slots"]
    if not slots.acquire(blocking=False):
        raise Problem(503, "this API process already holds its most open event streams; reconnect shortly",
                      slug="too-many-streams", title="Too many open streams",
                      headers={"Retry-After": str(STREAMS_FULL_RETRY_SECONDS)})
    parts = current_app.extensions["dcgan"]
    db().close()  # the stream reads with sessions of its own; this one would hold a connection meanwhile
    response = Response(_events(parts["stream_hub"], parts["sessions"], job.id, after, slots),
                        mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"  # nginx: pass each event on as it comes
    return response


def _last_event_id() -> int:
    """Last-Event-ID (a reconnecting client), else ?last_event_id= (a first connection that skips the
    history it has already read, e.g. from /events' last_event_id), else 0: everything."""
    raw = request.headers.get("Last-Event-ID", "").strip()
    if not raw:
        return validated(StreamQuery, query_input(request)).last_event_id or 0
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise Problem(400, "Last-Event-ID: must be the id of an event this stream sent (a whole number)",
                      slug="bad-last-event-id", title="Bad Last-Event-ID")
    return int(raw)


def _events(hub: StreamHub, sessions, job_id: uuid.UUID, after: int,
            slots: threading.BoundedSemaphore) -> Iterator[str]:
    subscription = None
    try:
        yield f"retry: {RECONNECT_MILLISECONDS}\n\n"
        with sessions() as session:
            if not jobs.events_after(session, job_id, after, limit=1) and _finished(session, job_id):
                return  # the client has had `completed` already (it is committed with the final status)
        subscription = hub.subscribe(job_id, after)
        deadline = time.monotonic() + MAX_STREAM_SECONDS
        while (left := deadline - time.monotonic()) > 0:
            try:
                item = subscription.messages.get(timeout=min(KEEPALIVE_SECONDS, left))
            except queue.Empty:
                yield ": keep-alive\n\n"
                continue
            if item is None:
                return  # the hub stopped: end, and let the client reconnect
            event_id, kind, text = item
            if event_id <= subscription.after:
                continue  # read again for a stream that joined later
            subscription.after = event_id
            yield text
            if kind == "completed":
                return
    finally:
        if subscription is not None:
            hub.unsubscribe(subscription)
        slots.release()


def _finished(session, job_id) -> bool:
    job = session.get(Job, job_id)
    return job is None or job.status in FINISHED_STATUSES


def _error(session, job_id) -> dict[str, Any] | None:
    job = session.get(Job, job_id)
    return {"type": job.error_type, "detail": job.error_detail} if job is not None and job.error_type else None


def message(event, job_path: str, error: dict[str, Any] | None = None) -> str:
    """One event (a JobEvent, or a row of its columns) in the text/event-stream format: its id, its type,
    its data as one line of JSON."""
    kind, detail = event.kind, event.detail or {}
    if kind == "progress":
        name, data = "progress", detail
    elif kind == "sample":
        name, data = "sample", {"step": detail["step"], "url": f"{job_path}/samples/{detail['step']}"}
    elif kind == "checkpoint":
        name, data = "checkpoint", {"step": detail["step"]}
    elif kind == "log":
        name, data = "log", {"message": detail.get("message", ""), "level": detail.get("level", "info"),
                             "at": event.at.isoformat()}
    elif kind == "completed":
        name, data = "completed", {"status": detail["status"], "error": error}
    else:
        name, data = "status", {"kind": kind, "status": STATUS_AFTER.get(kind), "attempt": event.attempt,
                                "at": event.at.isoformat(), "detail": jobs.tenant_view(detail)}
    return f"id: {event.id}\nevent: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"
