"""Sending the webhook outbox: claim due messages, POST each signed, record every attempt, retry with backoff.

A `Sender` polls (`poll`, about once a second: the `webhooks` worker's loop, worker/webhooks.py) and hands what
it claimed to a thread pool, at most `per_endpoint` messages of one endpoint in flight in the process, so a slow
or dead receiver holds a few threads and never another endpoint's or tenant's deliveries; jobs only ever insert
rows (core.webhooks) and never wait on a receiver.

- Claiming pushes `next_attempt_at` forward by a lease longer than an attempt can take, in its own short
  transaction (skip-locked on PostgreSQL): a sender killed mid-delivery leaves the message pending, and it is
  due again when the lease runs out. So delivery is at least once; the `webhook-id` stays the same on every
  attempt, which is how a receiver recognises a repeat.
- Each attempt re-runs the SSRF guard (core.webhooks.check_url) and connects to the address it checked, with
  `webhook_timeout_seconds` per connect and read, and follows no redirect (http.client never does).
- 2xx: delivered. 410: the endpoint is disabled and its pending messages fail. Anything else (another status,
  a refused address, a timeout, a reset) is retried after a random delay up to base * 2^(attempt-1) ("full
  jitter", capped at an hour), until `webhook_retry_hours` after the message was made; then it fails.
"""

from __future__ import annotations

import http.client
import json
import logging
import random
import socket
import ssl
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import func, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from core.db import WebhookAttempt, WebhookEndpoint, WebhookMessage, utcnow
from core.error_text import first_line
from core.settings import Settings
from core.webhooks import RefusedURL, Resolver, check_url, signature_header

log = logging.getLogger(__name__)
MAX_BACKOFF_SECONDS = 3600
USER_AGENT = "dcgan-platform-webhooks/1"
# What is kept of a receiver's answer: only the status matters, the rest is read so the connection ends cleanly.
MAX_ANSWER_BYTES = 64 * 1024


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    latency_ms: float | None
    error: str | None

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def lease_seconds(settings: Settings) -> float:
    """How long a claimed message is left alone: longer than one attempt (connect + read) can take."""
    return 2 * settings.webhook_timeout_seconds + 5


def claim_due(session: Session, limit: int, per_endpoint: int, busy: Counter, lease: float,
              now: datetime | None = None) -> list[tuple[str, uuid.UUID]]:
    """Take up to `limit` due messages, at most `per_endpoint` of one endpoint counting the `busy` ones (in
    flight here), each endpoint's oldest first and round-robin across endpoints; returns (id, endpoint id)."""
    now = now or utcnow()
    rank = func.row_number().over(partition_by=WebhookMessage.endpoint_id,
                                  order_by=(WebhookMessage.next_attempt_at, WebhookMessage.id)).label("rank")
    due = (select(WebhookMessage.id, WebhookMessage.endpoint_id, WebhookMessage.next_attempt_at, rank)
           .join(WebhookEndpoint, WebhookEndpoint.id == WebhookMessage.endpoint_id)
           .where(WebhookMessage.status == "pending", WebhookMessage.next_attempt_at <= now,
                  WebhookEndpoint.disabled_at.is_(None)).subquery())
    candidates = session.execute(select(due.c.id, due.c.endpoint_id).where(due.c.rank <= per_endpoint)
                                 .order_by(due.c.rank, due.c.next_attempt_at).limit(limit + per_endpoint * 8)).all()
    room, chosen = Counter(), []
    for message_id, endpoint_id in candidates:
        if busy[endpoint_id] + room[endpoint_id] < per_endpoint and len(chosen) < limit:
            room[endpoint_id] += 1
            chosen.append(message_id)
    if not chosen:
        return []
    # Locked rows belong to another sender claiming right now: skipped, not waited for. The UPDATE re-checks
    # that each is still due, which is what makes the claim safe on SQLite (no row locks; writes serialize).
    locked = session.scalars(select(WebhookMessage.id).where(WebhookMessage.id.in_(chosen))
                             .with_for_update(skip_locked=True)).all()
    if not locked:
        return []
    claimed = session.execute(
        update(WebhookMessage)
        .where(WebhookMessage.id.in_(locked), WebhookMessage.status == "pending", WebhookMessage.next_attempt_at <= now)
        .values(next_attempt_at=now + timedelta(seconds=lease))
        .returning(WebhookMessage.id, WebhookMessage.endpoint_id)).all()
    return [(row.id, row.endpoint_id) for row in claimed]


