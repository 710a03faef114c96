"""`dcgan jobs follow <id>` (and `train/generate --follow`): a job's event stream as a progress bar.

Reads GET /v1/jobs/<id>/stream (Server-Sent Events, as the HTML standard defines them) with urllib and
draws a tqdm bar on stderr from its `progress` events: step/total, the worker's img/s, losses and ETA.
`sample` events become a line on stdout ("sample at step 200: <url>"); `status`, `checkpoint` and `log`
events a line on stderr, each written through tqdm.write so the bar stays whole. The exit status
is the job's end: 0 succeeded, 1 failed (its reason on stderr), 130 cancelled; Ctrl-C stops following, not
the job (130, and a line saying how to follow again). An error answer (401, 404) is a ClientError: one
line, exit status 2.

The stream ends after `completed`; any other end (a dropped connection, a proxy's timeout, the server's
own limit on a stream's length) is followed by a reconnect with Last-Event-ID, the id of the last event
handled, so the server sends exactly the events after it; events with an id not above it are skipped all
the same, so nothing is shown twice even by a server that replays too much. Connecting is retried with
tenacity (CONNECT_ATTEMPTS, 1 s, 2 s, ... apart; a 503's Retry-After when it has one); a connection that
delivered anything starts a fresh count, after the delay the stream's `retry:` field asked for.
"""

from __future__ import annotations

import http.client
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import IO, Any, Mapping

from cli.client import NO_ANSWER, ClientError, api_key, api_url, no_answer_line, problem_line, retrying

CONNECT_ATTEMPTS = 5
CONNECT_WAIT_SECONDS = 1.0  # the first wait; then 2x, 3x ... (tests make it short)
MAX_WAIT_SECONDS = 30.0
# The server sends a comment line after 15 s without events: three of them missed is a dead connection.
READ_TIMEOUT_SECONDS = 45.0
DEFAULT_RETRY_SECONDS = 1.0  # the wait before reconnecting after a stream that worked, until it sends `retry:`
# A bar redrawn in place is for a terminal; into a file or a pipe (CI logs) each redraw is a line, so fewer.
TERMINAL_REFRESH_SECONDS = 0.1
LOG_REFRESH_SECONDS = 5.0
EXIT_STATUS = {"succeeded": 0, "failed": 1, "cancelled": 130}
BAR_FORMAT = "{desc}{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"


@dataclass(frozen=True)
class Event:
    id: int | None
    type: str
    data: Any


class EventParser:
    """The text/event-stream format, one line at a time: `feed` answers an Event when a blank line ends one.

    Fields are as the SSE standard has them: `id`, `event` (default "message"), `data` (lines joined with
    "\\n"), `retry` (milliseconds); a line starting with ":" is a comment. Data is this API's one-line JSON.
    """

    def __init__(self) -> None:
        self.retry_seconds: float | None = None
        self._id: str | None = None
        self._type = ""
        self._data: list[str] = []

    def feed(self, line: str) -> Event | None:
        line = line.rstrip("\r\n")
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._type = value
        elif name == "id" and "\0" not in value:
            self._id = value
        elif name == "retry" and value.isdigit():
            self.retry_seconds = int(value) / 1000
        return None

    def _dispatch(self) -> Event | None:
        raw_id, event_type, data = self._id, self._type or "message", self._data
        self._id, self._type, self._data = None, "", []
        if not data:
            return None
        try:
            decoded = json.loads("\n".join(data))
        except ValueError:
            raise ClientError(f"the stream sent a {event_type} event whose data is not JSON: "
                              f"{data[0][:80]!r}") from None
        return Event(int(raw_id) if raw_id and raw_id.isdigit() else None, event_type, decoded)


class _Dropped(Exception):
    """The stream ended without `completed` before anything arrived on it."""


class _Busy(Exception):
    """503: the API process holds its most open streams; Retry-After says when to come back."""

    def __init__(self, line: str, retry_after: float | None):
        super().__init__(line)
        self.retry_after = retry_after


