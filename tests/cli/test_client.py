"""`dcgan jobs`' requests (cli.client) against a real HTTP peer on loopback that drops connections on cue:
what is sent again, with which Idempotency-Key, and what is never sent twice."""

from __future__ import annotations

import json
import socket
import threading

import pytest

from cli.client import SEND_ATTEMPTS, ClientError, request


class Peer:
    """Answers each connection in turn: "drop" closes it unanswered, an int answers that status."""

    def __init__(self, script: list[str | int]):
        self.script = list(script)
        self.requests: list[dict[str, str]] = []
        self.bodies: list[bytes] = []
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        for action in self.script:
            try:
                connection, _ = self.server.accept()
            except OSError:  # closed by the test: the rest of the script was not needed
                return
            with connection:
                head, body = self._read(connection)
                self.requests.append(head)
                self.bodies.append(body)
                if action == "drop":
                    continue
                payload = json.dumps({"ok": True} if action < 400 else {
                    "type": "/problems/validation-error", "detail": "invalid fields: seeds",
                    "errors": [{"field": "seeds", "message": "runs backwards"}]}).encode()
                connection.sendall(b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                                   b"Connection: close\r\n\r\n%s" % (action, len(payload), payload))

    @staticmethod
    def _read(connection: socket.socket) -> tuple[dict[str, str], bytes]:
        data = b""
        while b"\r\n\r\n" not in data:
            data += connection.recv(65536)
        raw_head, _, body = data.partition(b"\r\n\r\n")
        lines = raw_head.decode("latin-1").split("\r\n")
        fields = (line.partition(":") for line in lines[1:])
        head = {"request": lines[0], **{name.lower(): value.strip() for name, _, value in fields}}
        while len(body) < int(head.get("content-length", 0)):
            body += connection.recv(65536)
        return head, body

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def peer():
    peers = []

    def make(script):
        peers.append(Peer(script))
        return peers[-1]

    yield make
    for p in peers:
        p.close()


def env(peer: Peer) -> dict[str, str]:
    return {"DCGAN_API_URL": peer.url, "DCGAN_API_KEY": "dcg_test"}


def test_a_read_that_got_no_answer_is_sent_again(peer):
    server = peer(["drop", 200])
    assert request("GET", "/v1/jobs", environ=env(server)) == {"ok": True}
    assert [r["request"] for r in server.requests] == ["GET /v1/jobs HTTP/1.1"] * 2


def test_a_submission_is_sent_again_with_the_same_idempotency_key(peer):
    server = peer(["drop", "drop", 202])
    assert request("POST", "/v1/jobs/train", {"dataset": "builtin:digits"}, environ=env(server)) == {"ok": True}
    keys = {r["idempotency-key"] for r in server.requests}
    assert len(server.requests) == SEND_ATTEMPTS and len(keys) == 1 and keys.pop().startswith("cli-")


def test_a_bodiless_post_is_never_sent_twice(peer):
    server = peer(["drop", 202])
    with pytest.raises(ClientError, match="no answer from"):
        request("POST", "/v1/jobs/x/cancel", environ=env(server))
    assert len(server.requests) == 1


def test_an_error_answer_is_not_sent_again_and_is_one_line(peer):
    server = peer([422, 200])
    with pytest.raises(ClientError) as info:
        request("POST", "/v1/jobs/generate", {"seeds": "9-1"}, environ=env(server))
    assert str(info.value) == "422 validation-error: invalid fields: seeds; seeds: runs backwards"
    assert len(server.requests) == 1


def test_giving_up_after_every_attempt(peer):
    server = peer(["drop"] * SEND_ATTEMPTS)
    with pytest.raises(ClientError, match="no answer from"):
        request("GET", "/v1/jobs", environ=env(server))
    assert len(server.requests) == SEND_ATTEMPTS


@pytest.mark.parametrize("args, path", [
    (["train", "--dataset", "builtin:digits"], "/v1/jobs/train"),
    (["generate", "--generator", "faces@champion", "--seeds", "0-3"], "/v1/jobs/generate"),
    (["evaluate", "--generator", "faces:2", "--dataset", "builtin:digits"], "/v1/jobs/evaluate")])
def test_priority_is_sent_when_given_and_left_to_the_server_otherwise(peer, monkeypatch, args, path):
    from cli.main import main

    server = peer([202, 202])
    for name, value in env(server).items():
        monkeypatch.setenv(name, value)
    assert main(["jobs", *args, "--priority", "9"]) == 0
    assert main(["jobs", *args]) == 0
    assert [r["request"] for r in server.requests] == [f"POST {path} HTTP/1.1"] * 2
    first, second = (json.loads(body) for body in server.bodies)
    assert first["priority"] == 9 and "priority" not in second
    assert {k: v for k, v in first.items() if k != "priority"} == second
