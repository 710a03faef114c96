"""Where one API process spends a status poll and a submission (issue 12): the app of `web.create_app()` in
this process, on a fresh PostgreSQL database and Redis db 13 as bench/load_test.py sets them up, driven through
its WSGI interface by Flask's test client (no HTTP server, one thread), so what is measured is the app alone.

It prints, per request: wall time, SQL statements, pool checkouts (each pings the server first: pool_pre_ping)
and transaction ends, Redis round trips, then the functions that took the most time under cProfile. Run from
the repo root:  .venv/bin/python bench/profile_api.py [--polls 2000] [--submits 100] [--top 25]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench.load_test import DEFAULT_REDIS_URL, RAISED_LIMITS, TINY_CONFIG, Stack  # noqa: E402


class Counts:
    """SQL statements, pool checkouts, pings, commits/rollbacks and Redis round trips, while `on`."""

    def __init__(self, engine) -> None:
        import redis.connection
        from sqlalchemy import event

        self.counter: Counter = Counter()
        event.listen(engine, "before_cursor_execute", lambda *a: self.counter.update(["sql"]))
        event.listen(engine.pool, "checkout", lambda *a: self.counter.update(["pool checkout"]))
        event.listen(engine, "commit", lambda *a: self.counter.update(["commit"]))
        event.listen(engine, "rollback", lambda *a: self.counter.update(["rollback"]))
        dialect = engine.dialect
        ping = dialect.do_ping
        dialect.do_ping = lambda connection: (self.counter.update(["ping"]), ping(connection))[1]
        read = redis.connection.Connection.read_response
        counter = self.counter

        def counted_read(self, *args, **kwargs):
            counter.update(["redis round trip"])
            return read(self, *args, **kwargs)

        redis.connection.Connection.read_response = counted_read

    def per_request(self, requests: int) -> str:
        return ", ".join(f"{name} {count / requests:.2f}" for name, count in sorted(self.counter.items()))


def profiled(label: str, requests: int, send, counts: Counts, top: int) -> None:
    counts.counter.clear()
    profile = cProfile.Profile()
    start = time.perf_counter()
    cpu = time.process_time()
    profile.enable()
    for i in range(requests):
        send(i)
    profile.disable()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(f"\n== {label}: {requests} requests, {1000 * wall / requests:.3f} ms wall and {1000 * cpu / requests:.3f} "
          f"ms CPU each (under cProfile, which adds to both); per request: {counts.per_request(requests)}")
    for order in ("cumulative", "tottime"):
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats(order).print_stats(top)
        print("\n".join(line for line in out.getvalue().splitlines() if line.strip()))


def timed_only(label: str, requests: int, send) -> None:
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(requests):
        send(i)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(f"{label}: {1000 * wall / requests:.3f} ms wall, {1000 * cpu / requests:.3f} ms CPU per request "
          f"(no profiler)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--polls", type=int, default=2000)
    parser.add_argument("--submits", type=int, default=100)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    stack = Stack(None, DEFAULT_REDIS_URL, 1, 1, "waitress")
    stack._spawn = lambda *a, **k: None  # the app runs in this process: no server
    stack._serving = lambda: True
    with stack:
        os.environ.update({"DATABASE_URL": stack.database_url, "REDIS_URL": stack.redis_url,
                           "DCGAN_DATA_DIR": str(stack.directory),
                           "STORAGE_URL": (stack.directory / "artifacts").as_uri(), **RAISED_LIMITS})
        from web import create_app

        app = create_app()
        counts = Counts(app.extensions["dcgan"]["engine"])
        client = app.test_client()
        auth = {"Authorization": f"Bearer {stack.key}"}
        seed_base = 10**9
        ids = []

        def submit(i: int) -> None:
            response = client.post("/v1/jobs/train", headers={**auth, "Idempotency-Key": f"p-{uuid.uuid4()}"},
                                   json={"dataset": "builtin:digits", "config": {**TINY_CONFIG, "seed": seed_base + i}})
            assert response.status_code == 202, response.data
            ids.append(response.json["id"])

        def poll(i: int) -> None:
            response = client.get(f"/v1/jobs/{ids[i % len(ids)]}", headers=auth)
            assert response.status_code == 200, response.data

        submit(0)
        poll(0)  # warm: first connections, first key lookup
        timed_only("submit", args.submits, submit)
        timed_only("poll", args.polls, poll)
        profiled("submit", args.submits, submit, counts, args.top)
        profiled("poll", args.polls, poll, counts, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
