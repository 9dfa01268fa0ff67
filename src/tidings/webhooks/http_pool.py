"""The outbound HTTP/1.1 client of webhooks: keep-alive connections per endpoint, pinned to
addresses the SSRF guard checked, responses parsed by llhttp (``httptools``).

Why not httpx: one webhook attempt through httpx costs about 30 times the CPU of this client
(measured: docs/topics/webhooks.md, "Choosing the HTTP client"), and a webhook sender does one thing: POST a
small body and read the status, a few headers and the start of the response. What it owes:

- a new connection goes only to an address :func:`tidings.webhooks.ssrf.resolve` checked, with
  the URL's host as ``Host`` and TLS server name (certificate verified against it); a kept-alive
  connection was checked when it was opened (connections are never moved to another address);
- the response body is read up to ``response_cap`` bytes, then the connection is closed (never
  reused with an unread body); redirects are not followed (a 3xx is the attempt's result);
- a connection is reused only after a complete response that allows keep-alive, and not after
  ``keepalive_expiry`` seconds idle (the server may have closed it meanwhile).

:meth:`HttpPool.post` raises :class:`HttpError` for a connection that failed or closed early,
and whatever :func:`~tidings.webhooks.ssrf.resolve` raises; timeouts are the caller's
(``asyncio.timeout`` around the call: the connection in use is closed when cancelled).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass, field
from typing import cast

import httptools

from tidings.webhooks.ssrf import Network, Target, resolve, split_url

__all__ = ["HttpError", "HttpPool", "Response"]


class HttpError(Exception):
    """The connection failed or the response was malformed."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    retry_after: str | None


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection; one request at a time (no pipelining)."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[Response] | None = None
        self.closed = False
        self.reusable = False
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.body = bytearray()
        self.retry_after: str | None = None
        self.header_name = b""

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self.waiter is None or self.waiter.done():
            self.close()  # nothing was asked: a server speaking out of turn is not reused
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(HttpError(f"bad response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            if self.status:  # a body delimited by the end of the connection
                self.waiter.set_result(Response(self.status, bytes(self.body), self.retry_after))
            else:
                self.waiter.set_exception(HttpError(f"connection closed: {exc or 'by the peer'}"))

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        # a header may come in pieces (split across reads): llhttp calls on_header per piece,
        # with an empty name for a continuation of the previous value
        if name:
            self.header_name = name.lower()
        if self.header_name == b"retry-after":
            self.retry_after = (self.retry_after or "") + value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_body(self, chunk: bytes) -> None:
        self.body += chunk
        if len(self.body) >= self.cap:
            self._done(reuse=False)  # the rest is not read: the connection cannot be reused

    def on_message_complete(self) -> None:
        self._done(reuse=self.parser.should_keep_alive())

    # ours

    def _done(self, *, reuse: bool) -> None:
        if self.waiter is None or self.waiter.done():
            return  # cut at the cap already: the end of that body changes nothing
        self.reusable = reuse
        self.waiter.set_result(Response(self.status, bytes(self.body[: self.cap]), self.retry_after))
        if not reuse:
            self.close()

    def _fail(self, exc: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)
        self.close()

    def close(self) -> None:
        self.closed = True
        self.reusable = False
        if self.transport is not None:
            self.transport.close()

    async def request(self, head: bytes, body: bytes) -> Response:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.reusable = False
        self._reset()
        self.transport.write(head + body)
        try:
            return await self.waiter
        except BaseException:
            self.close()  # cancelled (timeout) or failed mid-response
            raise
        finally:
            self.waiter = None


@dataclass(slots=True)
class _Endpoint:
    url: str
    target: Target
    head: bytes  # request line and Host header
    idle: list[_Connection] = field(default_factory=list)


class HttpPool:
    """See the module docstring. ``allowed``: networks the SSRF guard lets through;
    ``verify``: the TLS context for https endpoints."""

    def __init__(
        self,
        *,
        allowed: list[Network],
        response_cap: int,
        verify: ssl.SSLContext,
        keepalive_expiry: float = 5.0,
        user_agent: str = "",
    ) -> None:
        self.allowed = allowed
        self.cap = max(1, response_cap)
        self.verify = verify
        self.keepalive_expiry = keepalive_expiry
        self.user_agent = user_agent.encode()
        self.endpoints: dict[str, _Endpoint] = {}

    def _endpoint(self, key: str, url: str) -> _Endpoint:
        endpoint = self.endpoints.get(key)
        if endpoint is None or endpoint.url != url:
            if endpoint is not None:
                self.forget(key)
            target = split_url(url)
            if any(c in f"{target.path}{target.host_header}" for c in "\r\n\0 "):
                raise HttpError("the URL has a character not allowed in a request")
            head = f"POST {target.path} HTTP/1.1\r\nhost: {target.host_header}\r\n".encode("latin-1")
            if self.user_agent:
                head += b"user-agent: " + self.user_agent + b"\r\n"
            endpoint = self.endpoints[key] = _Endpoint(url, target, head)
        return endpoint

    async def _connect(self, endpoint: _Endpoint) -> _Connection:
        allowed = await resolve(endpoint.target, self.allowed)  # the SSRF check, per connection
        https = endpoint.target.scheme == "https"
        try:
            _, connection = await asyncio.get_running_loop().create_connection(
                lambda: _Connection(self.cap),
                str(allowed.address),
                endpoint.target.port,
                ssl=self.verify if https else None,
                server_hostname=endpoint.target.host if https else None,
            )
        except (OSError, ssl.SSLError) as exc:
            raise HttpError(f"{type(exc).__name__}: {exc}") from None
        return connection

    async def post(self, key: str, url: str, headers: dict[str, str], body: bytes) -> Response:
        """POST ``body`` to ``url`` over a connection of ``key``'s pool (one per endpoint)."""
        endpoint = self._endpoint(key, url)
        connection: _Connection | None = None
        now = time.monotonic()
        while endpoint.idle:
            candidate = endpoint.idle.pop()
            if not candidate.closed and now - candidate.idle_since < self.keepalive_expiry:
                connection = candidate
                break
            candidate.close()
        if connection is None:
            connection = await self._connect(endpoint)
        head = bytearray(endpoint.head)
        for name, value in headers.items():
            if "\r" in value or "\n" in value:
                raise HttpError(f"the {name} header has a line break")
            head += f"{name}: {value}\r\n".encode("latin-1")
        head += b"content-length: %d\r\n\r\n" % len(body)
        response = await connection.request(bytes(head), body)
        if connection.reusable and not connection.closed and self.endpoints.get(key) is endpoint:
            connection.idle_since = time.monotonic()
            endpoint.idle.append(connection)
        else:
            connection.close()
        return response

    def forget(self, key: str) -> None:
        """Close ``key``'s idle connections (the endpoint was deleted or changed its URL)."""
        endpoint = self.endpoints.pop(key, None)
        if endpoint is not None:
            for connection in endpoint.idle:
                connection.close()

    def close(self) -> None:
        for key in list(self.endpoints):
            self.forget(key)
