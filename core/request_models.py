"""What a client may ask for: the typed request models (pydantic v2) that the API validates, the job row
stores, the worker reads back and the command line fills in -- every field name, default and range of a
request in one place. Each model is also its JSON Schema: web.openapi builds /v1/openapi.json from them.

Torch-free (the engine's rules come from core.gan's torch-free modules: config, catalog, seeds). Unknown
fields are refused (no mass assignment) and every bad field is reported at once, named: `validate` turns
pydantic's errors into `{"field", "message"}` pairs, with a message per field where pydantic's generic one
would not say what to send (`RequestModel.messages`). Checks that need the database (does this dataset,
train job or generator exist for this tenant?) run in the same pass through the validation context's
`lookups` (see `Lookups`); without a context (the worker re-reading a stored request) they are skipped.
"""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any, ClassVar, Literal, Mapping, Protocol, TypeVar

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer, PlainValidator, ValidationError,
                      ValidationInfo, WithJsonSchema, field_validator)
from pydantic_core import PydanticCustomError

from core import registry
from core.gan import catalog
from core.gan.catalog import BUILTIN_DATASETS, BUILTIN_PREFIX
from core.gan.config import EVAL_NETS, ConfigError, TrainConfig
from core.gan.seeds import (DEFAULT_TRUNCATION, GRID_MAX, MAX_SEED, TRUNCATION_MAX, SampleError, SeedRanges,
                            TooManySeeds)
from core.job_states import JobStatus, JobType
from core.settings import Settings
from core.webhooks import EVENTS as WEBHOOK_EVENTS

DEFAULT_NROW = 8
NROW_MAX = 64
MAX_LIST_LIMIT = 200
# The most points one metrics answer may ask for: enough for any chart, small enough for one response.
MAX_METRIC_POINTS = 10_000
MAX_STEP = 9_999_999  # artifact keys carry seven digits of step
# Separate seed ranges one generate job may list: what its row keeps is the ranges, so this bounds the row (a few
# tens of KB at most) where the seed cap alone would let 50,000 scattered seeds take ~1 MB per job.
MAX_SEED_RANGES = 1024
# Evaluate jobs: the default is core.gan.metrics.DEFAULT_NUM_SAMPLES (`dcgan eval`'s), the ceiling bounds the work.
DEFAULT_EVAL_SAMPLES = 2000
MAX_EVAL_SAMPLES = 50_000
# Names longer than this are cut to it (uploads' display names).
MAX_NAME_LENGTH = 200
# Errors raised by this module's own checks: their message is already the one to show.
_OWN = "dcgan_"
_CONFIG_ERRORS = "dcgan_config"

M = TypeVar("M", bound="RequestModel")


class RequestInvalid(ValueError):
    """A request with bad fields; `errors` lists each as {"field", "message"} (the API answers 422)."""

    def __init__(self, errors: list[dict[str, str]]):
        super().__init__("; ".join(f"{e['field']}: {e['message']}" for e in errors))
        self.errors = errors


class Lookups(Protocol):
    """The request's tenant's rows by the id a client sent (None: malformed, missing or someone else's)."""

    def dataset(self, ref: str) -> Any | None: ...

    def train_job(self, ref: str) -> Any | None: ...  # a row with .status

    def generator(self, ref: str) -> Any | None: ...


class RequestModel(BaseModel):
    """The base of every request model; web.openapi publishes each subclass."""

    model_config = ConfigDict(extra="forbid", strict=True)
    # A field's message for pydantic's own errors on it (wrong type, out of range), formatted with `input`
    # (the value sent, shortened) and the validation context (e.g. `max_runtime_seconds`); "<field>:missing"
    # says what a missing field should have been (else "required").
    messages: ClassVar[dict[str, str]] = {}

    @classmethod
    def together(cls, data: Mapping[str, Any]) -> list[dict[str, str]]:
        """Rules across fields, checked on the raw input so they are reported with every other error."""
        return []


def validate(model: type[M], data: Any, context: Mapping[str, Any] | None = None) -> M:
    """`data` as a `model`, or RequestInvalid naming every bad field (one message per field)."""
    errors = model.together(data) if isinstance(data, Mapping) else []
    try:
        result = model.model_validate(data, context=dict(context or {}))
    except ValidationError as exc:
        errors += _field_errors(model, exc, context or {})
    if errors:
        seen: set[str] = set()
        raise RequestInvalid([e for e in errors if not (e["field"] in seen or seen.add(e["field"]))])
    return result


