"""Checks spanning sections, on whatever is known.

The same rules run on valid settings (the root model's validator) and on raw data some of whose
fields are invalid (:func:`_facts_of_raw`), so that a file's problems are all reported in one pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, TypeAdapter

from connector.config.fields import _normalize
from connector.config.sections import (
    AVRO_FORMATS,
    AltcraftSettings,
    BatchingSettings,
    DeadLetterSettings,
    RouteSettings,
    SchemaRegistrySettings,
)

_CROSS_CHECKS = "settings_cross_checks"


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
                first = names[route.name]
                problems.append(f"routes[{route.index}].name: {route.name!r} is the name of routes[{first}]")
            names.setdefault(route.name, route.index)
        for topic in route.topics:
            if topic in readers and readers[topic] != route.index:
                problems.append(
                    f"routes[{route.index}].topics: {topic!r} is read by routes[{readers[topic]}] already; "
                    "a topic follows one route"
                )
            readers.setdefault(topic, route.index)
            if topic == facts.dead_letter_topic:
                problems.append(f"routes[{route.index}].topics: {topic!r} is the dead-letter topic (dead_letter.topic)")
    avro = [f"routes[{r.index}]" for r in facts.routes if r.avro]
    if avro and facts.registry_url_missing:
        problems.append(f"schema_registry.url: required by routes with an Avro format ({', '.join(avro)})")
    return problems


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
