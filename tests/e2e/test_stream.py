"""The event stream of a real training run, read with a raw HTTP client (http.client, line by line) from the
embedded platform (`dcgan up`): live progress and samples, `completed` at the end, an exact replay after
Last-Event-ID, and another tenant's 404."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
from urllib.parse import urlparse

import pytest

from tests.e2e.conftest import ROOT, Api

pytestmark = pytest.mark.timeout(300)

CONFIG = {"img_size": 32, "img_channels": 1, "z_dim": 8, "g_channels": 8, "d_channels": 8, "batch_size": 16,
          "steps": 1500, "sample_every": 250, "checkpoint_every": 500}


class EventStream:
    """GET /v1/jobs/<id>/stream on its own connection; `next()` is the next event as (id, type, data)."""

    def __init__(self, api: Api, job_id: str, last_event_id: int | None = None):
        url = urlparse(api.base)
        self.connection = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
        headers = {"Authorization": f"Bearer {api.key}", "Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        self.connection.request("GET", f"/v1/jobs/{job_id}/stream", headers=headers)
        self.response = self.connection.getresponse()
        self.comments: list[str] = []

    def next(self) -> tuple[int, str, dict] | None:
        """The next event, or None when the server closed the stream."""
        fields: dict[str, str] = {}
        while True:
            line = self.response.readline()
            if not line:
                return None
            line = line.decode().rstrip("\n")
            if line.startswith(":"):
                self.comments.append(line)
            elif line:
                name, _, value = line.partition(": ")
                fields[name] = value
            elif "event" in fields:
                return int(fields["id"]), fields["event"], json.loads(fields["data"])
            else:
                fields = {}  # a block without an event (the `retry:` line)

    def until_closed(self) -> list[tuple[int, str, dict]]:
        events = []
        while (event := self.next()) is not None:
            events.append(event)
        return events

    def close(self) -> None:
        self.connection.close()


def test_a_training_jobs_stream_is_live_ends_with_completed_and_replays_exactly(platform):
    api, _ = platform
    status, job = api.json("POST", "/v1/jobs/train", {"dataset": "builtin:digits", "config": CONFIG})
    assert status == 202, job
    stream = EventStream(api, job["id"])
    assert stream.response.status == 200
    assert stream.response.getheader("Content-Type").startswith("text/event-stream")
    events, status_at_first_sample = [], None
    while (event := stream.next()) is not None:
        events.append(event)
        if event[1] == "sample" and status_at_first_sample is None:
            status_at_first_sample = api.json("GET", f"/v1/jobs/{job['id']}")[1]["status"]
    stream.close()
    kinds = [kind for _, kind, _ in events]
    assert kinds[-1] == "completed" and events[-1][2] == {"status": "succeeded", "error": None}, events[-3:]
    assert [event_id for event_id, _, _ in events] == sorted({event_id for event_id, _, _ in events})
    assert status_at_first_sample == "running"  # samples arrive while the job runs, not after it
    progress = [data for _, kind, data in events if kind == "progress"]
    assert len(progress) >= 2 and progress[-1]["step"] == 1500
    assert [data["step"] for _, kind, data in events if kind == "sample"] == [250, 500, 750, 1000, 1250, 1500]
    assert [data["step"] for _, kind, data in events if kind == "checkpoint"] == [500, 1000, 1500]
    assert "running" in [data["status"] for _, kind, data in events if kind == "status"]

    # A client that dropped after the second sample reconnects with its id: exactly the rest, then the end.
    second_sample = [i for i, (_, kind, _) in enumerate(events) if kind == "sample"][1]
    replay = EventStream(api, job["id"], last_event_id=events[second_sample][0])
    assert replay.until_closed() == events[second_sample + 1:]
    replay.close()
    sample_url = events[second_sample][2]["url"]
    code, headers, body = api.request("GET", sample_url)
    assert code == 200 and body.startswith(b"\x89PNG")


def test_another_tenants_stream_is_404(platform):
    api, data_dir = platform
    _, job = api.json("POST", "/v1/jobs/train", {"dataset": "builtin:digits", "config": {**CONFIG, "steps": 20}})
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "STORAGE_URL")}
    env["DCGAN_DATA_DIR"] = str(data_dir)  # the platform's own SQLite database
    made = subprocess.run([sys.executable, "-m", "cli", "keys", "create", "--tenant", "stream-outsider"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60, check=True)
    outsider = Api(api.base, made.stdout.strip().splitlines()[-1])
    stream = EventStream(outsider, job["id"])
    assert stream.response.status == 404
    assert stream.response.getheader("Content-Type") == "application/problem+json"
    stream.close()
    api.wait(job["id"], {"succeeded", "failed", "cancelled"})
    started = time.monotonic()
    finished = EventStream(api, job["id"]).until_closed()  # a finished job's stream replays and closes
    assert finished[-1][1] == "completed" and time.monotonic() - started < 30
