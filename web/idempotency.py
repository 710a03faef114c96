"""`Idempotency-Key` on the POSTs that create something: a retried request gets the first answer again.

A view opts in with `@idempotent` (under its route decorator) and commits what it created with
`commit_created(body, status, location)` instead of `db().commit()`. With the header:

- a key that this tenant already used for the same request (method, path, query and body) answers the
  stored response again -- status, JSON body, Location -- and creates nothing (`Idempotent-Replayed: true`);
- a key used for another request is 422 `idempotency-key-reused`; a malformed key (not 1-255 printable
  ASCII characters) is 400 `invalid-idempotency-key`;
- otherwise the view runs, and `commit_created` inserts the record in the same transaction as the rows it
  created. Two requests racing with one key both get past the first lookup, but the record's primary key
  (tenant, key) lets only one commit: the other's commit fails with a unique violation, is rolled back
  (its rows with it) and answers the winner's record instead. What happens after the commit (publishing a
  job's task) therefore happens only for the request that created the row.

Only a created row is recorded: a request that failed (422, 429, 5xx) can be sent again with the same key.

The request's fingerprint does not depend on how the body was encoded where that is incidental: JSON is
compared as parsed (key order and spacing do not matter), a multipart form as its fields and its files'
names and sha256 (the part boundary, which every client picks at random, does not matter). Files are
hashed in chunks from the parser's spooled temporary files, never held in memory whole. A body of any
other type is not read: no creating endpoint accepts one, so it can only be refused (415).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass
from typing import IO, Any, Callable

from flask import g, jsonify, request
from sqlalchemy.exc import IntegrityError

from core.db import IdempotencyRecord

from .resources import db
from .tenancy import tenant_id
from .problems import Problem

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
# A key is 1 to MAX_KEY_LENGTH of these: printable ASCII, space included (web.openapi publishes the rule).
KEY_CHARACTERS = "[ -~]"
CHUNK = 1024 * 1024


@dataclass
class _Pending:
    key: str
    fingerprint: str
    recorded: bool = False


def idempotent(view: Callable[..., Any]) -> Callable[..., Any]:
    """Replay or refuse a repeated Idempotency-Key before the view runs; see the module docstring."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        key = _key_from_header()
        if key is None:
            return view(*args, **kwargs)
        fingerprint = request_fingerprint()
        stored = db().get(IdempotencyRecord, (tenant_id(), key))
        if stored is not None:
            return _replay(stored, fingerprint)
        g.idempotency = pending = _Pending(key, fingerprint)
        try:
            response = view(*args, **kwargs)
        except IntegrityError:
            db().rollback()
            stored = db().get(IdempotencyRecord, (tenant_id(), key), populate_existing=True)
            if stored is None:  # some other constraint: not ours to explain
                raise
            return _replay(stored, fingerprint)
        if not pending.recorded and _status(response) < 300:
            raise RuntimeError(f"{request.endpoint} is @idempotent but created something without "
                               "commit_created(): the Idempotency-Key was not recorded")
        return response

    wrapper.idempotent = True  # web.openapi documents the Idempotency-Key header on this operation
    return wrapper


def idempotency_key() -> str | None:
    """The request's validated Idempotency-Key (None without one), e.g. to store on the created row."""
    pending = g.get("idempotency")
    return pending.key if pending is not None else None


def commit_created(body: dict[str, Any], status: int, location: str | None) -> None:
    """Commit the request's new rows, with the idempotency record of its key if it has one.

    A concurrent request that committed the same key first makes this raise IntegrityError, after which
    `@idempotent` rolls back and answers that request's record.
    """
    pending = g.get("idempotency")
    if pending is not None:
        db().add(IdempotencyRecord(tenant_id=tenant_id(), key=pending.key, request_hash=pending.fingerprint,
                                   response_status=status,
                                   response_body={"body": body, "location": location}))
    db().commit()
    if pending is not None:
        pending.recorded = True


def commit_upload(row: Any, to_json: Callable[[Any], dict[str, Any]], discard: Callable[[], None]):
    """Add `row`, which describes objects an upload already put in the store, and commit it as created:
    201 with its JSON and a Location of its `links.self`. If it is not committed -- the database failed,
    or a request with the same Idempotency-Key won -- `discard` deletes the stored objects, which would
    belong to nothing, and the error propagates."""
    db().add(row)
    try:
        db().flush()
        body = to_json(row)
        commit_created(body, 201, body["links"]["self"])
    except BaseException:
        discard()
        raise
    return body, 201, {"Location": body["links"]["self"]}


def request_fingerprint() -> str:
    """sha256 of the method, path, query and body, with the body compared as described above."""
    parts: list[Any] = [request.method, request.path, request.query_string.decode("latin-1")]
    if request.mimetype == "multipart/form-data":
        fields = sorted(request.form.items(multi=True))
        files = sorted(((name, upload.filename or "", _stream_sha256(upload.stream))
                        for name, upload in request.files.items(multi=True)))
        parts += ["multipart", fields, files]
    elif request.is_json:
        try:
            parsed = request.get_json(silent=True)
        except RecursionError:  # nested too deeply to parse (the view answers 400)
            parsed = None
        if parsed is None:  # malformed (the view answers 400); compare the bytes
            parts += ["raw", request.get_data().decode("latin-1")]
        else:
            parts += ["json", parsed]
    else:
        parts += ["unread", request.mimetype]
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _stream_sha256(stream: IO[bytes]) -> str:
    digest = hashlib.sha256()
    stream.seek(0)
    while block := stream.read(CHUNK):
        digest.update(block)
    stream.seek(0)  # the view reads the file next
    return digest.hexdigest()


def _key_from_header() -> str | None:
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if re.fullmatch(f"{KEY_CHARACTERS}{{1,{MAX_KEY_LENGTH}}}", key) is None:
        raise Problem(400, f"{HEADER} must be 1 to {MAX_KEY_LENGTH} printable ASCII characters",
                      slug="invalid-idempotency-key", title="Invalid Idempotency-Key",
                      errors=[{"field": HEADER, "message": f"1 to {MAX_KEY_LENGTH} printable ASCII characters"}])
    return key


def _replay(stored: IdempotencyRecord, fingerprint: str):
    if stored.request_hash != fingerprint:
        raise Problem(422, f"this {HEADER} was already used with another request (method, path or body); "
                      "use a new key for a new request", slug="idempotency-key-reused",
                      title="Idempotency key reused")
    response = jsonify(stored.response_body["body"])
    response.status_code = stored.response_status
    if stored.response_body.get("location"):
        response.headers["Location"] = stored.response_body["location"]
    response.headers["Idempotent-Replayed"] = "true"
    return response


def _status(response: Any) -> int:
    if isinstance(response, tuple) and len(response) > 1 and isinstance(response[1], int):
        return response[1]
    return getattr(response, "status_code", 200)
