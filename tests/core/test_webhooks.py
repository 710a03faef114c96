"""Webhooks in core, on PostgreSQL and SQLite: signatures the `standardwebhooks` package verifies (a rotation's
two secrets included), the SSRF guard's refusals, the outbox written in the transaction of a job's change (and
rolled back with it), the progress throttle, claiming under a lease, and what each answer does to a message."""

from __future__ import annotations

import socket
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest
from standardwebhooks import Webhook, WebhookVerificationError
from sqlalchemy import select, update

from core import jobs, webhooks
from core.db import Job, WebhookAttempt, WebhookEndpoint, WebhookMessage
from core.job_view import job_document
from core.settings import Settings
from core.webhook_delivery import Outcome, claim_due, record_attempt
from core.webhooks import RefusedURL, check_url
from tests.webhook_receiver import Receiver

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)
SETTINGS = Settings(webhook_backoff_seconds=10, webhook_retry_hours=1)


def resolving_to(*addresses: str):
    """A stand-in for socket.getaddrinfo that answers `addresses` for any name (no DNS server is needed)."""
    def resolve(host, port, *args, **kwargs):
        family = lambda a: socket.AF_INET6 if ":" in a else socket.AF_INET  # noqa: E731
        return [(family(a), socket.SOCK_STREAM, 6, "", (a, port)) for a in addresses]
    return resolve


# ----- signing -----

def test_signatures_verify_with_the_standard_webhooks_library_and_both_secrets_sign_during_a_rotation(session,
                                                                                                      tenant_id):
    endpoint, first = webhooks.create_endpoint(session, tenant_id, "https://example.com/hook", ["job.queued"], "")
    assert first.startswith("whsec_") and len(Webhook(first)._whsecret) == 32
    now = datetime.now(timezone.utc)
    body = '{"type":"job.queued"}'
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(int(now.timestamp())),
               "webhook-signature": webhooks.signature_header(endpoint, "msg_1", now, body, now)}
    assert Webhook(first).verify(body, headers) == {"type": "job.queued"}

    second = webhooks.rotate_secret(session, endpoint, overlap_seconds=60, now=now)
    headers["webhook-signature"] = webhooks.signature_header(endpoint, "msg_1", now, body, now)
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (first, second):  # receivers on either secret accept it during the overlap
        Webhook(secret).verify(body, headers)
    later = now + timedelta(seconds=61)
    headers["webhook-signature"] = webhooks.signature_header(endpoint, "msg_1", now, body, later)
    Webhook(second).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(first).verify(body, headers)  # the old secret stopped signing when the overlap ended
    with pytest.raises(WebhookVerificationError):
        Webhook(second).verify(body + " ", headers)


# ----- the SSRF guard -----

@pytest.mark.parametrize("address, reason", [
    ("127.0.0.1", "loopback"), ("10.1.2.3", "private"), ("192.168.0.1", "private"), ("172.16.0.1", "private"),
    ("169.254.169.254", "metadata"), ("169.254.10.1", "link-local"), ("::1", "loopback"), ("0.0.0.0", "unspecified"),
    ("100.64.0.1", "carrier-grade NAT"), ("224.0.0.1", "multicast"), ("::ffff:127.0.0.1", "loopback"),
    ("fd00:ec2::254", "metadata"), ("fe80::1", "link-local"), ("240.0.0.1", "reserved")])
def test_a_host_resolving_to_a_non_public_address_is_refused(address, reason):
    with pytest.raises(RefusedURL, match=reason):
        check_url("https://receiver.example/hook", allow_http=False, allow_private=False,
                  resolve=resolving_to(address))


def test_one_bad_address_among_good_ones_is_refused_and_a_public_one_is_the_one_connected_to():
    with pytest.raises(RefusedURL, match="10.0.0.1"):
        check_url("https://r.example/", allow_http=False, allow_private=False,
                  resolve=resolving_to("93.184.215.14", "10.0.0.1"))
    target = check_url("https://r.example:8443/in?x=1", allow_http=False, allow_private=False,
                       resolve=resolving_to("93.184.215.14"))
    assert (target.host, target.port, target.path, target.address) == ("r.example", 8443, "/in?x=1", "93.184.215.14")


def test_the_overrides_allow_http_and_private_addresses_but_never_the_metadata_address():
    with pytest.raises(RefusedURL, match="https"):
        check_url("http://r.example/", allow_http=False, allow_private=True, resolve=resolving_to("93.184.215.14"))
    assert check_url("http://127.0.0.1:9/", allow_http=True, allow_private=True).address == "127.0.0.1"
    assert check_url("http://localhost:9/", allow_http=True, allow_private=True).address in ("127.0.0.1", "::1")
    with pytest.raises(RefusedURL, match="metadata"):
        check_url("http://169.254.169.254/", allow_http=True, allow_private=True)
    for bad in ("ftp://r.example/", "https:///nohost", "https://user:pw@r.example/", "https://r.example:99999/"):
        with pytest.raises(RefusedURL):
            check_url(bad, allow_http=True, allow_private=True, resolve=resolving_to("93.184.215.14"))


