from pathlib import Path

import pytest

from core.settings import Settings, SettingsError


def test_embedded_defaults_live_under_the_data_dir(tmp_path):
    settings = Settings.from_env({"DCGAN_DATA_DIR": str(tmp_path)})
    assert settings.database_url == f"sqlite:///{tmp_path.resolve() / 'dcgan.db'}"
    assert settings.storage_url == (tmp_path / "artifacts").resolve().as_uri()
    assert settings.redis_url == "" and settings.max_attempts == 3


def test_environment_overrides():
    settings = Settings.from_env({
        "DATABASE_URL": "postgresql+psycopg://u@db/x", "REDIS_URL": "redis://r:6379/0",
        "STORAGE_URL": "s3://bucket/prefix", "S3_ENDPOINT_URL": "http://minio:9000", "DCGAN_MAX_ATTEMPTS": "5"})
    assert (settings.database_url, settings.redis_url, settings.storage_url, settings.s3_endpoint_url,
            settings.max_attempts) == ("postgresql+psycopg://u@db/x", "redis://r:6379/0", "s3://bucket/prefix",
                                       "http://minio:9000", 5)


@pytest.mark.parametrize("env,name", [
    ({"STORAGE_URL": "ftp://x/y"}, "STORAGE_URL"), ({"STORAGE_URL": "s3:///nobucket"}, "STORAGE_URL"),
    ({"DCGAN_MAX_ATTEMPTS": "three"}, "DCGAN_MAX_ATTEMPTS"), ({"DCGAN_LEASE_SECONDS": "0"}, "DCGAN_LEASE_SECONDS"),
])
def test_bad_values_name_the_variable(env, name):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env(env)


def test_frozen():
    with pytest.raises(Exception):
        Settings.from_env({}).max_attempts = 9  # type: ignore[misc]
    assert isinstance(Settings.from_env({}).data_dir, Path)
