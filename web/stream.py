"""GET /v1/jobs/<id>/stream: a job's events as Server-Sent Events, read from the database.

Every event a client sees is a row of job_events (core.db.JobEvent), and its SSE `id:` is the row's id, so a
client that reconnects with `Last-Event-ID` is sent exactly the rows after it: replayed from the database,
not from a pub/sub that forgets what it sent while nobody listened. Rows of one job are committed in id
order (core.jobs keeps that invariant), so reading "id > last" never skips a row committed late.

The stream polls for new rows every POLL_SECONDS with a short session of its own (the request's session is
closed before streaming, so an open stream holds no database connection while it waits), sends a comment
line after KEEPALIVE_SECONDS of silence so proxies keep the connection, and ends after `completed`. A stream
also ends after MAX_STREAM_SECONDS without completing: clients reconnect with Last-Event-ID (EventSource
does so by itself), which bounds how long one connection can hold its thread.

Each open stream holds a thread of the API process. The process has `max_streams` threads for them beside
its request threads (cli.api_server) and a semaphore of the same size here: a stream beyond it is answered
503 with Retry-After instead of taking a thread that answers polls. bench/load_test.py --streams measures
the poll latency with and without 50 open streams (the README's load table).
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any, Iterator

from flask import Blueprint, Flask, Response, current_app, request, url_for

from core import jobs
from core.db import FINISHED_STATUSES, Job, JobEvent

from .jobs import job_or_404
from .openapi import operation
from .problems import Problem
from .resources import db

bp = Blueprint("stream", __name__, url_prefix="/v1/jobs")

POLL_SECONDS = 0.5
KEEPALIVE_SECONDS = 15.0
MAX_STREAM_SECONDS = 600.0
RECONNECT_MILLISECONDS = 2000  # what EventSource waits before reconnecting after the stream ends
STREAMS_FULL_RETRY_SECONDS = 5
EVENT_BATCH = 500

# The job status each timeline event leaves the job in.
STATUS_AFTER = {"queued": "queued", "requeued": "queued", "claimed": "running", "resumed": "running",
                "started": "running", "resumed_from_step": "running", "cancel_requested": "running",
                "lease_expired": "running", **{status: status for status in FINISHED_STATUSES}}


def install(app: Flask) -> None:
    app.extensions["dcgan"]["stream_slots"] = threading.BoundedSemaphore(app.config["SETTINGS"].max_streams)


@bp.get("/<job_id>/stream")
@operation("the job's events as Server-Sent Events (status, progress, sample, checkpoint, log, completed); "
           "send Last-Event-ID to get only the events after it",
           {200: {"description": "text/event-stream", "content": {"text/event-stream": {}}}}, problems=(503,))
def stream(job_id: str):
    job = job_or_404(job_id)
    after = _last_event_id()
    slots: threading.BoundedSemaphore = current_app.extensions["dcgan"]["stream_slots"]
    if not slots.acquire(blocking=False):
        raise Problem(503, "this API process already holds its most open event streams; reconnect shortly",
                      slug="too-many-streams", title="Too many open streams",
                      headers={"Retry-After": str(STREAMS_FULL_RETRY_SECONDS)})
    sessions = current_app.extensions["dcgan"]["sessions"]
    job_path = url_for("jobs.get", job_id=str(job.id))
    db().close()  # the stream reads with sessions of its own; this one would hold a connection meanwhile
    response = Response(_events(sessions, job.id, after, job_path, slots), mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"  # nginx: pass each event on as it comes
    return response


def _last_event_id() -> int:
    raw = request.headers.get("Last-Event-ID", "").strip()
    if not raw:
        return 0
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise Problem(400, "Last-Event-ID: must be the id of an event this stream sent (a whole number)",
                      slug="bad-last-event-id", title="Bad Last-Event-ID")
    return int(raw)


def _events(sessions, job_id, after: int, job_path: str, slots: threading.BoundedSemaphore) -> Iterator[str]:
    try:
        yield f"retry: {RECONNECT_MILLISECONDS}\n\n"
        started = last_sent = time.monotonic()
        first = True
        while time.monotonic() - started < MAX_STREAM_SECONDS:
            with sessions() as session:
                rows = jobs.events_after(session, job_id, after, EVENT_BATCH)
                if first and not rows and _finished(session, job_id):
                    return  # the client has had `completed` already (it is committed with the final status)
                first = False
                for row in rows:
                    error = _error(session, job_id) if row.kind == "completed" else None
                    yield message(row, job_path, error)
                    after = row.id
                    if row.kind == "completed":
                        return
            now = time.monotonic()
            if rows:
                last_sent = now
                if len(rows) == EVENT_BATCH:
                    continue  # a replay: send the rest at once
            elif now - last_sent >= KEEPALIVE_SECONDS:
                yield ": keep-alive\n\n"
                last_sent = now
            time.sleep(POLL_SECONDS)
    finally:
        slots.release()


def _finished(session, job_id) -> bool:
    job = session.get(Job, job_id)
    return job is None or job.status in FINISHED_STATUSES


def _error(session, job_id) -> dict[str, Any] | None:
    job = session.get(Job, job_id)
    return {"type": job.error_type, "detail": job.error_detail} if job is not None and job.error_type else None


def message(event: JobEvent, job_path: str, error: dict[str, Any] | None = None) -> str:
    """One event in the text/event-stream format: its id, its type, its data as one line of JSON."""
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
                                "at": event.at.isoformat(), "detail": detail}
    return f"id: {event.id}\nevent: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"
