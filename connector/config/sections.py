"""The settings of each section: typed, frozen, self-validating, a one-line comment per field.

The checks spanning fields of one section are field validators here; the checks spanning sections
are in :mod:`connector.config.checks`, the root :class:`~connector.config.Settings` in
:mod:`connector.config.settings`.
"""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator

from connector.config.fields import TopicName, _avro_schema_file, _ca_bundle, _header_secret, _normalize
from connector.config.masking import _mask

# librdkafka properties the connector owns: letting a user override them would break its guarantees.
_RESERVED_CONSUMER_PROPS = frozenset(
    {"enable.auto.commit", "enable.auto.offset.store", "group.id", "bootstrap.servers"}
)
_RESERVED_PRODUCER_PROPS = frozenset({"enable.idempotence", "bootstrap.servers", "acks"})

LibrdkafkaValue = str | int | float | bool


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
    # Requests in flight at once, over all partitions.
    max_in_flight: int = Field(default=4, ge=1, le=64)
    # Requests of one partition in flight at once. Batches of one partition go in parallel only when
    # no profile is in two of them (per-profile order is kept); 1 sends a partition's batches one by one.
    max_in_flight_per_partition: int = Field(default=4, ge=1, le=64)
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
    # Import (or update) the profile and engage it in the route's scenario.
    ENGAGE = "engage"
    # Import (or update) the profile in the route's db_id (profiles/import_batch), without engaging it.
    IMPORT = "import"
    SKIP = "skip"
    DEAD_LETTER = "dead-letter"


class Otherwise(StrEnum):
    # Not sent; counted in records_skipped_total{reason="condition"}.
    SKIP = "skip"
    # Imported into the route's db_id without entering the scenario.
    IMPORT = "import"


# The otherwise actions the loop carries out. Import joins once the loop has an import action: then
# this set names it, and routing.Route hands such records to it.


Matching = Literal[
    "email", "email_profile", "email_sub", "phone", "phone_sub", "profile_id",
    "custom", "custom_sub", "email_phone", "email_phone_sub", "push_sub",
]  # fmt: skip

# Matching modes Altcraft's API pages name (profiles/import_batch lists every mode) without saying what a
# batch item must carry for them: refused, with the reason, rather than sent and dead-lettered item by
# item (README, "Routes").
_UNDESCRIBED_MATCHING = {
    "custom_sub": (
        "the Altcraft API pages name this mode but document field_name and field_value for matching custom "
        "only, not what an item must carry to be matched by custom_sub; match by a profile field with "
        "matching: custom and field_name"
    ),
    "push_sub": (
        "the Altcraft API pages name this mode and describe push subscriptions (provider, subscription_id), "
        "but not where a batch item carries the values push_sub matches by; match by another mode "
        "(email, phone, custom)"
    ),
}


