"""The Python client: ``async with tidings.Client(url) as client`` and ``client.subscribe(...)``.

::

    async with tidings.Client("http://127.0.0.1:8600", transport="sse") as client:
        async for item in client.subscribe("chat:lobby"):
            if isinstance(item, tidings.Gap):
                ...   # history could not cover a resume: decide what to do
            else:
                print(item.offset, item.data)

Every transport (``ws``, ``sse``, ``stream``, ``longpoll``, ``poll``) reconnects by itself with
exponential backoff and full jitter, and resumes from the last position the subscription saw, so
the caller sees every publication exactly once and in order, or a :class:`~tidings.Gap` where
history no longer reached back. Positions and cursors use the same core modules as the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from tidings.client.http import run_http
from tidings.client.ws import WSSession
from tidings.core.cursor import cursor_position, encode_cursor
from tidings.core.delta import DeltaDecoder
from tidings.core.events import Gap, Publication
from tidings.core.position import Position
from tidings.exceptions import BadRequest

__all__ = ["TRANSPORTS", "Client", "Subscription"]

TRANSPORTS = ("ws", "sse", "stream", "longpoll", "poll")
#: The transports that carry delta updates (polls get full publications).
DELTA_TRANSPORTS = ("ws", "sse", "stream")
TokenSource = Callable[[], str | Awaitable[str]]
Item = Publication | Gap


class Subscription:
    """An async iterator of :class:`Publication` and :class:`Gap` items for one channel.

    ``position`` is the last position seen; ``cursor`` the cursor to resume after it.
    """

    def __init__(self, client: Client, channel: str, since: Position | None) -> None:
        self.client = client
        self.channel = channel
        self.position = since
        self.latest: Position | None = None
        self._queue: asyncio.Queue[Item | BaseException] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None
        self.closed = False
        #: Applies delta updates (``Client(delta=True)`` on ws, sse and stream), else None.
        self.decoder = DeltaDecoder() if client.delta and client.transport in DELTA_TRANSPORTS else None

    @property
    def cursor(self) -> str | None:
        return encode_cursor({self.channel: self.position}) if self.position else None

    def __aiter__(self) -> AsyncIterator[Item]:
        return self

    async def __anext__(self) -> Item:
        if self.closed and self._queue.empty():
            raise StopAsyncIteration
        item = await self._queue.get()
        if isinstance(item, StopAsyncIteration):
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            raise item
        return item

    async def aclose(self) -> None:
        """Stop receiving (the subscription ends on the server too)."""
        await self.client._unsubscribe(self)

    # fed by transports -----------------------------------------------------------------------

    def message(self, obj: dict[str, Any], raw: bytes) -> None:
        """A publication as received (``raw``: its JSON text), a delta applied if it is one;
        :class:`~tidings.core.fossil.DeltaError` if it does not apply (reconnect then)."""
        if self.decoder is not None:
            obj = self.decoder.decode(obj, raw)
        self.publication(Publication.from_dict(obj))

    def publication(self, pub: Publication) -> None:
        """Queue ``pub`` unless it was seen already (exactly once across reconnects)."""
        pos = self.position
        if pos is not None and pos.epoch == pub.epoch and pub.offset <= pos.offset:
            return
        self.position = pub.position
        self._queue.put_nowait(pub)

    def gap(self, gap: Gap) -> None:
        """Surface a gap, and continue from what survived (or from the present)."""
        latest = self.latest.offset if self.latest and self.latest.epoch == gap.epoch else 0
        start = gap.available_from if gap.available_from is not None else latest + 1
        pos = self.position
        if pos is None or pos.epoch != gap.epoch or pos.offset < start - 1:
            self.position = Position(gap.epoch, start - 1)  # never back: no repeats
        self._queue.put_nowait(gap)

    def at(self, position: Position) -> None:
        """Where the channel stands; adopted by a subscription that has seen nothing yet."""
        self.latest = position
        if self.position is None:
            self.position = position

    def fail(self, exc: BaseException) -> None:
        self._queue.put_nowait(exc)

    def finish(self) -> None:
        self.closed = True
        self._queue.put_nowait(StopAsyncIteration())


class Client:
    """A connection to a tidings server over one transport. See the module docstring."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        token_callback: TokenSource | None = None,
        transport: str = "ws",
        backoff: tuple[float, float] = (0.25, 10.0),
        poll_interval: float = 1.0,
        long_poll_timeout: float = 25.0,
        heartbeat_timeout: float = 60.0,
        delta: bool = False,
    ) -> None:
        """``delta``: ask for delta updates (``"fossil"``) on every subscription, over ``ws``,
        ``sse`` and ``stream`` (the channels' namespaces must allow them, else subscribing
        fails with :class:`~tidings.exceptions.Forbidden`); they are applied here, so the
        application sees full publications as ever."""
        if transport not in TRANSPORTS:
            raise BadRequest(f"transport must be one of {', '.join(TRANSPORTS)}")
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.token_callback = token_callback
        self.transport = transport
        self.backoff = backoff
        self.poll_interval = poll_interval
        self.long_poll_timeout = long_poll_timeout
        self.heartbeat_timeout = heartbeat_timeout
        self.delta = delta
        self.subscriptions: dict[str, Subscription] = {}
        self._ws: WSSession | None = None  # made on first use

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def fresh_token(self) -> str | None:
        """The token to connect with: from ``token_callback`` when given (refresh), else fixed."""
        if self.token_callback is not None:
            value = self.token_callback()
            self.token = await value if inspect.isawaitable(value) else value
        return self.token

    def subscribe(self, channel: str, *, since: Position | str | None = None) -> Subscription:
        """Subscribe to ``channel``; ``since`` (a Position or a cursor) resumes after it.

        A cursor that holds no position for ``channel`` raises
        :class:`~tidings.exceptions.InvalidCursor` (as the server refuses it), rather than
        subscribing from the present."""
        if isinstance(since, str):
            since = cursor_position(since, channel)
        if channel in self.subscriptions:
            raise BadRequest(f"already subscribed to {channel}")
        sub = Subscription(self, channel, since)
        self.subscriptions[channel] = sub
        if self.transport == "ws":
            self._session().add(sub)
        else:
            sub.task = asyncio.get_running_loop().create_task(run_http(self, sub))
        return sub

    async def publish(
        self, channel: str, data: Any, event: str | None = None, idempotency_key: str | None = None
    ) -> int:
        """Publish over WebSocket (the namespace must allow client publish); returns the offset."""
        cmd: dict[str, Any] = {"op": "publish", "channel": channel, "data": data, "event": event or "message"}
        if idempotency_key is not None:
            cmd["idempotency_key"] = idempotency_key
        reply = await self._session().request(cmd)
        return int(reply["offset"])

    async def rpc(self, method: str, data: Any = None) -> Any:
        """Call the application's backend through the server's rpc proxy (WebSocket only;
        docs/reference/proxy.md); returns the result's ``data``, raises the backend's error."""
        reply = await self._session().request({"op": "rpc", "method": method, "data": data})
        return reply.get("data")

    async def presence(self, channel: str) -> list[dict[str, Any]]:
        reply = await self._session().request({"op": "presence", "channel": channel})
        return list(reply["clients"])

    async def history(
        self, channel: str, *, since: Position | None = None, limit: int = 100
    ) -> list[Publication]:
        cmd: dict[str, Any] = {"op": "history", "channel": channel, "limit": limit}
        if since is not None:
            cmd["since"] = since.to_dict()
        reply = await self._session().request(cmd)
        return [Publication.from_dict(p) for p in reply["publications"]]

    async def _unsubscribe(self, sub: Subscription) -> None:
        if self.subscriptions.get(sub.channel) is not sub:
            return
        del self.subscriptions[sub.channel]
        if sub.task is not None:
            sub.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sub.task
        elif self._ws is not None:
            await self._ws.remove(sub)
        sub.finish()

    def _session(self) -> WSSession:
        if self._ws is None:
            self._ws = WSSession(self)
        return self._ws

    async def close(self) -> None:
        # Closing the WebSocket ends every subscription on the server: no unsubscribe round trip
        # per channel (each could wait for a reconnect or a reply that never comes).
        ws, self._ws = self._ws, None
        for sub in list(self.subscriptions.values()):
            await self._unsubscribe(sub)
        if ws is not None:
            await ws.close()
