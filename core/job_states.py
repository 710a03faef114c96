"""The names of job types and states, free of any library, so the database schema (core.db), the request
models (core.request_models) and the command line all spell them from here. Transitions are core.jobs'."""

from __future__ import annotations

from enum import StrEnum


class JobType(StrEnum):
    TRAIN = "train"
    GENERATE = "generate"
    EVALUATE = "evaluate"


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