class Follower:
    """One job's stream, reconnected until `completed`; `run()` answers the exit status."""

    def __init__(self, job_id: str, environ: Mapping[str, str], out: IO[str], err: IO[str]):
        from tqdm import tqdm  # here, not at import: every `dcgan` command imports cli.client

        self.tqdm = tqdm
        self.job_id, self.out, self.err = job_id, out, err
        self.base = api_url(environ)
        self.url = f"{self.base}/v1/jobs/{urllib.parse.quote(job_id, safe='')}/stream"
        self.key = api_key(environ)
        self.last_id: int | None = None
        self.retry_seconds = DEFAULT_RETRY_SECONDS
        self.samples_seen: set[int] = set()
        self.bar: Any = None

    def run(self) -> int:
        try:
            while True:
                status = retrying(True, CONNECT_ATTEMPTS, self._wait, also=(_Dropped, _Busy))(self._connection)
                if status is not None:
                    return status
                time.sleep(self.retry_seconds)
        except NO_ANSWER as error:
            raise ClientError(no_answer_line(self.base, error)) from None
        except (_Dropped, _Busy) as error:
            raise ClientError(str(error)) from None
        except KeyboardInterrupt:
            self._close_bar()
            self._say(f"stopped following; job {self.job_id} keeps running (follow it again: dcgan jobs follow "
                      f"{self.job_id})", self.err)
            return 130
        finally:
            self._close_bar()

    def _wait(self, retry_state: Any) -> float:
        error = retry_state.outcome.exception()
        if isinstance(error, _Busy) and error.retry_after is not None:
            return min(error.retry_after, MAX_WAIT_SECONDS)
        return min(CONNECT_WAIT_SECONDS * retry_state.attempt_number, MAX_WAIT_SECONDS)

    def _connection(self) -> int | None:
        """One connection: the exit status once `completed` came, None when it ended after delivering
        something (reconnect), _Dropped when it ended before that (a failed attempt)."""
        headers = {"Authorization": f"Bearer {self.key}", "Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if self.last_id is not None:
            headers["Last-Event-ID"] = str(self.last_id)
        try:
            response = urllib.request.urlopen(urllib.request.Request(self.url, headers=headers),
                                              timeout=READ_TIMEOUT_SECONDS)
        except urllib.error.HTTPError as error:
            if error.code == 503:
                raise _Busy(problem_line(error), _seconds(error.headers.get("Retry-After"))) from None
            raise ClientError(problem_line(error)) from None
        parser, delivered = EventParser(), False
        with response:
            kind = response.headers.get_content_type()
            if kind != "text/event-stream":
                raise ClientError(f"{self.url} answered {kind}, not an event stream")
            try:
                while raw := response.readline():
                    delivered = True
                    event = parser.feed(raw.decode("utf-8", "replace"))
                    if parser.retry_seconds is not None:
                        self.retry_seconds = parser.retry_seconds
                    if event is not None and (status := self._handle(event)) is not None:
                        return status
            except (OSError, http.client.HTTPException):
                pass  # the connection broke mid-stream: reconnect from the last event handled
        if not delivered:
            raise _Dropped(f"the stream of job {self.job_id} ended {CONNECT_ATTEMPTS} times before sending anything")
        return None

    def _handle(self, event: Event) -> int | None:
        if event.id is not None:
            if self.last_id is not None and event.id <= self.last_id:
                return None  # seen before this reconnect
            self.last_id = event.id
        data = event.data if isinstance(event.data, dict) else {}
        if event.type == "progress":
            self._progress(data)
        elif event.type == "sample":
            step = data.get("step")
            if step not in self.samples_seen:  # a resumed attempt may render a step again: one line each
                self.samples_seen.add(step)
                self._say(f"sample at step {step}: {urllib.parse.urljoin(self.base + '/', data.get('url', ''))}",
                          self.out)
        elif event.type == "checkpoint":
            self._say(f"checkpoint at step {data.get('step')}", self.err)
        elif event.type == "log":
            self._say(f"{data.get('level', 'info')}: {data.get('message', '')}", self.err)
        elif event.type == "status" and data.get("kind") not in EXIT_STATUS:  # `completed` tells the end
            self._say(_status_line(data), self.err)
        elif event.type == "completed":
            return self._completed(data)
        return None  # an event type this client does not know yet: the stream may grow new ones

    def _progress(self, progress: dict[str, Any]) -> None:
        step, total = progress.get("step") or 0, progress.get("total_steps")
        postfix = [f"{progress['images_per_second']:.0f} img/s"] if progress.get("images_per_second") else []
        postfix += [f"{name}={progress[name]:.3f}" for name in ("loss_d", "loss_g")
                    if isinstance(progress.get(name), (int, float))]
        if progress.get("eta_seconds") is not None:
            postfix.append(f"eta {self.tqdm.format_interval(progress['eta_seconds'])}")
        if self.bar is None:  # made at the first progress, so that its first line shows it
            terminal = self.err.isatty()
            self.bar = self.tqdm(total=total, initial=step, postfix=", ".join(postfix), desc=f"job {self.job_id[:8]} ",
                                 unit="step", leave=True, file=self.err if terminal else _Lines(self.err),
                                 dynamic_ncols=terminal, ascii=not terminal, bar_format=BAR_FORMAT if total else None,
                                 mininterval=TERMINAL_REFRESH_SECONDS if terminal else LOG_REFRESH_SECONDS,
                                 delay=3600)  # drawn below, once its clock is the job's
            self._clock(progress)
            self.bar.delay = 0
            self.bar.refresh()
            return
        self.bar.set_postfix_str(", ".join(postfix), refresh=False)
        self._clock(progress)
        if step >= self.bar.n:
            self.bar.update(step - self.bar.n)
        else:  # a new attempt resumed from an earlier checkpoint
            self.bar.n = step
            self.bar.refresh()

    def _clock(self, progress: dict[str, Any]) -> None:
        # The bar's elapsed time is the job's, not this command's: right for a job followed half-way, and
        # for the replay of a finished one.
        if isinstance(progress.get("elapsed_seconds"), (int, float)):
            self.bar.start_t = time.time() - progress["elapsed_seconds"]

    def _completed(self, data: dict[str, Any]) -> int:
        status = data.get("status")
        self._close_bar()
        if status == "failed":
            error = data.get("error") or {}
            self._say(f"failed: {error.get('type', 'unknown')}: {error.get('detail', 'no reason recorded')}",
                      self.err)
        else:
            self._say(f"job {self.job_id} {status}", self.err)
        return EXIT_STATUS.get(status, 1)

    def _say(self, line: str, stream: IO[str]) -> None:
        self.tqdm.write(line, file=stream)
        stream.flush()

    def _close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class _Lines:
    """A file for the bar when stderr is no terminal: each redraw becomes one line, instead of carriage
    returns piling up on one line of a log; the blanking tqdm writes to clear the bar is dropped."""

    def __init__(self, stream: IO[str]):
        self.stream = stream

    def write(self, text: str) -> None:
        for part in text.replace("\n", "\r").split("\r"):
            if part.strip():
                self.stream.write(part.rstrip() + "\n")

    def flush(self) -> None:
        self.stream.flush()


def _status_line(data: dict[str, Any]) -> str:
    detail = data.get("detail") if isinstance(data.get("detail"), dict) else {}
    told = ", ".join(f"{name} {value}" for name, value in detail.items() if isinstance(value, (str, int, float)))
    return f"{data.get('kind')} (attempt {data.get('attempt')})" + (f": {told}" if told else "")


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def follow(job_id: str, environ: Mapping[str, str]) -> int:
    """Follow the job to its end; its exit status. Raises ClientError for an error answer or no answer."""
    return Follower(job_id, environ, sys.stdout, sys.stderr).run()
