"""What never shows: secrets by key name, credentials inside URLs.

Used by the settings' ``repr``, by the problems :func:`~connector.config.load_settings` reports and by
:func:`~connector.config.masked_dump`; it knows no settings class, so every other module may use it.
"""

from __future__ import annotations

import re
from typing import Any

_SENSITIVE_WORDS = ("password", "secret", "token", "key.pem", "sasl.oauthbearer.config")
MASK = "**********"


def _looks_secret(key: str) -> bool:
    lower = key.lower()
    return any(w in lower for w in _SENSITIVE_WORDS)


def _mask(node: Any, key: str = "") -> Any:
    if isinstance(node, dict):
        return {k: _mask(v, str(k)) for k, v in node.items()}
    if isinstance(node, list):
        return [_mask(v, key) for v in node]
    if node is not None and _looks_secret(key) and not key.endswith("_file"):
        return MASK
    if isinstance(node, str):
        return mask_url_credentials(node)
    return node


_URL_START = re.compile(r"^\s*[A-Za-z][A-Za-z0-9+.-]*://")
_URL_INSIDE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")
_QUERY_PART = re.compile(r"([?#&;])([^?#&;]*)")


def mask_url_credentials(text: str) -> str:
    """``text`` with the credentials of every URL in it masked: the user info and every query value.

    A value that starts as a URL is one URL to its end (a password may hold spaces); elsewhere a URL
    ends at whitespace. The user info runs to the last ``@``, since a password may hold ``/`` or ``@``
    unescaped; when that ``@`` may be inside the query, all after the scheme is masked. Masking a little
    too much is better than showing a piece of a secret.
    """
    if _URL_START.match(text):
        return _mask_url(text)
    return _URL_INSIDE.sub(lambda m: _mask_url(m.group(0)), text)


def _mask_url(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    userinfo = ""
    at = rest.rfind("@")
    if at >= 0:
        if set("?#") & set(rest[:at]):
            return f"{scheme}{sep}{MASK}"  # an "@" in the query: no telling where a value ends, mask it all
        user, colon, _ = rest[:at].partition(":")
        userinfo = f"{user}:{MASK}@" if colon and not set("/@") & set(user) else f"{MASK}@"
        rest = rest[at + 1 :]
    cut = min((i for i in (rest.find("?"), rest.find("#")) if i >= 0), default=-1)
    if cut >= 0:
        rest = rest[:cut] + _QUERY_PART.sub(lambda m: m.group(1) + _mask_param(m.group(2)), rest[cut:])
    return f"{scheme}{sep}{userinfo}{rest}"


def _mask_param(param: str) -> str:
    name, eq, _ = param.partition("=")
    if eq:
        return f"{name}={MASK}"
    return MASK if param else ""
