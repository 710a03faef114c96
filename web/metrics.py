"""GET /metrics: the API's Prometheus exposition, and the HTTP request series every route feeds.

Requests are counted and timed by route -- the Flask rule (`/v1/jobs/<job_id>`), never the raw path, so a
client cannot grow the label set -- by method and by status; the series are prometheus_client's, in its
multiprocess mode when the server runs several processes (`dcgan api --processes N`: cli.servers sets
PROMETHEUS_MULTIPROC_DIR before any of them imports prometheus_client, and a scrape answered by any one of
them merges the files of all). The platform's state (jobs, queues, workers, webhooks) is read from the
database at scrape time by core.metrics.DatabaseCollector.

/metrics is outside /v1, so no API key is asked and no rate limit counts it (web.auth); when
DCGAN_METRICS_TOKEN is set it wants `Authorization: Bearer <token>` and answers 401 otherwise. It is an
operator's endpoint, not part of the API contract, so the OpenAPI document leaves it out (web.openapi's
NOT_API_BLUEPRINTS). A latency observation ends when the view returns: an event stream's is the time to its
first byte, not the stream's life.
"""

from __future__ import annotations

import hmac
import time

from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client import Counter, Histogram, generate_latest

from core.metrics import CONTENT_TYPE, DatabaseCollector, registry_for
from core.settings import Settings

from .auth import unauthorized

bp = Blueprint("metrics", __name__)

# Not registered in prometheus_client's global registry: a scrape builds its own (core.metrics.registry_for).
HTTP_REQUESTS = Counter("dcgan_http_requests", "HTTP requests answered, by route (the Flask rule), method and "
                        "status", ["route", "method", "status"], registry=None)
HTTP_LATENCY = Histogram("dcgan_http_request_duration_seconds", "Time from a request's arrival to its response, "
                         "by route, method and status", ["route", "method", "status"], registry=None,
                         buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))
# Methods get their own label value; anything else is "other", so an invented method adds no series.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED_ROUTE = "<unmatched>"


def install(app: Flask, settings: Settings) -> None:
    """Time every request, and serve /metrics with the database's series read through the app's engine."""
    app.extensions["dcgan"]["metrics"] = {
        "settings": settings,
        "database": DatabaseCollector(app.extensions["dcgan"]["read_sessions"]),
    }
    # First of all before_request functions: a request refused by one of them (401, 413, 429) counts too.
    app.before_request_funcs.setdefault(None, []).insert(0, _start_timer)
    app.after_request(_observe)
    app.register_blueprint(bp)


def _start_timer() -> None:
    g.metrics_started = time.perf_counter()


def _observe(response: Response) -> Response:
    started = g.pop("metrics_started", None)
    if started is None:  # refused before the timer started (e.g. by an earlier before_request)
        return response
    route = request.url_rule.rule if request.url_rule is not None else UNMATCHED_ROUTE
    method = request.method if request.method in KNOWN_METHODS else "other"
    labels = (route, method, str(response.status_code))
    HTTP_REQUESTS.labels(*labels).inc()
    HTTP_LATENCY.labels(*labels).observe(time.perf_counter() - started)
    return response


@bp.get("/metrics")
def metrics() -> Response:
    parts = current_app.extensions["dcgan"]["metrics"]
    settings: Settings = parts["settings"]
    if settings.metrics_token:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(),
                                                                 settings.metrics_token.encode()):
            raise unauthorized("GET /metrics wants Authorization: Bearer <DCGAN_METRICS_TOKEN>",
                               "invalid_token" if header else None)
    registry = registry_for(settings.metrics_multiproc_dir, local=(HTTP_REQUESTS, HTTP_LATENCY),
                            extra=(parts["database"],))
    return Response(generate_latest(registry), content_type=CONTENT_TYPE)
