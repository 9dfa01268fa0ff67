"""The CLI's subscribe loop (the full Python client builds on the same wire modules)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import orjson
import websockets

from tidings.core.cursor import decode_cursor

__all__ = ["run_subscribe", "ws_url"]


def ws_url(base: str, path: str = "/ws", token: str | None = None) -> str:
    parts = urlsplit(base)
    scheme = "wss" if parts.scheme == "https" else "ws"
    query = urlencode({"token": token}) if token else ""
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + path, query, ""))


async def run_subscribe(url: str, channels: list[str], *, transport: str, cursor: str | None,
                        token: str | None, count: int | None,
                        emit: Callable[[Any], None], notice: Callable[[Any], None]) -> None:
    if transport != "ws":
        from tidings.client.http import run_http_subscribe  # type: ignore[import-not-found,unused-ignore]

        await run_http_subscribe(url, channels, transport=transport, cursor=cursor, token=token,
                                 count=count, emit=emit, notice=notice)
        return
    positions = decode_cursor(cursor) if cursor else {}
    received = 0
    async with websockets.connect(ws_url(url, token=token), max_size=2**24) as ws:
        for ref, channel in enumerate(channels, 1):
            cmd: dict[str, Any] = {"op": "subscribe", "ref": ref, "channel": channel}
            if channel in positions:
                cmd["since"] = positions[channel].to_dict()
            await ws.send(orjson.dumps(cmd).decode())
        async for frame in ws:
            msg = orjson.loads(frame)
            op = msg.pop("op", None)
            if op == "message":
                emit(msg)
                received += 1
                if count is not None and received >= count:
                    return
            elif op == "error" or (op == "subscribed" and not msg.get("recovered", True)
                                   and "requested" in msg):
                notice({"op": op, **msg})
