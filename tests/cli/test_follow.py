"""`dcgan jobs follow` and `--follow` (cli.follow) against a fake API on loopback (tests/cli/fake_api.py), which
stands in for the platform so that stream cuts, replays and exit statuses can be staged exactly: the bar,
the sample lines, exit 0/1/130, reconnects with Last-Event-ID that lose and repeat nothing, one-line
errors, and Ctrl-C that stops following without cancelling the job."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cli import follow as follow_module
from cli.follow import EventParser
from cli.main import main
from tests.cli.fake_api import JOB_ID, KEY, FakeApi, json_answer, problem, send, timeline, wait_until

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def api(monkeypatch, fake_apis):
    monkeypatch.setattr(follow_module, "CONNECT_WAIT_SECONDS", 0.01)
    monkeypatch.setattr(follow_module, "LOG_REFRESH_SECONDS", 0)  # every redraw a line: the steps are visible
    return fake_apis


def sample_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("sample at step")]


def steps_drawn(err: str) -> set[int]:
    return {int(n) for n in re.findall(r"\| (\d+)/200 \[", err)}


def test_a_job_that_succeeds_draws_its_bar_prints_its_samples_and_exits_0(api, capsys):
    fake = api(timeline("succeeded"))
    assert main(["jobs", "follow", JOB_ID]) == 0
    out, err = capsys.readouterr()
    assert sample_lines(out) == [f"sample at step 100: {fake.url}/v1/jobs/{JOB_ID}/samples/100",
                                 f"sample at step 200: {fake.url}/v1/jobs/{JOB_ID}/samples/200"]
    assert steps_drawn(err) >= {50, 100, 150, 200}
    final = [line for line in err.splitlines() if "200/200" in line][-1]
    assert "[00:20, 512 img/s" in final and "loss_d=1.250" in final and "loss_g=0.750" in final and "eta 00:00" in final
    assert "\r" not in err  # stderr is no terminal here: one line per redraw
    assert "started (attempt 1): step 0" in err and "checkpoint at step 200" in err
    assert err.rstrip().endswith(f"job {JOB_ID} succeeded")
    request = fake.requests[0]
    assert request["headers"]["authorization"] == f"Bearer {KEY}" and "last-event-id" not in request["headers"]


def test_a_failed_job_exits_1_with_its_reason(api, capsys):
    api(timeline("failed", {"type": "data_error", "detail": "dataset 42: no images in the artifact store"}))
    assert main(["jobs", "follow", JOB_ID]) == 1
    err = capsys.readouterr().err
    assert err.rstrip().splitlines()[-1] == "failed: data_error: dataset 42: no images in the artifact store"


def test_a_cancelled_job_exits_130(api, capsys):
    api(timeline("cancelled"))
    assert main(["jobs", "follow", JOB_ID]) == 130
    assert capsys.readouterr().err.rstrip().endswith(f"job {JOB_ID} cancelled")


@pytest.mark.parametrize("cut", ["close", "partial"])
def test_a_dropped_stream_is_resumed_after_the_last_event_without_loss_or_repeat(api, capsys, cut):
    """Cut after event 5 (the first sample): cleanly, or in the middle of event 6, which must not count."""
    fake = api(timeline("succeeded"), cuts=[(5, cut), (2, "close")])
    assert main(["jobs", "follow", JOB_ID]) == 0
    out, err = capsys.readouterr()
    assert fake.stream_connections == 3
    assert [r["headers"].get("last-event-id") for r in fake.requests] == [None, "5", "7"]
    assert len(sample_lines(out)) == 2 and steps_drawn(err) >= {50, 100, 150, 200}
    assert err.count("checkpoint at step 200") == 1 and err.count("started (attempt 1)") == 1


def test_events_a_server_replays_again_are_shown_once(api, capsys):
    fake = api(timeline("succeeded"), cuts=[(5, "close"), (7, "close")], honour_last_event_id=False)
    assert main(["jobs", "follow", JOB_ID]) == 0
    out, err = capsys.readouterr()
    assert fake.stream_connections == 3 and len(sample_lines(out)) == 2
    assert err.count("started (attempt 1)") == 1 and err.count("checkpoint at step 200") == 1


def test_a_busy_api_is_asked_again_after_its_retry_after(api, capsys):
    fake = api(timeline("succeeded"))
    busy = iter([True])
    original = fake._stream

    def stream_once_busy(handler):
        if next(busy, False):
            handler.send_response(503)
            handler.send_header("Retry-After", "0")
            handler.end_headers()
            return
        original(handler)

    fake._stream = stream_once_busy
    assert main(["jobs", "follow", JOB_ID]) == 0
    assert len(fake.requests) == 2


@pytest.mark.parametrize("answer, line", [
    (problem(404, "not-found", f"no job '{JOB_ID}'"), f"dcgan jobs: 404 not-found: no job '{JOB_ID}'"),
    (problem(401, "unauthorized", "unknown or revoked API key"),
     "dcgan jobs: 401 unauthorized: unknown or revoked API key"),
])
def test_an_error_answer_is_one_line_and_exit_2(api, capsys, answer, line):
    fake = api()
    fake._stream = lambda handler: send(handler, answer)
    assert main(["jobs", "follow", JOB_ID]) == 2
    assert capsys.readouterr().err == line + "\n"
    assert len(fake.requests) == 1  # an answer is not asked again


def test_no_api_is_one_line_and_exit_2_after_the_retries(api, capsys, monkeypatch):
    fake = api()
    fake.close()  # the port is now refused
    assert main(["jobs", "follow", JOB_ID]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"dcgan jobs: no answer from {fake.url}:") and err.count("\n") == 1


def test_train_follow_submits_then_follows(api, capsys):
    fake = api(timeline("succeeded"))
    fake.routes["POST /v1/jobs/train"] = lambda h: json_answer({"id": JOB_ID, "type": "train", "status": "queued"},
                                                               202)
    assert main(["jobs", "train", "--dataset", "builtin:digits", "--config", "steps=200", "--follow"]) == 0
    out, err = capsys.readouterr()
    assert err.startswith(f"job {JOB_ID} submitted (train, queued)\n")
    assert len(sample_lines(out)) == 2 and "{" not in out  # the job's JSON is not printed when following
    assert fake.paths("POST") == ["/v1/jobs/train"]


def test_generate_with_grid_follows_then_downloads_the_grid(api, capsys, tmp_path):
    fake = api(timeline("succeeded"))
    fake.routes["POST /v1/jobs/generate"] = lambda h: json_answer({"id": JOB_ID, "type": "generate",
                                                                   "status": "queued"}, 202)
    fake.routes[f"GET /v1/jobs/{JOB_ID}/grid"] = lambda h: _png(b"grid")
    assert main(["jobs", "generate", "--from", "a-train-job", "--seeds", "0-15", "--nrow", "4",
                 "--grid", str(tmp_path / "seeds.png")]) == 0
    import json

    assert json.loads(fake.requests[0]["body"]) == {"generator_job": "a-train-job", "seeds": "0-15", "nrow": 4}
    assert (tmp_path / "seeds.png").read_bytes() == b"\x89PNGgrid"
    assert f"wrote {tmp_path / 'seeds.png'} (8 bytes" in capsys.readouterr().out


def test_ctrl_c_stops_following_exits_130_and_leaves_the_job_running():
    """A real process and a real SIGINT: the job is not cancelled (no POST), and the user is told how to
    follow again."""
    fake = FakeApi(timeline("succeeded"), cuts=[(4, "hold")])
    try:
        env = {**os.environ, **fake.env()}
        # A suite started in the background (CI, `make test &`) inherits SIGINT ignored, and Python then never
        # raises KeyboardInterrupt; the follower must see Ctrl-C as a terminal's foreground process does.
        process = subprocess.Popen([sys.executable, "-m", "cli", "jobs", "follow", JOB_ID], cwd=ROOT, env=env,
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_until(lambda: fake.stream_connections == 1 and process.poll() is None)
            wait_until(lambda: len(fake.requests) == 1)
            import time

            time.sleep(0.5)  # let it read the first events
            process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=20)
        finally:
            if process.poll() is None:
                process.kill()
        assert process.returncode == 130, err
        assert f"stopped following; job {JOB_ID} keeps running (follow it again: dcgan jobs follow {JOB_ID})" in err
        assert "Traceback" not in err
        assert fake.paths("POST") == [] and fake.stream_connections == 1
    finally:
        fake.close()


def test_the_parser_reads_the_event_stream_format():
    parser = EventParser()
    lines = [": a comment\r\n", "retry: 2500\n", "\n", "id: 7\n", "event: log\n", 'data: {"message":\n',
             'data:"two lines"}\n', "\n", "data: {}\n", "\n"]
    events = [event for event in map(parser.feed, lines) if event is not None]
    assert parser.retry_seconds == 2.5
    assert [(e.id, e.type, e.data) for e in events] == [(7, "log", {"message": "two lines"}), (None, "message", {})]


def _png(body: bytes):
    from tests.cli.fake_api import Answer

    return Answer(200, b"\x89PNG" + body, {"Content-Type": "image/png"})
