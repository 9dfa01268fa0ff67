"""Fossil deltas (the format of the Fossil SCM's ``delta.c``): :func:`create` and :func:`apply`.

The format is what Centrifugo's clients and the npm package ``fossil-delta`` apply, and what
tidings sends a delta subscriber (docs/reference/protocol.md, "Delta updates")::

    <target length>\\n  then commands:  <n>@<offset>,   copy n bytes of the source from offset
                                       <n>:<n bytes>    insert n literal bytes
                                       <checksum>;      end; checksum of the target

Integers are written most significant digit first in base 64 with the digits
``0-9 A-Z _ a-z ~``. The checksum is the 32-bit sum of the target read as big-endian words
(the last, short word padded with zeros on the right).

The encoder is the classic one: the source is cut into 16-byte blocks indexed by a rolling hash,
the target is scanned with the same hash, and each candidate match is extended both ways. Any
valid delta applies; this one need not be byte-identical to Fossil's. The PyPI packages that wrap
``delta.c`` are unmaintained C extensions, and this is small: it lives here, sans-I/O.
"""

from __future__ import annotations

import operator
import struct

__all__ = ["DeltaError", "apply", "create"]

_DIGITS = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~"
_VALUE = {d: i for i, d in enumerate(_DIGITS)}
_NHASH = 16
_WEIGHTS = range(_NHASH, 0, -1)  # b of the hash: the first byte counts 16 times, the last once
_SEARCH_LIMIT = 250  # candidates tried per target position (delta.c's bound on a bad hash chain)


class DeltaError(ValueError):
    """The delta is malformed, does not fit the source, or its checksum is wrong."""


def _put_int(value: int) -> bytes:
    if value == 0:
        return b"0"
    out = bytearray()
    while value > 0:
        out.append(_DIGITS[value & 63])
        value >>= 6
    out.reverse()
    return bytes(out)


def _digit_count(value: int) -> int:
    count = 1
    while value >= 64:
        value >>= 6
        count += 1
    return count


def checksum(data: bytes) -> int:
    """The 32-bit sum of ``data`` as big-endian words (the last padded with zeros)."""
    padded = data + b"\0" * (-len(data) % 4)
    words: tuple[int, ...] = struct.unpack(f">{len(padded) // 4}I", padded)
    return sum(words) & 0xFFFFFFFF


def _hash(block: bytes | memoryview) -> tuple[int, int]:
    """``(a, b)`` of delta.c's rolling hash over one 16-byte block."""
    return sum(block) & 0xFFFF, sum(map(operator.mul, _WEIGHTS, block)) & 0xFFFF


