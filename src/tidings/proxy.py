"""The proxies' I/O: one HTTP client pool that asks the application's backend, for every
transport and both engines (docs/reference/proxy.md).

The shapes and the answer's rules are :mod:`tidings.core.proxy`'s; this module sends and
waits. What a caller can count on:

- **one pool, bounded**: all proxies share one ``httpx.AsyncClient`` and one semaphore of
  ``proxy.max_concurrency`` slots, so a connect storm of thousands of clients keeps at most that
  many requests in flight at the backend; the rest wait their turn;
- **never past the timeout**: each request, the wait for a slot included, ends within its
  proxy's ``timeout``; then the client is told ``unavailable`` (503, WebSocket 1013);
- **counted and logged**: every request is counted by proxy and outcome, timed
  (``tidings_proxy_*`` metrics), and every failure (down, slow, a broken answer) is logged as a
  warning (``tidings.proxy``) with the proxy's URL and what went wrong.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from tidings.core.proxy import (
    BrokenAnswer,
    ConnectResult,
    ProxyDisconnect,
    ProxyKind,
    PublishResult,
    RefreshResult,
    RpcResult,
    SubscribeResult,
    forwarded_headers,
    parse_answer,
    request_body,
)
from tidings.exceptions import TidingsError, Unavailable
from tidings.metrics import Metrics
from tidings.settings import ProxyEndpoint, ProxySettings

__all__ = ["Caller", "Proxies"]

log = logging.getLogger("tidings.proxy")

#: Largest answer read from a backend; past it the answer is broken.
MAX_ANSWER_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class Caller:
    """Which connection a proxy request is about: its id, transport (``ws``, ``sse``,
    ``stream``, ``poll``), the request headers a proxy may forward (lower-case names) and the
    client's address."""

    client: str
    transport: str
    headers: Mapping[str, str]
    remote_addr: str | None


class Proxies:
    """The configured proxies of one node. Made with the node; :meth:`aclose` at its stop."""

    def __init__(self, settings: ProxySettings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.endpoints: dict[ProxyKind, ProxyEndpoint] = {
            kind: endpoint for kind in ProxyKind if (endpoint := getattr(settings, kind.value)) is not None
        }
        self._forwarded = frozenset(
            name.lower() for endpoint in self.endpoints.values() for name in endpoint.forward_headers
        )
        self._client: httpx.AsyncClient | None = None
        self._slots: asyncio.Semaphore | None = None

    def __contains__(self, kind: ProxyKind) -> bool:
        return kind in self.endpoints

    def caller(
        self, client: str, transport: str, headers: Mapping[str, str], remote_addr: str | None
    ) -> Caller:
        """A :class:`Caller` keeping only the headers some proxy forwards."""
        kept = {name: value for name, value in headers.items() if name in self._forwarded}
        return Caller(client, transport, kept, remote_addr)

    def _pool(self) -> tuple[httpx.AsyncClient, asyncio.Semaphore]:
        # Made on first use, inside the loop that serves (a node may be built outside it).
        if self._client is None or self._slots is None:
            most = self.settings.max_concurrency
            self._client = httpx.AsyncClient(
                limits=httpx.Limits(max_connections=most, max_keepalive_connections=most),
                follow_redirects=False,
                trust_env=False,
            )
            self._slots = asyncio.Semaphore(most)
        return self._client, self._slots

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def connect(self, caller: Caller, *, user: str | None = None, data: Any = None) -> ConnectResult:
        result = await self.ask(ProxyKind.CONNECT, caller, user, data=data, remote_addr=caller.remote_addr)
        assert isinstance(result, ConnectResult)
        return result

    async def refresh(self, caller: Caller, user: str) -> RefreshResult:
        result = await self.ask(ProxyKind.REFRESH, caller, user)
        assert isinstance(result, RefreshResult)
        return result

    async def subscribe(self, caller: Caller, user: str, channel: str) -> SubscribeResult:
        result = await self.ask(ProxyKind.SUBSCRIBE, caller, user, channel=channel)
        assert isinstance(result, SubscribeResult)
        return result

    async def publish(self, caller: Caller, user: str, channel: str, data: Any) -> PublishResult:
        result = await self.ask(ProxyKind.PUBLISH, caller, user, channel=channel, data=data)
        assert isinstance(result, PublishResult)
        return result

    async def rpc(self, caller: Caller, user: str, method: str, data: Any) -> RpcResult:
        result = await self.ask(ProxyKind.RPC, caller, user, method=method, data=data)
        assert isinstance(result, RpcResult)
        return result

    async def ask(self, kind: ProxyKind, caller: Caller, user: str | None, **fields: Any) -> Any:
        """Ask the ``kind`` proxy (it must be configured) and return its result, or raise what
        the client must be told (see :func:`tidings.core.proxy.parse_answer`)."""
        endpoint = self.endpoints[kind]
        body = request_body(kind, client=caller.client, transport=caller.transport, user=user, **fields)
        headers = forwarded_headers(endpoint.forward_headers, caller.headers, caller.remote_addr)
        headers["Content-Type"] = "application/json"
        started = time.monotonic()
        try:
            status, answer = await self._post(endpoint, body, headers)
            result = parse_answer(kind, status, answer)
        except ProxyDisconnect:
            self.metrics.proxy_request(kind.value, "disconnect", time.monotonic() - started)
            raise
        except _Failure as failure:
            self._failed(kind, endpoint, failure.reason, failure.message, started)
            raise Unavailable(f"the {kind.value} proxy is unavailable: {failure.message}") from None
        except BrokenAnswer as exc:
            self._failed(kind, endpoint, exc.reason, exc.message, started)
            raise
        except TidingsError as exc:
            outcome = "unavailable" if isinstance(exc, Unavailable) else "error"
            self.metrics.proxy_request(kind.value, outcome, time.monotonic() - started)
            raise
        self.metrics.proxy_request(kind.value, "result", time.monotonic() - started)
        return result

    def _failed(
        self, kind: ProxyKind, endpoint: ProxyEndpoint, reason: str, what: str, started: float
    ) -> None:
        self.metrics.proxy_request(kind.value, "unavailable", time.monotonic() - started)
        self.metrics.proxy_error(kind.value, reason)
        log.warning("%s proxy %s failed (%s): %s", kind.value, endpoint.url, reason, what)

    async def _post(self, endpoint: ProxyEndpoint, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        client, slots = self._pool()
        try:
            async with asyncio.timeout(endpoint.timeout):
                async with slots:
                    self.metrics.proxy_in_flight.inc()
                    try:
                        async with client.stream(
                            "POST", endpoint.url, content=body, headers=headers, timeout=endpoint.timeout
                        ) as response:
                            answer = bytearray()
                            async for chunk in response.aiter_bytes():
                                answer += chunk
                                if len(answer) > MAX_ANSWER_BYTES:
                                    raise _Failure("invalid", f"its answer is over {MAX_ANSWER_BYTES} bytes")
                            return response.status_code, bytes(answer)
                    finally:
                        self.metrics.proxy_in_flight.dec()
        except (TimeoutError, httpx.TimeoutException):
            raise _Failure("timeout", f"no answer within {endpoint.timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise _Failure("unreachable", f"{type(exc).__name__}: {exc}"[:300]) from None


class _Failure(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
