"""Reading a request's input: JSON bodies, multipart forms and query strings, validated by the request models
of core.request_models, with the tenant's rows looked up in the same pass.

Every bad field of a request is answered in one 422 (`validation-error`) with one `{"field", "message"}`
per field; a body that is not JSON, not an object, nested too deeply or holding a string that is not valid
Unicode, is 400 (`malformed-json`); the wrong content type is 415. A refused upload keeps the problem type of
its refusal (core.archives, core.weights).
"""

from __future__ import annotations

import uuid
from typing import Any, Mapping, TypeVar

from flask import Request, current_app, request

from core import registry
from core.archives import ArchiveError
from core.db import Dataset, Generator, Job
from core.deletion import lock_reference
from core.request_models import (MAX_NAME_LENGTH, RequestInvalid, RequestModel, parse_id, valid_unicode, validate,
                                 without_control_characters)
from core.weights import WeightsError

from .problems import Problem, validation_problem
from .resources import db
from .tenancy import get_by_id, tenant_id

M = TypeVar("M", bound=RequestModel)


class TenantLookups:
    """core.request_models.Lookups for the request's tenant. It keeps what it found by id, so the view gets
    the rows the validation saw, however the client spelled the id, without a second query (the session's
    identity map holds unchanged rows only weakly: a row nobody kept would be read again)."""

    def __init__(self) -> None:
        self._found: dict[tuple[type, uuid.UUID], Any] = {}

    def _get(self, model: type, ref: str) -> Any | None:
        row_id = parse_id(ref)
        if row_id is None:  # malformed: no row has that id
            return None
        if (model, row_id) not in self._found:
            row = get_by_id(model, str(row_id), lambda row: row.tenant_id == tenant_id())
            # Held until the new job commits, so a concurrent delete cannot take it from under the job.
            self._found[model, row_id] = row if row is not None and lock_reference(db(), model, row.id) else None
        return self._found[model, row_id]

    def dataset(self, ref: str) -> Dataset | None:
        return self._get(Dataset, ref)

    def train_job(self, ref: str) -> Job | None:
        return self._get(Job, ref)

    def generator(self, ref: str) -> Generator | None:
        """A registry reference: an id, name:version or name@alias (core.registry), resolved once."""
        if ("ref", ref) not in self._found:
            row = registry.resolve(db(), tenant_id(), ref)
            self._found["ref", ref] = row if row is not None and lock_reference(db(), Generator, row.id) else None
        return self._found["ref", ref]


def validated(model: type[M], data: Any, errors: list[dict[str, str]] | None = None, **context: Any) -> M:
    """`data` as a `model` (with `errors` found before, e.g. a form field given twice), or a 422 naming every
    bad field."""
    try:
        result = validate(model, data, context)
    except RequestInvalid as exc:
        raise validation_problem([*(errors or []), *exc.errors]) from None
    if errors:
        raise validation_problem(errors)
    return result


def json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object: 415 for another content type, 400 for malformed JSON or a non-object (the
    size limit is `limit_json_bodies`')."""
    if not request.is_json:
        raise Problem(415, f"expected Content-Type application/json, got {request.mimetype or 'none'}")
    try:
        body = request.get_json(silent=True)
        valid_unicode(body)
    except RecursionError:  # not a ValueError, so silent=True lets it through
        raise Problem(400, "the body's JSON is nested too deeply", slug="malformed-json",
                      title="Malformed JSON") from None
    except ValueError:
        raise Problem(400, "the body's JSON has a string that is not valid Unicode (a lone surrogate such as "
                           "\\ud800)", slug="malformed-json", title="Malformed JSON") from None
    if body is None:
        raise Problem(400, "the body is not valid JSON", slug="malformed-json", title="Malformed JSON")
    if not isinstance(body, dict):
        raise Problem(400, "the body must be a JSON object", slug="malformed-json", title="Malformed JSON")
    return body


def limit_json_bodies() -> None:
    """Before any view reads a JSON body (an Idempotency-Key's fingerprint reads it first): 413 past
    DCGAN_MAX_JSON_BYTES, from its Content-Length, before it is read. The app's own limit is the uploads'; a
    JSON document is parsed whole, in memory. waitress, which serves the API, de-chunks a chunked body before
    the app sees it and passes its length, so this covers chunked bodies too."""
    if not request.is_json:
        return
    limit = current_app.config["SETTINGS"].max_json_bytes
    if request.content_length is not None and request.content_length > limit:
        raise Problem(413, f"a JSON body may have at most {limit} bytes (DCGAN_MAX_JSON_BYTES); this one says it "
                           f"has {request.content_length}")


def form_input(request: Request, expects: str) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """A multipart form's fields and files as one mapping (first value of each), and an error for each field
    given more than once; 415 for another content type (`expects` says what to send)."""
    if request.mimetype != "multipart/form-data":
        raise Problem(415, f"expected multipart/form-data with {expects}, got {request.mimetype or 'none'}")
    data: dict[str, Any] = {**request.form.to_dict(), **request.files.to_dict()}
    names = sorted(set(request.form) | set(request.files))
    repeated = [{"field": name, "message": "given more than once"} for name in names
                if len(request.form.getlist(name)) + len(request.files.getlist(name)) > 1]
    return data, repeated


def query_input(request: Request) -> Mapping[str, str]:
    """The query string, the first value of each name (query models ignore names they do not know)."""
    return request.args.to_dict()


def display_name(given: str | None, filename: str | None, fallback: str) -> str:
    """An upload's display name: the validated `name` field, else the file's name without control
    characters (cut as a `name` is), else `fallback`."""
    if given:
        return given
    return without_control_characters(filename or "")[:MAX_NAME_LENGTH] or fallback


def refused_upload(exc: ArchiveError | WeightsError) -> Problem:
    """An archive or weights file that core.archives / core.weights refused: 413 for a size refusal, else
    422, with the refusal's own problem type, and the reason as the `file` field's error."""
    message = str(exc).removeprefix("file: ")
    return Problem(413 if exc.too_large else 422, message, slug=exc.slug, title=exc.title,
                   errors=[{"field": "file", "message": message}])
