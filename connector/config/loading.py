"""Loading: the YAML file, environment overrides, secret files, every problem described at once.

See :mod:`connector.config` for the sources and their precedence. This is the only module of the
connector that reads the environment.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from connector.config.checks import _CROSS_CHECKS, _UNKNOWN, _cross_problems, _facts_of_raw
from connector.config.fields import _file_text, _header_safe_text, _plain, _WrittenFloat, _WrittenInt
from connector.config.masking import _looks_secret, _mask
from connector.config.settings import Settings
from connector.errors import ConnectorError

ENV_PREFIX = "ALTCRAFT_CONNECTOR__"
PASSTHROUGH_MAPS = {("kafka", "common"), ("kafka", "consumer"), ("kafka", "producer")}


class SettingsError(ConnectorError):
    """Every problem found in the settings, one line each, with its key path."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid settings:\n" + "\n".join(f"  - {p}" for p in problems))


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


def key_path(parts: Sequence[str | int]) -> str:
    """A setting's path as a user writes it: ``routes[0].when`` (list items by index in brackets)."""
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else f".{p}" if out else p
    return out


def _describe(err: Any) -> str:
    loc = key_path(err["loc"]) or "(top level)"
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

    def walk(node: yaml.Node, where: tuple[str | int, ...]) -> None:
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
                    problems.append(f"{key_path(here)}: duplicate key (at {path} {at}; first at {first[ident]})")
                first.setdefault(ident, at)
                walk(value, here)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, (*where, i))

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
    return key_path([p for f in frames if (p := f.key if f.mapping else f.index) is not None])


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
