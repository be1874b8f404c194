"""Typed, frozen, self-validating settings.

Sources, later ones winning:

1. the YAML file given with ``--config``;
2. environment variables named ``ALTCRAFT_CONNECTOR__<PATH>``, where ``<PATH>`` is the key path in
   upper case with ``__`` between levels: ``ALTCRAFT_CONNECTOR__BATCHING__LINGER_S=0.5``.
   List items are addressed by index (``ALTCRAFT_CONNECTOR__ROUTES__0__WORKFLOW_ID=12``). Inside the
   librdkafka pass-through maps (``kafka.common``, ``kafka.consumer``, ``kafka.producer``) a single
   ``_`` becomes ``.``: ``ALTCRAFT_CONNECTOR__KAFKA__COMMON__SECURITY_PROTOCOL=SASL_SSL``.
   Values are parsed as YAML scalars, so ``true``, ``12`` and ``0.5`` get their natural types.

Secrets (the Altcraft token, the Kafka SASL password, the Schema Registry credentials) may be given
inline, through the environment as above, or as a ``*_file`` key naming a mounted file. They are held
as :class:`pydantic.SecretStr` and never appear in ``repr``, logs, problems or :func:`masked_dump`;
credentials inside URLs (``http://user:pw@host``, ``?token=...``) are masked there too.

Validation happens once, before anything runs, and reports every problem of a file in one pass:

- YAML syntax errors and duplicate keys, with file, line and key path (never the line's content);
- wrong types and ranges of every field, even when another field of the same section is wrong too: the
  checks that span fields are field validators reading the fields declared before them
  (``ValidationInfo.data``), so they run whenever the fields they need are valid, and the checks that
  span sections (:func:`_cross_problems`) run on whatever the raw data holds that is valid;
- files the settings name (secrets, CA bundles, Avro reader schemas) that are missing, unreadable or
  not what they should be.

Scalars are taken as a careful reader of the file means them: a number given for a text setting is
that text as written (``group_id: 0012`` is ``"0012"``), a numeric string for a number setting is
that number, and ``true``/``false`` are never numbers.

This is the only module that reads the environment.
"""

from __future__ import annotations

import json
import os
import re
import ssl
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import fastavro
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

ENV_PREFIX = "ALTCRAFT_CONNECTOR__"
PASSTHROUGH_MAPS = {("kafka", "common"), ("kafka", "consumer"), ("kafka", "producer")}
_SENSITIVE_WORDS = ("password", "secret", "token", "key.pem", "sasl.oauthbearer.config")
MASK = "**********"

# librdkafka properties the connector owns: letting a user override them would break its guarantees.
_RESERVED_CONSUMER_PROPS = frozenset(
    {"enable.auto.commit", "enable.auto.offset.store", "group.id", "bootstrap.servers"}
)
_RESERVED_PRODUCER_PROPS = frozenset({"enable.idempotence", "bootstrap.servers", "acks"})

LibrdkafkaValue = str | int | float | bool


