"""The artifact store's key layout and key rules: keys are made here, by the server, sort in step order and
never come from user input unchecked.

Keys are relative, '/'-separated and limited to `[A-Za-z0-9._-]` segments; a segment may not start with '.'
(that keeps `..` out and leaves dot-names to LocalStore's temp files). The same rule holds on both backends,
so a key that works embedded works on S3.
"""

from __future__ import annotations

import re

from .protocol import StorageError

MAX_KEY_LENGTH = 1024  # S3's limit, applied to the local store too so keys stay portable.
_SEGMENT = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def validate_key(key: str) -> str:
    """Return `key` if it is a valid object key, else raise StorageError naming it and the rule it breaks."""
    if not isinstance(key, str) or not key:
        raise StorageError(f"invalid key {key!r}: must be a non-empty string")
    if len(key) > MAX_KEY_LENGTH:
        raise StorageError(f"invalid key {key[:40]!r}...: longer than {MAX_KEY_LENGTH} characters")
    if "\\" in key:
        raise StorageError(f"invalid key {key!r}: backslashes are not allowed, use '/'")
    if key.startswith("/"):
        raise StorageError(f"invalid key {key!r}: must be relative (no leading '/')")
    for segment in key.split("/"):
        if not segment:
            raise StorageError(f"invalid key {key!r}: empty path segment")
        if segment.startswith("."):
            raise StorageError(f"invalid key {key!r}: segment {segment!r} starts with '.'")
        if not _SEGMENT.fullmatch(segment):
            raise StorageError(f"invalid key {key!r}: only letters, digits and '._-' are allowed in segments")
    return key


def validate_prefix(prefix: str) -> str:
    """A prefix is '' or a key, optionally ending in '/'; the same characters are allowed."""
    if prefix != "":
        validate_key(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


def tenant_prefix(tenant_id: int | str) -> str:
    """Every key a tenant's data lives under: its jobs, datasets and uploaded generators.

    Keys are made only by the functions below, so one tenant's objects can never be addressed through
    another's prefix, and deleting a tenant is deleting one prefix.
    """
    return f"tenants/{_id_segment(tenant_id, 'tenant_id')}/"


def job_prefix(tenant_id: int | str, job_id: int | str) -> str:
    return f"{tenant_prefix(tenant_id)}jobs/{_id_segment(job_id, 'job_id')}/"


def dataset_prefix(tenant_id: int | str, dataset_id: int | str) -> str:
    return f"{tenant_prefix(tenant_id)}datasets/{_id_segment(dataset_id, 'dataset_id')}/"


def _id_segment(value: int | str, what: str) -> str:
    text = str(value)
    if "/" in text or not _SEGMENT.fullmatch(text):
        raise StorageError(f"invalid {what} {value!r}: must be one key segment of letters, digits and '._-'")
    return text


def _step(step: int) -> str:
    # Seven digits keep keys sorting in step order; a wider number would sort before its predecessors.
    if not isinstance(step, int) or not 0 <= step < 10**7:
        raise StorageError(f"invalid step {step!r}: must be an integer in [0, 9999999]")
    return f"step-{step:07d}"


def checkpoint_key(tenant_id: int | str, job_id: int | str, step: int) -> str:
    return f"{job_prefix(tenant_id, job_id)}checkpoints/{_step(step)}.pt"


def sample_key(tenant_id: int | str, job_id: int | str, step: int) -> str:
    return f"{job_prefix(tenant_id, job_id)}samples/{_step(step)}.png"


def grid_key(tenant_id: int | str, job_id: int | str) -> str:
    return f"{job_prefix(tenant_id, job_id)}grid.png"


def images_key(tenant_id: int | str, job_id: int | str) -> str:
    """A generate job's images, one PNG per seed, as a tar (jobs of more seeds than their grid shows)."""
    return f"{job_prefix(tenant_id, job_id)}images.tar"


def generator_key(tenant_id: int | str, job_id: int | str) -> str:
    return f"{job_prefix(tenant_id, job_id)}generator.safetensors"


def best_generator_key(tenant_id: int | str, job_id: int | str) -> str:
    """A train job's generator at its evaluated step with the lowest FID (config eval_every)."""
    return f"{job_prefix(tenant_id, job_id)}best-generator.safetensors"


def evaluation_key(tenant_id: int | str, job_id: int | str) -> str:
    """An evaluate job's result document."""
    return f"{job_prefix(tenant_id, job_id)}evaluation.json"


def dataset_key(tenant_id: int | str, dataset_id: int | str, name: str) -> str:
    return validate_key(f"{dataset_prefix(tenant_id, dataset_id)}{name}")


def uploaded_generator_key(tenant_id: int | str, generator_id: int | str) -> str:
    """An uploaded generator's weights (POST /v1/generators)."""
    return f"{tenant_prefix(tenant_id)}generators/{_id_segment(generator_id, 'generator_id')}.safetensors"


def check_delete_prefix(prefix: str) -> None:
    validate_prefix(prefix)
    if not prefix.endswith("/"):
        raise StorageError(f"invalid prefix {prefix!r} for delete_prefix: must be non-empty and end with '/'")
