"""`dcgan api`: gunicorn runs the API's processes; in each of them waitress (by default) speaks HTTP.

gunicorn's arbiter, in the `dcgan api` process itself, binds the port once, forks `processes` workers that
accept on it (one Python process is held to one core by the GIL), starts one again if it dies, and stops
them all on SIGTERM or SIGINT. Each worker imports and builds `web:create_app()` after the fork, so no
database connection is shared between processes, and the port is announced only once every worker has
built its app: a client that connected earlier would keep all its connections on the first one ready.

Inside a worker, `server="waitress"` serves with waitress on the sockets gunicorn bound (WaitressWorker,
gunicorn's documented extension point for a worker class); `server="gthread"` uses gunicorn's own threaded
worker. waitress is the default because it served this API better in bench/load_test.py (the README's load
table): with gthread the poll p99 was about 1.5-2x waitress's, and gthread spent about 0.2 ms more CPU
per request (640 us against 440 us for a bare WSGI app on this project's 2-core VM, 2026-12-01, AVX-512 CPU
with avx512_bf16 and amx_bf16), which a 2-core machine pays in the tail.
"""

from __future__ import annotations

import os
import signal
import threading
import time

from gunicorn.app.base import BaseApplication
from gunicorn.util import import_app
from gunicorn.workers.base import Worker

# What the workers serve: imported in each of them, never by this process.
API_APP = "web:create_app()"
# Idle keep-alive connections are closed after this long, by either server (waitress's default): a pool of
# polling connections leaves some idle for many seconds, and gunicorn's default of 2 s made such clients
# reconnect.
KEEPALIVE_SECONDS = 120


class WaitressWorker(Worker):
    """A gunicorn worker process that serves with waitress on the listening sockets gunicorn bound."""

    def run(self) -> None:
        import waitress

        settings = self.wsgi.config["SETTINGS"]
        server = waitress.create_server(
            self.wsgi, sockets=[listener.sock for listener in self.sockets], threads=self.cfg.threads,
            channel_timeout=KEEPALIVE_SECONDS, ident="dcgan",
            # waitress buffers a body before the app sees it: cap it at the upload limit (plus room for the
            # multipart framing), or a chunked upload without Content-Length could fill the disk first.
            max_request_body_size=settings.max_upload_bytes + 1024 * 1024)
        threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True).start()
        server.run()  # until handle_exit raises SystemExit in this thread; waitress then closes what it has

    def _heartbeat(self) -> None:
        """Tell the arbiter this process is alive (it kills a silent one), and stop if the arbiter is gone."""
        while self.alive:
            self.notify()
            if self.ppid != os.getppid():
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(1.0)

    def handle_exit(self, sig, frame) -> None:
        super().handle_exit(sig, frame)
        raise SystemExit(0)  # out of waitress's loop, which shuts its sockets and threads down on it


def serve(host: str, port: int, processes: int, threads: int, server: str = "waitress",
          stream_threads: int | None = None) -> None:
    """Run the API until SIGTERM or SIGINT; print "API on ..." once every process is ready.

    Each process gets `threads` request threads plus `stream_threads` (default: the settings' max_streams)
    for event streams (web.stream), which hold theirs for as long as a client listens: with threads
    apart for them, 50 open streams leave the threads that answer polls free (bench/load_test.py --streams).
    """
    if stream_threads is None:
        from core.settings import Settings

        stream_threads = Settings.from_env().max_streams
    ready_read, ready_write = os.pipe()
    bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def announce_when_all_ready() -> None:
        with os.fdopen(ready_read, "rb", buffering=0) as ready:
            got = 0
            while got < processes:
                got += len(ready.read(processes - got))
            print(f"API on http://{host}:{port} ({processes} processes x {threads} threads + {stream_threads} for "
                  f"event streams)", flush=True)
            while ready.read(64):  # workers that gunicorn starts again later: nothing to say
                pass

    def post_worker_init(worker) -> None:  # in each worker, once its app is built
        os.write(ready_write, b"1")

    def when_ready(arbiter) -> None:  # in this process, once the port is bound
        threading.Thread(target=announce_when_all_ready, name="announce", daemon=True).start()

    def child_exit(arbiter, worker) -> None:  # in this process, once a worker process is gone
        # Its live gauges go with it; its counters stay in the totals (web.metrics, multiprocess mode).
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(worker.pid)

    options = {
        "bind": [bind], "workers": processes, "threads": threads + stream_threads, "keepalive": KEEPALIVE_SECONDS,
        "worker_class": WaitressWorker if server == "waitress" else "gthread",
        # gthread: longer request lines are refused by gunicorn itself (400); ids are 36 characters.
        "limit_request_line": 8190,
        # `dcgan up` waits 15 s for the API to stop before it kills it.
        "graceful_timeout": 10,
        # Errors and warnings only: the port announcement is the first line a supervisor reads.
        "loglevel": "warning",
        # Its default path is one per user, so two API servers on one machine would fight over it.
        "control_socket_disable": True,
        "post_worker_init": post_worker_init, "when_ready": when_ready, "child_exit": child_exit,
    }

    class Application(BaseApplication):
        def load_config(self) -> None:
            for name, value in options.items():
                self.cfg.set(name, value)

        def load(self):
            return import_app(API_APP)

    Application().run()
