"""Private service instances for tests that stop, restart or flush them.

The machine's PostgreSQL (5432) and Redis (6379) are shared by everyone and are never stopped by a test.
A test that needs an outage gets its own `redis-server` or PostgreSQL cluster (`initdb` + `pg_ctl` from
/usr/lib/postgresql/*/bin) on a spare loopback port, under a temporary directory removed at the end.

PostgreSQL refuses to run as root, so when the tests run as root the cluster's commands run as the
`postgres` system user (`runuser`) in a directory it owns. `initdb` costs a few seconds, so the cluster is
created once per test session; `private_postgres` makes sure it is running again at the start of every
module that uses it, even if an earlier module stopped it and failed before restarting it.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

START_SECONDS = 60


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until(ready, what: str, timeout: float = START_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} was not ready within {timeout:.0f} s")
        time.sleep(0.05)


class RedisServer:
    """A `redis-server` subprocess on a fixed loopback port, without persistence: stop() loses its data,
    as a crashed or wiped Redis would."""

    def __init__(self, directory: Path, port: int | None = None, binary: str | None = None):
        self.directory = Path(directory)
        self.port = port or free_port()
        self.binary = binary or shutil.which("redis-server")
        if self.binary is None:
            raise FileNotFoundError("redis-server is not installed")
        self.process: subprocess.Popen | None = None
        self.log_path = self.directory / "redis.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        """Start on the same port as before; a no-op while running."""
        if self.running:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
                 "--save", "", "--appendonly", "no", "--daemonize", "no"],
                stdout=log, stderr=subprocess.STDOUT)
        _wait_until(self._answers, f"redis-server on port {self.port} (log: {self.log_path})")

    def _answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            log = self.log_path.read_text(errors="replace")
            raise RuntimeError(f"redis-server exited with {self.process.returncode}: {log}")
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False
        finally:
            client.close()

    def stop(self) -> None:
        """SIGTERM and wait: the port is closed when this returns. A no-op when stopped."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def flush(self) -> None:
        """FLUSHALL on this private server (every db), as a wiped Redis would look."""
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port)
        try:
            client.flushall()
        finally:
            client.close()


def postgres_bin_dir() -> Path | None:
    """The newest installed PostgreSQL's bin directory (the one with initdb), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


class PostgresCluster:
    """A throwaway PostgreSQL cluster: trust auth on 127.0.0.1, durability off (fsync, synchronous_commit,
    full_page_writes), sockets in its own directory, superuser `postgres`."""

    USER = "postgres"

    def __init__(self, root: Path, port: int | None = None, bin_dir: Path | None = None):
        self.root = Path(root)
        self.port = port or free_port()
        self.bin_dir = bin_dir or postgres_bin_dir()
        if self.bin_dir is None:
            raise FileNotFoundError("no PostgreSQL under /usr/lib/postgresql/*/bin")
        self.data_dir = self.root / "data"
        self.socket_dir = self.root / "sockets"
        self.log_path = self.root / "postgres.log"

    def _command(self, *args: str) -> list[str]:
        program = [str(self.bin_dir / args[0]), *args[1:]]
        # initdb and postgres refuse to run as root: run them as the system's postgres user.
        return ["runuser", "-u", self.USER, "--", *program] if os.geteuid() == 0 else program

    def _run(self, *args: str) -> None:
        result = subprocess.run(self._command(*args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, timeout=START_SECONDS)
        if result.returncode != 0:
            log = self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed ({result.returncode}):\n{result.stdout}\n{log}")

    def init(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            owner = pwd.getpwnam(self.USER)
            for path in (self.root, self.socket_dir):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        self._run("initdb", "-D", str(self.data_dir), "-U", self.USER, "-A", "trust", "-E", "UTF8",
                  "--locale=C", "--no-sync", "--no-instructions")

    @property
    def running(self) -> bool:
        """Asks pg_ctl, so a server that died or was killed by a test counts as stopped."""
        if not (self.data_dir / "postmaster.pid").exists():
            return False
        status = subprocess.run(self._command("pg_ctl", "-D", str(self.data_dir), "status"),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=START_SECONDS)
        return status.returncode == 0

    def start(self) -> None:
        """Start on the same port as before; returns when it accepts connections. A no-op while running."""
        if self.running:
            return
        options = (f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c shared_buffers=16MB "
                   "-c max_connections=50")
        self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_path), "-o", options,
                  "-w", "-t", str(START_SECONDS), "start")

    def stop(self) -> None:
        """Fast shutdown (open sessions are terminated); returns when the server is gone. A no-op when
        stopped."""
        if not self.running:
            return
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", str(START_SECONDS), "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{self.USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """CREATE DATABASE `name`; returns its URL."""
        from sqlalchemy import create_engine

        engine = create_engine(self.url(), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        finally:
            engine.dispose()
        return self.url(name)

    def destroy(self) -> None:
        """Stop if running (immediate mode: nothing to keep) and remove every file."""
        if (self.data_dir / "postmaster.pid").exists():
            subprocess.run(self._command("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop"),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=START_SECONDS)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def private_redis():
    """A `redis-server` of this module's own on a spare port: tests may stop, start and flush it."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    directory = Path(tempfile.mkdtemp(prefix="dcgan-redis-"))
    server = RedisServer(directory)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def _private_postgres_cluster():
    if postgres_bin_dir() is None:
        pytest.skip("PostgreSQL server binaries are not installed (/usr/lib/postgresql/*/bin)")
    # Not under pytest's tmp_path: that is private to root (mode 700) and the postgres user must enter it.
    cluster = PostgresCluster(Path(tempfile.mkdtemp(prefix="dcgan-pg-")))
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(scope="module")
def private_postgres(_private_postgres_cluster) -> PostgresCluster:
    """A PostgreSQL cluster of the test session's own on a spare port, running when the module starts:
    tests may stop and start it (and should start it again when done)."""
    _private_postgres_cluster.start()
    return _private_postgres_cluster
