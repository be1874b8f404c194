"""Avro schema resolution, decided once per (writer, reader) pair: which writer value reads as which reader
type (names and aliases, numeric and string/bytes promotions, union branches) and what a reader-only
field's default becomes. :class:`~connector.decode.avro.compiler._Compiler` builds on it.
"""

from __future__ import annotations

from typing import Any

from connector.decode.avro.logical import conversion
from connector.decode.avro.schema import _NAMED, Incompatible, Schema, _deref, _kind, _short

_PROMOTIONS = frozenset(
    {
        ("int", "long"), ("int", "float"), ("int", "double"), ("long", "float"), ("long", "double"),
        ("float", "double"), ("string", "bytes"), ("bytes", "string"),
    }
)  # fmt: skip


def _loosely_same_name(w: dict[str, Any], r: dict[str, Any]) -> bool:
    wanted = _short(w["name"])
    return wanted == _short(r["name"]) or any(_short(a) == wanted for a in r.get("aliases", ()))


class _Resolution:
    """The resolution rules against the named types of one writer and one reader schema."""

    def __init__(self, writer_named: dict[str, Any], reader_named: dict[str, Any]) -> None:
        self.wn = writer_named
        self.rn = reader_named

    def wderef(self, s: Schema) -> Schema:
        return _deref(s, self.wn)

    def rderef(self, s: Schema) -> Schema:
        return _deref(s, self.rn)

    def matches(self, w: Schema, r: Schema) -> bool:
        """Whether a writer branch may be read as a reader branch (both dereferenced, not unions)."""
        wk, rk = _kind(w), _kind(r)
        if wk != rk:
            return (wk, rk) in _PROMOTIONS
        if wk in _NAMED and not _loosely_same_name(w, r):
            return False
        if wk == "fixed":
            return bool(w["size"] == r["size"])
        if wk == "array":
            return self._items_match(w["items"], r["items"])
        if wk == "map":
            return self._items_match(w["values"], r["values"])
        return True

    def pick(self, w: Schema, branches: list[Any]) -> Schema | None:
        """The reader branch a writer value goes to: the first of the same type, else the first it promotes to."""
        candidates = [self.rderef(b) for b in branches]
        for rb in candidates:
            if _kind(rb) == _kind(w) and self.matches(w, rb):
                return rb
        for rb in candidates:
            if self.matches(w, rb):
                return rb
        return None

    def _items_match(self, w: Schema, r: Schema) -> bool:
        w, r = self.wderef(w), self.rderef(r)
        if _kind(w) == "union" or _kind(r) == "union":
            return True
        return self.matches(w, r)

    def default(self, r: Schema, value: Any) -> Any:
        """A reader field's JSON default as the value the compiled reader would have produced."""
        r = self.rderef(r)
        k = _kind(r)
        if k == "union":
            for branch in r:
                try:
                    return self.default(branch, value)
                except (Incompatible, TypeError, ValueError):
                    continue
            raise Incompatible(f"default {value!r} fits no branch of its union")
        if k == "null":
            if value is not None:
                raise Incompatible(f"default {value!r} is not null")
            return None
        if k == "boolean":
            base: Any = value if type(value) is bool else _wrong_default(value, k)
        elif k in ("int", "long"):
            base = value if type(value) is int else _wrong_default(value, k)
        elif k in ("float", "double"):
            base = float(value) if type(value) in (int, float) else _wrong_default(value, k)
        elif k in ("string", "enum"):
            base = value if type(value) is str else _wrong_default(value, k)
        elif k in ("bytes", "fixed"):
            base = value.encode("latin-1") if type(value) is str else _wrong_default(value, k)
        elif k == "array":
            base = [self.default(r["items"], v) for v in value] if type(value) is list else _wrong_default(value, k)
        elif k == "map":
            if type(value) is not dict:
                _wrong_default(value, k)
            base = {str(key): self.default(r["values"], v) for key, v in value.items()}
        elif k == "record":
            if type(value) is not dict:
                _wrong_default(value, k)
            base = {}
            for f in r["fields"]:
                if f["name"] in value:
                    base[f["name"]] = self.default(f["type"], value[f["name"]])
                elif "default" in f:
                    base[f["name"]] = self.default(f["type"], f["default"])
                else:
                    raise Incompatible(f"default of record {r['name']} lacks field {f['name']!r}")
        else:
            raise Incompatible(f"cannot read a default of type {k}")
        convert = conversion(r)
        return convert(base) if convert is not None else base


def _wrong_default(value: Any, kind: str) -> Any:
    raise Incompatible(f"default {value!r} is not a {kind}")
