"""A webhook receiver for tests: an HTTP server on loopback, in a thread, that records every request and answers
from a script -- a status code per request in order (then 200), or "hang" to hold the request without answering
until the test lets go (a dead or slow receiver)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


@dataclass
class Received:
    headers: dict[str, str]
    body: str


class Receiver:
    def __init__(self, script: list[int | str] | None = None, default: int | str = 200):
        self.script, self.default = list(script or []), default
        self.received: list[Received] = []
        self.release = threading.Event()  # lets every held request go (unanswered)
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0))).decode()
                with receiver._lock:
                    receiver.received.append(Received({k.lower(): v for k, v in self.headers.items()}, body))
                    answer = receiver.script.pop(0) if receiver.script else receiver.default
                if answer == "hang":
                    receiver.release.wait(120)
                    self.close_connection = True
                    return
                self.send_response(int(answer))
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:  # quiet: the test reads `received`
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def __enter__(self) -> "Receiver":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def wait_for(self, condition: Callable[[list[Received]], bool], timeout: float, what: str) -> list[Received]:
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                seen = list(self.received)
            if condition(seen):
                return seen
            if time.monotonic() > deadline:
                raise AssertionError(f"the receiver did not get {what} in {timeout} s; it got "
                                     f"{[r.body[:80] for r in seen]}")
            time.sleep(0.1)