# ----- the outbox -----

def endpoint(session, tenant_id, events, url="https://example.com/hook") -> WebhookEndpoint:
    row, _ = webhooks.create_endpoint(session, tenant_id, url, events, "")
    session.commit()
    return row


def messages(session, event_type=None) -> list[WebhookMessage]:
    session.expire_all()
    query = select(WebhookMessage).order_by(WebhookMessage.created_at, WebhookMessage.id)
    if event_type:
        query = query.where(WebhookMessage.event_type == event_type)
    return list(session.scalars(query))


def test_a_tenant_without_endpoints_gets_no_messages(session, tenant_id):
    job = jobs.create_job(session, tenant_id, "train", {"steps": 1}, {}, now=T0)
    jobs.claim_job(session, job.id, "w", 60, now=T0)
    session.commit()
    assert messages(session) == []


def test_the_outbox_row_is_written_with_the_change_and_rolled_back_with_it(session, tenant_id):
    hook = endpoint(session, tenant_id, ["job.queued", "job.started", "job.succeeded"])
    other = endpoint(session, tenant_id, ["job.failed"])
    job = jobs.create_job(session, tenant_id, "train", {"steps": 1}, {"dataset": "builtin:digits"}, now=T0)
    session.commit()
    [queued] = messages(session)
    assert (queued.endpoint_id, queued.event_type, queued.status, queued.next_attempt_at) == (
        hook.id, "job.queued", "pending", T0)
    assert queued.payload == {"type": "job.queued", "timestamp": T0.isoformat(),
                              "data": job_document(session.get(Job, job.id), queue_position=1)}
    assert queued.payload["data"]["links"]["get"] == f"/v1/jobs/{job.id}"

    attempt = jobs.claim_job(session, job.id, "w", 60, now=T0)
    session.rollback()  # the claim did not happen: neither did its event
    assert [m.event_type for m in messages(session)] == ["job.queued"]
    attempt = jobs.claim_job(session, job.id, "w", 60, now=T0 + timedelta(seconds=1))
    assert jobs.finish_job(session, job.id, attempt, "succeeded", now=T0 + timedelta(seconds=5))
    session.commit()
    sent = messages(session)
    assert [m.event_type for m in sent] == ["job.queued", "job.started", "job.succeeded"]
    assert all(m.endpoint_id == hook.id and m.endpoint_id != other.id for m in sent)
    assert sent[-1].payload["data"]["status"] == "succeeded"


def test_events_map_to_webhook_types():
    assert webhooks.event_type("claimed", 1) == "job.started"
    assert webhooks.event_type("claimed", 2) == "job.resumed"
    assert webhooks.event_type("resumed", 2) == "job.resumed"
    assert [webhooks.event_type(kind, 1) for kind in ("sample", "failed", "cancelled", "progress")] == [
        "job.sample", "job.failed", "job.cancelled", "job.progress"]
    assert webhooks.event_type("checkpoint", 1) is None and webhooks.event_type("lease_expired", 1) is None


def test_progress_is_sent_at_most_once_per_job_per_throttle_period(session, tenant_id):
    endpoint(session, tenant_id, ["job.progress"])
    webhooks.configure(progress_seconds=3600)
    try:
        job = jobs.create_job(session, tenant_id, "train", {"steps": 9}, {})
        attempt = jobs.claim_job(session, job.id, "w", 60)
        for step in range(3):
            assert jobs.record_progress(session, job.id, attempt, {"step": step})
            session.commit()
    finally:
        webhooks.configure(progress_seconds=Settings.webhook_progress_seconds)
    [progress] = messages(session, "job.progress")
    assert progress.payload["data"]["progress"] == {"step": 0}


def test_a_disabled_endpoint_gets_nothing(session, tenant_id):
    hook = endpoint(session, tenant_id, ["job.queued"])
    hook.disabled_at = T0
    session.commit()
    jobs.create_job(session, tenant_id, "train", {"steps": 1}, {}, now=T0)
    session.commit()
    assert messages(session) == []


# ----- claiming and recording attempts -----

def queued_messages(session, tenant_id, events=("job.queued",), count=1):
    hook = endpoint(session, tenant_id, list(events))
    for _ in range(count):
        jobs.create_job(session, tenant_id, "train", {"steps": 1}, {}, now=T0)
    session.commit()
    return hook, messages(session)


