"""Channel names, namespaces and grant patterns.

A channel name matches ``[A-Za-z0-9_.:@/=-]{1,200}``; its namespace is the part before the first
``:`` (``chat:lobby`` is in ``chat``), and a name without ``:`` is in the ``default`` namespace.
Grant patterns use ``*`` for any run of characters (``chat:*``, ``user:42:*``).
"""

from __future__ import annotations

import re
from functools import lru_cache

from tidings.exceptions import BadRequest

__all__ = [
    "DEFAULT_NAMESPACE",
    "MAX_CHANNEL_LENGTH",
    "namespace_of",
    "pattern_matches",
    "validate_channel",
    "validate_pattern",
]

MAX_CHANNEL_LENGTH = 200
DEFAULT_NAMESPACE = "default"
_CHANNEL_RE = re.compile(r"[A-Za-z0-9_.:@/=\-]{1,200}")
_PATTERN_RE = re.compile(r"[A-Za-z0-9_.:@/=\-*]{1,200}")


def validate_channel(name: object) -> str:
    """Return ``name`` if it is a valid channel name, else raise :class:`BadRequest`."""
    if not isinstance(name, str) or _CHANNEL_RE.fullmatch(name) is None:
        shown = repr(name)[:60]
        raise BadRequest(f"invalid channel name {shown}: use 1-200 characters of A-Z a-z 0-9 _ . : @ / = -")
    return name


def validate_pattern(pattern: object) -> str:
    """Return ``pattern`` if it is a valid channel pattern (a name that may contain ``*``)."""
    if not isinstance(pattern, str) or _PATTERN_RE.fullmatch(pattern) is None:
        raise BadRequest(f"invalid channel pattern {repr(pattern)[:60]}")
    return pattern


def namespace_of(channel: str) -> str:
    """The namespace of a valid channel name."""
    head, sep, _ = channel.partition(":")
    return head if sep else DEFAULT_NAMESPACE


@lru_cache(maxsize=4096)
def _compile(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")))


def pattern_matches(pattern: str, channel: str) -> bool:
    """Whether ``channel`` matches ``pattern``, where ``*`` stands for any run of characters."""
    if "*" not in pattern:
        return pattern == channel
    return _compile(pattern).fullmatch(channel) is not None
