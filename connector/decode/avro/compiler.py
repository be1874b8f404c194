"""Avro binary -> Python values, through a function generated once per (writer schema, reader schema) pair.

Why a compiled reader rather than ``fastavro.schemaless_reader`` on the hot path: fastavro's reader walks
the schema for every record and reads its input a byte at a time through ``file.read``; on the
Debezium customer envelope it reads about 120,000 records/s on one core (50,000/s with a reader
schema) before any value is converted or the envelope read, which would leave the decoder alone
eating most of the pipeline's budget. Here each (writer schema, reader schema) pair is compiled once
into a Python function that reads the bytes in place, resolves the schemas at compile time
(:mod:`~connector.decode.avro.resolution`), skips what the connector never reads (the envelope's
``source``), and turns logical types into Altcraft's formats as it goes, only where the schema says so
(:mod:`~connector.decode.avro.logical`): about 200,000 events/s all included. fastavro still parses and
validates every schema, writes the producer side (:func:`~connector.decode.avro.framing.encode`), and
the tests check the compiled reader against fastavro's reader.

The generated code runs in a namespace seeded with :mod:`~connector.decode.avro.runtime`; converters and
constants of one schema are added to it under fresh names (``_h1``, ``_k2``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from connector.decode.avro.logical import conversion
from connector.decode.avro.resolution import _Resolution
from connector.decode.avro.runtime import _AT, _MAX_NESTING, _MAX_ZERO_SIZE_ITEMS, _RUNTIME
from connector.decode.avro.schema import Incompatible, Schema, _describe, _kind, _min_size


class _Compiler(_Resolution):
    """Generates the source of one reader function for a (writer, reader) pair of parsed schemas."""

    def __init__(
        self, writer_named: dict[str, Any], reader_named: dict[str, Any], only: frozenset[str] | None = None
    ) -> None:
        super().__init__(writer_named, reader_named)
        self.only = only  # the top-level record's fields to read; the others are skipped
        self.ns: dict[str, Any] = dict(_RUNTIME)
        self.n = 0
        self.functions: dict[tuple[str, ...], str] = {}  # recursive records: key -> function name
        self.pending: list[tuple[str, tuple[str, ...], Schema, Schema | None]] = []
        self.stack: list[tuple[str, ...]] = []
        self._loop_tail: list[tuple[str, str]] = []  # open block loops: (count variable, indentation)
        self.zero_size_items = False  # whether a block loop of items of no bytes draws on the budget _Z
        self.ns["_Z"] = [0]  # that budget: what is left of it while one record is read

    # -- small tools

    def tmp(self, prefix: str = "v") -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def const(self, value: Any) -> str:
        """An expression evaluating to ``value`` (a fresh copy when it is mutable)."""
        if value is None or type(value) in (bool, int, str) or (type(value) is float and math.isfinite(value)):
            return repr(value)
        name = self.tmp("_k")
        self.ns[name] = value
        return f"_deepcopy({name})" if isinstance(value, dict | list) else name

    def helper(self, fn: Any) -> str:
        name = self.tmp("_h")
        self.ns[name] = fn
        return name

    # -- reading

    def read_long(self, dst: str, ind: str, out: list[str]) -> None:
        """A zig-zag varint: one or two bytes inline (ids, lengths, dates), longer ones by ``_long``.
        No loop here: Python allows 20 nested blocks per function, and arrays nest their readers."""
        x = self.tmp("x")
        out += [
            f"{ind}{dst} = b[p]",
            f"{ind}if {dst} < 128:",
            f"{ind}    p += 1",
            f"{ind}    {dst} = _ZZ[{dst}]",
            f"{ind}else:",
            f"{ind}    {x} = b[p + 1]",
            f"{ind}    if {x} < 128:",
            f"{ind}        p += 2",
            f"{ind}        {dst} = ({dst} & 127) | ({x} << 7)",
            f"{ind}        {dst} = ({dst} >> 1) ^ -({dst} & 1)",
            f"{ind}    else:",
            f"{ind}        {dst}, p = _long(b, p)",
        ]

    def read_blob(self, dst: str, ind: str, out: list[str], path: str, text: bool = False) -> None:
        """Bytes (``text``: a UTF-8 string) of a length-prefixed value."""
        n, e = self.tmp("n"), self.tmp("e")
        self.read_long(n, ind, out)
        out += [
            f"{ind}{e} = p + {n}",
            f"{ind}if {e} > L or {n} < 0:",
            f"{ind}    raise _bad_length({n}, {path!r})",
            f"{ind}{dst} = b[p:{e}].decode()" if text else f"{ind}{dst} = b[p:{e}]",
            f"{ind}p = {e}",
        ]

    def emit(self, w: Schema, r: Schema, dst: str, ind: str, out: list[str], path: str) -> None:
        """Code reading a writer-``w`` value as reader type ``r`` into variable ``dst``."""
        w, r = self.wderef(w), self.rderef(r)
        wk, rk = _kind(w), _kind(r)
        if wk == "union":
            self.emit_writer_union(w, r, dst, ind, out, path)
            return
        if rk == "union":
            branch = self.pick(w, r)
            if branch is not None:
                self.emit(w, branch, dst, ind, out, path)
                return
            raise Incompatible(f"{path}: a {_describe(w)} matches no branch of the reader's union")
        if not self.matches(w, r):
            raise Incompatible(f"{path}: a {_describe(w)} cannot be read as a {_describe(r)}")
        if wk == "null":
            out.append(f"{ind}{dst} = None")
        elif wk == "boolean":
            out += [
                f"{ind}{dst} = b[p]",
                f"{ind}p += 1",
                f"{ind}if {dst} > 1:",
                f"{ind}    raise _bad_boolean({dst}, {path!r})",
                f"{ind}{dst} = {dst} == 1",
            ]
        elif wk in ("int", "long"):
            self.read_long(dst, ind, out)
            if rk in ("float", "double"):
                out.append(f"{ind}{dst} = float({dst})")
        elif wk == "float":
            out += [f"{ind}{dst} = _unpack_f(b, p)[0]", f"{ind}p += 4"]
        elif wk == "double":
            out += [f"{ind}{dst} = _unpack_d(b, p)[0]", f"{ind}p += 8"]
        elif wk in ("string", "bytes"):
            self.read_blob(dst, ind, out, path, text=rk == "string")
        elif wk == "fixed":
            size = int(w["size"])
            out += [
                f"{ind}if p + {size} > L:",
                f"{ind}    raise _Truncated",
                f"{ind}{dst} = b[p:p + {size}]",
                f"{ind}p += {size}",
            ]
        elif wk == "enum":
            self.emit_enum(w, r, dst, ind, out, path)
        elif wk == "array":
            self.emit_array(w, r, dst, ind, out, path)
        elif wk == "map":
            self.emit_map(w, r, dst, ind, out, path)
        elif wk == "record":
            self.emit_record(w, r, dst, ind, out, path)
        else:
            raise Incompatible(f"{path}: unknown type {wk!r}")
        convert = conversion(r)
        if convert is not None:
            out.append(f"{ind}{dst} = {self.helper(convert)}({dst}){_AT}{path}")  # named when it fails

    def emit_writer_union(self, w: list[Any], r: Schema, dst: str, ind: str, out: list[str], path: str) -> None:
        idx = self.tmp("i")
        small = len(w) < 64  # the branch index is one byte: compare the raw byte (zig-zag: 2 * index)
        if small:
            out += [f"{ind}{idx} = b[p]", f"{ind}p += 1"]
        else:
            self.read_long(idx, ind, out)
        branches = [self.wderef(b) for b in w]
        order = sorted(range(len(branches)), key=lambda i: _kind(branches[i]) == "null")  # null last
        keyword = "if"
        for i in order:
            wb = branches[i]
            target = self.pick(wb, r if _kind(r) == "union" else [r])
            out.append(f"{ind}{keyword} {idx} == {2 * i if small else i}:")
            keyword = "elif"
            if target is None:
                message = f"{path}: the writer's {_describe(wb)} has no counterpart in the reader schema"
                out.append(f"{ind}    raise _Corrupt({message!r})")
            else:
                before = len(out)
                self.emit(wb, target, dst, ind + "    ", out, path)
                if len(out) == before:
                    out.append(f"{ind}    pass")
        if small:
            out += [f"{ind}else:", f"{ind}    raise _bad_union_at(b, p - 1, {len(w)}, {path!r})"]
        else:
            out += [f"{ind}else:", f"{ind}    raise _bad_union({idx}, {len(w)}, {path!r})"]

    def emit_enum(self, w: dict[str, Any], r: dict[str, Any], dst: str, ind: str, out: list[str], path: str) -> None:
        symbols = list(w["symbols"])
        known = set(r["symbols"])
        default = r.get("default")
        mapped = tuple(s if s in known else (default if default in known else None) for s in symbols)
        self.read_long(dst, ind, out)
        table = self.const(mapped)
        out += [
            f"{ind}if not 0 <= {dst} < {len(symbols)}:",
            f"{ind}    raise _bad_enum({dst}, {len(symbols)}, {path!r})",
        ]
        if None in mapped:
            names = self.const(tuple(symbols))
            out += [
                f"{ind}if {table}[{dst}] is None:",
                f"{ind}    raise _Corrupt({path!r} + ': enum symbol ' + repr({names}[{dst}]) + "
                "' is not in the reader schema and it has no default')",
            ]
        out.append(f"{ind}{dst} = {table}[{dst}]")

    def _block_loop(self, item_size: int, ind: str, out: list[str], path: str) -> str:
        """Opens the block loop of an array or map; returns the indentation of one item's code.

        ``item_size``: the fewest bytes one item takes. A block count is checked against the bytes left
        before the loop starts, so that a corrupt count (a varint can say 2**63) fails at once instead of
        looping or allocating for ages; items of no bytes draw on the record's budget instead.
        """
        count, size = self.tmp("c"), self.tmp("s")
        self.read_long(count, ind, out)
        out.append(f"{ind}while {count}:")
        inner = ind + "    "
        out += [f"{inner}if {count} < 0:", f"{inner}    {count} = -{count}"]
        self.read_long(size, inner + "    ", out)
        if item_size == 0:
            self.zero_size_items = True
            out += [
                f"{inner}_Z[0] -= {count}",
                f"{inner}if _Z[0] < 0:",
                f"{inner}    raise _Corrupt({path!r} + ': more than {_MAX_ZERO_SIZE_ITEMS} empty items in one record')",
            ]
        else:
            needed = count if item_size == 1 else f"{count} * {item_size}"
            out += [
                f"{inner}if {needed} > L - p:",
                f"{inner}    raise _Corrupt({path!r} + ': a block of ' + str({count}) + ' items in ' + str(L - p) + "
                "' bytes left')",
            ]
        out.append(f"{inner}for _ in range({count}):")
        self._loop_tail.append((count, inner))
        return inner + "    "

    def _close_block_loop(self, out: list[str]) -> None:
        count, inner = self._loop_tail.pop()
        self.read_long(count, inner, out)

    def emit_array(self, w: dict[str, Any], r: dict[str, Any], dst: str, ind: str, out: list[str], path: str) -> None:
        out.append(f"{ind}{dst} = []")
        item = self.tmp()
        body = self._block_loop(_min_size(w["items"], self.wn), ind, out, path)
        self.emit(w["items"], r["items"], item, body, out, path + "[]")
        out.append(f"{body}{dst}.append({item})")
        self._close_block_loop(out)

    def emit_map(self, w: dict[str, Any], r: dict[str, Any], dst: str, ind: str, out: list[str], path: str) -> None:
        out.append(f"{ind}{dst} = {{}}")
        key, item = self.tmp("k"), self.tmp()
        body = self._block_loop(1 + _min_size(w["values"], self.wn), ind, out, path)  # 1: the key's length
        self.read_blob(key, body, out, path + "{}", text=True)
        self.emit(w["values"], r["values"], item, body, out, path + "{}")
        out.append(f"{body}{dst}[{key}] = {item}")
        self._close_block_loop(out)

    def emit_record(self, w: dict[str, Any], r: dict[str, Any], dst: str, ind: str, out: list[str], path: str) -> None:
        key = ("read", w["name"], r["name"])
        if key in self.stack:  # a recursive type: call a function of its own
            name = self.functions.get(key)
            if name is None:
                name = self.functions[key] = self.tmp("_rec")
                self.pending.append((name, key, w, r))
            out.append(f"{ind}{dst}, p = {name}(b, p, d + 1)")
            return
        self.stack.append(key)
        try:
            wanted = r["fields"] if path or self.only is None else [f for f in r["fields"] if f["name"] in self.only]
            by_name = {f["name"]: f for f in wanted}
            by_alias = {a: f for f in wanted for a in f.get("aliases", ())}
            values: dict[str, str] = {}
            for f in w["fields"]:
                rf = by_name.get(f["name"]) or by_alias.get(f["name"])
                where = f"{path}.{f['name']}" if path else f["name"]
                if rf is None or rf["name"] in values:
                    self.emit_skip(f["type"], ind, out, where)
                    continue
                var = self.tmp()
                self.emit(f["type"], rf["type"], var, ind, out, where)
                values[rf["name"]] = var
            items = []
            for rf in wanted:
                if rf["name"] in values:
                    items.append(f"{rf['name']!r}: {values[rf['name']]}")
                elif "default" in rf:
                    items.append(f"{rf['name']!r}: {self.const(self.default(rf['type'], rf['default']))}")
                else:
                    raise Incompatible(
                        f"{path or r['name']}: the reader's field {rf['name']!r} has no default and the writer "
                        "does not have it"
                    )
            out.append(f"{ind}{dst} = {{{', '.join(items)}}}")
        finally:
            self.stack.pop()

    # -- skipping writer-only fields

    def emit_skip(self, w: Schema, ind: str, out: list[str], path: str) -> None:
        w = self.wderef(w)
        k = _kind(w)
        junk = self.tmp("x")
        if k == "null":
            return
        if k == "boolean":
            out.append(f"{ind}p += 1")
        elif k in ("int", "long", "enum"):
            out += [f"{ind}while b[p] > 127:", f"{ind}    p += 1", f"{ind}p += 1"]
        elif k == "float":
            out.append(f"{ind}p += 4")
        elif k == "double":
            out.append(f"{ind}p += 8")
        elif k in ("string", "bytes"):
            n = self.tmp("n")
            self.read_long(n, ind, out)
            out += [f"{ind}if {n} < 0:", f"{ind}    raise _bad_length({n}, {path!r})", f"{ind}p += {n}"]
        elif k == "fixed":
            out.append(f"{ind}p += {int(w['size'])}")
        elif k == "union":
            idx = self.tmp("i")
            self.read_long(idx, ind, out)
            keyword = "if"
            for i, branch in enumerate(w):
                out.append(f"{ind}{keyword} {idx} == {i}:")
                keyword = "elif"
                before = len(out)
                self.emit_skip(branch, ind + "    ", out, path)
                if len(out) == before:
                    out.append(f"{ind}    pass")
            out += [f"{ind}else:", f"{ind}    raise _bad_union({idx}, {len(w)}, {path!r})"]
        elif k in ("array", "map"):
            item = w["items"] if k == "array" else w["values"]
            body = self._block_loop(_min_size(item, self.wn) + (k == "map"), ind, out, path)
            if k == "map":
                self.read_blob(junk, body, out, path)
            before = len(out)
            self.emit_skip(item, body, out, path + "[]")
            if len(out) == before:
                out.append(f"{body}pass")
            self._close_block_loop(out)
        elif k == "record":
            key = ("skip", w["name"])
            if key in self.stack:
                name = self.functions.get(key)
                if name is None:
                    name = self.functions[key] = self.tmp("_rec")
                    self.pending.append((name, key, w, None))
                out.append(f"{ind}{junk}, p = {name}(b, p, d + 1)")
                return
            self.stack.append(key)
            try:
                for f in w["fields"]:
                    self.emit_skip(f["type"], ind, out, f"{path}.{f['name']}")
            finally:
                self.stack.pop()
        # (the bounds of skipped fixed, float and double values are checked by the final length check)

    # -- assembly

    def build(self, writer: Schema, reader: Schema) -> Callable[[bytes, int], tuple[Any, int]]:
        body: list[str] = []
        self.emit(writer, reader, "v0", "    ", body, "")
        lines = ["def _read(b, p):", "    L = len(b)", *body, "    return v0, p"]
        if self.pending:  # a recursive type: ``d`` counts the levels of it around the value being read
            lines.insert(2, "    d = 0")
        while self.pending:
            name, _key, w, r = self.pending.pop()
            self.stack = []  # emit_record / emit_skip push the key themselves; inner references call `name`
            inner: list[str] = []
            head = [f"def {name}(b, p, d):", f"    if d > {_MAX_NESTING}:", f"        raise _too_deep({w['name']!r})"]
            if r is None:
                self.emit_skip(w, "    ", inner, w["name"])
                lines += [*head, "    L = len(b)", *inner, "    return None, p"]
            else:
                self.emit_record(w, r, "v0", "    ", inner, w["name"])
                lines += [*head, "    L = len(b)", *inner, "    return v0, p"]
        if self.zero_size_items:
            lines.insert(2, f"    _Z[0] = {_MAX_ZERO_SIZE_ITEMS}")  # in _read: once per record
        self.ns["_lines"] = tuple(lines)  # for _failed_at
        source = "\n".join(lines) + "\n"
        namespace = self.ns
        try:
            exec(compile(source, "<avro reader>", "exec"), namespace)
        except (SyntaxError, RecursionError, MemoryError) as exc:
            raise Incompatible(f"the schema is too deeply nested to compile ({type(exc).__name__})") from None
        self.source = source
        reader_fn: Callable[[bytes, int], tuple[Any, int]] = namespace["_read"]
        return reader_fn


def compile_reader(
    writer: Schema, reader: Schema | None = None, only: frozenset[str] | None = None
) -> Callable[[bytes, int], tuple[Any, int]]:
    """A function ``(buffer, position) -> (value, next position)`` reading Avro binary written with
    ``writer`` as ``reader`` (default: as written), with values converted as
    :mod:`~connector.decode.avro.logical` says.

    Both schemas must come from :func:`fastavro.parse_schema`. ``only``: the top-level record's fields
    worth reading (by reader name); the others are skipped and left out. Raises :class:`Incompatible`
    when the reader schema cannot read what the writer wrote.
    """
    writer_named: dict[str, Any] = dict(writer.get("__named_schemas", {})) if isinstance(writer, dict) else {}
    if reader is None:
        return _Compiler(writer_named, writer_named, only).build(writer, writer)
    reader_named: dict[str, Any] = dict(reader.get("__named_schemas", {})) if isinstance(reader, dict) else {}
    return _Compiler(writer_named, reader_named, only).build(writer, reader)