def test_a_claim_holds_a_message_for_its_lease_and_caps_each_endpoint(session, tenant_id):
    hook, made = queued_messages(session, tenant_id, count=5)
    claimed = claim_due(session, limit=10, per_endpoint=2, busy=Counter(), lease=30, now=T0)
    session.commit()
    assert len(claimed) == 2 and {endpoint_id for _, endpoint_id in claimed} == {hook.id}
    assert claim_due(session, 10, 3, Counter({hook.id: 2}), 30, now=T0) == [(made[2].id, hook.id)]
    session.commit()
    # The claimed ones come back once the lease has run out (their sender died): nothing is lost.
    again = claim_due(session, 10, 5, Counter(), 30, now=T0 + timedelta(seconds=31))
    assert {message_id for message_id, _ in again} == {m.id for m in made}


def test_answers_deliver_retry_with_backoff_fail_after_the_window_or_disable_on_410(session, tenant_id):
    hook, made = queued_messages(session, tenant_id, count=4)
    ok, retried, late, gone = (m.id for m in made)
    record_attempt(session, ok, Outcome(204, 12.5, None), SETTINGS, "scheduled", now=T0)
    record_attempt(session, retried, Outcome(500, 3.0, "HTTP 500"), SETTINGS, "scheduled", now=T0)
    record_attempt(session, late, Outcome(None, None, "timeout"), SETTINGS, "scheduled", now=T0 + timedelta(hours=2))
    session.commit()
    rows = {m.id: m for m in messages(session)}
    assert (rows[ok].status, rows[ok].attempts, rows[ok].delivered_at) == ("delivered", 1, T0)
    assert rows[retried].status == "pending" and T0 <= rows[retried].next_attempt_at <= T0 + timedelta(seconds=10)
    assert (rows[late].status, rows[late].last_error) == ("failed", "timeout")  # past webhook_retry_hours
    attempts = session.scalars(select(WebhookAttempt).where(WebhookAttempt.message_id == ok)).all()
    assert [(a.attempt, a.status_code, a.latency_ms) for a in attempts] == [(1, 204, 12.5)]

    record_attempt(session, gone, Outcome(410, 1.0, "HTTP 410"), SETTINGS, "scheduled", now=T0)
    session.commit()
    rows = {m.id: m for m in messages(session)}
    assert rows[gone].status == "failed" and rows[retried].status == "failed"  # the endpoint's pending ones too
    session.expire_all()
    assert session.get(WebhookEndpoint, hook.id).disabled_at == T0
    assert claim_due(session, 10, 5, Counter(), 30, now=T0 + timedelta(hours=1)) == []


def test_each_retry_waits_at_most_twice_as_long_as_the_one_before(session, tenant_id, monkeypatch):
    _, [message] = queued_messages(session, tenant_id)
    monkeypatch.setattr("core.webhook_delivery.random.uniform", lambda low, high: high)  # the jitter's ceiling
    waits = []
    for _ in range(4):
        record_attempt(session, message.id, Outcome(503, 1.0, "HTTP 503"), SETTINGS, "scheduled", now=T0)
        session.flush()
        waits.append((session.get(WebhookMessage, message.id).next_attempt_at - T0).total_seconds())
    assert waits == [10, 20, 40, 80]


# ----- sending -----

@pytest.mark.parametrize("address", ["127.0.0.1", "10.0.0.5", "169.254.169.254", "::1"])
def test_a_dns_change_after_registration_is_refused_at_send_time(session_factory, tenant_id, address):
    """The endpoint's name resolved to a public address when it was registered; now it answers `address`. The
    resolver is swapped in-process because it is a function the sender is given: a real DNS change would need a
    DNS server this test controls, and a sender in another process would ask the machine's resolver."""
    from core.webhook_delivery import Sender

    with Receiver() as receiver, session_factory() as session:
        url = receiver.url.replace("127.0.0.1", "hooks.example.test")
        hook = endpoint(session, tenant_id, ["job.queued"], url=url)
        jobs.create_job(session, tenant_id, "train", {"steps": 1}, {})
        session.commit()
        refusing = Sender(session_factory, Settings(webhook_allow_http=True), resolve=resolving_to(address))
        assert refusing.poll() == 1
        refusing.close()
        [message] = messages(session)
        assert message.status == "pending" and message.attempts == 1
        assert message.last_error.startswith("refused:") and address in message.last_error
        assert receiver.received == []  # nothing was connected to

        # Where private addresses are allowed, the same answer is delivered -- to the address the guard checked:
        # the name itself resolves nowhere, so connecting by name would have failed.
        session.execute(update(WebhookMessage).values(next_attempt_at=datetime.now(timezone.utc)))  # due now
        session.commit()
        if address != "127.0.0.1":
            return
        allowing = Sender(session_factory, Settings(webhook_allow_http=True, webhook_allow_private=True),
                          resolve=resolving_to(address))
        assert allowing.poll() == 1
        allowing.close()
        [message] = messages(session)
        assert message.status == "delivered" and message.attempts == 2
        [received] = receiver.received
        assert received.headers["host"] == f"hooks.example.test:{receiver.server.server_address[1]}"
        assert received.headers["webhook-id"] == message.id
        Webhook(hook.secret).verify(received.body, received.headers)
