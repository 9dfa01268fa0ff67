"""The client's WebSocket session: one connection, resubscribing with ``since`` after each drop."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from tidings.client.api import ERROR_TYPES
from tidings.client.resume import Backoff, gap_from
from tidings.core.delta import DeltaError
from tidings.core.disconnect import CloseCode
from tidings.core.position import Position
from tidings.exceptions import TidingsError, Unauthorized, Unavailable

if TYPE_CHECKING:
    from tidings.client.client import Client, Subscription

__all__ = ["WSSession", "ws_url"]

# Closes after which reconnecting cannot help (the client sent something the server refuses).
FATAL = {
    CloseCode.UNSUPPORTED_DATA,
    CloseCode.INVALID_PAYLOAD,
    CloseCode.MESSAGE_TOO_BIG,
    CloseCode.POLICY_VIOLATION,
}


def ws_url(base: str, token: str | None = None) -> str:
    parts = urlsplit(base)
    scheme = "wss" if parts.scheme == "https" else "ws"
    query = urlencode({"token": token}) if token else ""
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/ws", query, ""))


class WSSession:
    """Keeps one WebSocket open while the client needs it; see the module docstring."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.subs: dict[str, Subscription] = {}
        self.conn: ClientConnection | None = None
        self.connected = asyncio.Event()
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.refs = itertools.count(1)
        self._unsent: list[Subscription] = []
        self._subscribing: dict[int, str] = {}  # ref of a subscribe sent -> its channel
        self.backoff = Backoff(*client.backoff)
        self.task = asyncio.get_running_loop().create_task(self._run())

    def add(self, sub: Subscription) -> None:
        self.subs[sub.channel] = sub
        if self.conn is not None:
            self._unsent.append(sub)
            asyncio.get_running_loop().create_task(self._flush(self.conn))

    async def _flush(self, conn: ClientConnection) -> None:
        """Send pending subscribes; every request calls it first, so commands stay in order."""
        while self._unsent:
            await self._subscribe(conn, self._unsent.pop(0))

    async def remove(self, sub: Subscription) -> None:
        self.subs.pop(sub.channel, None)
        if self.conn is not None:
            with contextlib.suppress(TidingsError, ConnectionClosed):
                await self.request({"op": "unsubscribe", "channel": sub.channel})

    async def request(self, command: dict[str, Any], timeout: float = 30) -> dict[str, Any]:
        """Send a command once connected and return its reply; errors raise TidingsError."""
        await asyncio.wait_for(self.connected.wait(), timeout)
        assert self.conn is not None
        ref = next(self.refs)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[ref] = future
        try:
            await self._flush(self.conn)
            await self.conn.send(orjson.dumps({**command, "ref": ref}).decode())
            reply = await asyncio.wait_for(future, timeout)
        finally:
            self.pending.pop(ref, None)
        if reply["op"] == "error":
            raise ERROR_TYPES.get(reply["code"], TidingsError)(reply["message"])
        return reply

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    async def _subscribe(self, conn: ClientConnection, sub: Subscription) -> None:
        ref = next(self.refs)
        self._subscribing[ref] = sub.channel
        cmd: dict[str, Any] = {"op": "subscribe", "channel": sub.channel, "ref": ref}
        if sub.position is not None:
            cmd["since"] = sub.position.to_dict()
        if sub.decoder is not None:
            sub.decoder.reset()  # a new subscription starts with a full publication
            cmd["delta"] = "fossil"
        with contextlib.suppress(ConnectionClosed):
            await conn.send(orjson.dumps(cmd).decode())

    async def _run(self) -> None:
        while True:
            try:
                await self._connection()
            except asyncio.CancelledError:
                raise
            except TidingsError as exc:  # refused for good: tell every subscriber
                for sub in list(self.subs.values()):
                    sub.fail(exc)
                self._fail_pending(exc)
                return
            # InvalidHandshake covers a refused upgrade and one cut mid-way (InvalidMessage):
            # both are worth another try, and must not end the session's task silently.
            except (TimeoutError, OSError, ConnectionClosed, InvalidHandshake) as exc:
                self._fail_pending(Unavailable(f"connection lost: {exc}"))
            await asyncio.sleep(self.backoff.next_delay())

    def _fail_pending(self, exc: Exception) -> None:
        for future in self.pending.values():
            if not future.done():
                future.set_exception(exc)
        self.pending.clear()

    async def _connection(self) -> None:
        token = await self.client.fresh_token()
        try:
            conn = await connect(ws_url(self.client.base_url, token), open_timeout=10, max_size=2**24)
        except InvalidURI as exc:
            raise Unavailable(str(exc)) from None
        async with conn:  # closed however this ends, cancellation included
            self.conn = conn
            self._unsent.clear()
            self._subscribing.clear()  # refs of a lost connection are never answered
            try:
                for sub in list(self.subs.values()):
                    await self._subscribe(conn, sub)
                self.connected.set()
                async for frame in conn:
                    self.backoff.reset()
                    raw = frame if isinstance(frame, bytes) else frame.encode()
                    try:
                        self._frame(orjson.loads(raw), raw)
                    except DeltaError:  # cannot happen with a sound server: resume afresh
                        await conn.close(1002, "a delta did not apply")  # protocol error
                        break
            finally:
                self.connected.clear()
                self.conn = None
        code = conn.close_code
        if code in FATAL:
            raise TidingsError(f"closed by the server: {code} {conn.close_reason}")
        if code == CloseCode.UNAUTHORIZED and self.client.token_callback is None:
            raise Unauthorized(conn.close_reason or "token refused")

    def _frame(self, msg: dict[str, Any], raw: bytes) -> None:
        op = msg.get("op")
        if op == "message":
            sub = self.subs.get(msg["channel"])
            if sub is not None:
                sub.message(msg, raw)
            return
        if op == "gap":  # the server's broker link lost publications: say so, go on
            sub = self.subs.get(msg.get("channel", ""))
            if sub is not None:
                sub.gap(gap_from(msg, sub.latest))
            return
        if op == "subscribed":
            self._subscribed(msg)
        ref = msg.get("ref")
        future = self.pending.get(ref) if isinstance(ref, int) else None
        if future is not None and not future.done():
            future.set_result(msg)
        elif op == "error" and ref is not None:
            self._subscribe_error(msg)

    def _subscribed(self, msg: dict[str, Any]) -> None:
        self._subscribing.pop(msg.get("ref", -1), None)
        sub = self.subs.get(msg["channel"])
        if sub is None:
            return
        position = Position(msg["epoch"], msg["offset"])
        sub.at(position)
        if not msg.get("recovered", True) and "requested" in msg:
            sub.gap(gap_from(msg, position))

    def _subscribe_error(self, msg: dict[str, Any]) -> None:
        # A refused subscribe has no pending request: fail the subscription its ref names.
        channel = self._subscribing.pop(msg["ref"], None)
        sub = self.subs.pop(channel, None) if channel is not None else None
        if sub is not None:
            sub.fail(ERROR_TYPES.get(msg.get("code", ""), TidingsError)(msg.get("message", "")))
