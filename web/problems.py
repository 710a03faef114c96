"""RFC 9457 problem details: every error the API returns, as `application/problem+json`.

Each error class has a stable `type` URI (under /problems/), a title, the HTTP status and a human `detail`;
validation failures add `errors`: a list of `{"field": ..., "message": ...}`. Responses never carry a
stack trace: unexpected exceptions are logged with theirs and answered with a bare 500 problem, except a
database that cannot be reached: 503 `database-unavailable` with Retry-After.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, json, request
from werkzeug.exceptions import HTTPException

from core.error_text import first_line

from .outages import database_unavailable

PROBLEM_JSON = "application/problem+json"
# What a 503 (an unreachable database, or /readyz not ready) tells clients to wait.
UNAVAILABLE_RETRY_AFTER_SECONDS = 5
log = logging.getLogger(__name__)

# status -> (type slug, title) for the errors werkzeug raises itself
_HTTP_TYPES = {
    400: ("bad-request", "Bad request"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    409: ("conflict", "Conflict"),
    413: ("payload-too-large", "Payload too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
    422: ("validation-error", "Validation failed"),
    429: ("too-many-requests", "Too many requests"),
    503: ("unavailable", "Service unavailable"),
}


class Problem(Exception):
    """Raise anywhere in a request to answer with a problem document."""

    def __init__(self, status: int, detail: str, *, slug: str | None = None, title: str | None = None,
                 errors: list[dict[str, str]] | None = None, headers: dict[str, str] | None = None,
                 **extra: Any):
        super().__init__(detail)
        default_slug, default_title = _HTTP_TYPES.get(status, ("error", "Error"))
        self.status = status
        self.detail = detail
        self.slug = slug or default_slug
        self.title = title or default_title
        self.errors = errors
        self.headers = headers or {}
        self.extra = extra


def validation_problem(errors: list[dict[str, str]]) -> Problem:
    fields = ", ".join(e["field"] for e in errors)
    return Problem(422, f"invalid fields: {fields}", errors=errors)


def problem_response(problem: Problem) -> Response:
    body: dict[str, Any] = {"type": f"/problems/{problem.slug}", "title": problem.title,
                            "status": problem.status, "detail": problem.detail, "instance": request.path}
    if problem.errors is not None:
        body["errors"] = problem.errors
    body.update(problem.extra)
    response = Response(json.dumps(body), status=problem.status, mimetype=PROBLEM_JSON)
    response.headers.update(problem.headers)
    return response


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(Problem, problem_response)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        problem = Problem(exc.code or 500, exc.description or exc.name)
        response = problem_response(problem)
        if exc.code == 405 and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        if database_unavailable(exc):
            # An outage, not a bug: one line, not a traceback per request. The session is closed at teardown,
            # and the engine's pre-ping replaces dead pooled connections once the database is back.
            log.warning("database unavailable on %s %s: %s", request.method, request.path,
                        first_line(exc)[:200])
            return problem_response(Problem(
                503, "the database is unavailable; retry later", slug="database-unavailable",
                title="Database unavailable", headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER_SECONDS)}))
        log.exception("unhandled error on %s %s", request.method, request.path)
        return problem_response(Problem(500, "internal error; it has been logged", slug="internal",
                                        title="Internal server error"))
