"""The platform's one settings object, built from the environment at an entry point and passed down.

Only entry points call `Settings.from_env()` (the CLI, `web.create_app()`, `worker/celery_app.py`,
`migrations/env.py`); library code takes a `Settings` argument. Defaults are the embedded platform's:
SQLite and a local artifact directory under `data_dir`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping
from urllib.parse import urlparse


# What a sampling worker may render with (core.gan.sample's fp32 path, bf16 autocast, static int8).
SAMPLE_PRECISIONS = ("fp32", "bf16", "int8")


class SettingsError(ValueError):
    """An environment variable with a value the platform cannot use; the message names it."""


@dataclass(frozen=True)
class Settings:
    # Where the embedded defaults live: the SQLite file, the local artifact store, the API key.
    data_dir: Path = Path("var")
    # SQLAlchemy URL; PostgreSQL in production (postgresql+psycopg://...), SQLite embedded.
    database_url: str = ""
    # Celery broker; `dcgan up` starts a bundled Redis when this is unset.
    redis_url: str = ""
    # file:///path or s3://bucket/prefix; empty means file://<data_dir>/artifacts.
    storage_url: str = ""
    # S3-compatible endpoint (MinIO, moto); empty means AWS. Credentials come from boto3's usual variables.
    s3_endpoint_url: str = ""
    # The endpoint that download links (presigned URLs) name, when clients reach S3 by another address than
    # the servers do (docker-compose: the API reaches http://minio:9000, a browser http://localhost:9000).
    s3_public_endpoint_url: str = ""
    # Uploads above this are answered 413 before the body is read.
    max_upload_bytes: int = 512 * 1024 * 1024
    # JSON bodies (job submissions, aliases) above this are answered 413: the largest valid one is a few
    # hundred KiB (a seed list), and a JSON document is parsed whole, in memory.
    max_json_bytes: int = 1024 * 1024
    # Longest a job may run; the broker's visibility timeout is set above it.
    max_job_seconds: int = 24 * 3600
    # Deliveries of one job before it fails with worker_lost.
    max_attempts: int = 3
    # A worker's claim on a job lasts this long unless its heartbeat extends it.
    lease_seconds: int = 60
    # How often the reaper runs: re-queues expired leases, re-sends lost messages of queued jobs.
    reap_seconds: int = 15
    # A queued job's message is sent again after this long unclaimed, then after twice that, ... (capped).
    republish_seconds: int = 60
    # Requests per API key per minute before 429.
    rate_limit_per_minute: int = 6000
    # Queued (not yet running) jobs a tenant may have before new submissions get 429.
    max_queued_jobs: int = 100
    # An Idempotency-Key is answered from its record for at least this long; the reaper deletes it after.
    idempotency_hours: int = 24
    # Signs the dashboard's session cookies; empty means a random one kept in <data_dir>/secret-key.
    secret_key: str = ""
    # Event streams (GET /v1/jobs/<id>/stream) one API process holds open at once; each has a thread of its
    # own beside the request threads, so streams never take the threads that answer polls.
    max_streams: int = 64
    # Synchronous sampling (GET /v1/generators/<ref>/images): how long the API waits for a sampling worker's
    # answer before 504 -- past it the request is dropped from the queue too, so a late worker renders nothing.
    sample_timeout_seconds: int = 10
    # Loaded generators a sampling worker keeps (an LRU keyed by the weights' sha256); a 64x64 default-width
    # generator is about 14 MB of fp32 weights, so the default costs a few hundred MB at most.
    sample_cache_size: int = 16
    # The path sampling workers render with: fp32, bf16 or int8 (the last two fall back to fp32 when their
    # load-time quality check fails). Part of every sampling ETag, since the pixels depend on it.
    sample_precision: str = "fp32"
    # torch CPU threads in a sampling worker (DCGAN_THREADS is the job workers'). One, because a sampler shares
    # its cores with the API and the job workers (`dcgan up`): on the 2-core CPU of docs/sample-api-latency-cpu.txt
    # two threads render a 32x32 16-image grid faster on an idle machine (6.6 vs 9.1 ms), but while a training
    # job runs beside them they wait on each other -- the grid's p99 through the API was 311 ms with two, 71 ms
    # with one. A sampler with cores of its own may take more.
    sample_threads: int = 1
    # ----- limits (what one request may cost; issue 11) -----
    # A job's estimated peak memory (core.gan.cost: weights, gradients, optimisers, EMA, activations at the
    # batch size; a generate job's output chunk) above this is refused at submission with 422; a worker also
    # refuses to claim a job its device cannot hold. The default fits a 24 GB GPU with room for the runtime.
    max_job_memory_bytes: int = 20 * 1024**3
    # A job's estimated storage (checkpoints kept x checkpoint size + sample grids + outputs) above this is
    # refused at submission with 422.
    max_job_storage_bytes: int = 20 * 1024**3
    # Seeds one generate job may ask for (the API's 422 past it).
    max_seeds_per_job: int = 50_000
    # Jobs a tenant may create per hour, cancelled ones included (429 past it).
    max_jobs_per_hour: int = 1000
    # Bytes a tenant may keep in the artifact store (its jobs' artifacts, datasets and uploaded generators). A
    # job whose estimate would pass it is refused up front; a running one that reaches it fails `storage_quota`.
    tenant_storage_bytes: int = 100 * 1024**3
    # The smallest checkpoint_every and sample_every a training job may ask for (0, "only at the end", stays
    # allowed): a checkpoint or grid every step costs a write per step for nothing a user can use.
    min_checkpoint_every: int = 10
    min_sample_every: int = 10
    # Intermediate checkpoints a training job keeps: older ones are deleted as new ones land (the final
    # checkpoint, the best generator and the one a resume would use are never deleted).
    keep_checkpoints: int = 3
    # Failed authentications (unknown, revoked or malformed keys) one client address may make per minute
    # before its requests get 429 without being checked.
    failed_auth_per_minute: int = 30
    # Operator override: the bytes of memory a worker believes its device has for a job (0: measure it, the
    # default: CUDA's free and total memory, or the CPU's MemAvailable and MemTotal within the cgroup's limit).
    # Set it to reserve memory for other processes on the machine, or in tests; it only ever lowers the numbers.
    worker_memory_bytes: int = 0
    # ----- scheduling (issue 13; core.scheduling) -----
    # One priority level is worth this much waiting: a job queued at priority p is taken as if it had been
    # queued p steps earlier, so a job is never passed over by jobs queued more than 9 steps after it.
    priority_step_seconds: int = 600
    # Jobs of one tenant that may run at once, over every queue (0: no cap); a worker leaves a job queued for
    # other tenants' jobs while its tenant is at the cap.
    max_running_jobs_per_tenant: int = 0
    # ----- deleting and retention (issue 13; core.orphans) -----
    # A store object no row refers to is deleted by the reaper once it is this old: an upload writes its
    # objects before the row naming them commits, and an hour is far past any upload's commit.
    orphan_grace_seconds: int = 3600
    # Store objects the reaper looks at per pass (one bounded listing; S3 lists 1000 a request).
    orphan_batch: int = 1000
    # ----- webhooks (issue 13; core.webhooks, core.webhook_delivery) -----
    # At most one job.progress message per job this often: training reports progress every second.
    webhook_progress_seconds: int = 30
    # A message that failed is retried (exponential backoff, full jitter) until this long after it was made.
    webhook_retry_hours: int = 24
    # The first retry waits up to this long, each later one up to twice as long as the one before (capped
    # at an hour); tests make it short.
    webhook_backoff_seconds: float = 5.0
    # One attempt's limit: connecting, sending and reading the answer.
    webhook_timeout_seconds: float = 10.0
    # After a secret rotation the old secret keeps signing beside the new one this long.
    webhook_secret_overlap_seconds: int = 86400
    # http:// receivers (default: https only) and receivers at private, loopback or link-local addresses
    # (default: refused, the SSRF guard): for tests and private deployments.
    webhook_allow_http: bool = False
    webhook_allow_private: bool = False
    # ----- metrics (issue 13; core.metrics, web.metrics, worker.metrics) -----
    # GET /metrics wants `Authorization: Bearer <this>` when set; empty leaves it open, for a Prometheus on a
    # private network (the series name no tenant and no job).
    metrics_token: str = ""
    # A worker serves its own metrics (uploads, training steps, job durations) on this port; 0 serves none.
    worker_metrics_port: int = 0
    # prometheus_client's multiprocess directory, set by the entry point (cli.servers) before prometheus_client
    # is imported: when set, a scrape merges the files of every process of the server, else it reads this one.
    metrics_multiproc_dir: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if environ is None else environ
        data_dir = Path(env.get("DCGAN_DATA_DIR", "var"))
        settings = cls(
            data_dir=data_dir,
            database_url=env.get("DATABASE_URL", ""),
            redis_url=env.get("REDIS_URL", ""),
            storage_url=env.get("STORAGE_URL", ""),
            s3_endpoint_url=env.get("S3_ENDPOINT_URL", ""),
            s3_public_endpoint_url=env.get("S3_PUBLIC_ENDPOINT_URL", ""),
            max_upload_bytes=env_int(env, "DCGAN_MAX_UPLOAD_BYTES", cls.max_upload_bytes),
            max_json_bytes=env_int(env, "DCGAN_MAX_JSON_BYTES", cls.max_json_bytes),
            max_job_seconds=env_int(env, "DCGAN_MAX_JOB_SECONDS", cls.max_job_seconds),
            max_attempts=env_int(env, "DCGAN_MAX_ATTEMPTS", cls.max_attempts),
            lease_seconds=env_int(env, "DCGAN_LEASE_SECONDS", cls.lease_seconds),
            reap_seconds=env_int(env, "DCGAN_REAP_SECONDS", cls.reap_seconds),
            republish_seconds=env_int(env, "DCGAN_REPUBLISH_SECONDS", cls.republish_seconds),
            rate_limit_per_minute=env_int(env, "DCGAN_RATE_LIMIT_PER_MINUTE", cls.rate_limit_per_minute),
            max_queued_jobs=env_int(env, "DCGAN_MAX_QUEUED_JOBS", cls.max_queued_jobs),
            idempotency_hours=env_int(env, "DCGAN_IDEMPOTENCY_HOURS", cls.idempotency_hours),
            secret_key=env.get("DCGAN_SECRET_KEY", ""),
            max_streams=env_int(env, "DCGAN_MAX_STREAMS", cls.max_streams),
            sample_timeout_seconds=env_int(env, "DCGAN_SAMPLE_TIMEOUT_SECONDS", cls.sample_timeout_seconds),
            sample_cache_size=env_int(env, "DCGAN_SAMPLE_CACHE_SIZE", cls.sample_cache_size),
            sample_precision=env.get("DCGAN_SAMPLE_PRECISION", cls.sample_precision),
            sample_threads=env_int(env, "DCGAN_SAMPLE_THREADS", cls.sample_threads),
            max_job_memory_bytes=env_int(env, "DCGAN_MAX_JOB_MEMORY_BYTES", cls.max_job_memory_bytes),
            max_job_storage_bytes=env_int(env, "DCGAN_MAX_JOB_STORAGE_BYTES", cls.max_job_storage_bytes),
            max_seeds_per_job=env_int(env, "DCGAN_MAX_SEEDS_PER_JOB", cls.max_seeds_per_job),
            max_jobs_per_hour=env_int(env, "DCGAN_MAX_JOBS_PER_HOUR", cls.max_jobs_per_hour),
            tenant_storage_bytes=env_int(env, "DCGAN_TENANT_STORAGE_BYTES", cls.tenant_storage_bytes),
            min_checkpoint_every=env_int(env, "DCGAN_MIN_CHECKPOINT_EVERY", cls.min_checkpoint_every),
            min_sample_every=env_int(env, "DCGAN_MIN_SAMPLE_EVERY", cls.min_sample_every),
            keep_checkpoints=env_int(env, "DCGAN_KEEP_CHECKPOINTS", cls.keep_checkpoints),
            failed_auth_per_minute=env_int(env, "DCGAN_FAILED_AUTH_PER_MINUTE", cls.failed_auth_per_minute),
            worker_memory_bytes=env_int(env, "DCGAN_WORKER_MEMORY_BYTES", cls.worker_memory_bytes),
            priority_step_seconds=env_int(env, "DCGAN_PRIORITY_STEP_SECONDS", cls.priority_step_seconds),
            max_running_jobs_per_tenant=env_int(env, "DCGAN_MAX_RUNNING_JOBS_PER_TENANT",
                                                cls.max_running_jobs_per_tenant),
            orphan_grace_seconds=env_int(env, "DCGAN_ORPHAN_GRACE_SECONDS", cls.orphan_grace_seconds),
            orphan_batch=env_int(env, "DCGAN_ORPHAN_BATCH", cls.orphan_batch),
            webhook_progress_seconds=env_int(env, "DCGAN_WEBHOOK_PROGRESS_SECONDS", cls.webhook_progress_seconds),
            webhook_retry_hours=env_int(env, "DCGAN_WEBHOOK_RETRY_HOURS", cls.webhook_retry_hours),
            webhook_backoff_seconds=env_seconds(env, "DCGAN_WEBHOOK_BACKOFF_SECONDS", cls.webhook_backoff_seconds),
            webhook_timeout_seconds=env_seconds(env, "DCGAN_WEBHOOK_TIMEOUT_SECONDS", cls.webhook_timeout_seconds),
            webhook_secret_overlap_seconds=env_int(env, "DCGAN_WEBHOOK_SECRET_OVERLAP_SECONDS",
                                                   cls.webhook_secret_overlap_seconds),
            webhook_allow_http=env_flag(env, "DCGAN_WEBHOOK_ALLOW_HTTP"),
            webhook_allow_private=env_flag(env, "DCGAN_WEBHOOK_ALLOW_PRIVATE"),
            metrics_token=env.get("DCGAN_METRICS_TOKEN", ""),
            # 0 is allowed here (metrics off), unlike the positive integers env_int reads.
            worker_metrics_port=0 if env.get("DCGAN_WORKER_METRICS_PORT") == "0"
            else env_int(env, "DCGAN_WORKER_METRICS_PORT", cls.worker_metrics_port),
            metrics_multiproc_dir=env.get("PROMETHEUS_MULTIPROC_DIR", ""),
        )
        return settings.with_defaults()

    def with_defaults(self) -> "Settings":
        """Fill the embedded defaults that depend on data_dir and check the URLs."""
        database_url = self.database_url or f"sqlite:///{(self.data_dir / 'dcgan.db').resolve()}"
        storage_url = self.storage_url or (self.data_dir / "artifacts").resolve().as_uri()
        scheme = urlparse(storage_url).scheme
        if scheme not in ("file", "s3"):
            raise SettingsError(f"STORAGE_URL: must start with file:// or s3://, got {storage_url!r}")
        if scheme == "s3" and not urlparse(storage_url).netloc:
            raise SettingsError(f"STORAGE_URL: no bucket in {storage_url!r} (use s3://bucket/prefix)")
        if self.sample_precision not in SAMPLE_PRECISIONS:
            raise SettingsError(f"DCGAN_SAMPLE_PRECISION: one of {', '.join(SAMPLE_PRECISIONS)}, "
                                f"got {self.sample_precision!r}")
        return replace(self, database_url=database_url, storage_url=storage_url)


def env_int(env: Mapping[str, str], name: str, default: int) -> int:
    """A positive integer variable, or default when unset; anything else is a SettingsError naming it."""
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}: expected an integer, got {raw!r}") from None
    if value <= 0:
        raise SettingsError(f"{name}: must be positive, got {value}")
    return value


def env_seconds(env: Mapping[str, str], name: str, default: float) -> float:
    """A positive number of seconds (fractions allowed), or default when unset; else a SettingsError naming it."""
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}: expected a number of seconds, got {raw!r}") from None
    if not value > 0 or value == float("inf"):
        raise SettingsError(f"{name}: must be a positive number, got {raw!r}")
    return value


def env_flag(env: Mapping[str, str], name: str) -> bool:
    """A 0/1 switch, off when unset; anything else is a SettingsError naming it."""
    raw = env.get(name, "")
    if raw not in ("", "0", "1"):
        raise SettingsError(f"{name}: expected 0 or 1, got {raw!r}")
    return raw == "1"
