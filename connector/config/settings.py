"""The root of the settings, and the views of it the rest of the connector uses."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from connector.config.checks import _CROSS_CHECKS, _cross_problems, _Facts, _RouteFacts
from connector.config.masking import _mask
from connector.config.sections import (
    AVRO_FORMATS,
    AltcraftSettings,
    BatchingSettings,
    DeadLetterSettings,
    KafkaSettings,
    LibrdkafkaValue,
    ObservabilitySettings,
    RouteSettings,
    SchemaRegistrySettings,
    ShutdownSettings,
    _Frozen,
)


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


def _facts_of(s: Settings) -> _Facts:
    return _Facts(
        max_bytes=s.batching.max_bytes,
        max_body_bytes=s.altcraft.max_body_bytes,
        routes=tuple(_RouteFacts(i, r.name, tuple(r.topics), r.format in AVRO_FORMATS) for i, r in enumerate(s.routes)),
        dead_letter_topic=s.dead_letter.topic,
        registry_url_missing=not s.schema_registry.url,
    )


def masked_dump(settings: Settings) -> dict[str, Any]:
    """The effective settings as plain data, every secret and every credential inside a URL masked."""
    masked: dict[str, Any] = _mask(settings.model_dump(mode="json"))
    return masked


def kafka_common_props(settings: Settings) -> dict[str, LibrdkafkaValue]:
    """Properties shared by the consumer and the producer, with the SASL password resolved."""
    k = settings.kafka
    props: dict[str, LibrdkafkaValue] = {"bootstrap.servers": k.bootstrap_servers, **k.common}
    if k.sasl_password is not None:
        props["sasl.password"] = k.sasl_password.get_secret_value()
    return props