def post(url: str, body: str, headers: dict[str, str], settings: Settings, resolve: Resolver) -> Outcome:
    """Check `url` (the SSRF guard, resolving again now) and POST `body` to the address that passed."""
    try:
        target = check_url(url, allow_http=settings.webhook_allow_http, allow_private=settings.webhook_allow_private,
                           resolve=resolve)
    except RefusedURL as exc:
        return Outcome(None, None, f"refused: {exc}")
    timeout = settings.webhook_timeout_seconds
    if target.scheme == "https":
        connection = http.client.HTTPSConnection(target.host, target.port, timeout=timeout,
                                                 context=ssl.create_default_context())
    else:
        connection = http.client.HTTPConnection(target.host, target.port, timeout=timeout)

    def connect_to_checked(address, timeout=timeout, source_address=None):
        # The address the guard passed, never a second lookup of the name (a DNS rebind would slip in there);
        # TLS still verifies the certificate against the host name, and Host: names it.
        return socket.create_connection((target.address, address[1]), timeout, source_address)

    connection._create_connection = connect_to_checked
    started = time.monotonic()
    try:
        connection.request("POST", target.path, body=body.encode(), headers=headers)
        answer = connection.getresponse()
        answer.read(MAX_ANSWER_BYTES)
        return Outcome(answer.status, _ms(started), None if 200 <= answer.status < 300 else f"HTTP {answer.status}")
    except (OSError, http.client.HTTPException) as exc:
        return Outcome(None, _ms(started), f"{type(exc).__name__}: {first_line(exc) or 'no detail'}"[:500])
    finally:
        connection.close()


def send_message(sessions: sessionmaker[Session], message_id: str, settings: Settings, resolve: Resolver,
                 trigger: str = "scheduled") -> Outcome | None:
    """Send one message now and record the attempt; None when it or its endpoint is gone or disabled."""
    with sessions() as session:
        row = session.execute(select(WebhookMessage, WebhookEndpoint)
                              .join(WebhookEndpoint, WebhookEndpoint.id == WebhookMessage.endpoint_id)
                              .where(WebhookMessage.id == message_id)).one_or_none()
        if row is None or row.WebhookEndpoint.disabled_at is not None:
            return None
        message, endpoint = row
        now = datetime.now(timezone.utc)
        body = json.dumps(message.payload, separators=(",", ":"))
        headers = {"content-type": "application/json", "user-agent": USER_AGENT, "webhook-id": message.id,
                   "webhook-timestamp": str(int(now.timestamp())),
                   "webhook-signature": signature_header(endpoint, message.id, now, body, now)}
        url = endpoint.url
    outcome = post(url, body, headers, settings, resolve)
    with sessions() as session:
        record_attempt(session, message_id, outcome, settings, trigger)
        session.commit()
    return outcome


