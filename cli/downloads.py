"""`dcgan jobs download <id>`: a job's grid, generator and artifacts written to disk, whole or not at all.

Each file is written to a temporary file beside its target and renamed over it only once complete (and, for
an artifact, once its sha256 matches the job's artifact list), so an interrupted or corrupted download never
leaves a file that looks finished. Artifact names come from the server and are used as paths under DIR
(`samples/step-0000100.png`), so every name is checked before anything is written: an absolute name, or one
with `..`, a backslash or an empty segment, refuses the whole download.

With S3 the API answers a download with a 302 to a presigned URL; urllib follows it, and the API key is
dropped from any request to another origin (the presigned URL is its own credential, and the key must not
leak to the store's host).
"""

from __future__ import annotations

import hashlib
import http.client
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path, PurePosixPath
from typing import Any, Mapping

from core.gan.atomic_files import atomic_write

from cli.client import NO_ANSWER, ClientError, api_key, api_url, no_answer_line, problem_line, request, \
    retrying, same_origin

CHUNK = 1024 * 1024


class _KeyStaysHome(urllib.request.HTTPRedirectHandler):
    """Follows redirects as urllib does, without the Authorization header once they leave the origin."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001 (urllib's signature)
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and not same_origin(req.full_url, new.full_url):
            new.remove_header("Authorization")
        return new


def download_job(job_id: str, environ: Mapping[str, str], grid: Path | None = None, generator: Path | None = None,
                 artifacts: Path | None = None) -> None:
    """Write what was asked for, printing one line per file written; ClientError for anything refused."""
    if grid is None and generator is None and artifacts is None:
        raise ClientError("nothing to download: give --grid FILE, --generator FILE or --artifacts DIR")
    job_path = f"/v1/jobs/{urllib.parse.quote(job_id, safe='')}"
    listing: list[dict[str, Any]] = []
    targets: list[Path] = []
    if artifacts is not None:
        listing = request("GET", f"{job_path}/artifacts", environ=environ)["artifacts"]
        targets = [artifact_target(artifacts, artifact["name"]) for artifact in listing]  # all checked first
    if grid is not None:
        _report(grid, fetch(f"{job_path}/grid", grid, environ))
    if generator is not None:
        _report(generator, fetch(f"{job_path}/generator", generator, environ))
    for artifact, target in zip(listing, targets):
        target.parent.mkdir(parents=True, exist_ok=True)
        _report(target, fetch(artifact["download_url"], target, environ, artifact.get("sha256")))


def artifact_target(directory: Path, name: Any) -> Path:
    """Where the artifact `name` goes under `directory`, or ClientError for a name that would leave it."""
    if not isinstance(name, str) or not name or "\\" in name or "\0" in name:
        raise ClientError(f"refused artifact name {name!r}: not a relative '/'-separated path; nothing written")
    path = PurePosixPath(name)
    if path.is_absolute() or any(part in ("..", ".", "") for part in name.split("/")):
        raise ClientError(f"refused artifact name {name!r}: it would be written outside {directory}; "
                          "nothing written")
    target = directory / Path(*path.parts)
    # A link already inside the directory could still lead out: judge the resolved path as well.
    if not target.resolve().is_relative_to(directory.resolve()):
        raise ClientError(f"refused artifact name {name!r}: {target} leads outside {directory}; nothing written")
    return target


def fetch(url: str, target: Path, environ: Mapping[str, str], sha256: str | None = None) -> tuple[int, str]:
    """GET `url` (a path on the API or a URL it gave) into `target` atomically; (size, sha256) written.

    With `sha256`, bytes that do not hash to it are refused and `target` is left as it was."""
    base = api_url(environ)
    absolute = urllib.parse.urljoin(base + "/", url)
    headers = {"Authorization": f"Bearer {api_key(environ)}"} if same_origin(absolute, base) else {}
    opener = urllib.request.build_opener(_KeyStaysHome)

    def attempt() -> tuple[int, str]:
        try:
            with opener.open(urllib.request.Request(absolute, headers=headers), timeout=60) as answer:
                return _write_atomically(answer, target, sha256)
        except urllib.error.HTTPError as error:
            raise ClientError(f"{url}: {problem_line(error)}") from None

    try:
        # A body cut short (IncompleteRead) is sent again too: the temporary file is dropped, nothing kept.
        return retrying(True, also=(http.client.HTTPException,))(attempt)
    except NO_ANSWER as error:
        raise ClientError(no_answer_line(base, error)) from None
    except http.client.HTTPException as error:
        raise ClientError(f"{url}: the download broke off: {error!r}") from None


def _write_atomically(answer: Any, target: Path, sha256: str | None) -> tuple[int, str]:
    """core.gan.atomic_files' temp-file-and-rename, refusing (before the rename) bytes that do not hash to
    `sha256`."""
    digest, size = hashlib.sha256(), 0

    def write(file) -> None:
        nonlocal size
        while block := answer.read(CHUNK):
            digest.update(block)
            size += len(block)
            file.write(block)
        if sha256 is not None and digest.hexdigest() != sha256:
            raise ClientError(f"{target}: sha256 {digest.hexdigest()} is not the listed {sha256}; not written")

    atomic_write(target, write)
    return size, digest.hexdigest()


def _report(target: Path, written: tuple[int, str]) -> None:
    size, digest = written
    print(f"wrote {target} ({size} bytes, sha256 {digest[:12]})", flush=True, file=sys.stdout)
