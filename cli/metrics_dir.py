"""Where a server's prometheus_client multiprocess files go: `dcgan api` and `dcgan worker` each take a fresh
directory and set PROMETHEUS_MULTIPROC_DIR to it before any of their processes imports prometheus_client
(which picks its multiprocess mode once, at import). This module therefore imports no prometheus_client.

The base is the operator's PROMETHEUS_MULTIPROC_DIR, else `<temp dir>/dcgan-metrics`; each server takes
`<base>/<role>-<pid>` under it, so the API and the workers `dcgan up` starts side by side (who inherit one
environment) never merge or wipe each other's files. A temp directory rather than the data dir: the files are
mmapped on every request, which a network file system would make slow, and they mean nothing after a restart.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import MutableMapping

VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def use_fresh_multiprocess_dir(environ: MutableMapping[str, str], role: str, pid: int | None = None) -> Path:
    """Make this server's directory and point `environ`'s PROMETHEUS_MULTIPROC_DIR at it; the directory."""
    base = Path(environ.get(VARIABLE) or Path(tempfile.gettempdir()) / "dcgan-metrics")
    directory = fresh_multiprocess_dir(base, role, os.getpid() if pid is None else pid)
    environ[VARIABLE] = str(directory)
    return directory


def fresh_multiprocess_dir(base: Path, role: str, pid: int) -> Path:
    """`<base>/<role>-<pid>`, empty. Wiped on start: files an earlier server left would add its counts to
    this one's. Directories of servers whose process is gone (`<name>-<pid>` with no such process) are
    removed too, so restarts leave no trail."""
    base.mkdir(parents=True, exist_ok=True)
    for old in base.iterdir():
        name, _, old_pid = old.name.rpartition("-")
        if old.is_dir() and name and old_pid.isdigit() and int(old_pid) != pid and not _alive(int(old_pid)):
            shutil.rmtree(old, ignore_errors=True)
    directory = base / f"{role}-{pid}"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir()
    return directory


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive, and its directory is not ours to remove
        return True
    return True