class SettingsError(Exception):
    """Every problem found in the settings, one line each, with its key path."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid settings:\n" + "\n".join(f"  - {p}" for p in problems))


# --------------------------------------------------------------------------------------------
# Scalars as the reader of the file means them


class _WrittenInt(int):
    """An integer from YAML or the environment that remembers how it was written (``0012``, ``1_000``)."""

    text: str

    def __new__(cls, value: int, text: str) -> _WrittenInt:
        number = super().__new__(cls, value)
        number.text = text
        return number


class _WrittenFloat(float):
    """A float from YAML or the environment that remembers how it was written (``1.10``)."""

    text: str

    def __new__(cls, value: float, text: str) -> _WrittenFloat:
        number = super().__new__(cls, value)
        number.text = text
        return number


def _members(annotation: Any) -> list[Any]:
    """The types a field accepts, ``None``, ``Annotated`` and unions taken apart."""
    annotation = _bare(annotation)
    if get_origin(annotation) in (Union, types.UnionType):
        return [_bare(a) for a in get_args(annotation) if a is not type(None)]
    return [annotation]


def _bare(annotation: Any) -> Any:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _is_text(tp: Any) -> bool:
    if tp in (str, SecretStr):
        return True
    if get_origin(tp) is list:
        return _is_text(_bare(get_args(tp)[0]))
    if get_origin(tp) is dict:
        return _is_text(_bare(get_args(tp)[1]))
    return False


def _is_model(tp: Any) -> bool:
    if get_origin(tp) is list:
        return _is_model(_bare(get_args(tp)[0]))
    return get_origin(tp) is None and isinstance(tp, type) and issubclass(tp, BaseModel)


@cache
def _field_kind(model: type[BaseModel], name: str) -> Literal["number", "text", "model", "other"]:
    members = _members(model.model_fields[name].annotation)
    if all(m in (int, float) for m in members):
        return "number"
    if all(_is_text(m) for m in members):
        return "text"
    if any(_is_model(m) for m in members):
        return "model"
    return "other"


def _normalize(model: type[BaseModel], name: str, value: Any) -> Any:
    """The raw value of one field as its type means it: numbers as written for text, no booleans for numbers."""
    kind = _field_kind(model, name)
    if kind == "model":
        return value  # the section's own fields normalize themselves
    if kind == "number" and isinstance(value, bool):
        raise ValueError("expected a number, not a boolean")
    return _as_written(value) if kind == "text" else _plain(value)


def _as_written(value: Any) -> Any:
    if isinstance(value, _WrittenInt | _WrittenFloat):
        return value.text
    if isinstance(value, list):
        return [_as_written(v) for v in value]
    if isinstance(value, dict):
        return {_as_written(k): _as_written(v) for k, v in value.items()}
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, _WrittenInt):
        return int(value)
    if isinstance(value, _WrittenFloat):
        return float(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    return value


# --------------------------------------------------------------------------------------------
# Values checked on their own: topic names, files, secrets sent in HTTP headers

_TOPIC_CHARS = re.compile(r"[A-Za-z0-9._-]+")
_PATTERN_CHARS = frozenset("^$*+?()[]{}|\\")
_TOPIC_MAX = 249


def _topic_name(name: str) -> str:
    """A Kafka topic named exactly: the connector routes by exact name, and librdkafka would take a
    name starting with ``^`` for a regular expression subscription."""
    if _PATTERN_CHARS & set(name):
        raise ValueError("topic patterns are not supported: list every topic by its exact name")
    if not name or name in (".", ".."):
        raise ValueError("not a Kafka topic name")
    if len(name) > _TOPIC_MAX:
        raise ValueError(f"a Kafka topic name has at most {_TOPIC_MAX} characters, this one {len(name)}")
    if not _TOPIC_CHARS.fullmatch(name):
        raise ValueError("a Kafka topic name holds only the letters a-z and A-Z, digits, '.', '_' and '-'")
    return name


TopicName = Annotated[str, AfterValidator(_topic_name)]


def _file_text(path: Path) -> str:
    """The text of a file the settings name; ValueError saying why it cannot be used."""
    try:
        return path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise ValueError(f"cannot read the file: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"the file is not UTF-8 text (byte {exc.start})") from None


def _ca_bundle(path: Path | None) -> Path | None:
    """A PEM bundle TLS can load: checked here, so that a wrong mount fails check-config, not the first request."""
    if path is None:
        return None
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=str(path))
    except ssl.SSLError:
        raise ValueError("the file holds no PEM certificate") from None
    except OSError as exc:
        raise ValueError(f"cannot read the file: {exc.strerror or exc}") from None
    return path


def _avro_schema_file(path: Path) -> None:
    text = _file_text(path)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"the file is not JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    try:
        fastavro.parse_schema(doc)
    except Exception as exc:  # fastavro raises several types for invalid schemas
        raise ValueError(f"the file is not a valid Avro schema: {type(exc).__name__}: {exc}") from None


_BOM = "\ufeff"


def _header_safe_text(secret: str) -> str:
    """A secret that goes into an HTTP header, as a careful user meant it.

    A leading byte order mark and surrounding whitespace (what editors and ``echo`` leave in files) are
    removed; any other character outside printable ASCII is refused, because no HTTP header can carry
    it. The error names the position, never the character or the secret.
    """
    cleaned = secret.removeprefix(_BOM).strip()
    for i, char in enumerate(cleaned, start=1):
        if not " " <= char <= "~":
            raise ValueError(f"character {i} is not printable ASCII, which an HTTP header cannot carry")
    return cleaned


def _header_secret(value: SecretStr | None) -> SecretStr | None:
    if value is None:
        return None
    cleaned = _header_safe_text(value.get_secret_value())
    if not cleaned:
        raise ValueError("is empty")
    return SecretStr(cleaned)


# --------------------------------------------------------------------------------------------
# The settings


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, coerce_numbers_to_str=True)

    @field_validator("*", mode="before")
    @classmethod
    def _scalars_as_meant(cls, value: Any, info: ValidationInfo) -> Any:
        assert info.field_name is not None
        return _normalize(cls, info.field_name, value)

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            yield name, _mask(value, name or "")


class KafkaSettings(_Frozen):
    # Comma-separated host:port list of the cluster the events are read from.
    bootstrap_servers: str = "127.0.0.1:9092"
    # Consumer group: every replica of the connector joins it; scale up to the partition count.
    group_id: str = Field(default="altcraft-connector", min_length=1)
    # librdkafka properties for both the consumer and the producer (security.protocol, sasl.*, ssl.*).
    common: dict[str, LibrdkafkaValue] = Field(default_factory=dict)
    # librdkafka properties for the consumer only.
    consumer: dict[str, LibrdkafkaValue] = Field(default_factory=dict)
    # librdkafka properties for the dead-letter producer only.
    producer: dict[str, LibrdkafkaValue] = Field(default_factory=dict)
    # SASL password, inline or through the environment; becomes librdkafka's sasl.password.
    sasl_password: SecretStr | None = None
    # File holding the SASL password (a mounted Secret); read at start-up.
    sasl_password_file: Path | None = None
    # Most records taken from the client per consume() call.
    consume_batch_size: int = Field(default=10_000, ge=1, le=100_000)
    # How long one consume() call may wait for records, in seconds.
    consume_timeout_s: float = Field(default=0.1, gt=0, le=10)

    @field_validator("common", "consumer", "producer")
    @classmethod
    def _librdkafka_props(cls, v: dict[str, LibrdkafkaValue], info: ValidationInfo) -> dict[str, LibrdkafkaValue]:
        problems = []
        bad = [k for k in v if not k or k != k.strip() or " " in k]
        if bad:
            problems.append(f"not librdkafka property names: {bad}")
        reserved = _RESERVED_PRODUCER_PROPS if info.field_name == "producer" else _RESERVED_CONSUMER_PROPS
        clash = sorted(set(v) & reserved)
        if clash:
            problems.append(f"these librdkafka properties are set by the connector itself: {clash}")
        if problems:
            raise ValueError("; ".join(problems))
        return v


class RetrySettings(_Frozen):
    # First backoff after a retryable failure, in seconds; doubles each attempt, with full jitter.
    initial_backoff_s: float = Field(default=0.5, gt=0, le=60)
    # Longest backoff between two attempts, in seconds.
    max_backoff_s: float = Field(default=30.0, gt=0, le=3600)
    # Longest Retry-After the connector honours, in seconds; longer ones are capped.
    retry_after_cap_s: float = Field(default=120.0, gt=0, le=3600)
    # Attempts before a batch counts as stuck; it keeps being retried (paused), never dead-lettered.
    max_attempts: int = Field(default=8, ge=1, le=1000)


class TaskSettings(_Frozen):
    # First interval between tasks/status polls, in seconds (grows up to 5 s).
    poll_interval_s: float = Field(default=0.2, gt=0, le=60)
    # After this long without "completed" the batch is resent with the same Request-ID.
    timeout_s: float = Field(default=300.0, gt=0, le=86_400)


class AltcraftSettings(_Frozen):
    # Base URL of the Altcraft API, without /api/v1.1.
    base_url: str = "http://127.0.0.1:8088"
    # API token, inline or through the environment (prefer token_file in production).
    token: SecretStr | None = None
    # File holding the API token (a mounted Secret); read at start-up.
    token_file: Path | None = None
    # Timeout of one HTTP request, in seconds.
    request_timeout_s: float = Field(default=30.0, gt=0, le=600)
    # Requests in flight at once (never two for the same partition).
    max_in_flight: int = Field(default=4, ge=1, le=64)
    # The platform's request body limit, in bytes (10 MB on the cloud; configurable on premise).
    max_body_bytes: int = Field(default=10_000_000, ge=10_000, le=1_000_000_000)
    # Retries of transient failures.
    retry: RetrySettings = Field(default_factory=RetrySettings)
    # Asynchronous task mode (routes with mode: engage-task).
    task: TaskSettings = Field(default_factory=TaskSettings)
    # Optional ceiling on requests per second (all routes together); null: none.
    max_requests_per_s: float | None = Field(default=None, gt=0, le=100_000)
    # Optional ceiling on profiles per second (all routes together); null: none.
    max_profiles_per_s: float | None = Field(default=None, gt=0, le=10_000_000)
    # PEM file of a private CA trusted in addition to the system's (an https base_url behind it).
    ca_file: Path | None = None
    # Text mixed into every Request-ID. Changing it makes every batch a new request for Altcraft's
    # deduplication: the way out of a halt that cannot clear by itself (and of a deliberate re-run).
    request_id_epoch: str = Field(default="", max_length=64, pattern=r"^[A-Za-z0-9_.:-]*$")

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/")

    @field_validator("token")
    @classmethod
    def _one_usable_token(cls, v: SecretStr | None) -> SecretStr | None:
        if v is None:
            raise ValueError(
                "an API token is required: set altcraft.token_file, or ALTCRAFT_CONNECTOR__ALTCRAFT__TOKEN"
            )
        return _header_secret(v)

    @field_validator("ca_file")
    @classmethod
    def _ca_bundle(cls, v: Path | None) -> Path | None:
        return _ca_bundle(v)


class BatchingSettings(_Frozen):
    # Most profiles in one request (Altcraft recommends at most 10,000).
    max_items: int = Field(default=10_000, ge=1, le=10_000)
    # Most bytes in one request body as sent; must not exceed altcraft.max_body_bytes.
    max_bytes: int = Field(default=9_000_000, ge=1_000, le=1_000_000_000)
    # Longest time a batch stays open after its first record, in seconds (each partition uses a fixed
    # fraction of it from 80% to 100%: see BatchPolicy.linger_of).
    linger_s: float = Field(default=1.0, ge=0, le=300)
    # Estimated memory of the records held in batches (open, waiting, in flight) above which every
    # partition holding some is paused; bounds the process's memory whatever the backlog.
    max_buffered_bytes: int = Field(default=96_000_000, ge=1_000_000, le=10_000_000_000)


class Format(StrEnum):
    JSON = "json"
    DEBEZIUM_JSON = "debezium-json"
    AVRO = "avro"
    DEBEZIUM_AVRO = "debezium-avro"


AVRO_FORMATS = frozenset({Format.AVRO, Format.DEBEZIUM_AVRO})


class Mode(StrEnum):
    # workflows/import_and_start_batch: import and engage, per-item results in the answer.
    ENGAGE = "engage"
    # workflows/import_and_start_batch_task + tasks/status.
    ENGAGE_TASK = "engage-task"
    # profiles/import_batch: import only, no scenario.
    IMPORT = "import"


class OpAction(StrEnum):
    ENGAGE = "engage"
    SKIP = "skip"
    DEAD_LETTER = "dead-letter"


Matching = Literal[
    "email", "email_profile", "email_sub", "phone", "phone_sub", "profile_id",
    "custom", "custom_sub", "email_phone", "email_phone_sub",
]  # fmt: skip


class OpsSettings(_Frozen):
    # Create (Debezium op c).
    c: OpAction = OpAction.ENGAGE
    # Snapshot read (Debezium op r).
    r: OpAction = OpAction.ENGAGE
    # Update (Debezium op u).
    u: OpAction = OpAction.ENGAGE
    # Delete (Debezium op d, or __deleted=true in flattened records).
    d: OpAction = OpAction.SKIP
    # A record with a null value (Kafka tombstone).
    tombstone: OpAction = OpAction.SKIP

    @field_validator("tombstone")
    @classmethod
    def _tombstone_cannot_engage(cls, v: OpAction) -> OpAction:
        if v is OpAction.ENGAGE:
            raise ValueError("a tombstone carries no profile: use skip or dead-letter")
        return v


class RouteSettings(_Frozen):
    # Name used in metrics, logs and Request-IDs; keep it stable.
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    # Kafka topics whose events follow this route, by exact name (no patterns).
    topics: list[TopicName] = Field(min_length=1)
    # How record values are encoded.
    format: Format = Format.DEBEZIUM_JSON
    # Which Altcraft endpoint receives the batches.
    mode: Mode = Mode.ENGAGE
    # Scenario (workflow) the profiles are engaged in; required unless mode is import.
    workflow_id: int | None = Field(default=None, ge=1)
    # Database for mode import.
    db_id: int | None = Field(default=None, ge=1)
    # Profile matching mode.
    matching: Matching = "email"
    # Custom field used for matching custom / custom_sub.
    field_name: str | None = None
    # Optional resource narrowing email/phone matching.
    resource_id: int | None = Field(default=None, ge=1)
    # Altcraft field -> dotted path in the event's row (e.g. {"_fname": "first_name"}).
    fields: dict[str, str] = Field(default_factory=dict)
    # Altcraft field -> constant value set on every profile.
    constants: dict[str, Any] = Field(default_factory=dict)
    # What happens to row columns not named in fields: pass them through unchanged, or drop them.
    unmapped: Literal["pass", "drop"] = "drop"
    # Template variable -> dotted path; sent per item as content (mode engage only).
    content: dict[str, str] = Field(default_factory=dict)
    # Key -> dotted path; sent per item as custom_data (returned in Altcraft's hooks).
    custom_data: dict[str, str] = Field(default_factory=dict)
    # Request-level switches passed to Altcraft.
    skip_triggers: bool = False
    skip_invalid_subscriptions: bool = False
    detect_geo: bool = False
    # What each change operation does.
    ops: OpsSettings = Field(default_factory=OpsSettings)
    # Avro routes: an .avsc file the records are read as (Avro schema resolution from each writer
    # schema), so that older and newer writers read alike; absent: as written.
    reader_schema: Path | None = None

    # The checks spanning fields sit on the later field and read the earlier ones from info.data, where
    # a field is only when it was valid: each runs whenever what it needs is known.

    @field_validator("workflow_id")
    @classmethod
    def _engage_needs_workflow(cls, v: int | None, info: ValidationInfo) -> int | None:
        mode = info.data.get("mode")
        if v is None and mode is not None and mode is not Mode.IMPORT:
            raise ValueError(f"mode {mode.value} needs workflow_id")
        return v

    @field_validator("db_id")
    @classmethod
    def _import_needs_db(cls, v: int | None, info: ValidationInfo) -> int | None:
        if v is None and info.data.get("mode") is Mode.IMPORT:
            raise ValueError("mode import needs db_id")
        return v

    @field_validator("field_name")
    @classmethod
    def _custom_matching_needs_field(cls, v: str | None, info: ValidationInfo) -> str | None:
        matching = info.data.get("matching")
        if not v and matching in ("custom", "custom_sub"):
            raise ValueError(f"matching {matching} needs field_name")
        return v

    @field_validator("reader_schema")
    @classmethod
    def _avro_reader_schema(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        if v is None:
            return v
        fmt = info.data.get("format")
        if fmt is not None and fmt not in AVRO_FORMATS:
            raise ValueError(f"reader_schema applies to Avro formats, not {fmt.value}")
        _avro_schema_file(v)
        return v


class DeadLetterSettings(_Frozen):
    # Topic receiving records that could not be decoded, mapped or were rejected by Altcraft.
    topic: TopicName = "altcraft-connector-dlq"
    # Longest wait for a dead letter's delivery report before the partition stalls and retries.
    delivery_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    # Breaker: among the last breaker_window records with a verdict, more than breaker_max_share
    # dead-lettered halts the connector (a misconfiguration, not bad data).
    breaker_window: int = Field(default=1_000, ge=10, le=1_000_000)
    breaker_max_share: float = Field(default=0.5, gt=0, le=1)
    # Breaker: this many dead letters in a row halt the connector too; 0 turns this check off.
    breaker_max_consecutive: int = Field(default=1_000, ge=0, le=10_000_000)


class ObservabilitySettings(_Frozen):
    # Address of the /metrics, /healthz and /readyz server.
    host: str = "0.0.0.0"
    # Port of that server; 0 picks a free one (tests).
    port: int = Field(default=9108, ge=0, le=65_535)
    # Log line format: text for people, json for log pipelines.
    log_format: Literal["text", "json"] = "text"
    # Log level.
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class ShutdownSettings(_Frozen):
    # On SIGTERM, how long open batches may take to finish before the connector leaves anyway.
    drain_timeout_s: float = Field(default=25.0, gt=0, le=3600)


class SchemaRegistrySettings(_Frozen):
    # Base URL of a Confluent-compatible Schema Registry (Avro routes only).
    url: str | None = None
    # Basic auth user name; the password comes from basic_auth_password(_file).
    basic_auth_user: str | None = None
    basic_auth_password: SecretStr | None = None
    basic_auth_password_file: Path | None = None
    # Bearer token instead of basic auth.
    bearer_token: SecretStr | None = None
    bearer_token_file: Path | None = None
    # CA bundle for a registry behind a private CA.
    ca_file: Path | None = None
    # Writer schemas kept in memory, by id.
    cache_size: int = Field(default=1_000, ge=1, le=1_000_000)
    # Timeout of one registry request, in seconds.
    request_timeout_s: float = Field(default=10.0, gt=0, le=600)

    @field_validator("basic_auth_password", "bearer_token")
    @classmethod
    def _header_safe(cls, v: SecretStr | None) -> SecretStr | None:
        return _header_secret(v)

    @field_validator("basic_auth_password")
    @classmethod
    def _user_and_password(cls, v: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if "basic_auth_user" in info.data and (info.data["basic_auth_user"] is None) != (v is None):
            raise ValueError("basic_auth_user and basic_auth_password go together")
        return v

    @field_validator("bearer_token")
    @classmethod
    def _one_auth(cls, v: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if v is not None and (info.data.get("basic_auth_user") or info.data.get("basic_auth_password") is not None):
            raise ValueError("give basic auth or a bearer token, not both")
        return v

    @field_validator("ca_file")
    @classmethod
    def _ca_bundle(cls, v: Path | None) -> Path | None:
        return _ca_bundle(v)


_CROSS_CHECKS = "settings_cross_checks"


class Settings(_Frozen):
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    altcraft: AltcraftSettings
    batching: BatchingSettings = Field(default_factory=BatchingSettings)
    routes: Annotated[list[RouteSettings], Field(min_length=1)]
    dead_letter: DeadLetterSettings = Field(default_factory=DeadLetterSettings)
    observability: ObservabilitySettings = Field(default_factory=ObservabilitySettings)
    shutdown: ShutdownSettings = Field(default_factory=ShutdownSettings)
    schema_registry: SchemaRegistrySettings = Field(default_factory=SchemaRegistrySettings)

    @model_validator(mode="after")
    def _cross_checks(self) -> Settings:
        # load_settings reports these one per line, also when other fields failed (see _facts_of_raw).
        problems = _cross_problems(_facts_of(self))
        if problems:
            raise PydanticCustomError(_CROSS_CHECKS, "{problems}", {"problems": "; ".join(problems)})
        return self

    @property
    def topics(self) -> list[str]:
        return [t for r in self.routes for t in r.topics]

    def route_for(self, topic: str) -> RouteSettings:
        for r in self.routes:
            if topic in r.topics:
                return r
        raise KeyError(topic)

    def token(self) -> str:
        assert self.altcraft.token is not None  # required by AltcraftSettings
        return self.altcraft.token.get_secret_value()


# --------------------------------------------------------------------------------------------
# Checks spanning sections, on whatever is known


@dataclass(frozen=True)
class _RouteFacts:
    index: int
    name: str | None
    topics: tuple[str, ...]
    avro: bool


@dataclass(frozen=True)
class _Facts:
    """What the checks spanning sections need; None (or empty) where the value is not valid."""

    max_bytes: int | None
    max_body_bytes: int | None
    routes: tuple[_RouteFacts, ...]
    dead_letter_topic: str | None
    registry_url_missing: bool


def _cross_problems(facts: _Facts) -> list[str]:
    problems = []
    if facts.max_bytes is not None and facts.max_body_bytes is not None and facts.max_bytes > facts.max_body_bytes:
        problems.append(
            f"batching.max_bytes: must not exceed altcraft.max_body_bytes, {facts.max_body_bytes} "
            f"(got {facts.max_bytes})"
        )
    names: dict[str, int] = {}
    readers: dict[str, int] = {}
    for route in facts.routes:
        if route.name is not None:
            if route.name in names:
                problems.append(f"routes.{route.index}.name: {route.name!r} is the name of routes.{names[route.name]}")
            names.setdefault(route.name, route.index)
        for topic in route.topics:
            if topic in readers and readers[topic] != route.index:
                problems.append(
                    f"routes.{route.index}.topics: {topic!r} is read by routes.{readers[topic]} already; "
                    "a topic follows one route"
                )
            readers.setdefault(topic, route.index)
            if topic == facts.dead_letter_topic:
                problems.append(f"routes.{route.index}.topics: {topic!r} is the dead-letter topic (dead_letter.topic)")
    avro = [f"routes.{r.index}" for r in facts.routes if r.avro]
    if avro and facts.registry_url_missing:
        problems.append(f"schema_registry.url: required by routes with an Avro format ({', '.join(avro)})")
    return problems


def _facts_of(s: Settings) -> _Facts:
    return _Facts(
        max_bytes=s.batching.max_bytes,
        max_body_bytes=s.altcraft.max_body_bytes,
        routes=tuple(_RouteFacts(i, r.name, tuple(r.topics), r.format in AVRO_FORMATS) for i, r in enumerate(s.routes)),
        dead_letter_topic=s.dead_letter.topic,
        registry_url_missing=not s.schema_registry.url,
    )


_UNKNOWN: Any = object()


@cache
def _adapter(model: type[BaseModel], name: str) -> TypeAdapter[Any]:
    field = model.model_fields[name]
    annotated: Any = Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
    return TypeAdapter(annotated, config=ConfigDict(coerce_numbers_to_str=True))


def _known(model: type[BaseModel], section: Any, name: str) -> Any:
    """One field of a raw section when it is valid on its own (its default when absent), else _UNKNOWN."""
    field = model.model_fields[name]
    if section is None:
        section = {}
    if not isinstance(section, dict):
        return _UNKNOWN
    if name not in section:
        return _UNKNOWN if field.is_required() else field.get_default(call_default_factory=True)
    try:
        return _adapter(model, name).validate_python(_normalize(model, name, section[name]))
    except ValueError:  # pydantic's ValidationError included
        return _UNKNOWN


def _facts_of_raw(raw: dict[str, Any]) -> _Facts:
    def known_int(model: type[BaseModel], section: str, name: str) -> int | None:
        value = _known(model, raw.get(section), name)
        return value if isinstance(value, int) else None

    routes = []
    raw_routes = raw.get("routes")
    for i, r in enumerate(raw_routes if isinstance(raw_routes, list) else []):
        name, topics, fmt = (_known(RouteSettings, r, key) for key in ("name", "topics", "format"))
        routes.append(
            _RouteFacts(
                i,
                name if isinstance(name, str) else None,
                tuple(topics) if isinstance(topics, list) else (),
                fmt in AVRO_FORMATS,
            )
        )
    dead_letter_topic = _known(DeadLetterSettings, raw.get("dead_letter"), "topic")
    url = _known(SchemaRegistrySettings, raw.get("schema_registry"), "url")
    return _Facts(
        max_bytes=known_int(BatchingSettings, "batching", "max_bytes"),
        max_body_bytes=known_int(AltcraftSettings, "altcraft", "max_body_bytes"),
        routes=tuple(routes),
        dead_letter_topic=dead_letter_topic if isinstance(dead_letter_topic, str) else None,
        registry_url_missing=url is not _UNKNOWN and not url,
    )


# --------------------------------------------------------------------------------------------
# Loading


def load_settings(path: str | os.PathLike[str] | None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read the YAML file, apply environment overrides, read secret files, validate.

    Raises :class:`SettingsError` listing every problem found, in one pass.
    """
    environ = os.environ if environ is None else environ
    problems: list[str] = []
    raw: dict[str, Any] = {}
    if path is not None:
        loaded, problems = _read_yaml_file(Path(path))
        if loaded is _UNKNOWN:
            raise SettingsError(problems)  # nothing more can be said without the file's content
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise SettingsError([*problems, f"{path}: the top level must be a mapping of sections"])
        raw = loaded
    problems += _apply_env(raw, environ)
    problems += _read_secret_files(raw)
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        problems += [_describe(e) for e in exc.errors() if e["type"] != _CROSS_CHECKS]
        problems += _cross_problems(_facts_of_raw(raw))
        raise SettingsError(problems) from None
    if problems:
        raise SettingsError(problems)
    return settings


