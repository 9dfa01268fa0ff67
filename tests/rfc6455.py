"""RFC 6455 framing for tests, written from the RFC and not from tidings' codec (5.2: base
framing, 5.3: masking), so that the codec's tests and the raw-socket clients do not share its
reading: a client's frames, and a decoder of what a server sends."""

from __future__ import annotations

import os

__all__ = ["client_frame", "client_header", "server_frames"]


def client_frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    key: bytes | None = None,
    mask: bool = True,
    rsv: int = 0,
) -> bytes:
    """A frame as a client sends it (RFC 6455 5.2): masked with ``key`` (a fresh random one if
    None) unless ``mask`` is False."""
    n = len(payload)
    first = bytes(((0x80 if fin else 0) | rsv << 4 | opcode,))
    mask_bit = 0x80 if mask else 0
    if n <= 125:
        head = first + bytes((mask_bit | n,))
    elif n <= 0xFFFF:
        head = first + bytes((mask_bit | 126,)) + n.to_bytes(2, "big")
    else:
        head = first + bytes((mask_bit | 127,)) + n.to_bytes(8, "big")
    if not mask:
        return head + payload
    key = os.urandom(4) if key is None else key
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def client_header(opcode: int, length: int, *, fin: bool = True) -> bytes:
    """The header alone (no mask key, no payload) of a masked client frame of ``length`` bytes."""
    return bytes(((0x80 if fin else 0) | opcode,)) + (
        bytes((0x80 | length,))
        if length <= 125
        else b"\xfe" + length.to_bytes(2, "big")
        if length <= 0xFFFF
        else b"\xff" + length.to_bytes(8, "big")
    )


def server_frames(wire: bytes) -> list[tuple[bool, int, int, bytes]]:
    """Decode what a server sent: (fin, rsv, opcode, payload) per frame. A server frame is never
    masked and uses the shortest length encoding (RFC 6455 5.2)."""
    frames: list[tuple[bool, int, int, bytes]] = []
    pos = 0
    while pos < len(wire):
        b0, b1 = wire[pos], wire[pos + 1]
        assert not b1 & 0x80, "a server must not mask"
        n, pos = b1 & 0x7F, pos + 2
        if n == 126:
            n, pos = int.from_bytes(wire[pos : pos + 2], "big"), pos + 2
            assert n > 125, "not the shortest length encoding"
        elif n == 127:
            n, pos = int.from_bytes(wire[pos : pos + 8], "big"), pos + 8
            assert 0xFFFF < n < 2**63, "not the shortest length encoding"
        assert pos + n <= len(wire), "truncated frame"
        frames.append((bool(b0 & 0x80), b0 >> 4 & 7, b0 & 0x0F, wire[pos : pos + n]))
        pos += n
    return frames
