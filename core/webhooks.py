"""Webhooks (Standard Webhooks): endpoints and their secrets, signing, the SSRF guard and the outbox writer.

- A secret is `whsec_` + base64 of 32 random bytes; a message is signed `v1,<base64 HMAC-SHA256 of
  "<webhook-id>.<timestamp>.<body>">` by the `standardwebhooks` package itself, so receivers verify with its
  libraries. After a rotation the previous secret signs too until its expiry: the header lists both.
- The SSRF guard (`check_url`): https only (http with `webhook_allow_http`), and every address the host
  resolves to must be public -- not loopback, private, link-local, CGNAT, multicast, reserved or unspecified,
  nor the IPv4-mapped IPv6 form of one; `webhook_allow_private` lifts that, but never for the cloud metadata
  addresses. It runs at registration and at every send (core.webhook_delivery), which connects to the very
  address it checked, so a DNS answer that changes in between is never connected to unchecked.
- The outbox writer (`write_job_event`), called by core.jobs for every event inside the transaction of the
  change: one message row per enabled endpoint of the job's tenant subscribed to the event type, with the
  job document (core.job_view) frozen into its payload. A tenant without endpoints costs one indexed query.

No Flask, no torch: the API, the workers and the sender all use it.
"""

from __future__ import annotations

import base64
import ipaddress
import secrets
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable
from urllib.parse import urlsplit

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from standardwebhooks import Webhook

from core import scheduling
from core.db import Job, WebhookEndpoint, WebhookMessage, utcnow
from core.job_view import job_document

EVENTS = ("job.queued", "job.started", "job.progress", "job.sample", "job.succeeded", "job.failed",
          "job.cancelled", "job.resumed")
# core.jobs event kind -> webhook event type ("claimed" depends on the attempt: see `event_type`)
_KIND_EVENTS = {"queued": "job.queued", "resumed": "job.resumed", "progress": "job.progress", "sample": "job.sample",
                "succeeded": "job.succeeded", "failed": "job.failed", "cancelled": "job.cancelled"}