def _describe(err: Any) -> str:
    loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
    msg = str(err["msg"])
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    elif msg.startswith("Value error, "):
        msg = msg.removeprefix("Value error, ")
    value = err.get("input")
    shown = ""
    if err["type"] not in ("missing", "extra_forbidden") and not isinstance(value, dict | list) and value is not None:
        shown = " (got a hidden value)" if _looks_secret(loc) else f" (got {_mask(_plain(value))!r})"
    return f"{loc}: {msg}{shown}"


def _looks_secret(key: str) -> bool:
    lower = key.lower()
    return any(w in lower for w in _SENSITIVE_WORDS)


# YAML


class _Loader(yaml.SafeLoader):
    """Safe YAML whose numbers remember how they were written."""


def _construct_int(loader: yaml.SafeLoader, node: yaml.Node) -> int:
    assert isinstance(node, yaml.ScalarNode)
    return _WrittenInt(loader.construct_yaml_int(node), str(node.value))


def _construct_float(loader: yaml.SafeLoader, node: yaml.Node) -> float:
    assert isinstance(node, yaml.ScalarNode)
    return _WrittenFloat(loader.construct_yaml_float(node), str(node.value))


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_Loader.add_constructor("tag:yaml.org,2002:float", _construct_float)


def _read_yaml_file(path: Path) -> tuple[Any, list[str]]:
    """The file's data (_UNKNOWN when it cannot be had) and its problems: syntax, duplicate keys.

    Problems give the file, line, column and key path, never the line itself: it may hold a secret.
    """
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        return _UNKNOWN, [f"{path}: cannot read the file: {exc.strerror or exc}"]
    except UnicodeDecodeError as exc:
        return _UNKNOWN, [f"{path}: not UTF-8 text (byte {exc.start})"]
    try:
        loader = _Loader(text)  # checks every character of the text at once
    except yaml.reader.ReaderError as exc:
        return _UNKNOWN, [_reader_problem(exc, text, path)]
    try:
        node = loader.get_single_node()
        if node is None:
            return None, []
        problems = _duplicate_keys(node, path)
        return loader.construct_document(node), problems
    except yaml.MarkedYAMLError as exc:
        return _UNKNOWN, [_syntax_problem(exc, text, path)]
    finally:
        loader.dispose()


