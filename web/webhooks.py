"""/v1/webhooks: a tenant's webhook endpoints (Standard Webhooks), their secrets and their delivery log.

`POST /v1/webhooks {"url", "events", "description"}` registers a receiver and answers 201 with its signing
secret, shown this once (never in a GET); `rotate-secret` makes a new one, shown once too, while the old one
keeps signing beside it for `webhook_secret_overlap_seconds`. The URL passes the SSRF guard
(core.webhooks.check_url) here and again at every send. `GET .../deliveries` lists the endpoint's newest
messages with each attempt (status, latency, error); `POST .../deliveries/<message_id>/retry` sends one again
now, with the same webhook-id, and answers with what came back. Another tenant's endpoints answer 404.
"""

from __future__ import annotations

import socket
from datetime import timedelta
from typing import Any

from flask import Blueprint, current_app, request, url_for
from sqlalchemy import select, update

from core import webhooks
from core.db import WebhookAttempt, WebhookEndpoint, WebhookMessage, utcnow
from core.job_view import iso
from core.request_models import WebhookRequest
from core.webhook_delivery import lease_seconds, send_message

from .idempotency import commit_created, idempotent
from .openapi import operation
from .problems import Problem, validation_problem
from .resources import db
from .tenancy import get_by_id, tenant_id
from .validation import json_body, validated

bp = Blueprint("webhooks", __name__, url_prefix="/v1/webhooks")
ENDPOINT = {"description": "the endpoint", "content": {"application/json": {"schema": {"type": "object"}}}}
DELIVERIES_SHOWN = 100


def endpoint_json(endpoint: WebhookEndpoint) -> dict[str, Any]:
    """An endpoint as the API shows it: never its secrets."""
    overlap_ends = endpoint.previous_secret_expires_at if endpoint.previous_secret else None
    return {"id": str(endpoint.id), "url": endpoint.url, "events": list(endpoint.events or ()),
            "description": endpoint.description, "enabled": endpoint.disabled_at is None,
            "disabled_at": iso(endpoint.disabled_at), "disabled_reason": endpoint.disabled_reason,
            "previous_secret_expires_at": iso(overlap_ends if overlap_ends and overlap_ends > utcnow() else None),
            "created_at": iso(endpoint.created_at), "updated_at": iso(endpoint.updated_at),
            "links": {"self": url_for("webhooks.get", webhook_id=str(endpoint.id)),
                      "deliveries": url_for("webhooks.deliveries", webhook_id=str(endpoint.id)),
                      "rotate_secret": url_for("webhooks.rotate_secret", webhook_id=str(endpoint.id))}}


def message_json(message: WebhookMessage, attempts: list[WebhookAttempt]) -> dict[str, Any]:
    return {"id": message.id, "event_type": message.event_type,
            "job_id": str(message.job_id) if message.job_id else None, "status": message.status,
            "created_at": iso(message.created_at), "attempts": message.attempts,
            "next_attempt_at": iso(message.next_attempt_at), "delivered_at": iso(message.delivered_at),
            "last_error": message.last_error,
            "attempt_log": [{"attempt": a.attempt, "at": iso(a.at), "status_code": a.status_code,
                             "latency_ms": a.latency_ms, "error": a.error, "trigger": a.trigger} for a in attempts]}


def endpoint_or_404(webhook_id: str) -> WebhookEndpoint:
    endpoint = get_by_id(WebhookEndpoint, webhook_id, lambda row: row.tenant_id == tenant_id())
    if endpoint is None:
        raise Problem(404, f"no webhook {webhook_id[:100]!r}")
    return endpoint


@bp.post("")
@operation("register a webhook endpoint; the answer shows its signing secret, this once", {201: ENDPOINT},
           body=WebhookRequest)
@idempotent
def create():
    submitted = validated(WebhookRequest, json_body(request))
    settings = current_app.config["SETTINGS"]
    try:
        webhooks.check_url(submitted.url, allow_http=settings.webhook_allow_http,
                           allow_private=settings.webhook_allow_private, resolve=socket.getaddrinfo)
    except webhooks.RefusedURL as exc:
        raise validation_problem([{"field": "url", "message": str(exc)}]) from None
    endpoint, secret = webhooks.create_endpoint(db(), tenant_id(), submitted.url, submitted.events,
                                                submitted.description)
    body = {**endpoint_json(endpoint), "secret": secret}
    commit_created(body, 201, body["links"]["self"])  # a retry with the same Idempotency-Key makes no second one
    return body, 201, {"Location": body["links"]["self"]}


