"""`dcgan datasets upload FILE [--name NAME]` and `dcgan datasets list`: the API's datasets.

An upload is POST /v1/datasets as multipart/form-data (RFC 7578), built here by hand rather than with a
library: the file is streamed from disk in chunks under a Content-Length counted in advance (the API
refuses an oversized body from that header before reading it), and the body can be made again for a retry,
which the request's Idempotency-Key makes safe (cli.client.request).
"""

from __future__ import annotations

import argparse
import uuid
from pathlib import Path
from typing import Any, Iterator, Mapping

from cli.client import ClientError, Payload, request

CHUNK = 1024 * 1024


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> Any:
    if args.datasets_action == "list":
        return request("GET", "/v1/datasets", environ=environ)
    return request("POST", "/v1/datasets", environ=environ, payload=multipart(args.file, args.name))


def multipart(path: Path, name: str | None = None) -> Payload:
    """The form the API takes: field `file` (the archive, under its own file name) and optional `name`."""
    try:
        size = path.stat().st_size
    except OSError as error:
        raise ClientError(f"{path}: {error.strerror}") from None
    if not path.is_file():
        raise ClientError(f"{path}: not a file")
    boundary = f"dcgan-{uuid.uuid4().hex}"
    head = b""
    if name is not None:
        head += _part_header(boundary, 'name="name"') + name.encode() + b"\r\n"
    head += _part_header(boundary, f'name="file"; filename="{_quoted(path.name)}"',
                         "Content-Type: application/octet-stream\r\n")
    tail = f"\r\n--{boundary}--\r\n".encode()

    def chunks() -> Iterator[bytes]:
        yield head
        with path.open("rb") as file:
            while block := file.read(CHUNK):
                yield block
        yield tail

    return Payload(f"multipart/form-data; boundary={boundary}", len(head) + size + len(tail), chunks)


def _part_header(boundary: str, disposition: str, extra: str = "") -> bytes:
    return f"--{boundary}\r\nContent-Disposition: form-data; {disposition}\r\n{extra}\r\n".encode()


def _quoted(filename: str) -> str:
    # What browsers send (the HTML standard's multipart encoding): quotes and line breaks percent-encoded.
    return filename.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")
