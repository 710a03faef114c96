"""`dcgan jobs list|get|cancel|train`: a small client of the REST API (urllib; tenacity sends again).

It finds the API at DCGAN_API_URL (default http://127.0.0.1:8000) and its key in DCGAN_API_KEY, else in
<DCGAN_DATA_DIR>/api-key, the file `dcgan up` writes. Answers are printed as JSON; an error answer is one
line on stderr (status, problem type, detail) and exit status 2. A submission carries an Idempotency-Key
made once per command, so resending it after a dropped connection cannot queue the job twice; a request
that got no answer is sent again (SEND_ATTEMPTS in all, 1 s then 2 s apart) when that is safe.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Mapping

from core.gan.catalog import BUILTIN_DATASETS
from core.job_states import JobStatus, JobType

DEFAULT_URL = "http://127.0.0.1:8000"
SEND_ATTEMPTS = 3


COMMANDS = ("jobs",)


class ClientError(Exception):
    """What went wrong, as the one line the CLI prints."""


def add_commands(sub: argparse._SubParsersAction) -> None:
    jobs = sub.add_parser("jobs", help="the API's jobs (DCGAN_API_URL, key from DCGAN_API_KEY or "
                                       "<data-dir>/api-key)")
    actions = jobs.add_subparsers(dest="jobs_action", required=True)
    listing = actions.add_parser("list", help="jobs, newest first")
    listing.add_argument("--status", choices=[status.value for status in JobStatus])
    listing.add_argument("--type", choices=[job_type.value for job_type in JobType])
    listing.add_argument("--limit", type=int, default=20)
    actions.add_parser("get", help="one job: status, progress, error").add_argument("job_id")
    actions.add_parser("cancel", help="cancel a job").add_argument("job_id")
    train = actions.add_parser("train", help="submit a training job")
    train.add_argument("--dataset", required=True, help=f"a dataset id or one of {', '.join(BUILTIN_DATASETS)}")
    train.add_argument("--config", nargs="*", default=[], metavar="KEY=VALUE",
                       help="config fields (JSON values: 32, true, 0.5; anything else is a string)")
    train.add_argument("--max-runtime", type=int, metavar="SECONDS",
                       help="fail the job as timeout (after a final checkpoint) past this; default and "
                            "ceiling: the server's limit")


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


def request(method: str, path: str, body: dict[str, Any] | None = None,
            environ: Mapping[str, str] | None = None) -> Any:
    """Send one request; the decoded JSON answer, or ClientError for an error answer or no answer."""
    env = os.environ if environ is None else environ
    base = env.get("DCGAN_API_URL", DEFAULT_URL).rstrip("/")
    headers = {"Authorization": f"Bearer {api_key(env)}", "Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers.update({"Content-Type": "application/json", "Idempotency-Key": f"cli-{uuid.uuid4()}"})
    from tenacity import Retrying, retry_if_exception_type, retry_never, stop_after_attempt, wait_incrementing

    no_answer = (urllib.error.URLError, ConnectionError, TimeoutError)  # HTTPError is an answer: never again

    def send() -> Any:
        try:
            with urllib.request.urlopen(urllib.request.Request(base + path, data=data, method=method,
                                                               headers=headers), timeout=60) as answer:
                return json.loads(answer.read() or b"null")
        except urllib.error.HTTPError as error:
            raise ClientError(_problem_line(error)) from None

    # Only safe requests again: reads, and submissions, whose Idempotency-Key makes a second arrival a replay.
    safe = method == "GET" or data is not None
    retrying = Retrying(retry=retry_if_exception_type(no_answer) if safe else retry_never,
                        wait=wait_incrementing(start=1, increment=1), stop=stop_after_attempt(SEND_ATTEMPTS),
                        reraise=True)
    try:
        return retrying(send)
    except no_answer as error:
        raise ClientError(f"no answer from {base}: {getattr(error, 'reason', error)}") from None


def _problem_line(error: urllib.error.HTTPError) -> str:
    try:
        problem = json.loads(error.read())
        return f"{error.code} {problem['type'].rsplit('/', 1)[-1]}: {problem['detail']}" + "".join(
            f"; {e['field']}: {e['message']}" for e in problem.get("errors") or [])
    except (ValueError, KeyError, TypeError):
        return f"{error.code} {error.reason}"


def run(args: argparse.Namespace) -> int:
    try:
        if args.jobs_action == "list":
            query = "&".join(f"{name}={value}" for name, value in (("status", args.status), ("type", args.type),
                                                                   ("limit", args.limit)) if value)
            answer = request("GET", f"/v1/jobs?{query}")
        elif args.jobs_action == "get":
            answer = request("GET", f"/v1/jobs/{args.job_id}")
        elif args.jobs_action == "cancel":
            answer = request("POST", f"/v1/jobs/{args.job_id}/cancel")
        else:
            # A core.request_models.TrainJobRequest (not imported: every `dcgan` command would pay for
            # building the models); the server validates it and looks the dataset up.
            body = {"dataset": args.dataset, "config": parse_config(args.config)}
            if args.max_runtime is not None:
                body["max_runtime_seconds"] = args.max_runtime
            answer = request("POST", "/v1/jobs/train", body)
    except ClientError as error:
        print(f"dcgan jobs: {error}", file=sys.stderr)
        return 2
    print(json.dumps(answer, indent=2))
    return 0
