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
as :class:`pydantic.SecretStr` and never appear in ``repr``, logs or :func:`masked_dump`.

This is the only module that reads the environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

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


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


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

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            if name in ("common", "consumer", "producer") and isinstance(value, dict):
                value = {k: MASK if _looks_secret(k) else v for k, v in value.items()}
            yield name, value

    @field_validator("common", "consumer", "producer")
    @classmethod
    def _props_look_like_librdkafka(cls, v: dict[str, LibrdkafkaValue]) -> dict[str, LibrdkafkaValue]:
        bad = [k for k in v if not k or k != k.strip() or " " in k]
        if bad:
            raise ValueError(f"not librdkafka property names: {bad}")
        return v

    @model_validator(mode="after")
    def _no_reserved_props(self) -> KafkaSettings:
        clash = sorted((set(self.common) | set(self.consumer)) & _RESERVED_CONSUMER_PROPS)
        clash += sorted(set(self.producer) & _RESERVED_PRODUCER_PROPS)
        if clash:
            raise ValueError(f"these librdkafka properties are set by the connector itself: {clash}")
        return self


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

    @model_validator(mode="after")
    def _one_token(self) -> AltcraftSettings:
        if self.token is None:
            raise ValueError(
                "an API token is required: set altcraft.token_file, or ALTCRAFT_CONNECTOR__ALTCRAFT__TOKEN"
            )
        return self


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
    # Kafka topics whose events follow this route.
    topics: list[str] = Field(min_length=1)
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

    @model_validator(mode="after")
    def _mode_needs_ids(self) -> RouteSettings:
        problems = []
        if self.reader_schema is not None and self.format not in (Format.AVRO, Format.DEBEZIUM_AVRO):
            problems.append(f"reader_schema applies to Avro formats, not {self.format.value}")
        if self.mode is Mode.IMPORT and self.db_id is None:
            problems.append("mode import needs db_id")
        if self.mode is not Mode.IMPORT and self.workflow_id is None:
            problems.append(f"mode {self.mode.value} needs workflow_id")
        if self.matching in ("custom", "custom_sub") and not self.field_name:
            problems.append(f"matching {self.matching} needs field_name")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class DeadLetterSettings(_Frozen):
    # Topic receiving records that could not be decoded, mapped or were rejected by Altcraft.
    topic: str = Field(default="altcraft-connector-dlq", min_length=1, max_length=249)
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

    @model_validator(mode="after")
    def _one_auth(self) -> SchemaRegistrySettings:
        if self.bearer_token is not None and (self.basic_auth_user or self.basic_auth_password is not None):
            raise ValueError("give basic auth or a bearer token, not both")
        if (self.basic_auth_user is None) != (self.basic_auth_password is None):
            raise ValueError("basic_auth_user and basic_auth_password go together")
        return self


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
        problems = []
        if self.batching.max_bytes > self.altcraft.max_body_bytes:
            problems.append(
                f"batching.max_bytes ({self.batching.max_bytes}) exceeds altcraft.max_body_bytes "
                f"({self.altcraft.max_body_bytes})"
            )
        seen: dict[str, str] = {}
        names: set[str] = set()
        for route in self.routes:
            if route.name in names:
                problems.append(f"routes: name {route.name!r} is used twice")
            names.add(route.name)
            for topic in route.topics:
                if topic in seen:
                    problems.append(f"routes: topic {topic!r} is in routes {seen[topic]!r} and {route.name!r}")
                seen[topic] = route.name
            if self.dead_letter.topic in route.topics:
                problems.append(f"routes: route {route.name!r} reads the dead-letter topic")
        needs_registry = any(r.format in (Format.AVRO, Format.DEBEZIUM_AVRO) for r in self.routes)
        if needs_registry and not self.schema_registry.url:
            problems.append("schema_registry.url is required by routes with an Avro format")
        if problems:
            raise ValueError("; ".join(problems))
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
        assert self.altcraft.token is not None  # resolved from token_file at load
        return self.altcraft.token.get_secret_value()


