"""The webhook service: endpoints, the publish hook, the dispatcher and the receivers of a node.

Mounting (from ``create_app``)::

    service = WebhookService(node)
    service.mount(app)                 # /api/webhooks/* and /hooks/{name}
    # in the lifespan, after node.start():   await service.start()
    # and before node.stop():               await service.stop()

or, inside the lifespan, ``service = await attach_webhooks(node, app)`` does all three but stop.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson

from tidings.core.channels import pattern_matches, validate_pattern
from tidings.core.commands import validate_event_name
from tidings.core.events import Publication
from tidings.exceptions import BadRequest, Conflict, Forbidden, NotFound, StartupError
from tidings.node import Node
from tidings.settings import Settings
from tidings.webhooks.api import make_router
from tidings.webhooks.apps_api import mount_apps
from tidings.webhooks.dispatcher import Dispatcher, Sender
from tidings.webhooks.receiver import ReceiverEndpoint
from tidings.webhooks.redis_store import RedisWebhookStore, is_redis_url
from tidings.webhooks.retry import RetryPolicy
from tidings.webhooks.signing import SigningKey, generate_secret
from tidings.webhooks.ssrf import parse_networks, resolve, split_url
from tidings.webhooks.store import (
    Delivery,
    DeliveryStatus,
    Due,
    Endpoint,
    Message,
    SQLiteWebhookStore,
    WebhookStore,
)
from tidings.webhooks.worker import DispatcherProcess, child_config

__all__ = ["WebhookService", "attach_webhooks", "make_store", "store_location", "store_path"]

log = logging.getLogger("tidings.webhooks")


def store_path(settings: Settings) -> Path | None:
    """The SQLite file of the queue (without a Redis broker), or None for a queue in memory:
    ``webhooks.store`` if set, else beside a SQLite broker's file, else (memory broker, which
    keeps nothing across a restart either) in memory."""
    store = settings.webhooks.store
    if store == "memory":
        return None
    if store:
        return Path(store)
    if settings.broker.startswith("sqlite:///"):
        broker = Path(settings.broker.removeprefix("sqlite:///"))
        return broker.with_name(broker.stem + "-webhooks.db")
    return None


def store_location(settings: Settings) -> str:
    """Where the queue lives, as ``tidings config show`` states it."""
    if is_redis_url(settings.broker):
        return ""  # in the broker's Redis (webhooks.store must stay empty)
    path = store_path(settings)
    return "memory" if path is None else str(path)


def make_store(settings: Settings) -> WebhookStore:
    """The queue of a node: in Redis when the broker is Redis (shared by every node on it, see
    :mod:`tidings.webhooks.redis_store`), else in SQLite at :func:`store_path` (or memory)."""
    if is_redis_url(settings.broker):
        return RedisWebhookStore(settings.broker, lease=settings.webhooks.lease)
    return SQLiteWebhookStore(store_path(settings), synchronous=settings.webhooks.synchronous)


class WebhookService:
    """See the module docstring. Every method raises tidings exceptions only."""

    def __init__(
        self, node: Node, *, store: WebhookStore | None = None, rng: Callable[[], float] | None = None
    ) -> None:
        self.node = node
        self.settings = node.settings.webhooks
        self.store: WebhookStore = store if store is not None else make_store(node.settings)
        self.allowed = parse_networks(self.settings.allow_private)
        self.endpoints: dict[str, Endpoint] = {}
        self.policy = RetryPolicy(
            schedule=tuple(self.settings.retry_schedule),
            jitter=self.settings.jitter,
            throttle_floor=self.settings.throttle_floor,
            retry_after_max=self.settings.retry_after_max,
            disable_after=self.settings.disable_after,
        )
        self.attempt_counts: dict[str, int] = {"success": 0, "failure": 0}
        self.attempt_listeners: list[Callable[[str], None]] = []
        self._rng = rng
        self.dispatcher: Dispatcher | None = None
        # With webhooks.dispatcher = "process": the child process that delivers (tidings.webhooks.worker).
        self.process: DispatcherProcess | None = None
        self._reloading: asyncio.Task[None] | None = None
        self._poller: asyncio.Task[None] | None = None
        # Endpoints this node changed, by the count of changes when it did: a reload that began
        # before a change read the store without it and must not undo it in memory.
        self._changes = 0
        self._touched: dict[str, int] = {}
        self.started = False

    def _in_process(self) -> bool:
        """Whether deliveries run in a dispatcher process: asked for, and the queue is one
        another process can open (a file or Redis, not memory)."""
        if self.settings.dispatcher != "process":
            return False
        if isinstance(self.store, RedisWebhookStore):
            return True
        if isinstance(self.store, SQLiteWebhookStore) and self.store.path is not None:
            return True
        log.warning("webhooks.dispatcher = process needs a queue in a file or Redis; delivering inline")
        return False

    # lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store, load endpoints, resume pending deliveries, hook into publish."""
        try:
            await self.store.open()
        except StartupError as exc:
            await self.store.close()  # its worker thread
            shared = (
                "a SQLite broker serves one node: give each node its own broker file, "
                if self.node.settings.broker.startswith("sqlite:///") and not self.settings.store
                else "give each node its own [webhooks] store, "
            )
            raise StartupError(
                f"{exc.message}; {shared}or use a Redis broker to share webhooks between nodes"
            ) from None
        self.endpoints.update({e.id: e for e in await self.store.list_endpoints()})
        if self._in_process():
            await self._start_process()
        else:
            await self._start_inline()
        self.node.publish_hooks.append(self.on_publication)
        self.node.drain_hooks.append(self.drain)
        self.attempt_listeners.append(self.node.metrics.webhook_attempt)
        self.node.metrics.watch_webhook_queue(self.queued)
        self.started = True

    async def _start_process(self) -> None:
        store = self.store
        path = str(store.path) if isinstance(store, SQLiteWebhookStore) and store.path else None
        token = store.token if isinstance(store, RedisWebhookStore) else None
        self.process = DispatcherProcess(
            child_config(self.node.settings, path=path, token=token),
            caught_up=store.caught_up,
            on_counts=self._count,
            on_endpoints=self._reload_soon,
            on_records=store.record_later if isinstance(store, SQLiteWebhookStore) else None,
        )
        await self.process.start()
        if isinstance(store, RedisWebhookStore):  # other nodes change the endpoints too
            self._poller = asyncio.get_running_loop().create_task(self._poll_endpoints())

    async def _poll_endpoints(self) -> None:
        """The shared queue: reload the endpoints as often as an inline dispatcher would (its
        poll calls :meth:`refresh_endpoints`), for the publish hook and the API."""
        while True:
            await asyncio.sleep(min(self.settings.poll_interval, self.settings.lease / 3))
            await self._reload()

    def _reload_soon(self) -> None:
        """The dispatcher process changed an endpoint (failing, disabled): read them again."""
        if self._reloading is None or self._reloading.done():
            self._reloading = asyncio.get_running_loop().create_task(self._reload())

    async def _reload(self) -> None:
        try:
            await self.refresh_endpoints()
        except Exception as exc:
            log.warning("could not reload the webhook endpoints: %s", exc)

    async def _start_inline(self) -> None:
        sender = Sender(
            timeout=self.settings.timeout,
            allowed=self.allowed,
            response_cap=self.settings.response_cap,
            ca_file=self.settings.ca_file,
        )
        kwargs: dict[str, Any] = {"rng": self._rng} if self._rng is not None else {}
        self.dispatcher = Dispatcher(
            self.store,
            self.endpoints,
            policy=self.policy,
            sender=sender,
            concurrency=self.settings.concurrency_per_endpoint,
            on_attempt=self._count,
            poll_interval=min(self.settings.poll_interval, self.settings.lease / 3),
            refresh=self.refresh_endpoints,
            **kwargs,
        )
        await self.dispatcher.start()

    def queued(self) -> int:
        """Deliveries queued or in flight (``tidings_webhook_queue_depth``): the dispatcher
        process's as it last reported (every 0.1 s while it changes)."""
        if self.process is not None:
            return self.process.queued()
        return self._dispatcher().queued()

    async def refresh_endpoints(self) -> None:
        """Reload the endpoints from the store (a shared store: other nodes change them)."""
        began = self._changes
        stored = {e.id: e for e in await self.store.list_endpoints()}
        recent = {i for i, n in self._touched.items() if n > began}
        for endpoint_id in [i for i in self.endpoints if i not in stored and i not in recent]:
            del self.endpoints[endpoint_id]
            self._changed(endpoint_id)
        for endpoint_id, endpoint in stored.items():
            if endpoint_id not in recent and self.endpoints.get(endpoint_id) != endpoint:
                self.endpoints[endpoint_id] = endpoint
                self._changed(endpoint_id)
        self._touched = {i: n for i, n in self._touched.items() if n > began}

    def _touch(self, endpoint_id: str) -> None:
        self._changes += 1
        self._touched[endpoint_id] = self._changes

    def _changed(self, endpoint_id: str) -> None:
        """An endpoint changed in the store (the dispatcher process reloads them all; it tells
        of its own changes, so none goes back to it)."""
        if self.dispatcher is not None:
            self.dispatcher.endpoint_changed(endpoint_id)

    def _notify(self, endpoint_id: str) -> None:
        """This node changed an endpoint: its dispatcher learns before any later delivery."""
        if self.process is not None:
            self.process.endpoints_changed()
        else:
            self._dispatcher().endpoint_changed(endpoint_id)

    async def drain(self, seconds: float) -> None:
        """On SIGTERM: let attempts in flight finish (within ``seconds``); the rest stay queued."""
        if self.process is not None:
            await self.process.drain(seconds)
        if self.dispatcher is not None:
            await self.dispatcher.wait_idle(seconds)

    async def stop(self) -> None:
        if not self.started:
            return
        self.started = False
        if self.on_publication in self.node.publish_hooks:
            self.node.publish_hooks.remove(self.on_publication)
        if self.process is not None:
            await self.process.stop()
        if self.dispatcher is not None:
            await self.dispatcher.stop()
        for task in (self._reloading, self._poller):
            if task is not None:
                task.cancel()
        await self.store.close()

    def mount(
        self, app: Any, *, dependencies: Sequence[Any] = (), root: Any = None, prefix: str = "/api/webhooks"
    ) -> None:
        """Add the webhook routes under ``prefix`` (with ``dependencies``, e.g. the API-key
        check) to a FastAPI app or APIRouter, and the /hooks/{name} receiver to ``root``
        (default: the same app)."""
        mount_apps(app, self, prefix=prefix)  # first: /{endpoint_id} would take /apps
        app.include_router(make_router(self, dependencies=dependencies, prefix=prefix))
        (root if root is not None else app).add_route(
            "/hooks/{name}", self.receiver(), methods=["POST"], include_in_schema=False
        )

    def receiver(self) -> Any:
        """The ASGI endpoint of ``POST /hooks/{name}``."""
        return ReceiverEndpoint(self.node, self.store, dedup_ttl=self.settings.inbound_dedup_ttl)

    def _count(self, outcome: str, n: int = 1) -> None:
        self.attempt_counts[outcome] = self.attempt_counts.get(outcome, 0) + n
        for listener in self.attempt_listeners:
            for _ in range(n):
                listener(outcome)

    def _dispatcher(self) -> Dispatcher:
        if self.dispatcher is None:
            raise RuntimeError("WebhookService.start() was not awaited")
        return self.dispatcher

    # the publish hook --------------------------------------------------------------------------

    def matching(self, channel: str, event: str) -> list[Endpoint]:
        return [
            e
            for e in self.endpoints.values()
            if e.enabled
            and (e.events is None or event in e.events)
            and any(pattern_matches(p, channel) for p in e.channels)
        ]

    async def on_publication(self, publication: Publication) -> None:
        """Awaited by ``Node.publish``: the deliveries are durable when this returns."""
        endpoints = self.matching(publication.channel, publication.event)
        if not endpoints:
            return
        message = Message(
            f"msg_{publication.id}",
            publication.channel,
            publication.event,
            orjson.dumps(publication.to_dict()),
            time.time(),
        )
        await self._enqueue(message, [e.id for e in endpoints])

    async def _enqueue(self, message: Message, endpoint_ids: list[str]) -> list[Due]:
        due = await self.store.enqueue(message, endpoint_ids)
        self._hand_over(due)
        return due

    def _hand_over(self, due: list[Due], *, replayed: bool = False) -> None:
        if self.process is not None:
            self.process.deliveries(due, replayed=replayed)
            return
        dispatcher = self._dispatcher()
        for item in due:
            dispatcher.add(item)

    # endpoints ---------------------------------------------------------------------------------

    async def _check_url(self, url: str) -> str:
        target = split_url(url)
        try:
            await resolve(target, self.allowed)
        except BadRequest:
            pass  # a name that does not resolve yet is checked again at every attempt
        except Forbidden as exc:
            raise BadRequest(exc.message) from None
        return url

    @staticmethod
    def _check_filters(channels: list[str], events: list[str] | None, app_id: str | None = None) -> None:
        if not channels and app_id is None:  # an app's endpoint may take its app's messages only
            raise BadRequest("channels: give at least one channel pattern")
        for pattern in channels:
            validate_pattern(pattern)
        for event in events or []:
            validate_event_name(event)

    async def create(
        self,
        url: str,
        channels: list[str],
        *,
        events: list[str] | None = None,
        description: str = "",
        rate_limit: float | None = None,
        max_concurrency: int | None = None,
        ordered: bool = False,
        secret: str | None = None,
        app_id: str | None = None,
    ) -> Endpoint:
        self._check_filters(channels, events, app_id)
        await self._check_url(url)
        now = time.time()
        endpoint = Endpoint(
            id=f"ep_{uuid.uuid4().hex}",
            url=url,
            channels=list(channels),
            events=list(events) if events is not None else None,
            description=description,
            keys=[SigningKey(secret or generate_secret())],
            rate_limit=rate_limit,
            max_concurrency=max_concurrency,
            ordered=ordered,
            created_at=now,
            updated_at=now,
            app_id=app_id,
        )
        await self.store.put_endpoint(endpoint)
        self.endpoints[endpoint.id] = endpoint
        self._touch(endpoint.id)
        if self.process is not None:
            self.process.endpoints_changed()
        return endpoint

    def get(self, endpoint_id: str) -> Endpoint:
        endpoint = self.endpoints.get(endpoint_id)
        if endpoint is None:
            raise NotFound(f"no webhook endpoint {endpoint_id!r}")
        return endpoint

    def all(self) -> list[Endpoint]:
        return sorted(self.endpoints.values(), key=lambda e: e.created_at)

    async def update(self, endpoint_id: str, **changes: Any) -> Endpoint:
        """Change ``url``, ``channels``, ``events``, ``description``, ``enabled``, ``rate_limit``,
        ``max_concurrency`` or ``ordered``; enabling clears the disabled reason and the failure
        run and resumes the endpoint's pending deliveries."""
        endpoint = self.get(endpoint_id)
        if "url" in changes:
            await self._check_url(changes["url"])
        channels, events = changes.get("channels", endpoint.channels), changes.get("events", endpoint.events)
        self._check_filters(channels, events, endpoint.app_id)
        if changes.get("enabled") is True:
            changes.update(disabled_reason=None, failing_since=None)
        elif changes.get("enabled") is False:
            changes.setdefault("disabled_reason", "disabled by the API")
        endpoint = replace(self.get(endpoint_id), **changes, updated_at=time.time())
        await self.store.put_endpoint(endpoint)
        self.endpoints[endpoint.id] = endpoint
        self._touch(endpoint.id)
        self._notify(endpoint.id)
        return endpoint

    async def delete(self, endpoint_id: str) -> None:
        self.get(endpoint_id)
        del self.endpoints[endpoint_id]
        self._touch(endpoint_id)
        if self.process is None:
            self._dispatcher().endpoint_changed(endpoint_id)
        await self.store.delete_endpoint(endpoint_id)
        self._touch(endpoint_id)  # again: a reload may have begun while the store deleted
        if self.process is not None:
            self.process.endpoints_changed()

    async def rotate(self, endpoint_id: str, *, grace: float | None = None) -> Endpoint:
        """A new secret signs from now on; the old ones keep signing for ``grace`` seconds
        (``webhooks.rotation_grace`` by default)."""
        endpoint = self.get(endpoint_id)
        now = time.time()
        until = now + (self.settings.rotation_grace if grace is None else grace)
        keys = [
            SigningKey(k.secret, min(k.expires_at or until, until)) for k in endpoint.keys if k.valid_at(now)
        ]
        endpoint = replace(self.get(endpoint_id), keys=[*keys, SigningKey(generate_secret())], updated_at=now)
        await self.store.put_endpoint(endpoint)
        self.endpoints[endpoint.id] = endpoint
        self._touch(endpoint.id)
        if self.process is not None:
            self.process.endpoints_changed()
        return endpoint

    async def send_test(self, endpoint_id: str) -> Due:
        endpoint = self.get(endpoint_id)
        if not endpoint.enabled:
            raise Conflict("the endpoint is disabled; enable it first")
        now = time.time()
        ident = uuid.uuid4().hex
        publication = {
            "channel": "webhooks:test",
            "offset": 0,
            "epoch": "",
            "id": ident,
            "time": int(now * 1000),
            "event": "webhook.test",
            "data": {"endpoint": endpoint.id, "message": "a test event from tidings"},
        }
        message = Message(f"msg_{ident}", "webhooks:test", "webhook.test", orjson.dumps(publication), now)
        return (await self._enqueue(message, [endpoint.id]))[0]

    # the log -----------------------------------------------------------------------------------

    async def deliveries(
        self,
        endpoint_id: str,
        status: DeliveryStatus | None = None,
        limit: int = 100,
        since: float | None = None,
    ) -> list[Delivery]:
        self.get(endpoint_id)
        return await self.store.deliveries(endpoint_id, status, limit, since)

    async def delivery(self, endpoint_id: str, delivery_id: str) -> Delivery:
        self.get(endpoint_id)
        found = await self.store.delivery(delivery_id)
        if found is None or found.endpoint_id != endpoint_id:
            raise NotFound(f"no delivery {delivery_id!r} for this endpoint")
        return found

    async def replay(
        self, endpoint_id: str, *, delivery_id: str | None = None, since: float | None = None
    ) -> int:
        """Deliver one delivery again, or every failed one created since ``since``."""
        self.get(endpoint_id)
        if delivery_id is None and since is None:
            raise BadRequest("give delivery_id or since")
        due = await self.store.replay(endpoint_id, delivery_id, since, time.time())
        if delivery_id is not None and not due:
            raise NotFound(f"no delivery {delivery_id!r} for this endpoint")
        self._hand_over(due, replayed=True)
        return len(due)

    def statistics(self) -> dict[str, Any]:
        return {
            "endpoints": len(self.endpoints),
            "queued": self.queued(),
            "attempts": dict(self.attempt_counts),
        }


async def attach_webhooks(node: Node, app: Any, *, dependencies: Sequence[Any] = ()) -> WebhookService:
    """Build, mount and start the webhook service of ``node`` (call after ``node.start()``;
    ``await service.stop()`` before ``node.stop()``)."""
    service = WebhookService(node)
    service.mount(app, dependencies=dependencies)
    await service.start()
    return service