def _syntax_problem(exc: yaml.MarkedYAMLError, text: str, path: Path) -> str:
    mark = exc.problem_mark or exc.context_mark
    what = exc.problem or exc.context or "cannot be parsed"
    if exc.context and exc.problem:
        context_line = f" on line {exc.context_mark.line + 1}" if exc.context_mark is not None else ""
        what = f"{what}, {exc.context}{context_line}"
    if mark is None:
        return f"{path}: not valid YAML: {what}"
    return _located(_key_path_at(text, mark.index, mark.line), f"not valid YAML: {what}", path, mark.line, mark.column)


def _reader_problem(exc: yaml.reader.ReaderError, text: str, path: Path) -> str:
    line = text.count("\n", 0, exc.position)
    column = exc.position - (text.rfind("\n", 0, exc.position) + 1)
    what = f"not valid YAML: character #x{exc.character:04x} is not allowed"
    return _located(_key_path_at(text[: exc.position], exc.position, line), what, path, line, column)


def _located(key_path: str, what: str, path: Path, line: int, column: int) -> str:
    where = f"line {line + 1}, column {column + 1}"
    return f"{key_path}: {what} (at {path} {where})" if key_path else f"{path}: {what} (at {where})"


def _duplicate_keys(node: yaml.Node, path: Path) -> list[str]:
    problems: list[str] = []
    seen: set[int] = set()

    def walk(node: yaml.Node, where: tuple[str, ...]) -> None:
        if id(node) in seen:  # an alias: its keys were checked where the anchor is
            return
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[tuple[str, str], str] = {}
            for key, value in node.value:
                if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                    continue
                here = (*where, str(key.value))
                mark = key.start_mark
                at = f"line {mark.line + 1}, column {mark.column + 1}"
                ident = (key.tag, str(key.value))
                if ident in first:
                    problems.append(f"{'.'.join(here)}: duplicate key (at {path} {at}; first at {first[ident]})")
                first.setdefault(ident, at)
                walk(value, here)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, (*where, str(i)))

    walk(node, ())
    return problems


