"""The artifact store: where checkpoints, sample grids, generators and uploaded datasets live.

One interface, `ArtifactStore` (storage.protocol), two backends: `LocalStore` (storage.local, a directory, the
embedded default) and `S3Store` (storage.s3: S3 or anything that speaks it, MinIO, moto). `open_store(settings)`
picks one from `settings.storage_url`. The key layout (`checkpoint_key`, `sample_key`, ...) is storage.keys.

Imports no torch, flask, celery or sqlalchemy; boto3 is imported inside S3Store, so the API starts fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from .keys import (best_generator_key, checkpoint_key, dataset_key, dataset_prefix, evaluation_key, generator_key,
                   grid_key, images_key, job_prefix, sample_key, tenant_prefix, uploaded_generator_key, validate_key,
                   validate_prefix)
from .local import LocalStore
from .protocol import ArtifactStore, ListedObject, ObjectNotFound, StorageError, StoredObject, content_type_for
from .s3 import S3Store

if TYPE_CHECKING:
    from core.settings import Settings

__all__ = ["ArtifactStore", "ListedObject", "LocalStore", "ObjectNotFound", "S3Store", "StorageError", "StoredObject",
           "best_generator_key", "checkpoint_key", "content_type_for", "dataset_key", "dataset_prefix",
           "evaluation_key", "generator_key", "grid_key", "images_key", "job_prefix", "open_store", "sample_key",
           "tenant_prefix", "uploaded_generator_key", "validate_key", "validate_prefix"]


def open_store(settings: Settings) -> ArtifactStore:
    """The store `settings.storage_url` names: file:///path -> LocalStore, s3://bucket/prefix -> S3Store."""
    url = urlparse(settings.storage_url)
    if url.scheme == "file":
        if url.netloc not in ("", "localhost"):
            raise StorageError(f"STORAGE_URL: file URLs name a local path (file:///path), got {settings.storage_url!r}")
        return LocalStore(Path(unquote(url.path)))
    if url.scheme == "s3":
        return S3Store(url.netloc, url.path, endpoint_url=settings.s3_endpoint_url or None,
                       public_endpoint_url=settings.s3_public_endpoint_url or None)
    raise StorageError(f"STORAGE_URL: must start with file:// or s3://, got {settings.storage_url!r}")
