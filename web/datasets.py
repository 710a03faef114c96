"""/v1/datasets: upload an archive of images (multipart field `file`), list and read datasets.

The archive is read member by member by core.archives (never extracted to disk), only decodable images
are stored, under server-made names (`datasets/<id>/images/000001.png`), and the row is committed only
after every image is in the artifact store: an upload that fails half-way leaves no dataset behind.
"""

from __future__ import annotations

import hashlib
import uuid

from flask import Blueprint, request, url_for
from sqlalchemy import select

from core.archives import ArchiveError, archive_kind, read_images
from core.db import Dataset
from core.storage import StorageError, dataset_key

from .platform import db, get_by_id, store, tenant_id
from .problems import Problem, validation_problem

bp = Blueprint("datasets", __name__, url_prefix="/v1/datasets")


def dataset_json(dataset: Dataset) -> dict:
    return {"id": str(dataset.id), "name": dataset.name, "source": dataset.source, "status": dataset.status,
            "num_images": dataset.num_images, "num_rejected": dataset.num_rejected,
            "size_bytes": dataset.size_bytes, "sha256": dataset.sha256,
            "created_at": dataset.created_at.isoformat() if dataset.created_at else None,
            "links": {"self": url_for("datasets.get", dataset_id=str(dataset.id))}}


@bp.post("")
def upload():
    if request.mimetype != "multipart/form-data":
        raise Problem(415, f"expected multipart/form-data with a 'file' field, got {request.mimetype or 'none'}")
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        raise validation_problem([{"field": "file", "message": "required: a .zip, .tar or .tar.gz of images"}])
    unknown = sorted(set(request.form) - {"name"} | set(request.files) - {"file"})
    if unknown:
        raise validation_problem([{"field": name, "message": "unknown field"} for name in unknown])
    name = (request.form.get("name") or upload.filename)[:200]
    try:
        images, rejected = read_images(upload.stream, archive_kind(upload.filename))
    except ArchiveError as exc:
        raise validation_problem([{"field": "file", "message": str(exc).removeprefix("file: ")}]) from None
    dataset_id = uuid.uuid4()
    digest, size, keys = hashlib.sha256(), 0, []
    try:
        for index, image in enumerate(images, start=1):
            key = dataset_key(dataset_id, f"images/{index:06d}{image.suffix}")
            stored = store().put_bytes(key, image.data)
            keys.append(key)
            digest.update(stored.sha256.encode())
            size += stored.size
    except StorageError:
        for key in keys:
            store().delete(key)
        raise
    dataset = Dataset(id=dataset_id, tenant_id=tenant_id(), name=name, source="upload",
                      storage_prefix=f"datasets/{dataset_id}/", num_images=len(images), num_rejected=rejected,
                      size_bytes=size, sha256=digest.hexdigest(), status="ready")
    db().add(dataset)
    db().flush()
    body = dataset_json(dataset)
    db().commit()
    return body, 201, {"Location": body["links"]["self"]}


@bp.get("")
def list_():
    rows = db().scalars(select(Dataset).where(Dataset.tenant_id == tenant_id())
                        .order_by(Dataset.created_at.desc(), Dataset.id.desc()).limit(200))
    return {"datasets": [dataset_json(d) for d in rows]}


@bp.get("/<dataset_id>")
def get(dataset_id: str):
    dataset = get_by_id(Dataset, dataset_id, lambda row: row.tenant_id == tenant_id())
    if dataset is None:
        raise Problem(404, f"no dataset {dataset_id!r}")
    return dataset_json(dataset)