class OpsSettings(_Frozen):
    # Create (Debezium op c).
    c: OpAction = OpAction.ENGAGE
    # Snapshot read (Debezium op r): imported, not engaged, so that a first snapshot does not start the
    # scenario for every existing customer.
    r: OpAction = OpAction.IMPORT
    # Update (Debezium op u).
    u: OpAction = OpAction.ENGAGE
    # Delete (Debezium op d, or __deleted=true in flattened records).
    d: OpAction = OpAction.SKIP
    # A record with a null value (Kafka tombstone).
    tombstone: OpAction = OpAction.SKIP

    @field_validator("tombstone")
    @classmethod
    def _tombstone_cannot_engage(cls, v: OpAction) -> OpAction:
        if v in (OpAction.ENGAGE, OpAction.IMPORT):
            raise ValueError("a tombstone carries no profile: use skip or dead-letter")
        return v

    def importing(self) -> list[str]:
        """The ops that import."""
        return [op for op in ("c", "r", "u", "d") if getattr(self, op) is OpAction.IMPORT]


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
    # Profile matching mode (custom_sub and push_sub are refused: the API pages do not say what they read).
    matching: Matching = "email"
    # Custom field used for matching custom.
    field_name: str | None = None
    # Optional resource narrowing email/phone matching.
    resource_id: int | None = Field(default=None, ge=1)
    # Altcraft field -> dotted path in the event's row (e.g. {"_fname": "first_name"}).
    fields: dict[str, str] = Field(default_factory=dict)
    # Altcraft field -> constant value set on every profile.
    constants: dict[str, Any] = Field(default_factory=dict)
    # What happens to row columns not named in fields: pass them through unchanged, or drop them.
    unmapped: Literal["pass", "drop"] = "drop"
    # Template variable -> dotted path; sent per item, in each item's wrapper, as content (engage modes).
    content: dict[str, str] = Field(default_factory=dict)
    # Template variable -> constant value; sent once per request as the request-level content (engage
    # modes), as the API pages show it: {apicontent.NAME} in the scenario's messages.
    request_content: dict[str, Any] = Field(default_factory=dict)
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
    # JSON routes: column -> type, for records that come without a schema block (Debezium's JSON
    # converter with schemas.enable=false): date, time, micro-time, nano-time, timestamp,
    # micro-timestamp, nano-timestamp, zoned-timestamp, decimal(<scale>), variable-decimal, json,
    # text (sent as it is), or a Debezium type name (io.debezium.time.Date).
    column_types: dict[str, str] = Field(default_factory=dict)
    # A column set to NULL: clear the Altcraft field it maps to (send null), or ignore it (send nothing).
    nulls: Literal["clear", "ignore"] = "clear"
    # CEL expression over op, before, after and source, for the records the ops engage: a record for
    # which it is false follows otherwise (README, "Conditions"). Absent: every such record engages.
    when: str | None = None
    # What a record for which when is false does: skip (counted, reason condition), or import (into db_id).
    otherwise: Otherwise = Otherwise.SKIP

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

    @field_validator("matching")
    @classmethod
    def _matching_the_api_describes(cls, v: str) -> str:
        reason = _UNDESCRIBED_MATCHING.get(v)
        if reason is not None:
            raise ValueError(f"matching {v} is not supported: {reason}")
        return v

    @field_validator("field_name")
    @classmethod
    def _custom_matching_needs_field(cls, v: str | None, info: ValidationInfo) -> str | None:
        matching = info.data.get("matching")
        if not v and matching == "custom":
            raise ValueError(f"matching {matching} needs field_name")
        return v

    @field_validator("request_content")
    @classmethod
    def _request_content_is_sent(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if not v:
            return v
        if info.data.get("mode") is Mode.IMPORT:
            raise ValueError("mode import sends profiles/import_batch, which takes no content: use an engage mode")
        empty = [k for k in v if not k]
        if empty:
            raise ValueError("a template variable needs a name")
        try:
            orjson.dumps(v)
        except TypeError as exc:  # orjson's JSONEncodeError
            raise ValueError(f"cannot be written as JSON: {exc}") from None
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

    @field_validator("column_types")
    @classmethod
    def _known_column_types(cls, v: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        fmt = info.data.get("format")
        if v and fmt is not None and fmt in AVRO_FORMATS:
            raise ValueError(f"column_types applies to JSON formats, not {fmt.value} (Avro schemas carry the types)")
        unknown = sorted(f"{col}: {name}" for col, name in v.items() if not _COLUMN_TYPE.fullmatch(name))
        if unknown:
            raise ValueError(
                f"unknown column types ({'; '.join(unknown)}): expected {', '.join(COLUMN_TYPE_NAMES)}, "
                "decimal(<scale>) or a Debezium type name"
            )
        return v

    @field_validator("when")
    @classmethod
    def _condition_compiles(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is None:
            return v
        # Imported here: the CEL runtime loads only for settings that have a condition.
        from connector.condition import ROW_VARIABLES, VARIABLES, ConditionInvalid, compile_condition

        fmt = info.data.get("format")
        try:
            compile_condition(v, ROW_VARIABLES if fmt in AVRO_FORMATS else VARIABLES)
        except ConditionInvalid as exc:
            raise ValueError(str(exc)) from None
        return v

    @field_validator("ops")
    @classmethod
    def _imports_need_db(cls, v: OpsSettings, info: ValidationInfo) -> OpsSettings:
        importing = v.importing()
        if importing and info.data.get("db_id") is None and info.data.get("mode") not in (Mode.IMPORT, None):
            default = " (the default for snapshot reads)"
            ops = ", ".join(f"{op}: import" + (default if op == "r" else "") for op in importing)
            raise ValueError(
                f"{ops} imports profiles without engaging them: set db_id (the database they are imported into), "
                f"or set ops.{importing[0]} to engage or skip"
            )
        return v

    @field_validator("otherwise")
    @classmethod
    def _otherwise_import_needs_db(cls, v: Otherwise, info: ValidationInfo) -> Otherwise:
        if v is Otherwise.IMPORT and info.data.get("db_id") is None and info.data.get("mode") is not Mode.IMPORT:
            raise ValueError("otherwise: import needs db_id (the database the profiles are imported into)")
        return v


# The types routes[].column_types may name (connector.decode.logical turns each into its converter).
COLUMN_TYPE_NAMES = (
    "date", "time", "micro-time", "nano-time", "timestamp", "micro-timestamp", "nano-timestamp",
    "zoned-timestamp", "variable-decimal", "json", "text",
)  # fmt: skip
_DEBEZIUM_TYPE_NAMES = (
    "io.debezium.time.Date", "io.debezium.time.Time", "io.debezium.time.MicroTime", "io.debezium.time.NanoTime",
    "io.debezium.time.Timestamp", "io.debezium.time.MicroTimestamp", "io.debezium.time.NanoTimestamp",
    "io.debezium.time.ZonedTimestamp", "io.debezium.data.VariableScaleDecimal", "io.debezium.data.Json",
    "org.apache.kafka.connect.data.Date", "org.apache.kafka.connect.data.Time",
    "org.apache.kafka.connect.data.Timestamp",
)  # fmt: skip
_COLUMN_TYPE = re.compile(
    "|".join(re.escape(n) for n in (*COLUMN_TYPE_NAMES, *_DEBEZIUM_TYPE_NAMES)) + r"|decimal\(-?\d{1,3}\)"
)


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
    # Each dead letter and the offset past its record are written in one Kafka transaction: a reader
    # with isolation.level=read_committed sees every dead letter exactly once, across crashes,
    # restarts and rebalances. Off: letters are written at once, at least once (a replay repeats some).
    exactly_once: bool = True
    # The producer's transactional.id (exactly_once); default <group_id>-<host name>-<process id>, stable
    # across restarts of a container. Unique per running instance: two instances with one id fence each other.
    transactional_id: str | None = Field(default=None, min_length=1, max_length=200)


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
