"""``/ws-echo`` on the owned-socket engine (setting ``server.debug_echo``): a
:class:`~tidings.engines.sockets.frames.FrameConnection` that echoes every message, for the
Autobahn testsuite (``scripts/autobahn.sh``)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import TYPE_CHECKING

from tidings.core.wire import websocket as wire
from tidings.core.wire.deflate import Deflate
from tidings.engines.sockets.frames import FrameConnection

if TYPE_CHECKING:
    from tidings.engines.sockets.protocol import FastContext

__all__ = ["ECHO_MAX_SIZE", "EchoWebSocket"]

#: Autobahn's case 9 sends messages of up to 16 MiB.
ECHO_MAX_SIZE = 64 * 2**20


class EchoWebSocket(FrameConnection):
    """``/ws-echo`` (setting ``server.debug_echo``): echoes messages, for the Autobahn suite."""

    __slots__ = ()

    def __init__(
        self, ctx: FastContext, transport: asyncio.Transport, deflate: Deflate | None = None
    ) -> None:
        config = replace(
            ctx.ws_config, max_frame_bytes=ECHO_MAX_SIZE, outbox_bytes=2 * ECHO_MAX_SIZE, binary=True
        )
        super().__init__(ctx, transport, config, deflate=deflate)

    def start_commands(self) -> None:
        machine = self.machine
        while (message := machine.next_command()) is not None:
            if isinstance(message, str):
                self.send_message(message.encode())
            else:
                self.send_message(message, wire.OP_BINARY)
