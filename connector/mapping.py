"""Change event row -> Altcraft profile item. Pure: no I/O, no clock."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from connector.config import RouteSettings
from connector.decode.envelope import UNAVAILABLE
from connector.errors import MappingError

Path = tuple[str, ...]

# Profile fields that carry the matching value, per matching mode (any one of them suffices). The *_sub
# modes read the same fields as their plain forms and search the profiles' subscriptions with them.
# ``custom`` reads the route's field_name; custom_sub and push_sub are refused by the settings (the API
# pages do not say what an item must carry for them), so they have no entry.
_MATCH_FIELDS: dict[str, tuple[str, ...]] = {
    "email": ("email",),
    "email_profile": ("email",),
    "email_sub": ("email",),
    "phone": ("phones", "phone"),
    "phone_sub": ("phones", "phone"),
    "profile_id": ("profile_id",),
    "email_phone": ("email", "phones", "phone"),
    "email_phone_sub": ("email", "phones", "phone"),
}


def _compile(path: str) -> Path:
    return tuple(path.split("."))


class _Absent:
    """A path that reaches no value (a missing key, a placeholder): unlike null, it is never sent."""

    __slots__ = ()


ABSENT: Any = _Absent()


def _get(row: dict[str, Any], path: Path) -> Any:
    """The value at ``path``: :data:`ABSENT` when it leads nowhere, None when it (or an object on the
    way: a column or document set to NULL) is null."""
    node: Any = row
    for key in path:
        if type(node) is not dict:
            return ABSENT
        node = node.get(key, ABSENT)
        if node is None or node is ABSENT:
            return node
    return ABSENT if node == UNAVAILABLE else node


# The JSON writer refuses objects nested deeper than this, so no deeper value could ever be sent; the
# bound also keeps the recursion below well inside Python's stack.
MAX_DEPTH = 254


class _TooDeep(Exception):
    pass


def _strip_nested(value: Any, depth: int = 1) -> Any:
    # Placeholders are taken out at decoding (at any depth, arrays too); this pass guards rows of other
    # origins and bounds the nesting.
    if type(value) is dict:
        if depth > MAX_DEPTH:
            raise _TooDeep
        return {k: _strip_nested(v, depth + 1) for k, v in value.items() if v != UNAVAILABLE}
    return value


def _too_deep(row: dict[str, Any], consumed: set[str]) -> MappingError:
    for k, v in row.items():
        if k in consumed:
            continue
        try:
            _strip_nested(v)
        except _TooDeep:
            return MappingError(f"column {k!r} nests objects more than {MAX_DEPTH} levels deep")
    return MappingError(f"a column nests objects more than {MAX_DEPTH} levels deep")


@dataclass(slots=True)  # not frozen: made once per record, and a frozen __init__ costs four times more
class MappedItem:
    """The profile fields of one item, with its optional per-item content and custom_data."""

    fields: dict[str, Any]
    content: dict[str, Any] | None = None
    custom_data: dict[str, Any] | None = None


class Mapper:
    """Compiled field mapping of one route.

    Nulls: a column present with null clears the field it maps to (``null`` is sent), unless the route
    says ``nulls: ignore``; a column absent from the row (not in the event, or a Debezium placeholder)
    is never sent. The matching fields and ``email`` are never sent as null: a profile is found by
    them, and Altcraft deletes no email.
    """

    def __init__(self, route: RouteSettings) -> None:
        compiled = [(dst, _compile(src)) for dst, src in route.fields.items()]
        # Top-level columns (the common case) are read with one dict lookup each.
        self._simple = [(dst, p[0]) for dst, p in compiled if len(p) == 1]
        self._nested = [(dst, p) for dst, p in compiled if len(p) > 1]
        self._consumed = {p[0] for _, p in compiled}
        self._pass = route.unmapped == "pass"
        self._constants = dict(route.constants)
        self._content = [(k, _compile(src)) for k, src in route.content.items()]
        self._custom = [(k, _compile(src)) for k, src in route.custom_data.items()]
        if route.matching == "custom":
            assert route.field_name is not None
            self._match: tuple[str, ...] = (route.field_name,)
        elif route.matching in _MATCH_FIELDS:
            self._match = _MATCH_FIELDS[route.matching]
        else:  # settings built without validation
            raise ValueError(f"matching {route.matching} is not supported")
        self._matching = route.matching
        self._clear = route.nulls == "clear"
        self._never_null = tuple(dict.fromkeys(("email", *self._match)))

    @property
    def match_fields(self) -> tuple[str, ...]:
        """The profile fields Altcraft matches by in this route."""
        return self._match

    @property
    def fields_only(self) -> bool:
        """Whether items carry profile fields only (no per-item content or custom_data).

        The route's ``request_content`` is constant and goes into the request, not the items
        (:func:`connector.sink.request.body_shape`)."""
        return not self._content and not self._custom

    def map(self, row: dict[str, Any]) -> MappedItem:
        """Raises :class:`MappingError` naming the field when the row cannot make a valid item."""
        out = self.fields(row)
        content = self._pick(row, self._content) if self._content else None
        custom = self._pick(row, self._custom) if self._custom else None
        return MappedItem(out, content, custom)

    def fields(self, row: dict[str, Any]) -> dict[str, Any]:
        """The profile fields of a row (all of :meth:`map` when :attr:`fields_only`)."""
        get = row.get
        clear = self._clear
        if clear:
            absent = ABSENT
            out = {dst: v for dst, src in self._simple if (v := get(src, absent)) is not absent}
        else:
            out = {dst: v for dst, src in self._simple if (v := get(src)) is not None}
        for dst, path in self._nested:
            v = _get(row, path)
            if v is not ABSENT and (clear or v is not None):
                out[dst] = v
        if self._pass:
            consumed = self._consumed
            try:
                if clear:
                    rest = {k: _strip_nested(v) for k, v in row.items() if k not in consumed and v != UNAVAILABLE}
                else:
                    rest = {
                        k: _strip_nested(v)
                        for k, v in row.items()
                        if k not in consumed and v is not None and v != UNAVAILABLE
                    }
            except _TooDeep:
                raise _too_deep(row, consumed) from None
            rest.update(out)
            out = rest
        if self._constants:
            out.update(self._constants)
        if clear:
            found = out.get
            for name in self._never_null:
                if found(name, 0) is None:
                    del out[name]
        self._check_match(out)
        return out

    def _check_match(self, fields: dict[str, Any]) -> None:
        for name in self._match:
            v = fields.get(name)
            if v is None or v == "" or v == []:
                continue
            if type(v) is str or (type(v) is int and name not in ("email", "phone", "phones")):
                return
            if name == "phones" and type(v) is list and all(type(p) is str for p in v):
                return
            kind = type(v).__name__
            raise MappingError(f"matching field {name!r} has the wrong type {kind} (matching {self._matching})")
        names = " or ".join(repr(n) for n in self._match)
        raise MappingError(f"missing matching field {names} (matching {self._matching})")

    @staticmethod
    def _pick(row: dict[str, Any], paths: list[tuple[str, Path]]) -> dict[str, Any]:
        return {k: v for k, p in paths if (v := _get(row, p)) is not None and v is not ABSENT}