@dataclass
class _Frame:
    mapping: bool
    key: str | None = None  # mapping: the key whose value is being read
    index: int = 0  # sequence: the item being read
    last_key: str | None = None  # mapping: the key whose value was read last, and its value's last line
    last_line: int = -1


def _key_path_at(text: str, index: int, line: int) -> str:
    """The key path of what starts at ``index`` (on ``line``) of ``text``, as far as the text parses."""
    frames: list[_Frame] = []

    def node_done(end_line: int) -> None:
        if frames and frames[-1].mapping:
            top = frames[-1]
            if top.key is None:
                top.key = "?"  # a complex key, left unnamed
            else:
                top.last_key, top.last_line, top.key = top.key, end_line, None
        elif frames:
            frames[-1].index += 1

    loader = yaml.SafeLoader(text)
    get_event: Callable[[], yaml.Event] = loader.get_event  # untyped in the stubs
    try:
        while loader.check_event():
            event = get_event()
            if event.start_mark is not None and event.start_mark.index >= index:
                break
            end_line = event.end_mark.line if event.end_mark is not None else -1
            if isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
                frames.pop()
                node_done(end_line)
            elif isinstance(event, yaml.ScalarEvent) and frames and frames[-1].mapping and frames[-1].key is None:
                frames[-1].key = str(event.value)
            elif isinstance(event, yaml.ScalarEvent | yaml.AliasEvent):
                node_done(end_line)
            elif isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
                frames.append(_Frame(mapping=isinstance(event, yaml.MappingStartEvent)))
    except yaml.YAMLError:
        pass  # the error being described: the path so far is the answer
    finally:
        loader.dispose()
    # A problem on the line of the value just read belongs to that value (``token: ...: oops``).
    if frames and frames[-1].mapping and frames[-1].key is None and frames[-1].last_line == line:
        frames[-1].key = frames[-1].last_key
    parts = [f.key if f.mapping else str(f.index) for f in frames]
    return ".".join(p for p in parts if p is not None)


