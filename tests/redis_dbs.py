"""The Redis databases that tests flush and use as brokers.

Each pytest-xdist worker (`make test` runs two) gets a set of its own, so two workers never share a Celery
queue or flush each other's keys: gw0 10-13, gw1 6-9, gw2 2-5. Databases 0 and 1 are left to the developer.
The server is the machine's (127.0.0.1:6379) unless DCGAN_TEST_REDIS names another (redis://host:port), so
two checkouts can run their suites side by side; an environment variable at a call site may name another
database for one role.
"""

from __future__ import annotations

import os

ROLES = ("core", "worker", "web", "e2e")
MAX_WORKERS = 3  # Redis has 16 databases


def shared_redis_url(role: str) -> str:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker.removeprefix("gw"))
    if index >= MAX_WORKERS:
        raise RuntimeError(f"the tests have Redis databases for {MAX_WORKERS} xdist workers, not {index + 1}: "
                           f"run pytest with -n {MAX_WORKERS} or fewer")
    server = os.environ.get("DCGAN_TEST_REDIS", "redis://127.0.0.1:6379").rstrip("/")
    return f"{server}/{10 - 4 * index + ROLES.index(role)}"
