"""What jobs load before they work: a dataset by reference and a registry version's generator.

Shared by the train, generate and evaluate tasks (worker.tasks, worker.evaluation). Both read from the
artifact store through the attempt, so a fenced-out attempt notices (heartbeat) while it downloads.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from core.db import Generator
from core.gan.checkpoint import CheckpointError
from core.gan.config import TrainConfig
from core.gan.data import IMAGE_SUFFIXES, DataError, ImageSet, load_images
from core.gan.sample import Sampler, SampleError, SamplerOptions
from core.request_models import parse_dataset_reference
from core.storage import ArtifactStore, ObjectNotFound, dataset_prefix
from core.weights import check_generator_file

from worker.attempt import Attempt


def load_dataset(run: Attempt, reference: Any, img_size: int, img_channels: int, folder: Path) -> ImageSet:
    """`builtin:<name>`, or a dataset id whose images are downloaded from the store into `folder`, at the
    size and channels asked for."""
    cache_dir = worker_cache(run, "datasets")
    if not isinstance(reference, str) or not reference:
        raise DataError("dataset: the job names no dataset")
    parsed = parse_dataset_reference(reference)  # DataError for an unknown builtin or a malformed id
    if isinstance(parsed, str):  # a builtin: the catalog's name
        return load_images(parsed, img_size, img_channels, cache_dir=cache_dir)
    dataset_id = parsed
    prefix = dataset_prefix(run.tenant_id, dataset_id)
    keys = [key for key in run.store.list(prefix) if key.lower().endswith(IMAGE_SUFFIXES)]
    if not keys:
        raise DataError(f"dataset {dataset_id}: no images in the artifact store")
    for key in keys:
        target = folder / key[len(prefix):]
        target.parent.mkdir(parents=True, exist_ok=True)
        run.store.get_file(key, target)
        run.heartbeat()
    return load_images(f"folder:{folder}", img_size, img_channels, cache_dir=cache_dir)


def worker_cache(run: Attempt, kind: str) -> Path:
    """Where this worker caches `kind` (decoded datasets, real-image statistics) across jobs."""
    return run.context.settings.data_dir / "cache" / kind


def load_version(run: Attempt, generator_id: uuid.UUID, path: Path, device: str,
                 options: SamplerOptions = SamplerOptions()) -> Sampler:
    """A registry version (an upload, or a training job's final or best generator) ready to sample.

    Its weights were checked when they were uploaded or exported; they are checked again here, because this
    process is the one that loads them, against the sha256 the registry recorded, and loaded with safetensors
    only -- nothing is unpickled."""
    version = run.session.get(Generator, generator_id)
    if version is None or version.tenant_id != run.tenant_id:
        raise SampleError(f"generator {generator_id}: no such generator in the registry")
    label = f"{version.name}:{version.version}"
    try:
        return load_checked_weights(run.store, version.storage_key, version.sha256, version.config, label, path,
                                    device, options)
    except ObjectNotFound:
        raise SampleError(f"generator {label}: its weights are missing from the store") from None


def load_checked_weights(store: ArtifactStore, key: str, sha256: str, config: dict[str, Any], label: str,
                         path: Path, device: str, options: SamplerOptions = SamplerOptions()) -> Sampler:
    """Download registered weights to `path`, check them (core.weights: WeightsError) and their sha256 against
    the registered one (CheckpointError), and load them with safetensors only. The one way every worker --
    generate and evaluate jobs, the sampling worker -- turns a registry version's weights into a Sampler."""
    store.get_file(key, path)  # ObjectNotFound when they are gone
    checked = check_generator_file(path, config)
    if checked.sha256 != sha256:
        raise CheckpointError(f"generator {label}: the stored weights are not the ones registered (sha256 "
                              f"{checked.sha256}, recorded {sha256})")
    return Sampler.from_state(TrainConfig.from_dict(config), path, device=device, options=options)
