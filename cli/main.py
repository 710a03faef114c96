"""The `dcgan` parser and dispatch.

An entry point: it reads `DCGAN_THREADS` and `DCGAN_CACHE_DIR` for the engine commands and turns every
expected failure of theirs into one line on stderr and exit status 2. The server, admin and client commands
handle their own failures (cli.servers, cli.admin, cli.client). Each command's module is imported only when
it runs, so `dcgan --help` and the API client never load torch.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

from cli import admin, client, engine, servers

CACHE_ENV = "DCGAN_CACHE_DIR"
THREADS_ENV = "DCGAN_THREADS"


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "dcgan-platform")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dcgan", description="Train DCGANs and sample images from them.")
    sub = parser.add_subparsers(dest="command", required=True)
    engine.add_commands(sub)
    servers.add_commands(sub)
    admin.add_commands(sub)
    client.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command in servers.COMMANDS:
        return servers.run(args)
    if args.command in admin.COMMANDS:
        return admin.run(args)
    if args.command in client.COMMANDS:
        return client.run(args)
    threads = os.environ.get(THREADS_ENV)
    import torch  # after argument parsing so --help stays instant

    if threads:
        torch.set_num_threads(int(threads))
    from core.gan.errors import USER_ERRORS

    try:
        return engine.run(args, default_cache_dir())
    except USER_ERRORS as exc:
        print(f"dcgan {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dcgan {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
