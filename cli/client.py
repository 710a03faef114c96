"""`dcgan jobs ...`, `dcgan datasets ...` and `dcgan generators ...`: the parser, the dispatch, and the requests
they send (urllib; tenacity sends again).

It finds the API at DCGAN_API_URL (default http://127.0.0.1:8000) and its key in DCGAN_API_KEY, else in
<DCGAN_DATA_DIR>/api-key, the file `dcgan up` writes. Answers are printed as JSON; an error answer is one
line on stderr (status, problem type, detail) and exit status 2. A submission carries an Idempotency-Key
made once per command, so resending it after a dropped connection cannot queue the job twice; a request
that got no answer is sent again (SEND_ATTEMPTS in all, 1 s then 2 s apart) when that is safe.

Following a job's event stream is cli.follow's, downloads are cli.downloads', dataset uploads
cli.datasets'. tenacity and tqdm are imported inside the commands that use them: every `dcgan` command
imports this module at start-up.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from core.gan.catalog import BUILTIN_DATASETS
from core.job_states import JobStatus, JobType

DEFAULT_URL = "http://127.0.0.1:8000"
SEND_ATTEMPTS = 3
# What "no answer" looks like from urllib; an HTTPError is an answer and is never sent again.
NO_ANSWER = (urllib.error.URLError, ConnectionError, TimeoutError)

COMMANDS = ("jobs", "datasets", "generators")


class ClientError(Exception):
    """What went wrong, as the one line the CLI prints."""


@dataclass(frozen=True)
class Payload:
    """A request body: `chunks()` is called once per attempt, so a body read from a file can be sent again."""

    content_type: str
    length: int
    chunks: Callable[[], Iterable[bytes]]


def add_commands(sub: argparse._SubParsersAction) -> None:
    jobs = sub.add_parser("jobs", help="the API's jobs (DCGAN_API_URL, key from DCGAN_API_KEY or "
                                       "<data-dir>/api-key)")
    actions = jobs.add_subparsers(dest="jobs_action", required=True)
    listing = actions.add_parser("list", help="jobs, newest first")
    listing.add_argument("--status", choices=[status.value for status in JobStatus])
    listing.add_argument("--type", choices=[job_type.value for job_type in JobType])
    listing.add_argument("--limit", type=int, default=20)
    listing.add_argument("--sort", choices=["newest", "best_fid"], help="best_fid: evaluated runs, lowest FID first")
    actions.add_parser("get", help="one job: status, progress, error").add_argument("job_id")
    actions.add_parser("cancel", help="cancel a job").add_argument("job_id")
    train = actions.add_parser("train", help="submit a training job")
    train.add_argument("--dataset", required=True, help=f"a dataset id or one of {', '.join(BUILTIN_DATASETS)}")
    train.add_argument("--config", nargs="*", default=[], metavar="KEY=VALUE",
                       help="config fields (JSON values: 32, true, 0.5; anything else is a string)")
    train.add_argument("--max-runtime", type=int, metavar="SECONDS",
                       help="fail the job as timeout (after a final checkpoint) past this; default and "
                            "ceiling: the server's limit")
    train.add_argument("--name", help="the registry name its generators get versions of (default: the dataset's)")
    _add_priority(train)
    _add_follow(train)
    follow = actions.add_parser("follow", help="a progress bar until the job ends: exit 0 succeeded, 1 failed, "
                                               "130 cancelled (Ctrl-C stops following, not the job)")
    follow.add_argument("job_id")
    generate = actions.add_parser("generate", help="submit a job that renders a grid for chosen seeds")
    source = generate.add_mutually_exclusive_group(required=True)
    source.add_argument("--from", dest="generator_job", metavar="TRAIN_JOB_ID", help="a succeeded training job")
    source.add_argument("--generator", metavar="REF", help="a registry generator: id, name:version or name@alias")
    generate.add_argument("--seeds", required=True, help="e.g. 0-15 or 1,5,9")
    generate.add_argument("--nrow", type=int, help="images per row of the grid")
    generate.add_argument("--truncation", type=float, help="truncation of the latent vectors")
    _add_priority(generate)
    _add_follow(generate)
    generate.add_argument("--grid", type=Path, metavar="FILE", help="once it succeeded, download the grid to "
                                                                    "FILE (implies --follow)")
    evaluate = actions.add_parser("evaluate", help="score a generator: FID, KID (and IS where the network "
                                                   "allows) on a dataset, on the low-priority evaluate queue")
    evaluate.add_argument("--generator", required=True, metavar="REF", help="id, name:version or name@alias")
    evaluate.add_argument("--dataset", required=True, help=f"a dataset id or one of {', '.join(BUILTIN_DATASETS)}")
    evaluate.add_argument("--num", type=int, help="generated samples (seeds 0..num-1; default 2000)")
    evaluate.add_argument("--net", help="auto, inception, digits or fashion-mnist (default auto)")
    _add_priority(evaluate)
    _add_follow(evaluate)
    download = actions.add_parser("download", help="a job's grid, generator and artifacts (sha256 checked)")
    download.add_argument("job_id")
    download.add_argument("--grid", type=Path, metavar="FILE", help="the latest (or final) grid")
    download.add_argument("--generator", type=Path, metavar="FILE", help="the exported generator.safetensors")
    download.add_argument("--artifacts", type=Path, metavar="DIR",
                          help="every artifact, under its name (samples/..., checkpoints/...)")

    datasets = sub.add_parser("datasets", help="the API's datasets")
    dataset_actions = datasets.add_subparsers(dest="datasets_action", required=True)
    upload = dataset_actions.add_parser("upload", help="upload a .zip, .tar or .tar.gz of images")
    upload.add_argument("file", type=Path)
    upload.add_argument("--name", help="a display name (default: the file's name)")
    dataset_actions.add_parser("list", help="datasets, newest first")

    generators = sub.add_parser("generators", help="the API's generator registry")
    generator_actions = generators.add_subparsers(dest="generators_action", required=True)
    generator_actions.add_parser("list", help="versions, newest first").add_argument("--name")
    generator_actions.add_parser("get", help="one version: lineage, aliases, FID").add_argument(
        "ref", help="id, name:version or name@alias")
    alias = generator_actions.add_parser("alias", help="point NAME@ALIAS at a version of NAME (or move it there)")
    alias.add_argument("name")
    alias.add_argument("alias")
    alias.add_argument("version", type=int)


def _add_follow(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--follow", action="store_true",
                        help="then follow it as `dcgan jobs follow` does (and exit as it does)")


def _add_priority(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--priority", type=int, metavar="0-9",
                        help="higher first among queued jobs (default 5; the server checks the range)")


def _with_priority(body: dict, args: argparse.Namespace) -> dict:
    return {**body, "priority": args.priority} if args.priority is not None else body


def api_url(environ: Mapping[str, str]) -> str:
    return environ.get("DCGAN_API_URL", DEFAULT_URL).rstrip("/")


def api_key(environ: Mapping[str, str]) -> str:
    if environ.get("DCGAN_API_KEY"):
        return environ["DCGAN_API_KEY"].strip()
    path = Path(environ.get("DCGAN_DATA_DIR", "var")) / "api-key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        raise ClientError(f"no API key: set DCGAN_API_KEY, or run `dcgan up` (it writes {path})") from None


def parse_config(pairs: list[str]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name:
            raise ClientError(f"--config: expected KEY=VALUE, got {pair!r}")
        try:
            config[name] = json.loads(raw)
        except ValueError:
            config[name] = raw
    return config


def retrying(safe: bool, attempts: int = SEND_ATTEMPTS, wait: Any = None, also: tuple[type[Exception], ...] = ()):
    """tenacity's Retrying for requests: again on no answer (or on `also`) when `safe`, 1 s, 2 s, ... apart
    unless `wait` says otherwise; the last error is raised as it was."""
    from tenacity import Retrying, retry_if_exception_type, retry_never, stop_after_attempt, wait_incrementing

    return Retrying(retry=retry_if_exception_type(NO_ANSWER + also) if safe else retry_never,
                    wait=wait or wait_incrementing(start=1, increment=1), stop=stop_after_attempt(attempts),
                    reraise=True)


def request(method: str, path: str, body: dict[str, Any] | None = None,
            environ: Mapping[str, str] | None = None, payload: Payload | None = None) -> Any:
    """Send one request; the decoded JSON answer, or ClientError for an error answer or no answer.

    `body` is sent as JSON; `payload` is any other body (a multipart upload). Either makes it a submission,
    with an Idempotency-Key."""
    env = os.environ if environ is None else environ
    base = api_url(env)
    headers = {"Authorization": f"Bearer {api_key(env)}", "Accept": "application/json"}
    if body is not None:
        encoded = json.dumps(body).encode()
        payload = Payload("application/json", len(encoded), lambda: [encoded])
    if payload is not None:
        headers.update({"Content-Type": payload.content_type, "Content-Length": str(payload.length),
                        "Idempotency-Key": f"cli-{uuid.uuid4()}"})

    def send() -> Any:
        data = payload.chunks() if payload is not None else None
        try:
            with urllib.request.urlopen(urllib.request.Request(base + path, data=data, method=method,
                                                               headers=headers), timeout=60) as answer:
                return json.loads(answer.read() or b"null")
        except urllib.error.HTTPError as error:
            raise ClientError(problem_line(error)) from None

    # Only safe requests again: reads, and submissions, whose Idempotency-Key makes a second arrival a replay.
    try:
        return retrying(method == "GET" or payload is not None)(send)
    except NO_ANSWER as error:
        raise ClientError(no_answer_line(base, error)) from None


def no_answer_line(base: str, error: BaseException) -> str:
    return f"no answer from {base}: {getattr(error, 'reason', error)}"


def problem_line(error: urllib.error.HTTPError) -> str:
    try:
        problem = json.loads(error.read())
        return f"{error.code} {problem['type'].rsplit('/', 1)[-1]}: {problem['detail']}" + "".join(
            f"; {e['field']}: {e['message']}" for e in problem.get("errors") or [])
    except (ValueError, KeyError, TypeError, AttributeError):
        return f"{error.code} {error.reason}"


def same_origin(url: str, other: str) -> bool:
    """Whether two URLs have one scheme, host and port: only then may the API key go along."""
    first, second = urllib.parse.urlsplit(url), urllib.parse.urlsplit(other)
    return (first.scheme, first.hostname, _port(first)) == (second.scheme, second.hostname, _port(second))


def _port(parts: urllib.parse.SplitResult) -> int | None:
    return parts.port or {"http": 80, "https": 443}.get(parts.scheme)


def run(args: argparse.Namespace) -> int:
    command = f"dcgan {args.command}"
    try:
        if args.command == "datasets":
            from cli import datasets

            answer = datasets.run(args, os.environ)
        elif args.command == "generators":
            answer = _run_generators(args)
        else:
            answer = _run_jobs(args)
    except ClientError as error:
        print(f"{command}: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return 130
    if isinstance(answer, int):  # an exit status: the command printed what it had to say
        return answer
    print(json.dumps(answer, indent=2))
    return 0


def _run_generators(args: argparse.Namespace) -> Any:
    quote = urllib.parse.quote
    if args.generators_action == "list":
        return request("GET", "/v1/generators" + (f"?name={quote(args.name)}" if args.name else ""))
    if args.generators_action == "get":
        return request("GET", f"/v1/generators/{quote(args.ref, safe=':@')}")
    return request("PUT", f"/v1/generators/{quote(args.name)}/aliases/{quote(args.alias)}",
                   {"version": args.version})


def _run_jobs(args: argparse.Namespace) -> Any:
    action = args.jobs_action
    if action == "list":
        query = "&".join(f"{name}={value}" for name, value in (("status", args.status), ("type", args.type),
                                                               ("limit", args.limit), ("sort", args.sort)) if value)
        return request("GET", f"/v1/jobs?{query}")
    if action == "get":
        return request("GET", f"/v1/jobs/{args.job_id}")
    if action == "cancel":
        return request("POST", f"/v1/jobs/{args.job_id}/cancel")
    if action == "follow":
        from cli.follow import follow

        return follow(args.job_id, os.environ)
    if action == "download":
        from cli.downloads import download_job

        download_job(args.job_id, os.environ, grid=args.grid, generator=args.generator, artifacts=args.artifacts)
        return 0
    if action == "train":
        # A core.request_models.TrainJobRequest (not imported: every `dcgan` command would pay for
        # building the models); the server validates it and looks the dataset up.
        body = {"dataset": args.dataset, "config": parse_config(args.config)}
        if args.max_runtime is not None:
            body["max_runtime_seconds"] = args.max_runtime
        if args.name is not None:
            body["name"] = args.name
        job = request("POST", "/v1/jobs/train", _with_priority(body, args))
        return _follow_submitted(job) if args.follow else job
    if action == "evaluate":
        body = {"generator": args.generator, "dataset": args.dataset}  # an EvaluateJobRequest
        body.update({name: value for name, value in (("num", args.num), ("net", args.net)) if value is not None})
        job = request("POST", "/v1/jobs/evaluate", _with_priority(body, args))
        return _follow_submitted(job) if args.follow else job
    source = {"generator_job": args.generator_job} if args.generator_job else {"generator": args.generator}
    body = {**source, "seeds": args.seeds}  # a GenerateJobRequest
    body.update({name: value for name, value in (("nrow", args.nrow), ("truncation", args.truncation))
                 if value is not None})
    job = request("POST", "/v1/jobs/generate", _with_priority(body, args))
    if not (args.follow or args.grid):
        return job
    status = _follow_submitted(job)
    if status == 0:
        grid_path = f"/v1/jobs/{job['id']}/grid"
        if args.grid is not None:
            from cli.downloads import download_job

            download_job(job["id"], os.environ, grid=args.grid)
        else:
            print(f"grid: {api_url(os.environ)}{grid_path} (or: dcgan jobs download {job['id']} --grid FILE)",
                  flush=True)
    return status


def _follow_submitted(job: dict[str, Any]) -> int:
    """With --follow the answer is not printed: stdout carries what following prints (sample URLs, the
    grid); one line on stderr names the job."""
    from cli.follow import follow

    print(f"job {job['id']} submitted ({job['type']}, {job['status']})", file=sys.stderr, flush=True)
    return follow(job["id"], os.environ)