def _field_errors(model: type[RequestModel], exc: ValidationError,
                  context: Mapping[str, Any]) -> list[dict[str, str]]:
    errors = []
    for error in exc.errors(include_url=False):
        if error["type"] == _CONFIG_ERRORS:  # the config's own field errors, already named config.<field>
            errors += error["ctx"]["errors"]
            continue
        field = str(error["loc"][0]) if error["loc"] else "body"
        errors.append({"field": field, "message": _message(model, field, error, context)})
    return errors


def _message(model: type[RequestModel], field: str, error: Any, context: Mapping[str, Any]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown field"
    if kind.startswith(_OWN):
        return error["msg"]
    template = model.messages.get(f"{field}:{kind}") or (model.messages.get(field) if kind != "missing" else None)
    if template is None:
        return "required" if kind == "missing" else error["msg"]
    values = {**context, "max_runtime_seconds": _server_limit(context)}
    return template.format(input=repr(str(error.get("input"))[:100]), **values)


def _refuse(kind: str, message: str) -> PydanticCustomError:
    # The message goes through a placeholder so braces in it (a user's input) are never read as one.
    return PydanticCustomError(_OWN + kind, "{message}", {"message": message})


def _lookups(info: ValidationInfo) -> Lookups | None:
    return (info.context or {}).get("lookups")


def _server_limit(context: Mapping[str, Any] | None) -> int:
    """The server's runtime limit the API passes in the validation context (the default without one)."""
    return (context or {}).get("max_runtime_seconds", Settings.max_job_seconds)


def _without_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)  # a field that may be left out, but not sent as null


def _train_config(value: Any) -> TrainConfig:
    try:
        return TrainConfig.from_dict(value, cli_strings=False)  # JSON types, as the schema says
    except ConfigError as exc:
        raise PydanticCustomError(_CONFIG_ERRORS, "{message}", {"message": str(exc), "errors": config_errors(exc)})


def config_errors(exc: ConfigError) -> list[dict[str, str]]:
    """Every problem of a config as field errors named `config.<field>`."""
    return [{"field": f"config.{e.field}" if e.field != "config" else "config", "message": e.message}
            for e in exc.all]


# A TrainConfig validated by core.gan.config's own rules (all its problems at once), published as the schema
# those rules produce (web.openapi lists it once, as components/schemas/TrainConfig).
TrainConfigField = Annotated[TrainConfig, PlainValidator(_train_config), PlainSerializer(TrainConfig.to_dict),
                             WithJsonSchema(TrainConfig.json_schema())]
# Ids are strings in JSON; the format is only a hint to readers, the lookups decide.
IdField = Annotated[str, Field(max_length=100)]


def _optional_id(schema: dict[str, Any]) -> None:
    _without_default(schema)
    schema["format"] = "uuid"


def valid_unicode(document: Any) -> Any:
    """`document` (parsed JSON) when every string in it, keys included, is valid Unicode, else ValueError. JSON may
    spell a lone UTF-16 surrogate (`"\\ud800"`), which Python decodes to a str no UTF-8 encoder accepts -- not
    pydantic's error messages, not PostgreSQL -- so every JSON input is checked once, as it is parsed, and such
    a document is refused like text that is not JSON."""
    json.dumps(document, ensure_ascii=False).encode("utf-8")  # UnicodeEncodeError (a ValueError) on a surrogate
    return document


