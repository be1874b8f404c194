"""XML request bodies to the same dict a JSON body gives, and answers back to XML.

The platform's XML convention (see the seed pages): the root element is ``<xml>``; an element with
children is an object; a repeated element is an array, and ``array='true'`` makes a single one an
array too; leaf text becomes a number (``12``, ``-3``, ``1.5``, no leading zeros, no sign ``+``),
a boolean (``true``/``false``) or else a string, and ``string="true"`` keeps it a string
(``<CRM_ID string="true">00067</CRM_ID>``). Phone numbers such as ``+79000000000`` stay strings.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any
from xml.sax.saxutils import escape

_INT_RE = re.compile(r"-?(?:0|[1-9][0-9]{0,17})")
_FLOAT_RE = re.compile(r"-?(?:0|[1-9][0-9]*)\.[0-9]+")
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")


class XmlBodyError(ValueError):
    """The body is not well-formed XML, or not an ``<xml>`` document."""


def parse_xml(body: bytes) -> dict[str, Any]:
    """An ``<xml>`` document as a dict."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise XmlBodyError(f"malformed XML: {exc}") from None
    if root.tag != "xml":
        raise XmlBodyError(f"the root element must be <xml>, not <{root.tag}>")
    value = _element(root)
    return value if isinstance(value, dict) else {}


def _element(el: ET.Element) -> Any:
    children = list(el)
    if not children:
        if el.get("string") == "true":
            return el.text or ""
        return _scalar((el.text or "").strip())
    # An element's value is a dict or a scalar, never a list, so grouping by tag is unambiguous.
    grouped: dict[str, list[Any]] = {}
    forced: set[str] = set()
    for child in children:
        grouped.setdefault(child.tag, []).append(_element(child))
        if child.get("array") == "true":
            forced.add(child.tag)
    return {tag: values if len(values) > 1 or tag in forced else values[0] for tag, values in grouped.items()}


def _scalar(text: str) -> Any:
    if _INT_RE.fullmatch(text):
        return int(text)
    if _FLOAT_RE.fullmatch(text):
        return float(text)
    if text == "true":
        return True
    if text == "false":
        return False
    return text


def render_xml(payload: dict[str, Any]) -> bytes:
    """An answer dict as the platform's XML: lists become repeated elements under ``<xml>``."""
    parts: list[str] = ["<xml>"]
    _render_fields(payload, parts)
    parts.append("</xml>")
    return "".join(parts).encode()


def _render_fields(obj: dict[str, Any], parts: list[str]) -> None:
    for key, value in obj.items():
        tag = key if _NAME_RE.fullmatch(key) else "field"
        for item in value if isinstance(value, list) else [value]:
            parts.append(f"<{tag}>")
            if isinstance(item, dict):
                _render_fields(item, parts)
            elif isinstance(item, bool):
                parts.append("true" if item else "false")
            elif item is not None:
                parts.append(escape(str(item)))
            parts.append(f"</{tag}>")
