"""Cutting a connection: what "abort" must mean for a client that reads nothing."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

__all__ = ["cut"]

_LINGER_OFF = struct.pack("ii", 1, 0)


def cut(transport: asyncio.Transport) -> None:
    """End the connection at once, with a reset.

    ``transport.abort()`` alone drops what the transport buffers, but what the kernel holds for
    the client stays, and the kernel keeps trying to deliver it, and the close behind it, to a
    client that reads nothing: the client's connection stays open (for minutes). With
    ``SO_LINGER`` 0 the close discards it and resets the connection.
    """
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # ValueError: a transport closed meanwhile (uvloop's socket has no descriptor left)
        with contextlib.suppress(OSError, ValueError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_OFF)
    transport.abort()