def parse_id(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def _registry_name(value: Any) -> str:
    if not isinstance(value, str) or not registry.NAME_RE.fullmatch(value):
        raise _refuse("registry_name", f"must be {registry.NAME_RULE}")
    return value


# A name in the generator registry (core.registry): what `name:version` and `name@alias` start with.
RegistryName = Annotated[str, PlainValidator(_registry_name),
                         WithJsonSchema({"type": "string", "pattern": registry.NAME_RE.pattern,
                                         "description": f"a generator registry name: {registry.NAME_RULE}"})]
def _known_dataset(value: str, info: ValidationInfo) -> str:
    if value.startswith(BUILTIN_PREFIX):
        if (problem := _unknown_builtin(value)) is not None:
            raise _refuse("unknown_builtin", problem)
    elif (lookups := _lookups(info)) is not None and lookups.dataset(value) is None:
        raise _refuse("not_found", f"no dataset {value[:100]!r}")
    return value


def _known_generator(value: str, info: ValidationInfo) -> str:
    lookups = _lookups(info)
    if registry.parse_ref(value) is None or (lookups is not None and lookups.generator(value) is None):
        raise _refuse("not_found", f"no generator {value[:200]!r} (give an id, name:version or name@alias)")
    return value


# A generator reference: an id, name:version or name@alias, of the request's tenant.
GeneratorRef = Annotated[str, Field(min_length=1, max_length=200, examples=["digits@champion", "digits:3"],
                                    description="a generator: its id, name:version or name@alias"),
                         AfterValidator(_known_generator)]
# A dataset: an uploaded dataset's id (of the request's tenant) or a builtin.
DatasetRef = Annotated[str, Field(min_length=1, description=f"a dataset id or one of {', '.join(BUILTIN_DATASETS)}"),
                       AfterValidator(_known_dataset)]


# ----- jobs -----

Priority = Annotated[int, Field(ge=0, le=9, description=(
    "0-9, higher first among the queued jobs of its queue; a job is never passed over by jobs queued more "
    "than 9 x DCGAN_PRIORITY_STEP_SECONDS (90 minutes by default) after it, whatever their priority"))]
PRIORITY_MESSAGE = "must be an integer from 0 to 9"


class TrainJobRequest(RequestModel):
    """POST /v1/jobs/train: train a DCGAN on a dataset."""

    dataset: DatasetRef
    config: TrainConfigField
    max_runtime_seconds: Annotated[int, Field(
        ge=1, json_schema_extra=_without_default,
        description="this job's runtime limit, counted from its first start across attempts; at most (and by "
                    "default) the server's DCGAN_MAX_JOB_SECONDS. Past it the job writes a final checkpoint and "
                    "ends failed with error type timeout")] = None
    name: Annotated[RegistryName, Field(json_schema_extra=_without_default, description=(
        "the registry name its final and best generators get versions of (default: the dataset's name)"))] = None
    priority: Priority = 5

    messages = {"dataset": f"must be a dataset id or a {BUILTIN_PREFIX}<name>",
                "max_runtime_seconds": "must be an integer from 1 to {max_runtime_seconds} (the server's limit)",
                "priority": PRIORITY_MESSAGE}

    @field_validator("max_runtime_seconds")
    @classmethod
    def _within_server_limit(cls, value: int, info: ValidationInfo) -> int:
        if value > (limit := _server_limit(info.context)):
            raise _refuse("over_limit", cls.messages["max_runtime_seconds"].format(max_runtime_seconds=limit))
        return value

    def stored(self, default_name: str) -> dict[str, Any]:
        """What the job row keeps as its request (the config has a column of its own)."""
        limit = {"max_runtime_seconds": self.max_runtime_seconds} if self.max_runtime_seconds is not None else {}
        return {"dataset": self.dataset, "name": self.name or default_name, **limit}


def _unknown_builtin(reference: str) -> str | None:
    """What is wrong with a `builtin:<name>` reference the platform does not serve; None when it does."""
    return None if reference in BUILTIN_DATASETS else f"unknown builtin; use one of {', '.join(BUILTIN_DATASETS)}"


def parse_dataset_reference(reference: str) -> str | uuid.UUID:
    """The catalog name a `builtin:<name>` reference names, or an uploaded dataset's id; DataError otherwise."""
    if reference.startswith(BUILTIN_PREFIX):
        if (problem := _unknown_builtin(reference)) is not None:
            raise catalog.DataError(f"dataset {reference!r}: {problem}")
        return reference.removeprefix(BUILTIN_PREFIX)
    if (dataset_id := parse_id(reference)) is None:
        raise catalog.DataError(f"dataset {reference!r}: neither a dataset id nor {BUILTIN_PREFIX}<name>")
    return dataset_id


class GenerateJobRequest(RequestModel):
    """POST /v1/jobs/generate: images for seeds from a succeeded train job or an uploaded generator."""

    model_config = ConfigDict(json_schema_extra={"oneOf": [{"required": ["generator_job"]},
                                                           {"required": ["generator"]}]})

    generator_job: Annotated[IdField, Field(description="a succeeded train job",
                                            json_schema_extra=_optional_id)] = None
    generator: Annotated[GeneratorRef, Field(json_schema_extra=_without_default)] = None
    seeds: Annotated[list[Annotated[int, Field(ge=0, le=MAX_SEED)]] | str, Field(
        examples=["0-63"],
        description=f"seeds as a list, or ranges like \"0-63\" or \"1,5,9-12\"; at most the server's "
                    f"DCGAN_MAX_SEEDS_PER_JOB ({Settings.max_seeds_per_job} by default) in at most {MAX_SEED_RANGES} "
                    f"separate ranges. The job keeps them as "
                    f"ranges (a list [1, 2, 3, 7] is kept as \"1-3,7\"). The grid shows the first {GRID_MAX}; "
                    f"a job of more seeds also has every image, one PNG per seed, in its images.tar artifact")]
    truncation: Annotated[float, Field(gt=0, le=TRUNCATION_MAX)] = DEFAULT_TRUNCATION
    nrow: Annotated[int, Field(ge=1, le=NROW_MAX, description="images per grid row")] = DEFAULT_NROW
    priority: Priority = 5

    messages = {"generator_job": "no training job {input}", "generator": "no generator {input}",
                "seeds": "give a list of integers in [0, 2^63) or a range like 0-63",
                "truncation": f"must be a number in (0, {TRUNCATION_MAX:g}]",
                "nrow": f"must be an integer from 1 to {NROW_MAX}", "priority": PRIORITY_MESSAGE}

    @classmethod
    def together(cls, data: Mapping[str, Any]) -> list[dict[str, str]]:
        if ("generator" in data) == ("generator_job" in data):
            return [{"field": "generator", "message": "give exactly one of generator (an uploaded generator's id) "
                                                      "and generator_job (a succeeded training job's id)"}]
        return []

    @field_validator("seeds")
    @classmethod
    def _seed_ranges(cls, value: list[int] | str, info: ValidationInfo) -> SeedRanges:
        # The server's cap comes in the validation context (its default without one); a stored request is read
        # back with None, as it was checked when accepted. Counted, not expanded: "0-9999999999999" costs nothing.
        cap = (info.context or {}).get("max_seeds_per_job", Settings.max_seeds_per_job)
        try:
            seeds = SeedRanges.parse(value, limit=cap)
        except TooManySeeds as exc:
            raise _refuse("too_many_seeds", f"{exc.count} seeds asked for; at most {exc.limit} per job (the "
                                            f"server's DCGAN_MAX_SEEDS_PER_JOB)") from None
        except SampleError as exc:
            raise _refuse("seeds", str(exc).removeprefix("seeds: ")) from None
        if cap is not None and len(seeds.ranges) > MAX_SEED_RANGES:
            raise _refuse("too_many_ranges", f"{len(seeds.ranges)} separate seeds or ranges; at most "
                                             f"{MAX_SEED_RANGES} per job (consecutive seeds count as one range)")
        return seeds

    @field_validator("generator_job")
    @classmethod
    def _succeeded_train_job(cls, value: str, info: ValidationInfo) -> str:
        job_id, lookups = parse_id(value), _lookups(info)
        job = lookups.train_job(value) if lookups is not None and job_id is not None else None
        if job_id is None or (lookups is not None and (job is None or job.type != JobType.TRAIN)):
            raise _refuse("not_found", f"no training job {value[:100]!r}")
        if job is not None and job.status != JobStatus.SUCCEEDED:
            raise _refuse("not_succeeded", f"training job is {job.status}, not succeeded")
        return str(job_id)

    def stored(self, generator_id: uuid.UUID | None = None) -> dict[str, Any]:
        """The request as the job keeps it; a reference is kept with the version it named at submission."""
        source = {"generator_job": self.generator_job} if self.generator_job else \
            {"generator": self.generator, "generator_id": str(generator_id)}
        return {**source, "seeds": str(self.seeds), "truncation": self.truncation, "nrow": self.nrow}

    @classmethod
    def from_stored(cls, document: Mapping[str, Any]) -> "GenerateJobRequest":
        """A generate job's stored request read back by the worker; a SampleError names what is wrong. The
        version a reference named is the job row's `generator_id` column (the request keeps a copy to show)."""
        try:
            return validate(cls, {key: value for key, value in document.items() if key != "generator_id"},
                            {"max_seeds_per_job": None})
        except RequestInvalid as exc:
            raise SampleError(str(exc)) from None


class EvaluateJobRequest(RequestModel):
    """POST /v1/jobs/evaluate: FID, KID (and IS where the network has logits) of a generator on a dataset."""

    generator: GeneratorRef
    dataset: DatasetRef
    num: Annotated[int, Field(ge=2, le=MAX_EVAL_SAMPLES, description="generated samples (seeds 0..num-1)")] = \
        DEFAULT_EVAL_SAMPLES
    net: Literal[EVAL_NETS] = Field("auto", description="feature network: auto = the dataset's own classifier "  # type: ignore[valid-type]
                                                        "for digits and fashion-mnist, Inception otherwise")
    priority: Priority = 5

    messages = {"dataset": TrainJobRequest.messages["dataset"], "num": f"an integer from 2 to {MAX_EVAL_SAMPLES}",
                "net": f"one of {', '.join(EVAL_NETS)}", "priority": PRIORITY_MESSAGE}

    def stored(self, generator_id: uuid.UUID) -> dict[str, Any]:
        return {"generator": self.generator, "generator_id": str(generator_id), "dataset": self.dataset,
                "num": self.num, "net": self.net}


# ----- queries -----

class JobListQuery(RequestModel):
    """GET /v1/jobs: a page of the tenant's jobs, newest first."""

    # Query strings: "20" is the number 20, and a parameter the API does not know (a cache buster) is ignored.
    model_config = ConfigDict(strict=False, extra="ignore")

    status: Literal[tuple(s.value for s in JobStatus)] | None = None  # type: ignore[valid-type]
    type: Literal[tuple(t.value for t in JobType)] | None = None  # type: ignore[valid-type]
    limit: Annotated[int, Field(ge=1, le=MAX_LIST_LIMIT)] = 50
    cursor: Annotated[str, Field(description="next_cursor of the previous page",
                                 json_schema_extra=_without_default)] = None
    sort: Literal["newest", "best_fid"] = Field("newest", description=(
        "newest first, or best_fid: the jobs with an evaluated best generator, lowest FID first"))

    messages = {"status": f"one of {', '.join(JobStatus)}", "type": f"one of {', '.join(JobType)}",
                "limit": f"an integer from 1 to {MAX_LIST_LIMIT}", "sort": "newest or best_fid"}


class GridQuery(RequestModel):
    """GET /v1/jobs/<id>/grid: the latest grid, or the one sampled at `step`."""

    model_config = ConfigDict(strict=False, extra="ignore")

    step: Annotated[int, Field(ge=0, le=MAX_STEP, json_schema_extra=_without_default)] = None

    messages = {"step": "a step number"}


class MetricsQuery(RequestModel):
    """GET /v1/jobs/<id>/metrics: the whole training history, or `max_points` of it spread evenly."""

    model_config = ConfigDict(strict=False, extra="ignore")

    max_points: Annotated[int, Field(ge=2, le=MAX_METRIC_POINTS, json_schema_extra=_without_default,
                                     description="downsample evenly to this many points (the first and the "
                                                 "last are kept)")] = None

    messages = {"max_points": f"an integer from 2 to {MAX_METRIC_POINTS}"}


class StreamQuery(RequestModel):
    """GET /v1/jobs/<id>/stream: `last_event_id` does what the Last-Event-ID header does, for a client that
    cannot send headers (a browser's EventSource on its first connection); the header wins when both come."""

    model_config = ConfigDict(strict=False, extra="ignore")

    last_event_id: Annotated[int, Field(ge=0, le=2**62, json_schema_extra=_without_default,
                                        description="send only the events after this id")] = None

    messages = {"last_event_id": "the id of an event of this job's stream (a whole number)"}


# ----- uploads (multipart/form-data) -----

def without_control_characters(text: str) -> str:
    """`text` without C0 control characters and DEL (PostgreSQL cannot even store NUL)."""
    return "".join(char for char in text if ord(char) >= 0x20 and ord(char) != 0x7F)


def _display_name(value: str) -> str:
    if without_control_characters(value) != value:
        raise _refuse("control_characters", "must not contain control characters")
    return value[:MAX_NAME_LENGTH]


# An upload's display name; longer names are cut, not refused.
UploadName = Annotated[str, Field(description=f"a display name (cut to {MAX_NAME_LENGTH} characters; default: the "
                                              f"file's name)", json_schema_extra=_without_default),
                       PlainValidator(_display_name), WithJsonSchema({"type": "string"})]


def _uploaded_file(value: Any) -> Any:
    if not getattr(value, "filename", None):
        raise _refuse("no_file", "required: the file as a multipart part with a filename")
    return value


def _file(description: str) -> Any:
    return Annotated[Any, PlainValidator(_uploaded_file),
                     WithJsonSchema({"type": "string", "format": "binary", "description": description})]


def _generator_config(value: Any) -> TrainConfig:
    """A generator's config: a TrainConfig as JSON in a form field; `steps` may be left out (a generator's
    config describes its architecture; how long it trained is history, recorded as steps=1)."""
    if not isinstance(value, str):
        raise _refuse("config_json", "give the generator's config as a JSON object")
    try:
        document = valid_unicode(json.loads(value))
    except (ValueError, RecursionError):
        raise _refuse("config_json", "not valid JSON: give the generator's config as a JSON object") from None
    if not isinstance(document, dict):
        raise _refuse("config_json", "must be a JSON object of config fields")
    if "steps" not in document and "epochs" not in document:
        document = {**document, "steps": 1}
    return _train_config(document)


class AliasRequest(RequestModel):
    """PUT /v1/generators/<name>/aliases/<alias>: the version of <name> the alias points at."""

    version: Annotated[int, Field(ge=1, le=registry.MAX_VERSION)]

    messages = {"version": "a version number of this name (1, 2, ...)"}


class GeneratorListQuery(RequestModel):
    """GET /v1/generators: the tenant's generator versions, newest first."""

    model_config = ConfigDict(strict=False, extra="ignore")

    # A registry name or nothing: a filter value no name can have (a NUL byte, which PostgreSQL refuses even to
    # compare) is 422, not a query.
    name: Annotated[RegistryName, Field(json_schema_extra=_without_default,
                                        description="only the versions of this name")] = None
    limit: Annotated[int, Field(ge=1, le=MAX_LIST_LIMIT)] = MAX_LIST_LIMIT

    messages = {"limit": f"an integer from 1 to {MAX_LIST_LIMIT}"}


class DatasetUpload(RequestModel):
    """POST /v1/datasets: an archive of images to train on."""

    file: _file("a .zip, .tar or .tar.gz of images")
    name: UploadName = None

    messages = {"file:missing": "required: a .zip, .tar or .tar.gz of images"}


class GeneratorUpload(RequestModel):
    """POST /v1/generators: a generator's weights with the config they belong to."""

    file: _file("the generator's weights as a .safetensors file")
    config: Annotated[TrainConfig, PlainValidator(_generator_config), PlainSerializer(TrainConfig.to_dict),
                      WithJsonSchema({"type": "string", "contentMediaType": "application/json",
                                      "description": "a TrainConfig as JSON; steps optional"})]
    name: Annotated[RegistryName, Field(json_schema_extra=_without_default, description=(
        "the registry name this upload becomes the next version of (default: the file's name without "
        ".safetensors, made a valid name)"))] = None

    messages = {"file:missing": "required: the generator's weights as a .safetensors file",
                "config:missing": "required: the generator's config as a JSON object"}


def _webhook_url(value: str) -> str:
    # The SSRF guard (core.webhooks.check_url, which resolves the host) runs in the view, with the server's
    # settings; here only what no receiver URL can be.
    if without_control_characters(value) != value or any(char.isspace() for char in value):
        raise _refuse("webhook_url", "must not contain spaces or control characters")
    return value


class WebhookRequest(RequestModel):
    """POST /v1/webhooks: a receiver for the tenant's job events (Standard Webhooks)."""

    url: Annotated[str, Field(min_length=1, max_length=2048, description=(
        "https:// URL the events are POSTed to; its host must resolve to public addresses")),
                   AfterValidator(_webhook_url)]
    events: Annotated[list[Literal[WEBHOOK_EVENTS]], Field(  # type: ignore[valid-type]
        min_length=1, max_length=len(WEBHOOK_EVENTS), description="the event types to send")]
    description: Annotated[str, Field(max_length=500, description="a note for people"),
                           AfterValidator(without_control_characters)] = ""

    messages = {"events": f"a list of event types from: {', '.join(WEBHOOK_EVENTS)}",
                "url": "an https:// URL of at most 2048 characters", "description": "text of at most 500 characters"}
