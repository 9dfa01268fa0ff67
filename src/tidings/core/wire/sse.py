"""Server-Sent Events framing (WHATWG HTML, "Server-sent events"), and a parser for clients.

Writing: field values never contain CR or LF (data is split into several ``data:`` lines; ids
and event names with CR/LF/NUL are refused), so no field or event injection is possible.
Parsing: :class:`SSEParser` implements the processing model's line rules (CRLF, CR or LF line
ends, a leading BOM, comments, ``retry`` digits only, ids without NUL persisting across events).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["SSEMessage", "SSEParser", "sse_comment", "sse_event", "sse_retry"]

_LINE_SPLIT = re.compile(rb"\r\n|\r|\n")
_BOM = b"\xef\xbb\xbf"


def _field_safe(value: bytes, what: str) -> bytes:
    if b"\n" in value or b"\r" in value or b"\0" in value:
        raise ValueError(f"SSE {what} must not contain CR, LF or NUL")
    return value


def sse_event(event: str | None, data: bytes, event_id: str | None = None) -> bytes:
    """One event: ``id``, ``event`` and ``data`` lines, ended by a blank line."""
    parts: list[bytes] = []
    if event_id is not None:
        parts.append(b"id: " + _field_safe(event_id.encode(), "id") + b"\n")
    if event is not None:
        parts.append(b"event: " + _field_safe(event.encode(), "event") + b"\n")
    for line in _LINE_SPLIT.split(data):
        parts.append(b"data: " + line + b"\n")
    parts.append(b"\n")
    return b"".join(parts)


def sse_comment(text: str = "") -> bytes:
    """A comment line (heartbeats); ignored by clients."""
    return b": " + _field_safe(text.encode(), "comment") + b"\n\n"


def sse_retry(milliseconds: int) -> bytes:
    """A ``retry:`` field (the reconnection delay an EventSource should use), to open the block
    of an event that carries data: a block of ``retry:`` alone is an event with no data, which
    some clients (httpx-sse) hand to the application as a message with empty data."""
    return b"retry: %d\n" % max(0, int(milliseconds))


@dataclass(frozen=True, slots=True)
class SSEMessage:
    event: str
    data: str
    last_event_id: str


class SSEParser:
    """Incremental event-stream parser: ``feed(bytes) -> [SSEMessage]``; ``retry`` is kept."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._scanned = 0  # bytes of the buffer known to hold no line end (long lines, drip-fed)
        self._first = True
        self._skip_lf = False
        self._data: list[str] = []
        self._event = ""
        self.last_event_id = ""
        self.retry: int | None = None

    def feed(self, chunk: bytes) -> list[SSEMessage]:
        self._buffer += chunk  # a bytearray: appending is amortised O(len(chunk))
        if self._first:
            # A BOM is skipped only at the very start: wait while the bytes could still be one,
            # and read no line before deciding (a later BOM belongs to a field name).
            if len(self._buffer) < 3 and _BOM.startswith(self._buffer):
                return []
            if self._buffer.startswith(_BOM):
                del self._buffer[:3]
            self._first = False
        if self._skip_lf and self._buffer:
            if self._buffer.startswith(b"\n"):
                del self._buffer[:1]
            self._skip_lf = False
        out: list[SSEMessage] = []
        while True:
            match = _LINE_SPLIT.search(self._buffer, self._scanned)
            if match is None:
                self._scanned = len(self._buffer)
                return out
            # A CR at the end ends its line now (waiting could hold an event back forever);
            # an LF that follows in the next chunk is the rest of that CRLF and is skipped.
            if match.group() == b"\r" and match.end() == len(self._buffer):
                self._skip_lf = True
            line = self._buffer[: match.start()].decode("utf-8", "replace")
            del self._buffer[: match.end()]
            self._scanned = 0
            message = self._line(line)
            if message is not None:
                out.append(message)

    def _line(self, line: str) -> SSEMessage | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry = int(value)
        return None

    def _dispatch(self) -> SSEMessage | None:
        data, event = self._data, self._event
        self._data, self._event = [], ""
        if not data:
            return None
        return SSEMessage(event or "message", "\n".join(data), self.last_event_id)