def record_attempt(session: Session, message_id: str, outcome: Outcome, settings: Settings, trigger: str,
                   now: datetime | None = None) -> None:
    """Note the attempt and what follows from it: delivered, a retry later, failed, or the endpoint disabled."""
    now = now or utcnow()
    message = session.get(WebhookMessage, message_id, with_for_update=True)
    if message is None:  # its endpoint was deleted meanwhile
        return
    message.attempts += 1
    message.last_attempt_at = now
    session.add(WebhookAttempt(message_id=message.id, endpoint_id=message.endpoint_id, attempt=message.attempts, at=now,
                               status_code=outcome.status_code, latency_ms=outcome.latency_ms, error=outcome.error,
                               trigger=trigger))
    if outcome.delivered:
        message.status, message.delivered_at, message.next_attempt_at, message.last_error = "delivered", now, None, None
    elif outcome.status_code == 410:
        message.status, message.next_attempt_at, message.last_error = "failed", None, "the receiver answered 410 Gone"
        disable_endpoint(session, message.endpoint_id, "the receiver answered 410 Gone", now)
    else:
        ceiling = min(MAX_BACKOFF_SECONDS, settings.webhook_backoff_seconds * 2 ** (message.attempts - 1))
        delay = random.uniform(0, ceiling)
        retry_at = now + timedelta(seconds=delay)
        message.last_error = outcome.error
        if retry_at > message.created_at + timedelta(hours=settings.webhook_retry_hours):
            message.status, message.next_attempt_at = "failed", None
        else:
            message.status, message.next_attempt_at = "pending", retry_at
    session.flush()


def disable_endpoint(session: Session, endpoint_id: uuid.UUID, reason: str, now: datetime | None = None) -> None:
    """Turn the endpoint off and fail its pending messages: nothing more is sent to it."""
    now = now or utcnow()
    session.execute(update(WebhookEndpoint)
                    .where(WebhookEndpoint.id == endpoint_id, WebhookEndpoint.disabled_at.is_(None))
                    .values(disabled_at=now, disabled_reason=reason, updated_at=now))
    session.execute(update(WebhookMessage).where(WebhookMessage.endpoint_id == endpoint_id,
                                                 WebhookMessage.status == "pending")
                    .values(status="failed", next_attempt_at=None, last_error=f"endpoint disabled: {reason}"))


class Sender:
    """Claims due messages and sends them on a thread pool of its own (see the module docstring)."""

    def __init__(self, sessions: sessionmaker[Session], settings: Settings, resolve: Resolver = socket.getaddrinfo,
                 threads: int = 16, per_endpoint: int = 4):
        self.sessions, self.settings, self.resolve = sessions, settings, resolve
        self.threads, self.per_endpoint = threads, per_endpoint
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="webhook")
        self._lock = threading.Lock()
        self._busy: Counter = Counter()  # endpoint id -> messages in flight here

    def poll(self) -> int:
        """Claim what is due and room allows, and start sending it; returns how many were started."""
        with self._lock:
            room = self.threads - sum(self._busy.values())
            busy = Counter(self._busy)
        if room <= 0:
            return 0
        with self.sessions() as session:
            claimed = claim_due(session, room, self.per_endpoint, busy, lease_seconds(self.settings))
            session.commit()
        for message_id, endpoint_id in claimed:
            with self._lock:
                self._busy[endpoint_id] += 1
            self._pool.submit(self._send, message_id, endpoint_id)
        return len(claimed)

    def _send(self, message_id: str, endpoint_id: uuid.UUID) -> None:
        try:
            outcome = send_message(self.sessions, message_id, self.settings, self.resolve)
            if outcome is not None and not outcome.delivered:
                log.info("webhook %s: not delivered (%s)", message_id, outcome.error)
        except Exception:
            # The message stays pending under its lease and comes back when that runs out; say why, loudly.
            log.exception("webhook %s: sending failed", message_id)
            raise
        finally:
            with self._lock:
                self._busy[endpoint_id] -= 1
                if self._busy[endpoint_id] <= 0:
                    del self._busy[endpoint_id]

    def run(self, stop: threading.Event, interval: float = 1.0) -> None:
        """Poll every `interval` seconds until `stop` is set (a database outage is logged and waited out)."""
        while not stop.is_set():
            try:
                self.poll()
            except SQLAlchemyError as exc:  # the loop outlives a database outage: the next poll tries again
                log.warning("webhook sender: polling failed (%s); retrying", first_line(exc))
            stop.wait(interval)

    def close(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait)


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 2)