@bp.get("")
@operation("the tenant's webhook endpoints", {200: "the endpoints, newest first"})
def list_():
    rows = db().scalars(select(WebhookEndpoint).where(WebhookEndpoint.tenant_id == tenant_id())
                        .order_by(WebhookEndpoint.created_at.desc(), WebhookEndpoint.id.desc()))
    return {"webhooks": [endpoint_json(row) for row in rows]}


@bp.get("/<webhook_id>")
@operation("a webhook endpoint (without its secret)", {200: ENDPOINT}, problems=(404,))
def get(webhook_id: str):
    return endpoint_json(endpoint_or_404(webhook_id))


@bp.delete("/<webhook_id>")
@operation("delete a webhook endpoint and its delivery log; nothing more is sent to it", {204: "deleted"},
           problems=(404,))
def delete(webhook_id: str):
    db().delete(endpoint_or_404(webhook_id))
    db().commit()
    return "", 204


@bp.post("/<webhook_id>/rotate-secret")
@operation("give the endpoint a new signing secret, shown this once; the old one keeps signing beside it for "
           "the stated overlap", {200: ENDPOINT}, problems=(404,))
@idempotent
def rotate_secret(webhook_id: str):
    endpoint = endpoint_or_404(webhook_id)
    overlap = current_app.config["SETTINGS"].webhook_secret_overlap_seconds
    secret = webhooks.rotate_secret(db(), endpoint, overlap)
    body = {**endpoint_json(endpoint), "secret": secret, "previous_secret_overlap_seconds": overlap,
            "detail": f"the previous secret keeps signing beside this one for {overlap} s, until "
                      f"{iso(endpoint.previous_secret_expires_at)}: webhook-signature lists both until then"}
    # With an Idempotency-Key a lost answer can be asked for again: a second rotation would end the overlap of
    # the secret the receiver still uses.
    commit_created(body, 200, None)
    return body


@bp.get("/<webhook_id>/deliveries")
@operation(f"the endpoint's newest {DELIVERIES_SHOWN} messages, each with its attempts (status, latency, error)",
           {200: "the messages, newest first"}, problems=(404,))
def deliveries(webhook_id: str):
    endpoint = endpoint_or_404(webhook_id)
    messages = list(db().scalars(select(WebhookMessage).where(WebhookMessage.endpoint_id == endpoint.id)
                                 .order_by(WebhookMessage.created_at.desc(), WebhookMessage.id.desc())
                                 .limit(DELIVERIES_SHOWN)))
    attempts: dict[str, list[WebhookAttempt]] = {message.id: [] for message in messages}
    if messages:
        for attempt in db().scalars(select(WebhookAttempt).where(WebhookAttempt.message_id.in_(list(attempts)))
                                    .order_by(WebhookAttempt.id)):
            attempts[attempt.message_id].append(attempt)
    return {"deliveries": [message_json(message, attempts[message.id]) for message in messages]}


@bp.post("/<webhook_id>/deliveries/<message_id>/retry")
@operation("send a message again now, with the same webhook-id; answers with the message and its attempts",
           {200: "the message after this attempt"}, problems=(404, 409))
def retry(webhook_id: str, message_id: str):
    endpoint = endpoint_or_404(webhook_id)
    message = db().scalars(select(WebhookMessage).where(WebhookMessage.id == message_id[:64],
                                                        WebhookMessage.endpoint_id == endpoint.id)).one_or_none()
    if message is None:
        raise Problem(404, f"no delivery {message_id[:100]!r} of webhook {webhook_id[:100]!r}")
    if endpoint.disabled_at is not None:
        raise Problem(409, f"webhook {webhook_id} is disabled ({endpoint.disabled_reason}); register it again")
    settings = current_app.config["SETTINGS"]
    # The scheduled sender leaves it alone while this request sends it (the same lease a claim takes).
    db().execute(update(WebhookMessage).where(WebhookMessage.id == message.id, WebhookMessage.status == "pending")
                 .values(next_attempt_at=utcnow() + timedelta(seconds=lease_seconds(settings))))
    db().commit()
    send_message(current_app.extensions["dcgan"]["sessions"], message.id, settings, socket.getaddrinfo,
                 trigger="manual")
    db().expire_all()
    message = db().get(WebhookMessage, message.id)
    if message is None:  # the endpoint was deleted meanwhile
        raise Problem(404, f"no delivery {message_id[:100]!r} of webhook {webhook_id[:100]!r}")
    attempts = list(db().scalars(select(WebhookAttempt).where(WebhookAttempt.message_id == message.id)
                                 .order_by(WebhookAttempt.id)))
    return message_json(message, attempts)
