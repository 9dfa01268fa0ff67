"""What a publication's ``data`` must be to be accepted, and what happens to stored data that
cannot be delivered.

The theory: a publication is stored before it is fanned out, and every transport encodes it
again on every read (WebSocket frames, SSE events, poll bodies, history replies). So whatever the
broker stores must be encodable by the encoder those reads use (orjson), wrapped in the deepest
reply that carries it, or one client can store a message that breaks the channel for everyone
(every resume and history read failing until it ages out). Hence one rule, checked once, before
the broker stores anything, by :meth:`DataRules.encode` (called by ``Node.publish``, the one
door every publish path goes through):

- ``data`` is encodable JSON (str keys, 64-bit integers, …);
- it nests at most ``limits.max_json_depth`` arrays/objects (:data:`MAX_JSON_DEPTH` at most,
  well inside :data:`MAX_DELIVERABLE_DEPTH`, the most any reply can carry);
- it is at most the namespace's ``max_message_bytes`` once encoded (compact JSON), whichever
  path it came by (WebSocket, the server API, a broadcast, an inbound webhook).

Depth is measured with orjson itself, not by a walk of the value in Python: the encoder
refuses more than :data:`ENCODER_DEPTH` levels, so ``data`` wrapped in
``ENCODER_DEPTH - max_json_depth`` arrays encodes exactly when ``data`` nests at most
``max_json_depth`` levels. The wrapper is built once per :class:`DataRules` and reused, and is
only needed when the encoded data could nest that deep (a short body with more brackets than
``max_json_depth``, or a body over :data:`COUNT_BELOW` bytes). Long bodies tend to follow long
ones, so after a long one the next is encoded wrapped straight away: one encode plus a few
microseconds. The encoded bytes are handed on (``data_json``): the broker stores them and the
fan-out splices them in, so the usual publish encodes its data once, as before.

Reading: a publication stored before this rule (by an older version, or another node on the
same Redis) may still be too deep to deliver. :func:`publication_from_json`, which the brokers
that store JSON use to decode, delivers such a publication *withheld*: same channel, offset,
epoch, id and time, event :data:`WITHHELD_EVENT`, and ``data`` an error object saying why. The
offsets stay contiguous, resumes and history reads keep working, and the client is told.
"""

from __future__ import annotations

from typing import Any

import orjson

from tidings.core.channels import namespace_of
from tidings.core.events import Publication
from tidings.core.permissions import NamespaceOptions
from tidings.exceptions import BadRequest, TooLarge

__all__ = [
    "COUNT_BELOW",
    "ENCODER_DEPTH",
    "MAX_DELIVERABLE_DEPTH",
    "MAX_JSON_DEPTH",
    "WITHHELD_EVENT",
    "DataRules",
    "deliverable",
    "publication_from_json",
]

ENCODER_DEPTH = 254
"""The most nested arrays/objects orjson (and pydantic's serializer) will write."""

REPLY_DEPTH = 4
"""The most levels a reply wraps around ``data`` (a WebSocket ``history`` reply: the reply,
its ``publications`` list, the publication: 3), plus one to spare."""

MAX_DELIVERABLE_DEPTH = ENCODER_DEPTH - REPLY_DEPTH
"""Deeper ``data`` cannot be delivered on every transport."""

MAX_JSON_DEPTH = 128
"""The highest ``limits.max_json_depth`` may be set (pydantic parses a server API body up to
about 200 levels; 128 keeps every path well inside every encoder and parser)."""

WITHHELD_EVENT = "undeliverable"

COUNT_BELOW = 2048
"""Bodies shorter than this are checked for depth by counting brackets; longer ones exactly."""