# Environment and secret files


def _apply_env(raw: dict[str, Any], environ: Mapping[str, str]) -> list[str]:
    problems = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        if not all(parts):
            problems.append(f"{name}: empty path segment")
            continue
        if len(parts) == 3 and (parts[0], parts[1]) in PASSTHROUGH_MAPS:
            parts[2] = parts[2].replace("_", ".")
        value: Any = environ[name]
        if _looks_secret(parts[-1]):
            pass  # secrets stay verbatim strings
        elif value:
            try:
                value = yaml.load(value, Loader=_Loader)  # a SafeLoader
            except yaml.YAMLError:
                value = environ[name]
        err = _set_path(raw, parts, value)
        if err:
            problems.append(f"{name}: {err}")
    return problems


def _set_path(raw: dict[str, Any], parts: list[str], value: Any) -> str | None:
    node: Any = raw
    for i, part in enumerate(parts[:-1]):
        nxt = parts[i + 1]
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                return f"{'.'.join(parts[:i])} has no item {part}"
            child = node[int(part)]
            if not isinstance(child, dict | list):
                return f"{'.'.join(parts[: i + 1])} is not a section"
            node = child
            continue
        child = node.get(part)
        if child is None:
            if nxt.isdigit():
                return f"{'.'.join(parts[: i + 1])} has no item {nxt}"
            child = {}
            node[part] = child
        if not isinstance(child, dict | list):
            return f"{'.'.join(parts[: i + 1])} is not a section"
        node = child
    last = parts[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            return f"{'.'.join(parts[:-1])} has no item {last}"
        node[int(last)] = value
    else:
        node[last] = value
    return None


# section, file key, secret key, whether the secret goes into an HTTP header
_SECRET_FILES = [
    (("altcraft",), "token_file", "token", True),
    (("kafka",), "sasl_password_file", "sasl_password", False),
    (("schema_registry",), "basic_auth_password_file", "basic_auth_password", True),
    (("schema_registry",), "bearer_token_file", "bearer_token", True),
]
# Put in place of a secret whose file failed, so that no second problem ("required") repeats the first.
_FAILED_SECRET = "unreadable"


def _read_secret_files(raw: dict[str, Any]) -> list[str]:
    """Replace ``x_file`` keys by the secret they point at, so the rest of the code sees one source.

    Problems name the ``*_file`` key and the file, never the secret.
    """
    problems = []
    for section_path, file_key, secret_key, in_header in _SECRET_FILES:
        section: Any = raw
        for p in section_path:
            section = section.get(p) if isinstance(section, dict) else None
        if not isinstance(section, dict) or not isinstance(section.get(file_key), str) or not section[file_key]:
            continue  # absent; a wrong type is the model's to report
        where = ".".join((*section_path, file_key))
        if section.get(secret_key) not in (None, ""):
            problems.append(f"{where}: give {secret_key} or {file_key}, not both")
            continue
        file = section[file_key]
        try:
            text = _file_text(Path(file))
        except ValueError as exc:
            problems.append(f"{where}: {exc} (got {file!r})")
            section[secret_key] = _FAILED_SECRET
            continue
        try:
            secret = _header_safe_text(text) if in_header else text.strip()
        except ValueError as exc:
            problems.append(f"{where}: in the file, {exc} (got {file!r})")
            section[secret_key] = _FAILED_SECRET
            continue
        if not secret:
            problems.append(f"{where}: the file is empty (got {file!r})")
            section[secret_key] = _FAILED_SECRET
            continue
        section[secret_key] = secret
    return problems


# --------------------------------------------------------------------------------------------
# Printing


def masked_dump(settings: Settings) -> dict[str, Any]:
    """The effective settings as plain data, every secret and every credential inside a URL masked."""
    masked: dict[str, Any] = _mask(settings.model_dump(mode="json"))
    return masked


def _mask(node: Any, key: str = "") -> Any:
    if isinstance(node, dict):
        return {k: _mask(v, str(k)) for k, v in node.items()}
    if isinstance(node, list):
        return [_mask(v, key) for v in node]
    if node is not None and _looks_secret(key) and not key.endswith("_file"):
        return MASK
    if isinstance(node, str):
        return mask_url_credentials(node)
    return node


_URL_START = re.compile(r"^\s*[A-Za-z][A-Za-z0-9+.-]*://")
_URL_INSIDE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")
_QUERY_PART = re.compile(r"([?#&;])([^?#&;]*)")


def mask_url_credentials(text: str) -> str:
    """``text`` with the credentials of every URL in it masked: the user info and every query value.

    A value that starts as a URL is one URL to its end (a password may hold spaces); elsewhere a URL
    ends at whitespace. The user info runs to the last ``@``, since a password may hold ``/`` or ``@``
    unescaped; when that ``@`` may be inside the query, all after the scheme is masked. Masking a little
    too much is better than showing a piece of a secret.
    """
    if _URL_START.match(text):
        return _mask_url(text)
    return _URL_INSIDE.sub(lambda m: _mask_url(m.group(0)), text)


def _mask_url(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    userinfo = ""
    at = rest.rfind("@")
    if at >= 0:
        if set("?#") & set(rest[:at]):
            return f"{scheme}{sep}{MASK}"  # an "@" in the query: no telling where a value ends, mask it all
        user, colon, _ = rest[:at].partition(":")
        userinfo = f"{user}:{MASK}@" if colon and not set("/@") & set(user) else f"{MASK}@"
        rest = rest[at + 1 :]
    cut = min((i for i in (rest.find("?"), rest.find("#")) if i >= 0), default=-1)
    if cut >= 0:
        rest = rest[:cut] + _QUERY_PART.sub(lambda m: m.group(1) + _mask_param(m.group(2)), rest[cut:])
    return f"{scheme}{sep}{userinfo}{rest}"


def _mask_param(param: str) -> str:
    name, eq, _ = param.partition("=")
    if eq:
        return f"{name}={MASK}"
    return MASK if param else ""


def kafka_common_props(settings: Settings) -> dict[str, LibrdkafkaValue]:
    """Properties shared by the consumer and the producer, with the SASL password resolved."""
    k = settings.kafka
    props: dict[str, LibrdkafkaValue] = {"bootstrap.servers": k.bootstrap_servers, **k.common}
    if k.sasl_password is not None:
        props["sasl.password"] = k.sasl_password.get_secret_value()
    return props
