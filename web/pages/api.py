"""The pages' one way to data: the /v1 API itself, called in the same process.

A page view reads and changes things through the very view functions a script reaches over HTTP -- the same
validation (core.request_models), tenant scoping, queued-job cap, Idempotency-Key handling and publishing --
so the API stays the one contract and no page has rules of its own to drift from it. `call` builds a
request context for the API path inside the page's request and dispatches it: the page's application
context, and with it the tenant that web.pages' sign-in check set and the database session, are shared.
What runs before an API view over HTTP (web.auth's key check and rate limit) is skipped on purpose: the
session was checked by the page, and the page, not its reads, is what a person asked for. A second HTTP hop
would need the key itself, which the session does not keep.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import abort, current_app, g, request
from werkzeug.exceptions import HTTPException

from ..problems import Problem


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any  # the JSON document (a problem's for an error); None for a body that is not JSON
    headers: dict[str, str]

    @property
    def ok(self) -> bool:
        return self.status < 400

    def errors(self) -> dict[str, str]:
        """A problem's field errors as {field: message}, the first message of each field."""
        found: dict[str, str] = {}
        for error in (self.body or {}).get("errors") or []:
            found.setdefault(error.get("field", ""), error.get("message", ""))
        return found

    @property
    def detail(self) -> str:
        return str((self.body or {}).get("detail", f"HTTP {self.status}"))


def call(method: str, path: str, **request_args: Any) -> Answer:
    """Answer `method path` as the API would for the page's tenant; `request_args` are those of
    werkzeug's EnvironBuilder (query_string, json, data, headers)."""
    with current_app.test_request_context(path, method=method, base_url=request.host_url, **request_args):
        try:
            returned = current_app.dispatch_request()
        except (Problem, HTTPException) as exc:  # the API's own error answers; anything else is the page's 500
            returned = current_app.handle_user_exception(exc)
        finally:
            g.pop("idempotency", None)  # web.idempotency's per-request state must not leak to the next call
        response = current_app.make_response(returned)
        body = response.get_json(silent=True) if response.is_json else None
        return Answer(response.status_code, body, dict(response.headers))


def get(path: str, **query: Any) -> Answer:
    return call("GET", path, query_string={k: v for k, v in query.items() if v not in (None, "")})


def found(path: str, missing: str) -> Any:
    """The document at `path`, or the page's 404 saying `missing` (another refusal: its status and detail)."""
    answer = get(path)
    if answer.status == 404:
        abort(404, missing)
    if not answer.ok:
        abort(answer.status, answer.detail)
    return answer.body


def post(path: str, body: dict[str, Any] | None = None, idempotency_key: str | None = None) -> Answer:
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    return call("POST", path, json=body if body is not None else None, headers=headers)


def schema(model: str) -> dict[str, Any]:
    """A request model's JSON Schema as /v1/openapi.json publishes it (components/schemas/<model>)."""
    return get("/v1/openapi.json").body["components"]["schemas"][model]


def typed(text: str, kind: type) -> Any:
    """A form's text as the JSON type the API expects; text that is not one is sent as it is, so the API's
    own validation names the field and says what was wrong (a page has no rules of its own)."""
    try:
        return kind(text)
    except ValueError:
        return text
