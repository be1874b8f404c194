"""One field's raw value: taken as the reader of the file means it, and checked on its own.

The per-field helpers of the settings classes (:mod:`connector.config.sections`): scalars that remember
how they were written, topic names, files the settings name, secrets sent in HTTP headers.
"""

from __future__ import annotations

import json
import re
import ssl
import types
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import fastavro
from pydantic import AfterValidator, BaseModel, SecretStr

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
