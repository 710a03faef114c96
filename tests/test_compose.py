"""docker-compose.yml cannot run here (no Docker engine); this keeps it honest against the code instead."""

import json
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
    from core.queue import EVALUATE, REAP, SAMPLE, TASKS, WEBHOOKS, WORKER_QUEUES

    consumed: dict[str, set[str]] = {}
    for name, service in _compose()["services"].items():
        command = service.get("command") or []
        if command[:2] == ["dcgan", "worker"]:
            queues = command[command.index("--queues") + 1].split(",") if "--queues" in command else WORKER_QUEUES
        elif command[:2] == ["dcgan", "sampler"]:
            queues = [SAMPLE.queue]
        elif command[:2] == ["dcgan", "reaper"]:
            queues = [REAP.queue]
        elif command[:2] == ["dcgan", "webhooks"]:
            queues = [WEBHOOKS.queue]
        else:
            continue
        for queue in queues:
            consumed.setdefault(queue, set()).add(name)
    assert {task.queue for task in TASKS} <= set(consumed), consumed
    assert consumed[EVALUATE.queue] == {"evaluator"} and consumed[SAMPLE.queue] == {"sampler"}
    assert consumed[WEBHOOKS.queue] == {"webhooks"}
    evaluator = _compose()["services"]["evaluator"]["command"]
    assert evaluator[evaluator.index("--nice") + 1] == "10"  # scoring yields the CPU to training and sampling


# ----- the monitoring profile: Prometheus and Grafana (issue 13) -----

MONITORING = ("prometheus", "grafana")


def _mounted(service: dict, target: str) -> Path:
    """The repository path a service bind-mounts at `target` (its `./...:target[:ro]` volume)."""
    for mount in service["volumes"]:
        source, destination = mount.split(":")[:2]
        if destination == target and source.startswith("./"):
            return ROOT / source
    raise AssertionError(f"nothing from the repository is mounted at {target}")


def test_monitoring_services_start_only_with_their_profile():
    compose = _compose()
    services = compose["services"]
    for name in MONITORING:
        assert services[name]["profiles"] == ["monitoring"], name
    assert all("profiles" not in service for name, service in services.items() if name not in MONITORING)
    for name in MONITORING:  # named volumes are declared; bind mounts exist in the repository
        for mount in services[name]["volumes"]:
            source = mount.split(":")[0]
            assert (ROOT / source).exists() if source.startswith("./") else source in compose["volumes"], mount
    assert services["grafana"]["depends_on"] == ["prometheus"]


def test_prometheus_scrapes_the_api_and_every_celery_service_where_they_serve():
    services = _compose()["services"]
    config = yaml.safe_load(_mounted(services["prometheus"], "/etc/prometheus/prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    api_port = services["api"]["ports"][0].split(":")[1]
    assert jobs["dcgan-api"]["metrics_path"] == "/metrics"
    assert jobs["dcgan-api"]["static_configs"][0]["targets"] == [f"api:{api_port}"]
    assert api_port in " ".join(services["api"]["command"])
    discovery = jobs["dcgan-workers"]["dns_sd_configs"][0]
    celery_services = {name for name, service in services.items()
                       if (service.get("command") or [None, None])[:2] in (["dcgan", "worker"], ["dcgan", "sampler"],
                                                                           ["dcgan", "reaper"], ["dcgan", "webhooks"])}
    assert celery_services and celery_services <= set(discovery["names"]), celery_services
    for name in celery_services:  # each serves its metrics on the port Prometheus looks at
        settings = Settings.from_env(services[name]["environment"])
        assert settings.worker_metrics_port == discovery["port"], name


def test_grafana_is_provisioned_with_the_datasource_and_the_dashboard():
    grafana = _compose()["services"]["grafana"]
    provisioning = _mounted(grafana, "/etc/grafana/provisioning")
    datasource = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"][0]
    assert datasource["type"] == "prometheus" and datasource["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((provisioning / "dashboards" / "dcgan.yml").read_text())["providers"][0]
    assert _mounted(grafana, provider["options"]["path"]) == ROOT / "deploy" / "grafana" / "dashboards"
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "dashboards" / "dcgan.json").read_text())
    uids = {panel["datasource"]["uid"] for panel in dashboard["panels"]}
    assert uids == {datasource["uid"]}


def _exported_series(session_factory) -> set[str]:
    """Every sample name the platform exports: the API's (HTTP series, the database's collector) and the
    workers' own, read from the collectors themselves."""
    from prometheus_client.metrics_core import Metric

    from core.metrics import DatabaseCollector
    from web.metrics import HTTP_LATENCY, HTTP_REQUESTS
    from worker.metrics import LOCAL_METRICS

    families: list[Metric] = [*DatabaseCollector(session_factory).collect()]
    for collector in (HTTP_REQUESTS, HTTP_LATENCY, *LOCAL_METRICS):
        families += collector.describe()
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    return {family.name + suffix for family in families for suffix in suffixes[family.type]}


def test_dashboard_panels_chart_series_the_code_exports(session_factory):
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "dashboards" / "dcgan.json").read_text())
    titles = {panel["title"] for panel in dashboard["panels"]}
    assert {"Queue depth", "Jobs by status", "Images/s per worker", "API latency"} <= titles, titles
    exported = _exported_series(session_factory)
    assert {"dcgan_queue_depth", "dcgan_jobs", "dcgan_training_images_per_second",
            "dcgan_http_request_duration_seconds_bucket"} <= exported
    for panel in dashboard["panels"]:
        named = set()
        for target in panel["targets"]:
            named |= set(re.findall(r"\b(dcgan_[a-z_]+)", target["expr"]))
        assert named and named <= exported, (panel["title"], named - exported)
