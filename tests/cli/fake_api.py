"""A stand-in for the platform's API on loopback, for the `dcgan jobs`/`dcgan datasets` client tests.

A real http.server speaking HTTP, so the client's urllib code runs unchanged, but every answer is scripted:
the event stream follows the API contract's text/event-stream format (`id:`, `event:`, one-line JSON
`data:`, Last-Event-ID honoured) and can be cut at a chosen point, held open, or made to replay too much.
That is what lets the parser, the reconnects and the exit statuses be tested deterministically, which a
real training job cannot do; tests/e2e/test_cli_follow.py runs the same commands against `dcgan up`.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

JOB_ID = "0b7c6e0e-3c55-4f7e-9d8a-5a3f0e7e1a01"
KEY = "dcg_test"


@dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def json_answer(document: Any, status: int = 200) -> Answer:
    return Answer(status, json.dumps(document).encode(), {"Content-Type": "application/json"})


def problem(status: int, slug: str, detail: str, headers: dict[str, str] | None = None) -> Answer:
    return Answer(status, json.dumps({"type": f"/problems/{slug}", "title": slug, "status": status,
                                      "detail": detail}).encode(),
                  {"Content-Type": "application/problem+json", **(headers or {})})


def sse(event_id: int, kind: str, data: dict[str, Any]) -> bytes:
    return f"id: {event_id}\nevent: {kind}\ndata: {json.dumps(data)}\n\n".encode()


def progress(step: int, total: int = 200) -> dict[str, Any]:
    return {"step": step, "total_steps": total, "epoch": 0, "loss_d": 1.25, "loss_g": 0.75, "d_real": 0.6,
            "d_fake": 0.4, "images_per_second": 512.0, "eta_seconds": (total - step) / 10,
            "elapsed_seconds": step / 10, "percent": 100 * step / total}


def timeline(end: str = "succeeded", error: dict[str, str] | None = None) -> list[tuple[int, str, dict]]:
    """A train job's events: queued, started, progress every 50 steps, samples at 100 and 200, the end."""
    events = [("status", {"kind": "queued", "status": "queued", "attempt": 0, "at": "t", "detail": {}}),
              ("status", {"kind": "started", "status": "running", "attempt": 1, "at": "t", "detail": {"step": 0}}),
              ("progress", progress(50)), ("progress", progress(100)),
              ("sample", {"step": 100, "url": f"/v1/jobs/{JOB_ID}/samples/100"}),
              ("progress", progress(150)), ("progress", progress(200)), ("checkpoint", {"step": 200}),
              ("sample", {"step": 200, "url": f"/v1/jobs/{JOB_ID}/samples/200"}),
              ("status", {"kind": end, "status": end, "attempt": 1, "at": "t", "detail": {}}),
              ("completed", {"status": end, "error": error})]
    return [(index, kind, data) for index, (kind, data) in enumerate(events, start=1)]


class FakeApi:
    """Routes are callables (handler -> Answer) by "METHOD /path"; the stream is scripted separately.

    `cuts[k]` is what connection k of the stream does after sending that many events: "close" (ends it, as a
    dropped connection), "partial" (sends half of the next event, then ends), "hold" (keep-alive comments
    until the test closes the server). Past the cuts, connections send every remaining event.
    """

    def __init__(self, events: list[tuple[int, str, dict]] | None = None, cuts: list[tuple[int, str]] = (),
                 honour_last_event_id: bool = True, retry_ms: int = 10):
        self.events = events or []
        self.cuts = list(cuts)
        self.honour_last_event_id = honour_last_event_id
        self.retry_ms = retry_ms
        self.routes: dict[str, Callable[[BaseHTTPRequestHandler], Answer]] = {}
        self.requests: list[dict[str, Any]] = []
        self.stream_connections = 0
        self.closing = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                fake._serve(self)

            do_POST = do_GET

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def env(self, **extra: str) -> dict[str, str]:
        return {"DCGAN_API_URL": self.url, "DCGAN_API_KEY": KEY, **extra}

    def paths(self, method: str = "GET") -> list[str]:
        return [r["path"] for r in self.requests if r["method"] == method]

    def close(self) -> None:
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        self.requests.append({"method": handler.command, "path": handler.path, "body": body,
                              "headers": {k.lower(): v for k, v in handler.headers.items()}})
        if handler.command == "GET" and handler.path == f"/v1/jobs/{JOB_ID}/stream":
            return self._stream(handler)
        route = self.routes.get(f"{handler.command} {handler.path}")
        send(handler, route(handler) if route else problem(404, "not-found", f"no route {handler.path}"))

    def _stream(self, handler: BaseHTTPRequestHandler) -> None:
        connection = self.stream_connections
        self.stream_connections += 1
        after = int(handler.headers.get("Last-Event-ID") or 0) if self.honour_last_event_id else 0
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Cache-Control", "no-cache")
        handler.end_headers()  # HTTP/1.0 and no length: the stream is the rest of the connection
        handler.wfile.write(f"retry: {self.retry_ms}\n\n".encode())
        pending = [e for e in self.events if e[0] > after]
        count, action = self.cuts[connection] if connection < len(self.cuts) else (len(pending), "all")
        for event in pending[:count]:
            handler.wfile.write(sse(*event))
            handler.wfile.flush()
        if action == "partial" and len(pending) > count:
            handler.wfile.write(sse(*pending[count])[:-5])
        elif action == "hold":
            while not self.closing.wait(0.05):
                try:
                    handler.wfile.write(b": keep-alive\n\n")
                    handler.wfile.flush()
                except OSError:  # the client went away
                    return
        handler.wfile.flush()
        handler.close_connection = True


def wait_until(condition: Callable[[], bool], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def send(handler: BaseHTTPRequestHandler, answer: "Answer") -> None:
    """Write `answer` as the whole response to the request `handler` is serving."""
    handler.send_response(answer.status)
    for name, value in answer.headers.items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(answer.body)))
    handler.end_headers()
    handler.wfile.write(answer.body)

