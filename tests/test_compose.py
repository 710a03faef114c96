"""docker-compose.yml cannot run here (no Docker engine); this keeps it honest against the code instead."""

import re
from pathlib import Path
from urllib.parse import urlparse

import yaml

from core.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_services_and_health_checks():
    services = _compose()["services"]
    assert {"postgres", "redis", "minio", "minio-bucket", "api", "worker-gpu", "worker-cpu", "evaluator", "sampler",
            "reaper"} <= set(services)
    for name in ("postgres", "redis", "minio", "api"):
        assert "healthcheck" in services[name], name
    assert "--appendonly" in services["redis"]["command"] and "yes" in services["redis"]["command"]
    gpu = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"] and gpu["driver"] == "nvidia"
    assert "dcgan db upgrade" in " ".join(services["api"]["command"])
    assert services["reaper"]["command"] == ["dcgan", "reaper"]


def test_platform_variables_are_the_ones_settings_reads():
    services = _compose()["services"]
    env = services["api"]["environment"]
    settings = Settings.from_env(env)  # the compose values parse
    assert settings.database_url.startswith("postgresql+psycopg://") and settings.redis_url.startswith("redis://")
    source = (ROOT / "core" / "settings.py").read_text()
    read = set(re.findall(r'env\.get\("([A-Z0-9_]+)"', source))
    read |= set(re.findall(r'env_int\(env, "([A-Z0-9_]+)"', source))
    for name in ("DATABASE_URL", "REDIS_URL", "STORAGE_URL", "S3_ENDPOINT_URL", "S3_PUBLIC_ENDPOINT_URL"):
        assert name in read and name in env, name
    for worker in ("worker-gpu", "worker-cpu", "evaluator", "sampler", "reaper"):
        assert {k: v for k, v in services[worker]["environment"].items() if k in env} == env


def test_services_agree_with_each_other():
    services = _compose()["services"]
    env = services["api"]["environment"]
    postgres = services["postgres"]["environment"]
    db = urlparse(env["DATABASE_URL"])
    assert (db.username, db.password, db.path.lstrip("/"), db.hostname) == (
        postgres["POSTGRES_USER"], postgres["POSTGRES_PASSWORD"], postgres["POSTGRES_DB"], "postgres")
    minio = services["minio"]["environment"]
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == (minio["MINIO_ROOT_USER"],
                                                                        minio["MINIO_ROOT_PASSWORD"])
    bucket = urlparse(env["STORAGE_URL"]).netloc
    assert f"local/{bucket}" in " ".join(services["minio-bucket"]["command"])
    assert urlparse(env["S3_ENDPOINT_URL"]).hostname == "minio" and urlparse(env["REDIS_URL"]).hostname == "redis"
    # Presigned download links are signed for the address outside the compose network: MinIO's published port.
    public = urlparse(env["S3_PUBLIC_ENDPOINT_URL"].removeprefix("${S3_PUBLIC_ENDPOINT_URL:-").removesuffix("}"))
    assert public.hostname == "localhost" and f"{public.port}:9000" in services["minio"]["ports"]


def test_image_ships_what_the_commands_need():
    dockerfile = (ROOT / "Dockerfile").read_text()
    for path in ("core", "web", "worker", "migrations", "alembic.ini"):
        assert f"COPY {path}" in dockerfile or path in dockerfile, path


def test_the_api_keeps_its_session_secret_across_re_created_containers():
    """web.session_auth keeps the dashboard's signing key in <data_dir>/secret-key: the API's data directory
    (the image's WORKDIR /app with DCGAN_DATA_DIR's default, var) must be a named volume."""
    compose = _compose()
    assert "DCGAN_SECRET_KEY" in compose["services"]["api"]["environment"] or any(
        mount.split(":")[1] == "/app/var" and mount.split(":")[0] in compose["volumes"]
        for mount in compose["services"]["api"].get("volumes", []))
    assert "WORKDIR /app" in (ROOT / "Dockerfile").read_text()


def test_each_queue_has_a_consumer():
    """Every task's queue (core.queue) is consumed by a service, read from the services' commands as `dcgan`
    reads them: jobs on the workers, evaluation on its own low-priority worker, sampling on the sampler."""
    from core.queue import EVALUATE, REAP, SAMPLE, TASKS, WORKER_QUEUES

    consumed: dict[str, set[str]] = {}
    for name, service in _compose()["services"].items():
        command = service.get("command") or []
        if command[:2] == ["dcgan", "worker"]:
            queues = command[command.index("--queues") + 1].split(",") if "--queues" in command else WORKER_QUEUES
        elif command[:2] == ["dcgan", "sampler"]:
            queues = [SAMPLE.queue]
        elif command[:2] == ["dcgan", "reaper"]:
            queues = [REAP.queue]
        else:
            continue
        for queue in queues:
            consumed.setdefault(queue, set()).add(name)
    assert {task.queue for task in TASKS} <= set(consumed), consumed
    assert consumed[EVALUATE.queue] == {"evaluator"} and consumed[SAMPLE.queue] == {"sampler"}
    evaluator = _compose()["services"]["evaluator"]["command"]
    assert evaluator[evaluator.index("--nice") + 1] == "10"  # scoring yields the CPU to training and sampling