SECRET_BYTES = 32
# Cloud instance metadata (AWS, GCP, Azure, ...: 169.254.169.254; AWS over IPv6: fd00:ec2::254): refused even
# where private addresses are allowed, since no receiver lives there and credentials do.
METADATA_ADDRESSES = frozenset({ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")})
_CGNAT = ipaddress.ip_network("100.64.0.0/10")

Resolver = Callable[..., list]  # socket.getaddrinfo's signature


@dataclass(frozen=True)
class OutboxConfig:
    """What the outbox writer needs from the settings; set once per process by its entry point (`configure`):
    core.jobs calls the writer from deep inside every transition, where no settings object is passed."""

    progress_seconds: int = 30


_config = OutboxConfig()


def configure(progress_seconds: int) -> None:
    """Set the process's outbox configuration (web.create_app and worker/celery_app.py call it)."""
    global _config
    _config = OutboxConfig(progress_seconds=progress_seconds)


class RefusedURL(ValueError):
    """A receiver URL the platform will not send to; the message says why."""


@dataclass(frozen=True)
class Target:
    """A checked receiver: where to connect (`address`, one the guard passed) and what to ask for."""

    scheme: str
    host: str
    port: int
    path: str  # path and query
    address: str


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def new_message_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


def signature_header(endpoint: WebhookEndpoint, message_id: str, timestamp: datetime, body: str,
                     now: datetime | None = None) -> str:
    """The `webhook-signature` value: the current secret's signature, and the previous one's while it is valid."""
    now = now or utcnow()
    keys = [endpoint.secret]
    if endpoint.previous_secret and endpoint.previous_secret_expires_at and endpoint.previous_secret_expires_at > now:
        keys.append(endpoint.previous_secret)
    return " ".join(Webhook(key).sign(message_id, timestamp, body) for key in keys)


def check_url(url: str, *, allow_http: bool, allow_private: bool, resolve: Resolver = socket.getaddrinfo) -> Target:
    """The URL as a Target to connect to, or RefusedURL saying why not (see the module docstring)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise RefusedURL(f"not a valid URL: {exc}") from None
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in schemes:
        raise RefusedURL("must be an https:// URL" if not allow_http else "must be an http:// or https:// URL")
    if not parts.hostname:
        raise RefusedURL("names no host")
    if parts.username is not None or parts.password is not None:
        raise RefusedURL("must not carry credentials (user:password@)")
    if parts.fragment:
        raise RefusedURL("must not have a #fragment")
    port = port or (443 if parts.scheme == "https" else 80)
    try:
        answers = resolve(parts.hostname, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise RefusedURL(f"host {parts.hostname!r} does not resolve ({exc})") from None
    addresses = [str(answer[4][0]).split("%", 1)[0] for answer in answers]
    if not addresses:
        raise RefusedURL(f"host {parts.hostname!r} does not resolve")
    for address in addresses:
        reason = refused_address(address, allow_private)
        if reason:
            raise RefusedURL(f"host {parts.hostname!r} resolves to {address}, {reason}")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(parts.scheme, parts.hostname, port, path, addresses[0])


def refused_address(address: str, allow_private: bool = False) -> str | None:
    """Why the guard refuses to connect to `address` (None: it does not)."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 reaches 127.0.0.1
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if allow_private:
        return None
    for name, test in (("a loopback address", ip.is_loopback), ("an unspecified address", ip.is_unspecified),
                       ("a link-local address", ip.is_link_local), ("a multicast address", ip.is_multicast),
                       ("a carrier-grade NAT address", ip.version == 4 and ip in _CGNAT),
                       ("a reserved address", ip.is_reserved), ("a private address", ip.is_private),
                       ("not a public address", not ip.is_global)):
        if test:
            return name
    return None


# ----- endpoints -----

def create_endpoint(session: Session, tenant_id: uuid.UUID, url: str, events: list[str], description: str,
                    now: datetime | None = None) -> tuple[WebhookEndpoint, str]:
    """Add an endpoint (its URL already passed `check_url`); returns it and its secret."""
    now = now or utcnow()
    secret = new_secret()
    endpoint = WebhookEndpoint(id=uuid.uuid4(), tenant_id=tenant_id, url=url, events=list(dict.fromkeys(events)),
                               description=description, secret=secret, created_at=now, updated_at=now)
    session.add(endpoint)
    session.flush()
    return endpoint, secret


def rotate_secret(session: Session, endpoint: WebhookEndpoint, overlap_seconds: int,
                  now: datetime | None = None) -> str:
    """Give the endpoint a new secret; the current one keeps signing beside it for `overlap_seconds`."""
    now = now or utcnow()
    secret = new_secret()
    endpoint.previous_secret, endpoint.secret = endpoint.secret, secret
    endpoint.previous_secret_expires_at = now + timedelta(seconds=overlap_seconds)
    endpoint.updated_at = now
    session.flush()
    return secret


# ----- the outbox writer -----

def event_type(kind: str, attempt: int) -> str | None:
    """The webhook event a core.jobs event kind is (None: not one). A claim is the job's start on its first
    attempt, and a resumption on a later one (a retry that found no checkpoint starts over, but it is the same
    job running again)."""
    kind = str(kind)
    if kind == "claimed":
        return "job.started" if attempt <= 1 else "job.resumed"
    return _KIND_EVENTS.get(kind)


def write_job_event(session: Session, job_id: uuid.UUID, kind: str, attempt: int, at: datetime) -> int:
    """Insert the messages the job's event is for, in the caller's transaction; returns how many."""
    event = event_type(kind, attempt)
    if event is None:
        return 0
    endpoints = session.execute(
        select(WebhookEndpoint.id, WebhookEndpoint.tenant_id, WebhookEndpoint.events)
        .join(Job, Job.tenant_id == WebhookEndpoint.tenant_id)
        .where(Job.id == job_id, WebhookEndpoint.disabled_at.is_(None))).all()
    subscribed = [row for row in endpoints if event in (row.events or ())]
    if not subscribed:
        return 0
    if event == "job.progress" and _progress_sent_within(session, job_id, at, _config.progress_seconds):
        return 0
    job = session.scalars(select(Job).where(Job.id == job_id).execution_options(populate_existing=True)).one()
    # The document a poll would show at this moment, queue position included (one COUNT, for a queued job only).
    data = job_document(job, queue_position=scheduling.queue_position(session, job))
    payload: dict[str, Any] = {"type": event, "timestamp": at.isoformat(), "data": data}
    for row in subscribed:
        session.add(WebhookMessage(id=new_message_id(), endpoint_id=row.id, tenant_id=row.tenant_id, job_id=job_id,
                                   event_type=event, payload=payload, created_at=at, status="pending",
                                   attempts=0, next_attempt_at=at))
    return len(subscribed)


def _progress_sent_within(session: Session, job_id: uuid.UUID, at: datetime, seconds: int) -> bool:
    newest = session.scalar(select(func.max(WebhookMessage.created_at))
                            .where(WebhookMessage.job_id == job_id, WebhookMessage.event_type == "job.progress"))
    return newest is not None and newest > at - timedelta(seconds=seconds)
