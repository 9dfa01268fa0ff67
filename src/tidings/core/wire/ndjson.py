"""NDJSON framing for HTTP streaming: one JSON object per line."""

from __future__ import annotations

__all__ = ["ndjson_line"]


def ndjson_line(json_bytes: bytes) -> bytes:
    """One line; the caller owes compact JSON (orjson never emits a raw newline)."""
    if b"\n" in json_bytes or b"\r" in json_bytes:
        raise ValueError("NDJSON lines must not contain raw newlines")
    return json_bytes + b"\n"