class DataRules:
    """The checks on ``data`` before it is stored (see the module docstring).

    Not thread-safe: :meth:`encode` borrows one reusable wrapper (synchronously, so any number of
    coroutines on one event loop may share it).
    """

    __slots__ = ("_inner", "_long", "_outer", "_pad", "max_depth")

    def __init__(self, max_depth: int) -> None:
        if not 1 <= max_depth <= MAX_JSON_DEPTH:
            raise ValueError(f"max_depth must be from 1 to {MAX_JSON_DEPTH}")
        self.max_depth = max_depth
        self._pad = ENCODER_DEPTH - max_depth
        inner: list[Any] = [None]
        outer = inner
        for _ in range(self._pad - 1):
            outer = [outer]
        self._inner, self._outer = inner, outer
        # Whether the last body was long: then the next is encoded wrapped at once (one encode,
        # where encoding plain first would take two). Only the cost depends on it.
        self._long = False

    def encode(self, channel: str, data: Any, options: NamespaceOptions) -> bytes:
        """``data`` as compact JSON, or BadRequest (not JSON, too deep) / TooLarge."""
        try:
            body = self._encode_wrapped(data) if self._long else self._encode_counted(data)
        except orjson.JSONEncodeError as exc:
            raise self._refusal(exc) from None
        self._long = len(body) > COUNT_BELOW
        self.check_size(channel, body, options)
        return body

    @staticmethod
    def check_size(channel: str, body: bytes, options: NamespaceOptions) -> None:
        """TooLarge if ``body`` (encoded data) is over the namespace's ``max_message_bytes``."""
        size = len(body)
        if size > options.max_message_bytes:
            raise TooLarge(
                f"data is {size} bytes, over the {options.max_message_bytes} bytes "
                f"max_message_bytes of namespace {namespace_of(channel)!r}"
            )

    def _encode_counted(self, data: Any) -> bytes:
        # Nesting n levels takes 2n bytes and n brackets. Counting costs about a nanosecond a
        # byte: short bodies are counted, long ones encoded again, wrapped (the first copy
        # dropped first: two large buffers alive at once cost far more).
        body = orjson.dumps(data)
        size = len(body)
        if size > COUNT_BELOW:
            del body
            return self._encode_wrapped(data)
        if size > 2 * self.max_depth + 1 and (body.count(b"[") + body.count(b"{") > self.max_depth):
            return self._encode_wrapped(data)
        return body

    def _encode_wrapped(self, data: Any) -> bytes:
        """``data`` as JSON, raising JSONEncodeError if it nests deeper than ``max_depth``."""
        self._inner[0] = data
        try:
            wrapped = orjson.dumps(self._outer)
        finally:
            self._inner[0] = None
        return wrapped[self._pad : -self._pad]

    def _refusal(self, exc: orjson.JSONEncodeError) -> BadRequest:
        if "recursion" in str(exc).lower():
            return BadRequest(f"data is nested deeper than {self.max_depth} levels (limits.max_json_depth)")
        return BadRequest(f"data is not JSON: {exc}")


def deliverable(data: Any) -> bool:
    """True if every reply can carry ``data`` (it nests at most MAX_DELIVERABLE_DEPTH levels)."""
    wrapped = data
    for _ in range(REPLY_DEPTH):
        wrapped = [wrapped]
    try:
        orjson.dumps(wrapped)
    except orjson.JSONEncodeError:
        return False
    return True


def publication_from_json(raw: bytes | str) -> Publication:
    """A stored publication (JSON of :meth:`Publication.to_dict`), withheld if undeliverable.

    Data nesting more than MAX_DELIVERABLE_DEPTH levels takes twice as many bytes and as many
    brackets: shorter payloads cost nothing more, longer ones two byte counts (about a
    nanosecond a byte), and only those with that many brackets are checked further.
    """
    publication = Publication.from_dict(orjson.loads(raw))
    if len(raw) > 2 * MAX_DELIVERABLE_DEPTH:
        encoded = raw.encode() if isinstance(raw, str) else raw
        if encoded.count(b"[") + encoded.count(b"{") > MAX_DELIVERABLE_DEPTH and not deliverable(
            publication.data
        ):
            return withheld(publication)
    return publication


def withheld(publication: Publication) -> Publication:
    """``publication`` with its data replaced by an error saying why it is not delivered."""
    message = (
        f"publication withheld: its data nests deeper than {MAX_DELIVERABLE_DEPTH} "
        "levels and cannot be delivered"
    )
    return Publication(
        publication.channel,
        publication.offset,
        publication.epoch,
        publication.id,
        publication.time,
        WITHHELD_EVENT,
        {"error": {"code": "internal", "message": message}},
    )