def create(source: bytes, target: bytes) -> bytes:
    """The delta that turns ``source`` into ``target`` (:func:`apply` ``(source, delta)``)."""
    out = bytearray(_put_int(len(target)))
    out += b"\n"
    len_src, len_out = len(source), len(target)
    if len_src <= _NHASH:
        _literal(out, target)
        out += _put_int(checksum(target))
        out += b";"
        return bytes(out)
    n_hash = len_src // _NHASH
    collide = [-1] * n_hash
    landmark = [-1] * n_hash
    for i in range(0, len_src - _NHASH, _NHASH):
        a, b = _hash(source[i : i + _NHASH])
        hv = (a | (b << 16)) % n_hash
        collide[i // _NHASH] = landmark[hv]
        landmark[hv] = i // _NHASH
    base = 0
    while base + _NHASH < len_out:
        a, b = _hash(target[base : base + _NHASH])
        i = 0
        while True:
            best_cnt = best_ofst = best_lit = 0
            block = landmark[(a | (b << 16)) % n_hash]
            limit = _SEARCH_LIMIT
            while block >= 0 and limit > 0:
                limit -= 1
                i_src = block * _NHASH
                y = base + i
                j = _common_prefix(source, i_src, target, y, min(len_src - i_src, len_out - y)) - 1
                # extend backward, into the literal run before this position
                k = 1
                while k < i_src and k <= i and source[i_src - k] == target[base + i - k]:
                    k += 1
                k -= 1
                ofst = i_src - k
                cnt = j + k + 1
                lit = i - k
                cost = _digit_count(lit) + _digit_count(cnt) + _digit_count(ofst) + 3
                if cnt >= cost and cnt > best_cnt:
                    best_cnt, best_ofst, best_lit = cnt, ofst, lit
                block = collide[block]
            if best_cnt > 0:
                if best_lit > 0:
                    _literal(out, target[base : base + best_lit])
                    base += best_lit
                base += best_cnt
                out += _put_int(best_cnt)
                out += b"@"
                out += _put_int(best_ofst)
                out += b","
                break
            if base + i + _NHASH >= len_out:
                _literal(out, target[base:])
                base = len_out
                break
            old, new = target[base + i], target[base + i + _NHASH]
            a = (a - old + new) & 0xFFFF
            b = (b - _NHASH * old + a) & 0xFFFF
            i += 1
    if base < len_out:
        _literal(out, target[base:])
    out += _put_int(checksum(target))
    out += b";"
    return bytes(out)


def _common_prefix(a: bytes, i: int, b: bytes, j: int, limit: int) -> int:
    """How many bytes ``a[i:]`` and ``b[j:]`` have in common, at most ``limit``: slices compared
    in C, growing while they match and halving when they do not (a byte loop is ten times slower)."""
    if limit <= 0 or a[i] != b[j]:  # most candidates of a hash bucket differ at once
        return 0
    n = 0
    step = 16
    while n < limit:
        k = min(step, limit - n)
        if a[i + n : i + n + k] == b[j + n : j + n + k]:
            n += k
            step *= 2
        elif k == 1:
            break
        else:
            step = k // 2
    return n


def _literal(out: bytearray, text: bytes) -> None:
    out += _put_int(len(text))
    out += b":"
    out += text


class _Reader:
    __slots__ = ("delta", "pos")

    def __init__(self, delta: bytes) -> None:
        self.delta = delta
        self.pos = 0

    def integer(self) -> int:
        delta, pos = self.delta, self.pos
        value = 0
        start = pos
        while pos < len(delta) and (digit := _VALUE.get(delta[pos])) is not None:
            value = (value << 6) + digit
            pos += 1
        if pos == start:
            raise DeltaError(f"expected a number at byte {start}")
        self.pos = pos
        return value

    def op(self) -> int:
        if self.pos >= len(self.delta):
            raise DeltaError("unterminated delta")
        op = self.delta[self.pos]
        self.pos += 1
        return op


def apply(source: bytes, delta: bytes) -> bytes:
    """``source`` changed by ``delta``; :class:`DeltaError` if the delta is not valid for it."""
    reader = _Reader(delta)
    limit = reader.integer()
    if reader.op() != ord("\n"):
        raise DeltaError("size integer not terminated by a newline")
    out = bytearray()
    while True:
        count = reader.integer()
        op = reader.op()
        if op == ord("@"):
            offset = reader.integer()
            if reader.op() != ord(","):
                raise DeltaError("copy command not terminated by a comma")
            if len(out) + count > limit:
                raise DeltaError("copy exceeds the output size")
            if offset + count > len(source):
                raise DeltaError("copy extends past the end of the source")
            out += source[offset : offset + count]
        elif op == ord(":"):
            if len(out) + count > limit:
                raise DeltaError("insert exceeds the output size")
            if reader.pos + count > len(delta):
                raise DeltaError("insert extends past the end of the delta")
            out += delta[reader.pos : reader.pos + count]
            reader.pos += count
        elif op == ord(";"):
            if count != checksum(bytes(out)):
                raise DeltaError("bad checksum")
            if len(out) != limit:
                raise DeltaError("output size does not match")
            return bytes(out)
        else:
            raise DeltaError(f"unknown delta operator {chr(op)!r}")
