"""Driving the in-process API (a Flask test client) while a real worker runs the jobs: poll a job until it
ends, and download an artifact through the presigned URL the API redirects to."""

from __future__ import annotations

import time
import urllib.request


def wait_until_finished(client, job_id: str, seconds: float = 240) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not finish: {job}")


def download(client, path: str) -> bytes:
    response = client.get(path)
    assert response.status_code == 302, response.get_data(as_text=True)
    with urllib.request.urlopen(response.headers["Location"]) as presigned:
        return presigned.read()
