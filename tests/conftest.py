"""Shared fixtures: the device under test, tiny configs and a per-session dataset cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Real PostgreSQL / SQLite databases migrated by the repository's Alembic revisions, for every test tree;
# private Redis / PostgreSQL servers that outage tests may stop (tests/services.py).
pytest_plugins = ["tests.db_fixtures", "tests.s3_fixtures", "tests.services"]

# DCGAN_TEST_DEVICE=cuda runs the core suite on a GPU (bench/gpu_check.sh does); CPU otherwise.
TEST_DEVICE = os.environ.get("DCGAN_TEST_DEVICE", "cpu")


@pytest.fixture(scope="session")
def device() -> str:
    return TEST_DEVICE


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("dataset-cache")


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    # Tiny models run faster on one thread on this 2-core machine, and it keeps the suite deterministic.
    import torch

    torch.set_num_threads(1)


def tiny_config(**overrides):
    from core.gan.config import TrainConfig

    values = dict(img_size=32, img_channels=1, z_dim=8, g_channels=8, d_channels=8, batch_size=16, steps=20,
                  sample_every=0, checkpoint_every=0, num_samples=16)
    values.update(overrides)
    return TrainConfig.from_dict(values)


def flushed_redis(url: str):
    """A client of a Redis database of the tests' own, flushed before and after (use with `yield from`);
    skips the test when Redis is down."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.skip(f"Redis is unreachable at {url} (make test starts it)")
    client.flushdb()
    yield client
    client.flushdb()
    client.close()