# --------------------------------------------------------------------------------------------
# Loading


def load_settings(path: str | os.PathLike[str] | None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read the YAML file, apply environment overrides, read secret files, validate.

    Raises :class:`SettingsError` listing every problem.
    """
    environ = os.environ if environ is None else environ
    problems: list[str] = []
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise SettingsError([f"{path}: cannot read the file: {exc.strerror}"]) from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise SettingsError([f"{path}: not valid YAML: {exc}"]) from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise SettingsError([f"{path}: the top level must be a mapping of sections"])
        raw = loaded
    problems += _apply_env(raw, environ)
    problems += _read_secret_files(raw)
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        problems += [_describe(e) for e in exc.errors()]
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
    if err["type"] not in ("missing", "extra_forbidden") and not isinstance(value, dict | list):
        shown = f" (got {value!r})" if not _looks_secret(loc) else " (got a hidden value)"
    return f"{loc}: {msg}{shown}"


def _looks_secret(key: str) -> bool:
    lower = key.lower()
    return any(w in lower for w in _SENSITIVE_WORDS)


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
        try:
            value = yaml.safe_load(environ[name]) if environ[name] else ""
        except yaml.YAMLError:
            value = environ[name]
        if _looks_secret(parts[-1]) or parts[-1] in ("token",):
            value = environ[name]  # secrets stay verbatim strings
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
            child = [] if nxt.isdigit() else {}
            if nxt.isdigit():
                return f"{'.'.join(parts[: i + 1])} has no item {nxt}"
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


_SECRET_FILES = [
    (("altcraft",), "token_file", "token"),
    (("kafka",), "sasl_password_file", "sasl_password"),
    (("schema_registry",), "basic_auth_password_file", "basic_auth_password"),
    (("schema_registry",), "bearer_token_file", "bearer_token"),
]


def _read_secret_files(raw: dict[str, Any]) -> list[str]:
    """Replace ``x_file`` keys by the secret they point at, so the rest of the code sees one source."""
    problems = []
    for section_path, file_key, secret_key in _SECRET_FILES:
        section: Any = raw
        for p in section_path:
            section = section.get(p) if isinstance(section, dict) else None
        if not isinstance(section, dict) or section.get(file_key) in (None, ""):
            continue
        where = ".".join((*section_path, file_key))
        if section.get(secret_key) not in (None, ""):
            problems.append(f"{where}: give {secret_key} or {file_key}, not both")
            continue
        try:
            secret = Path(str(section[file_key])).read_text(encoding="utf-8").strip()
        except OSError as exc:
            problems.append(f"{where}: cannot read {section[file_key]!s}: {exc.strerror}")
            section[secret_key] = "unreadable"  # keeps the missing-token message from doubling this one
            continue
        if not secret:
            problems.append(f"{where}: the file {section[file_key]!s} is empty")
        section[secret_key] = secret
    return problems


def masked_dump(settings: Settings) -> dict[str, Any]:
    """The effective settings as plain data, every secret replaced by a mask."""
    masked: dict[str, Any] = _mask(settings.model_dump(mode="json"))
    return masked


def _mask(node: Any, key: str = "") -> Any:
    if isinstance(node, dict):
        return {k: _mask(v, k) for k, v in node.items()}
    if isinstance(node, list):
        return [_mask(v, key) for v in node]
    if node is not None and _looks_secret(key) and not key.endswith("_file"):
        return MASK
    return node


def kafka_common_props(settings: Settings) -> dict[str, LibrdkafkaValue]:
    """Properties shared by the consumer and the producer, with the SASL password resolved."""
    k = settings.kafka
    props: dict[str, LibrdkafkaValue] = {"bootstrap.servers": k.bootstrap_servers, **k.common}
    if k.sasl_password is not None:
        props["sasl.password"] = k.sasl_password.get_secret_value()
    return props
