"""The independent client of bench/load_test.py (`--client threads`, issue 12): plain `http.client` on a pool
of threads, each with its own keep-alive connection, fed on an open-loop schedule.

One dispatcher thread sleeps until each request's scheduled time and hands it to whichever pool thread is
free; latency counts from the scheduled time, so requests that wait for a busy pool still count their wait
(no coordinated omission). The dispatcher's own lateness (`send lag`) is the client's share: a late
dispatcher means the client, not the server, was slow. It shares no code with the asyncio client, so when
the two disagree the difference is the client's.
"""

from __future__ import annotations

import http.client
import json
import queue
import socket
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

REQUEST_TIMEOUT_SECONDS = 30


@dataclass
class Request:
    offset: float  # seconds after the schedule's start
    method: str
    path: str
    body: object = None
    headers: dict[str, str] | None = None


@dataclass
class Result:
    latency_ms: float
    status: int | None = None  # None: no answer (`error` says why)
    headers: dict[str, str] | None = None
    body: bytes = b""
    error: str = ""


class ThreadClient:
    def __init__(self, base_url: str, key: str | None, threads: int, burst_threads: int):
        parts = urlsplit(base_url)
        if parts.scheme != "http":
            raise SystemExit(f"--url: only http:// is supported, got {base_url!r}")
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self.key, self.threads = key, threads
        self.burst_threads = burst_threads  # for a burst of requests sent at once (the submissions)

    def run(self, requests: list[Request], threads: int | None = None) -> tuple[list[Result], list[float]]:
        """Send `requests` on their schedule over `threads` connections; the results in order, and the
        dispatcher's lateness (seconds) for each request."""
        results: list[Result | None] = [None] * len(requests)
        lags: list[float] = []
        work: queue.SimpleQueue = queue.SimpleQueue()
        pool = [threading.Thread(target=self._serve, args=(requests, work, results), daemon=True)
                for _ in range(threads or self.threads)]
        for thread in pool:
            thread.start()
        start = time.monotonic() + 0.05
        for i, request in enumerate(requests):
            scheduled = start + request.offset
            delay = scheduled - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            lags.append(time.monotonic() - scheduled)
            work.put((i, scheduled))
        for _ in pool:
            work.put(None)
        for thread in pool:
            thread.join()
        return results, lags

    def _serve(self, requests: list[Request], work: queue.SimpleQueue, results: list) -> None:
        connection = None
        try:
            while (item := work.get()) is not None:
                i, scheduled = item
                if connection is None:
                    connection = self._connect()
                try:
                    status, headers, body = self._send(connection, requests[i])
                except (OSError, http.client.HTTPException) as exc:
                    connection.close()
                    connection = None
                    results[i] = Result((time.monotonic() - scheduled) * 1000, error=f"{type(exc).__name__}: {exc}")
                    continue
                results[i] = Result((time.monotonic() - scheduled) * 1000, status, headers, body)
                if headers.get("connection", "").lower() == "close":
                    connection.close()
                    connection = None
        finally:
            if connection is not None:
                connection.close()

    def _connect(self) -> http.client.HTTPConnection:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=REQUEST_TIMEOUT_SECONDS)
        connection.connect()
        connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection

    def _send(self, connection: http.client.HTTPConnection, request: Request):
        payload = None if request.body is None else json.dumps(request.body).encode()
        headers = {"Accept": "application/json", **(request.headers or {})}
        if payload is not None:
            headers["Content-Type"] = "application/json"
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        connection.request(request.method, self.prefix + request.path, body=payload, headers=headers)
        response = connection.getresponse()
        body = response.read()
        return response.status, {name.lower(): value for name, value in response.getheaders()}, body
