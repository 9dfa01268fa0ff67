"""An echo WebSocket endpoint for the Autobahn testsuite (``/ws-echo``), off unless mounted.

The Autobahn fuzzing client needs a server that echoes every message; ``/ws`` speaks tidings'
JSON protocol instead. This endpoint runs on the very same stack as ``/ws`` on the ASGI path
(uvicorn's sans-I/O ``websockets`` protocol under Starlette, with the frame size limit and
compression settings of :func:`tidings.server.run.uvicorn_config`), so what Autobahn finds about
framing, fragmentation, UTF-8 validation and the closing handshake holds for ``/ws``.

It is never part of :func:`tidings.server.app.create_app`: only ``scripts/autobahn_server.py``
mounts it, with :func:`add_echo`.
"""

from __future__ import annotations

from typing import Any

from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

__all__ = ["ECHO_PATH", "add_echo", "echo"]

ECHO_PATH = "/ws-echo"


async def echo(websocket: WebSocket) -> None:
    """Send every text or binary message back as it came, until the client closes."""
    await websocket.accept()
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                await websocket.send_text(message["text"])
            elif message.get("bytes") is not None:
                await websocket.send_bytes(message["bytes"])
    except WebSocketDisconnect:
        return


def add_echo(app: Any) -> None:
    """Mount :func:`echo` at :data:`ECHO_PATH` on a Starlette app (first, ahead of other routes)."""
    app.router.routes.insert(0, WebSocketRoute(ECHO_PATH, echo))
