"""/v1/datasets: upload an archive of images (multipart field `file`), list and read datasets.

The archive is read member by member by core.archives (never extracted to disk), only decodable images
are stored, under server-made names (`tenants/<tenant>/datasets/<id>/images/000001.png`), and the row is
committed only after every image is in the artifact store: an upload that fails half-way leaves no dataset
behind.
An upload takes an Idempotency-Key (web.idempotency): sent again, it answers the first upload's dataset.
Images that would take the tenant past its storage quota are refused (403, web.quotas) before any is stored.
"""

from __future__ import annotations

import hashlib
import uuid

from flask import Blueprint, current_app, request, url_for

from core.archives import ArchiveError, Limits, archive_kind, read_images
from core.db import Dataset
from core.request_models import DatasetUpload
from core.storage import StorageError, dataset_key, dataset_prefix

from .idempotency import commit_upload, idempotent
from .openapi import operation
from .problems import Problem
from .quotas import STORAGE_QUOTA_STATUS, check_storage_quota
from .resources import store
from .tenancy import get_by_id, newest_of_tenant, tenant_id
from .validation import display_name, form_input, refused_upload, validated

bp = Blueprint("datasets", __name__, url_prefix="/v1/datasets")


def dataset_json(dataset: Dataset) -> dict:
    return {"id": str(dataset.id), "name": dataset.name, "source": dataset.source, "status": dataset.status,
            "num_images": dataset.num_images, "num_rejected": dataset.num_rejected,
            "size_bytes": dataset.size_bytes, "sha256": dataset.sha256,
            "created_at": dataset.created_at.isoformat() if dataset.created_at else None,
            "links": {"self": url_for("datasets.get", dataset_id=str(dataset.id))}}


@bp.post("")
@operation("upload a .zip, .tar or .tar.gz of images (multipart field 'file')", {201: "the dataset"},
           body=DatasetUpload, body_type="multipart/form-data", problems=(STORAGE_QUOTA_STATUS,))
@idempotent
def upload():
    data, errors = form_input(request, "a 'file' field")
    form = validated(DatasetUpload, data, errors)
    upload = form.file
    name = display_name(form.name, upload.filename, "dataset")
    try:
        # app.config["ARCHIVE_LIMITS"] (a core.archives.Limits) lowers the limits for an embedding or a test
        limits = current_app.config.get("ARCHIVE_LIMITS") or Limits()
        images, rejected = read_images(upload.stream, archive_kind(upload.filename), limits)
    except ArchiveError as exc:  # each kind of refusal has its own problem type (core.archives.TITLES)
        raise refused_upload(exc) from None
    check_storage_quota(tenant_id(), sum(len(image.data) for image in images), f"the dataset's {len(images)} images")
    dataset_id = uuid.uuid4()
    digest, size, keys = hashlib.sha256(), 0, []
    try:
        for index, image in enumerate(images, start=1):
            key = dataset_key(tenant_id(), dataset_id, f"images/{index:06d}{image.suffix}")
            stored = store().put_bytes(key, image.data)
            keys.append(key)
            digest.update(stored.sha256.encode())
            size += stored.size
    except StorageError:
        for key in keys:
            store().delete(key)
        raise
    prefix = dataset_prefix(tenant_id(), dataset_id)
    dataset = Dataset(id=dataset_id, tenant_id=tenant_id(), name=name, source="upload", storage_prefix=prefix,
                      num_images=len(images), num_rejected=rejected, size_bytes=size, sha256=digest.hexdigest(),
                      status="ready")
    return commit_upload(dataset, dataset_json, lambda: store().delete_prefix(prefix))


@bp.get("")
@operation("datasets, newest first", {200: "datasets"})
def list_():
    return {"datasets": [dataset_json(d) for d in newest_of_tenant(Dataset)]}


@bp.get("/<dataset_id>")
@operation("one dataset", {200: "the dataset"})
def get(dataset_id: str):
    dataset = get_by_id(Dataset, dataset_id, lambda row: row.tenant_id == tenant_id())
    if dataset is None:
        raise Problem(404, f"no dataset {dataset_id[:100]!r}")
    return dataset_json(dataset)
