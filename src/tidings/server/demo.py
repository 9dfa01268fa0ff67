"""The server side of the demo pages (``settings.demo``, on by default).

What the pages at ``/`` need beyond the public interface:

- ``ticker:<SYMBOL>``: simulated prices, four a second per symbol while this node has a
  subscriber to it, none otherwise (so an idle server publishes nothing: no history grows, no
  webhook endpoint for ``*`` hears of the demos);
- ``logs:demo``: made-up log lines, likewise;
- ``POST /demo/jobs``: starts a job that publishes its progress to ``jobs:<id>`` (the ``jobs``
  namespace keeps a longer history, so a reloaded page replays the whole job);
- ``POST /demo/webhooks/send`` and ``/demo/webhooks/send-tampered``: sign a Standard Webhooks
  event with the demo receiver's secret and POST it to this server's own ``/hooks/demo`` over
  loopback; the tampered one changes the body after signing, so the receiver rejects it.

Every demo channel lives in an ordinary namespace with the settings' defaults; nothing here grants
a client more than the namespaces do.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import math
import random
import secrets
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from importlib.resources import files
from typing import Any

import httpx
import orjson
from standardwebhooks import Webhook
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from tidings.exceptions import BadRequest, RateLimited, TidingsError
from tidings.node import Node
from tidings.server.static_files import StaticFiles
from tidings.settings import NamespaceSettings, ReceiverSettings, Settings

__all__ = ["PAGES", "Demo", "demo_settings", "page_routes", "static_pages"]

PAGES = str(files("tidings") / "server" / "pages")
SYMBOLS = ("ACME", "GLOBEX", "INITECH", "UMBRELLA", "HOOLI", "STARK")
RECEIVER = "demo"
RECEIVER_CHANNEL = "webhooks:demo"
MAX_JOBS = 16
TICK = 0.25  # seconds between updates of a watched channel

_LOG_LINES = (
    ("info", "GET /api/orders 200 {ms} ms"),
    ("info", "POST /api/checkout 201 {ms} ms"),
    ("debug", "cache hit ratio {pct}%"),
    ("warning", "slow query on orders ({ms} ms)"),
    ("info", "user {user} signed in"),
    ("error", "payment gateway timeout after {ms} ms"),
    ("info", "worker {user} finished batch of {n} emails"),
)


def demo_settings(settings: Settings) -> Settings:
    """``settings`` plus what the demos need and the user did not configure.

    The ``jobs`` namespace is the default namespace with a history long enough for a whole job;
    the chat demo's ``chat`` namespace is the default namespace with presence and join/leave
    messages (both off by default, as in Centrifugo: a namespace asks for them);
    a ``[receivers.demo]`` (provider ``standard``, a random secret) receives the demo webhooks.
    """
    namespaces = dict(settings.namespaces)
    if "jobs" not in namespaces:
        base = namespaces.get("default", NamespaceSettings())
        namespaces["jobs"] = base.model_copy(update={"history_size": max(base.history_size, 1000)})
    if "chat" not in namespaces:
        base = namespaces.get("default", NamespaceSettings())
        namespaces["chat"] = base.model_copy(update={"presence": True, "join_leave": True})
    receivers = dict(settings.receivers)
    if RECEIVER not in receivers:
        secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
        receivers[RECEIVER] = ReceiverSettings(provider="standard", secret=secret, channel=RECEIVER_CHANNEL)
    return settings.model_copy(update={"namespaces": namespaces, "receivers": receivers})


def page_routes(names: tuple[str, ...]) -> list[BaseRoute]:
    """``/name`` serves ``pages/name.html``."""

    def serve(name: str) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            return FileResponse(f"{PAGES}/{name}.html", headers={"Cache-Control": "no-cache"})

        return endpoint

    return [Route(f"/{name}", serve(name)) for name in names]


class Demo:
    """The demo generators and endpoints of one node."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.prices = {symbol: 20.0 + 180.0 * random.random() for symbol in SYMBOLS}
        self.jobs: dict[str, asyncio.Task[None]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/", self.index),
            *page_routes(("chat", "ticker", "progress", "logs", "webhooks", "lab")),
            Route("/demo/jobs", self.start_job, methods=["POST"]),
            Route("/demo/webhooks/send", self.send_webhook, methods=["POST"]),
            Route("/demo/webhooks/send-tampered", self.send_tampered, methods=["POST"]),
        ]

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Run the generators (inside the node's lifetime)."""
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._ticker()), loop.create_task(self._logs())]
        try:
            yield
        finally:
            for task in [*self._tasks, *self.jobs.values()]:
                task.cancel()
            for task in [*self._tasks, *self.jobs.values()]:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def index(self, request: Request) -> Response:
        return FileResponse(f"{PAGES}/index.html", headers={"Cache-Control": "no-cache"})

    # generators ----------------------------------------------------------------------------

    def _watched(self, channel: str) -> bool:
        return self.node.hub.has_channel(channel)

    async def _publish(self, channel: str, data: Any, event: str = "message") -> None:
        with contextlib.suppress(TidingsError):  # e.g. the broker is briefly unreachable
            await self.node.publish(channel, data, event=event)

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            for symbol in SYMBOLS:
                channel = f"ticker:{symbol}"
                if not self._watched(channel):
                    continue
                old = self.prices[symbol]
                price = max(1.0, old * math.exp(random.gauss(0.0, 0.004)))
                self.prices[symbol] = price
                await self._publish(
                    channel,
                    {"symbol": symbol, "price": round(price, 2), "change": round(price - old, 2)},
                    "price",
                )

    async def _logs(self) -> None:
        counter = itertools.count(1)
        while True:
            await asyncio.sleep(TICK)
            if not self._watched("logs:demo"):
                continue
            level, template = random.choice(_LOG_LINES)
            text = template.format(
                ms=random.randint(3, 900),
                pct=random.randint(70, 99),
                user=random.choice(("ada", "grace", "linus", "barbara")),
                n=random.randint(10, 500),
            )
            await self._publish("logs:demo", {"n": next(counter), "level": level, "text": text}, "log")

    # jobs ----------------------------------------------------------------------------------

    async def start_job(self, request: Request) -> Response:
        body = await _json_body(request)
        steps = _number(body, "steps", 40, 1, 200, int)
        interval = _number(body, "interval", 0.25, 0.02, 2.0, float)
        self.jobs = {k: t for k, t in self.jobs.items() if not t.done()}
        if len(self.jobs) >= MAX_JOBS:
            raise RateLimited(f"at most {MAX_JOBS} demo jobs at a time")
        job = secrets.token_hex(6)
        channel = f"jobs:{job}"
        started = await self.node.publish(channel, {"steps": steps}, event="started")
        self.jobs[job] = asyncio.get_running_loop().create_task(self._run_job(channel, steps, interval))
        pub = started.publication
        return JSONResponse(
            {"id": job, "channel": channel, "epoch": pub.epoch, "offset": pub.offset, "steps": steps},
            status_code=201,
        )

    async def _run_job(self, channel: str, steps: int, interval: float) -> None:
        for step in range(1, steps + 1):
            await asyncio.sleep(interval)
            line = f"step {step}/{steps}: processed {random.randint(100, 999)} records"
            await self._publish(
                channel,
                {"step": step, "steps": steps, "percent": round(100 * step / steps), "line": line},
                "progress",
            )
        await self._publish(channel, {"steps": steps}, "done")

    # webhooks ------------------------------------------------------------------------------

    async def send_webhook(self, request: Request) -> Response:
        return await self._send(request, tamper=False)

    async def send_tampered(self, request: Request) -> Response:
        return await self._send(request, tamper=True)

    async def _send(self, request: Request, *, tamper: bool) -> Response:
        receiver = self.node.settings.receivers.get(RECEIVER)
        if receiver is None or receiver.provider != "standard":
            raise BadRequest(f"[receivers.{RECEIVER}] is not a standard receiver")
        secret = receiver.secret if isinstance(receiver.secret, str) else receiver.secret[0]
        webhook_id = "msg_" + secrets.token_hex(8)
        sent_at = datetime.now(tz=UTC)
        order: dict[str, Any] = {
            "order": f"ord_{secrets.token_hex(3)}",
            "amount": random.randint(5, 500),
            "currency": "EUR",
        }
        payload = {"type": "order.paid", "timestamp": sent_at.isoformat(), "data": order}
        body = orjson.dumps(payload)
        signature = Webhook(secret).sign(webhook_id, sent_at, body.decode())
        if tamper:  # the attacker's edit after signing
            order["amount"] = 1_000_000
            body = orjson.dumps(payload)
        headers = {
            "content-type": "application/json",
            "webhook-id": webhook_id,
            "webhook-timestamp": str(int(sent_at.timestamp())),
            "webhook-signature": signature,
        }
        host, port = request.scope.get("server") or ("127.0.0.1", 8600)
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        url = f"http://{netloc}{request.scope.get('root_path', '')}/hooks/{RECEIVER}"
        async with httpx.AsyncClient(timeout=5.0) as client:
            answer = await client.post(url, content=body, headers=headers)
        try:
            reply: Any = answer.json()
        except ValueError:
            reply = answer.text[:500]
        return JSONResponse(
            {
                "status": answer.status_code,
                "response": reply,
                "webhook_id": webhook_id,
                "tampered": tamper,
                "payload": payload,
            }
        )


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("the body is not JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("the body is not a JSON object")
    return body


def _number(
    body: dict[str, Any], key: str, default: float, low: float, high: float, kind: type[int] | type[float]
) -> Any:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise BadRequest(f"{key} must be a number from {low:g} to {high:g}")
    return kind(value)


def static_pages() -> Mount:
    """``/pages/``: the pages' shared CSS and scripts."""
    return Mount("/pages", app=StaticFiles(directory=PAGES), name="pages")
