"""What the generated readers call and the constants they bind to.

A compiled reader's code runs in a namespace that starts as a copy of :data:`_RUNTIME`: the generated
lines name these objects by its keys (``_ZZ``, ``_long``, ``_bad_union``, ...), so a key renamed here
is a change to the code :mod:`connector.decode.avro.compiler` emits. Varints of one or two bytes are
decoded inline by the generated code itself (through the table ``_ZZ``); :func:`_long` reads the rest.
The two exceptions stay inside the package: :class:`~connector.decode.avro.decoder.AvroDecoder` turns
them into :class:`~connector.errors.DecodeError` with the reason.
"""

from __future__ import annotations

import copy
import struct
from typing import Any

_AT = "  # at "  # ends a generated line converting a value, before the value's path
_ZIGZAG = tuple((n >> 1) ^ -(n & 1) for n in range(128))  # one-byte varints, decoded
# Items of no bytes (nulls, empty records) in all the arrays and maps of one record: nothing else
# bounds them, and arrays of arrays of nulls would multiply the counts of a few bytes into billions.
_MAX_ZERO_SIZE_ITEMS = 1_000_000
# Values of a recursive type nested deeper than this are refused. The bound is the JSON writer's (no
# deeper value could be sent), and it is what keeps the reader's one frame per level far from Python's
# recursion limit: without it, how deep a record could go would depend on the stack the reader is
# called from, and one record could get two different verdicts.
_MAX_NESTING = 254


class _Truncated(Exception):
    pass


class _Corrupt(Exception):
    pass


def _long(b: bytes, p: int) -> tuple[int, int]:
    """A zig-zag varint from ``b[p:]`` (any length); returns the value and the next position."""
    n = 0
    shift = 0
    while True:
        x = b[p]
        p += 1
        n |= (x & 0x7F) << shift
        if x < 0x80:
            return (n >> 1) ^ -(n & 1), p
        shift += 7
        if shift == 63:  # the tenth byte holds the 64th bit, and nothing more
            x = b[p]
            if x > 1:
                raise _Corrupt("a variable-length integer runs over 64 bits")
            n |= x << 63
            return (n >> 1) ^ -(n & 1), p + 1


def _failed_at(exc: BaseException) -> str:
    """The path of the value whose conversion raised ``exc`` in a compiled reader (``"after.born: "``).

    Read from the generated line the traceback ends in, so that the hot path carries no bookkeeping.
    """
    tb = exc.__traceback__
    path = ""
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code.co_filename == "<avro reader>":
            lines = frame.f_globals.get("_lines", ())
            line = lines[tb.tb_lineno - 1] if 0 < tb.tb_lineno <= len(lines) else ""
            path = line.partition(_AT)[2] or path
        tb = tb.tb_next
    return f"{path}: " if path else ""


def _too_deep(path: str) -> _Corrupt:
    return _Corrupt(f"{path} nests more than {_MAX_NESTING} levels deep")


def _bad_union(index: int, branches: int, path: str) -> _Corrupt:
    return _Corrupt(f"union branch {index} at {path} does not exist (the schema has {branches})")


def _bad_union_at(b: bytes, p: int, branches: int, path: str) -> _Corrupt:
    try:
        index = _long(b, p)[0]
    except IndexError:
        return _Corrupt(f"union branch index at {path} is cut short")
    return _bad_union(index, branches, path)


def _bad_enum(index: int, symbols: int, path: str) -> _Corrupt:
    return _Corrupt(f"enum index {index} at {path} does not exist (the schema has {symbols} symbols)")


def _bad_length(n: int, path: str) -> Exception:
    return _Truncated() if n >= 0 else _Corrupt(f"negative length {n} at {path}")


def _bad_boolean(x: int, path: str) -> _Corrupt:
    return _Corrupt(f"boolean byte 0x{x:02x} at {path} is neither 0 nor 1")


_RUNTIME: dict[str, Any] = {
    "_ZZ": _ZIGZAG,
    "_long": _long,
    "_unpack_f": struct.Struct("<f").unpack_from,
    "_unpack_d": struct.Struct("<d").unpack_from,
    "_Truncated": _Truncated,
    "_Corrupt": _Corrupt,
    "_too_deep": _too_deep,
    "_bad_union": _bad_union,
    "_bad_union_at": _bad_union_at,
    "_bad_enum": _bad_enum,
    "_bad_length": _bad_length,
    "_bad_boolean": _bad_boolean,
    "_deepcopy": copy.deepcopy,
}
