"""The webhook sender in a Celery worker: a worker that consumes the `webhooks` queue (`dcgan webhooks`;
`dcgan up` and docker-compose run one) starts core.webhook_delivery's polling loop in a thread when it is ready
and stops it on shutdown, letting the attempts in flight finish (each is bounded by webhook_timeout_seconds).

The loop, not a message per delivery, is what sends: the outbox rows in the database are the queue, so nothing
is lost with Redis, and a killed sender's claimed messages come back when their lease runs out. The task
`dcgan.deliver_webhooks` runs one poll at once, for whoever wants deliveries sooner than the next tick.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import Celery, shared_task
from celery.signals import worker_ready, worker_shutting_down

from core.db import make_engine, make_session_factory
from core.queue import WEBHOOKS
from core.webhook_delivery import Sender

log = logging.getLogger(__name__)
POLL_SECONDS = 1.0

_sender: Sender | None = None
_stop = threading.Event()
_lock = threading.Lock()


def _sender_for(app: Celery) -> Sender:
    global _sender
    with _lock:
        if _sender is None:
            settings = app.conf.dcgan_settings
            _sender = Sender(make_session_factory(make_engine(settings.database_url)), settings)
        return _sender


@worker_ready.connect
def _on_worker_ready(sender: Any = None, **_: Any) -> None:
    # Every worker imports this module (one Celery app); only one that consumes the webhooks queue sends.
    if WEBHOOKS.queue not in sender.app.amqp.queues.consume_from:
        return
    webhook_sender = _sender_for(sender.app)
    threading.Thread(target=webhook_sender.run, args=(_stop, POLL_SECONDS), name="webhook-sender",
                     daemon=True).start()
    log.info("webhook sender: polling every %.1f s", POLL_SECONDS)


@worker_shutting_down.connect
def _on_worker_shutting_down(**_: Any) -> None:
    _stop.set()
    if _sender is not None:
        _sender.close(wait=True)


@shared_task(name=WEBHOOKS.name, bind=True, acks_late=False)
def deliver_webhooks_task(self) -> int:
    """One poll now: claim the due messages and start sending them."""
    return _sender_for(self.app).poll()
