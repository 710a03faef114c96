"""The tenant's storage quota as the API answers it: 403 `storage-quota` for a job or an upload that would take
the tenant's stored bytes past Settings.tenant_storage_bytes (core.quotas counts them).

403, not 429: waiting does not free stored bytes; deleting objects or a larger quota does. The problem says the
bytes used, what the tenant's unfinished jobs are still expected to store, the bytes the request needs and the
quota, in its detail and as numbers (`used_bytes`, `reserved_bytes`, `needed_bytes`, `quota_bytes`).
"""

from __future__ import annotations

import uuid

from flask import current_app

from core import quotas

from .problems import Problem
from .resources import db

STORAGE_QUOTA_STATUS = 403


def check_storage_quota(tenant: uuid.UUID, needed: int, what: str, reserved: int = 0) -> None:
    """Problem 403 when storing `needed` more bytes for `what` would pass the tenant's quota (`reserved`: what
    its unfinished jobs are still expected to store). The session is rolled back first (a flushed job row must
    not stay in it)."""
    quota = current_app.config["SETTINGS"].tenant_storage_bytes
    try:
        quotas.check_storage(db(), tenant, needed, quota, what, reserved=reserved)
    except quotas.StorageQuotaExceeded as exc:
        db().rollback()
        raise Problem(STORAGE_QUOTA_STATUS, str(exc), slug="storage-quota", title="Storage quota exceeded",
                      used_bytes=exc.used, reserved_bytes=exc.reserved, needed_bytes=exc.adding,
                      quota_bytes=exc.quota) from None
