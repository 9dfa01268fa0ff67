"""The webhook queue in Redis, shared by every node on the same Redis (or Redis Cluster).

Same contract as :class:`tidings.webhooks.store.SQLiteWebhookStore` (see that module), plus
**leases**, so that several nodes' dispatchers share one queue and a dead node's deliveries move
to another node. Every key carries the one hash tag ``{tidings:webhooks}`` (one cluster slot), so
each multi-key write is one Lua script (``webhooks/lua/*.lua``), atomic on a cluster too:

- ``…:endpoints``: hash endpoint id → endpoint JSON.
- ``…:msg:<id>``: hash ``channel``, ``event``, ``body``, ``created_at`` (the message).
- ``…:dlv:<id>``: hash of the delivery (``endpoint_id``, ``message_id``, ``status``,
  ``attempts``, ``next_attempt_at``, ``seq`` …); ``…:log:<id>``: list of attempt JSON.
- ``…:seq``: counter ordering deliveries; ``…:ep:<endpoint>``: zset delivery → seq;
  ``…:pending``: zset of the pending deliveries → seq.
- ``…:due``: zset delivery → due time: pending and **not held by any node**.
- ``…:inflight``: zset delivery → lease end; ``…:owner``: hash delivery → the holding store's
  token; ``…:next``: hash delivery → its next attempt time.
- ``…:inbound:<receiver>``: zset inbound delivery id → seen at.

A pending delivery is in exactly one of ``due`` (free) and ``inflight`` (held by a node).
``enqueue`` and ``replay`` hand the new deliveries to the calling node (held, lease started), which
attempts them from memory at once. ``record_attempt`` keeps a retried delivery held by the caller
(lease renewed) and frees a finished one. ``claim`` first frees every delivery whose lease ended
(its node died or stopped renewing) back into ``due`` at its next attempt time, then takes the due
ones, atomically, so two nodes never hold the same delivery. ``renew`` extends the leases a node
still holds and names those it lost; ``release`` frees held deliveries (on a clean stop).

Leases use this process's clock (``time.time()``): nodes sharing a Redis need clocks within a
small fraction of the lease. Failures raise :class:`tidings.exceptions.Unavailable`.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import time
import uuid
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, cast

import orjson
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from tidings.brokers.redis_client import CommandGate, redis_client
from tidings.exceptions import Unavailable
from tidings.webhooks.store import (
    Attempt,
    Delivery,
    DeliveryStatus,
    Due,
    Endpoint,
    Job,
    Message,
    _endpoint_doc,
    _endpoint_from,
)

__all__ = ["RedisWebhookStore", "is_redis_url"]

TAG = "{tidings:webhooks}"
SCAN_PAGE = 200


def is_redis_url(url: str) -> bool:
    return url.startswith(("redis://", "rediss://", "redis-cluster://", "unix://"))


def _load(name: str) -> str:
    return importlib.resources.files("tidings.webhooks").joinpath("lua", name).read_text("utf-8")


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _opt_float(value: Any) -> float | None:
    return None if value is None or value == b"" else float(value)


class RedisWebhookStore:
    """See the module docstring. ``lease``: seconds a node's hold on a delivery lasts without
    renewal. ``client``: an existing redis-py client to use (not closed here)."""

    def __init__(
        self,
        url: str,
        *,
        lease: float = 30.0,
        prefix: str = TAG,
        command_timeout: float = 10.0,
        max_connections: int = 50,
        client: aioredis.Redis | RedisCluster | None = None,
        token: str | None = None,
    ) -> None:
        self.url = url
        self.lease = lease
        # Who holds a leased delivery; the node's dispatcher process shares its node's token.
        self.token = token or uuid.uuid4().hex
        self._own = client is None
        self._redis = (
            client
            if client is not None
            else redis_client(url, command_timeout=command_timeout, max_connections=max_connections)
        )
        self._gate = CommandGate(max_connections)
        self._p = prefix
        self._k_endpoints = f"{prefix}:endpoints"
        self._k_seq = f"{prefix}:seq"
        self._k_pending = f"{prefix}:pending"
        self._k_due = f"{prefix}:due"
        self._k_inflight = f"{prefix}:inflight"
        self._k_owner = f"{prefix}:owner"
        self._k_next = f"{prefix}:next"
        scripts = ("enqueue", "claim", "renew", "release", "record", "replay", "delete_endpoint", "inbound")
        self._scripts = {n: self._redis.register_script(_load(f"{n}.lua")) for n in scripts}
        self._pipelined: list[tuple[str, list[str], list[Any], asyncio.Future[Any]]] = []
        self._sending: set[asyncio.Task[None]] = set()
        self._closed = False

    def _msg(self, message_id: str) -> str:
        return f"{self._p}:msg:{message_id}"

    def _dlv(self, delivery_id: str) -> str:
        return f"{self._p}:dlv:{delivery_id}"

    def _log(self, delivery_id: str) -> str:
        return f"{self._p}:log:{delivery_id}"

    def _ep(self, endpoint_id: str) -> str:
        return f"{self._p}:ep:{endpoint_id}"

    def _lease_end(self) -> float:
        return time.time() + self.lease

    async def _script(self, name: str, keys: list[str], args: list[Any]) -> Any:
        async with self._gate(f"webhook {name}"):
            return await self._scripts[name](keys=keys, args=args)

    async def _batched(self, name: str, keys: list[str], args: list[Any]) -> Any:
        """:meth:`_script`, sent in one pipeline with the other calls made in the same turn of
        the event loop (each script still runs atomically on its own): a burst of publishes or
        of finished attempts costs one round trip, not one each. A cluster client sends each
        on its own."""
        if isinstance(self._redis, RedisCluster):
            return await self._script(name, keys, args)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pipelined.append((name, keys, args, future))
        if len(self._pipelined) == 1:
            asyncio.get_running_loop().call_soon(self._send_pipelined)
        return await asyncio.shield(future)

    def _send_pipelined(self) -> None:
        calls, self._pipelined = self._pipelined, []
        task = asyncio.get_running_loop().create_task(self._pipeline(calls))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _pipeline(self, calls: list[tuple[str, list[str], list[Any], asyncio.Future[Any]]]) -> None:
        try:
            async with self._gate("webhook queue write"):
                pipe = self._redis.pipeline(transaction=False)
                for name, keys, args, _ in calls:
                    # a pipeline is a client for a script: this queues the EVALSHA in it
                    await self._scripts[name](keys=keys, args=args, client=cast(Any, pipe))
                results: list[Any] = await pipe.execute(raise_on_error=False)
        except Exception as exc:
            for *_, future in calls:
                if not future.done():
                    future.set_exception(exc)
            return
        for (*_, future), result in zip(calls, results, strict=True):
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(Unavailable(f"webhook queue write: {result}"))
            else:
                future.set_result(result)

    async def open(self) -> None:
        async with self._gate("webhook store ping"):
            await self._redis.ping()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._own:
            async with self._gate("webhook store close"):
                await self._redis.aclose()

    # endpoints ---------------------------------------------------------------------------------

    async def put_endpoint(self, endpoint: Endpoint) -> None:
        async with self._gate("webhook endpoint write"):
            await self._redis.hset(self._k_endpoints, endpoint.id, _endpoint_doc(endpoint))

    async def get_endpoint(self, endpoint_id: str) -> Endpoint | None:
        async with self._gate("webhook endpoint read"):
            doc = await self._redis.hget(self._k_endpoints, endpoint_id)
        return None if doc is None else _endpoint_from(_s(doc))

    async def list_endpoints(self) -> list[Endpoint]:
        async with self._gate("webhook endpoint read"):
            docs: dict[Any, Any] = await self._redis.hgetall(self._k_endpoints)
        found = [_endpoint_from(_s(doc)) for doc in docs.values()]
        return sorted(found, key=lambda e: (e.created_at, e.id))

    async def delete_endpoint(self, endpoint_id: str) -> bool:
        async with self._gate("webhook endpoint read"):
            ids = [_s(i) for i in await self._redis.zrange(self._ep(endpoint_id), 0, -1)]
        keys = [
            self._k_endpoints,
            self._ep(endpoint_id),
            self._k_pending,
            self._k_due,
            self._k_inflight,
            self._k_owner,
            self._k_next,
        ]
        for delivery_id in ids:
            keys += [self._dlv(delivery_id), self._log(delivery_id)]
        existed = await self._script("delete_endpoint", keys, [endpoint_id, *ids])
        return int(existed) == 1

    # the queue ---------------------------------------------------------------------------------

    @staticmethod
    def delivery_id(message: Message, endpoint_id: str) -> str:
        return f"dlv_{message.id.removeprefix('msg_')}_{endpoint_id[-12:]}"

    async def enqueue(self, message: Message, endpoint_ids: Sequence[str]) -> list[Due]:
        ids = [self.delivery_id(message, e) for e in endpoint_ids]
        keys = [
            self._msg(message.id),
            self._k_seq,
            self._k_pending,
            self._k_inflight,
            self._k_owner,
            self._k_next,
        ]
        args: list[Any] = [
            message.channel,
            message.event,
            message.body,
            repr(message.created_at),
            repr(self._lease_end()),
            self.token,
        ]
        for delivery_id, endpoint_id in zip(ids, endpoint_ids, strict=True):
            keys += [self._dlv(delivery_id), self._ep(endpoint_id)]
            args += [delivery_id, endpoint_id]
        seqs = await self._batched("enqueue", keys, args)
        return [
            Due(delivery_id, endpoint_id, int(seq), message.created_at, 0, message)
            for delivery_id, endpoint_id, seq in zip(ids, endpoint_ids, seqs, strict=False)
        ]

    async def _dues(self, ids: Sequence[str]) -> list[Due]:
        if not ids:
            return []
        async with self._gate("webhook queue read"):
            pipe = self._redis.pipeline(transaction=False)
            for delivery_id in ids:
                pipe.hmget(
                    self._dlv(delivery_id), ["endpoint_id", "seq", "next_attempt_at", "attempts", "status"]
                )
            rows: list[Any] = await pipe.execute()
        found = []
        for delivery_id, row in zip(ids, rows, strict=True):
            if row[0] is None or _s(row[4]) != "pending":
                continue
            found.append(Due(delivery_id, _s(row[0]), int(row[1]), _opt_float(row[2]) or 0.0, int(row[3])))
        return found

    async def caught_up(self) -> None:
        """Nothing to wait for: ``enqueue`` writes the deliveries in its script."""

    async def pending(self) -> list[Due]:
        async with self._gate("webhook queue read"):
            ids = [_s(i) for i in await self._redis.zrange(self._k_pending, 0, -1)]
        return await self._dues(ids)

    async def claim(self, limit: int = 100) -> list[Due]:
        """Free the deliveries whose lease ended, then hold up to ``limit`` due ones."""
        ids = await self._script(
            "claim",
            [self._k_due, self._k_inflight, self._k_owner, self._k_next],
            [repr(time.time()), repr(self._lease_end()), self.token, limit],
        )
        return await self._dues([_s(i) for i in ids])

    async def renew(self, delivery_ids: Sequence[str]) -> list[str]:
        """Extend the leases of ``delivery_ids``; returns those this store no longer holds."""
        if not delivery_ids:
            return []
        lost = await self._script(
            "renew", [self._k_inflight, self._k_owner], [repr(self._lease_end()), self.token, *delivery_ids]
        )
        return [_s(i) for i in lost]

    async def release(self, delivery_ids: Sequence[str]) -> None:
        """Free held deliveries (due again at their next attempt time) for other nodes."""
        if delivery_ids:
            await self._script(
                "release",
                [self._k_due, self._k_inflight, self._k_owner, self._k_next],
                [self.token, *delivery_ids],
            )

    async def job(self, delivery_id: str) -> Job | None:
        async with self._gate("webhook queue read"):
            row = await self._redis.hmget(
                self._dlv(delivery_id), ["status", "attempts", "message_id", "endpoint_id"]
            )
            if row[0] is None or _s(row[0]) != "pending":
                return None
            pipe = self._redis.pipeline(transaction=False)
            pipe.hgetall(self._msg(_s(row[2])))
            pipe.hget(self._k_endpoints, _s(row[3]))
            msg, doc = await pipe.execute()
        if not msg or doc is None:
            return None
        message = Message(
            _s(row[2]), _s(msg[b"channel"]), _s(msg[b"event"]), bytes(msg[b"body"]), float(msg[b"created_at"])
        )
        return Job(delivery_id, int(row[1] or 0), message, _endpoint_from(_s(doc)))

    async def record_attempt(
        self,
        delivery_id: str,
        attempt: Attempt,
        status: DeliveryStatus,
        next_attempt_at: float | None,
        endpoint: Endpoint | None,
    ) -> None:
        keys = [
            self._dlv(delivery_id),
            self._log(delivery_id),
            self._k_pending,
            self._k_due,
            self._k_inflight,
            self._k_owner,
            self._k_next,
            self._k_endpoints,
        ]
        args: list[Any] = [
            orjson.dumps(attempt.to_dict()),
            status,
            "" if next_attempt_at is None else repr(next_attempt_at),
            repr(attempt.at),
            "" if attempt.status is None else attempt.status,
            attempt.error or "",
            repr(self._lease_end()),
            self.token,
            "" if endpoint is None else endpoint.id,
            "" if endpoint is None else _endpoint_doc(endpoint),
        ]
        await self._batched("record", keys, args)

    # the log -----------------------------------------------------------------------------------

    def _delivery(self, delivery_id: str, row: dict[Any, Any]) -> Delivery:
        def get(name: str) -> Any:
            return row.get(name.encode())

        status: Any = _s(get("status"))
        last_status = get("last_status")
        last_error = get("last_error")
        return Delivery(
            delivery_id,
            _s(get("endpoint_id")),
            _s(get("message_id")),
            _s(get("channel")),
            _s(get("event")),
            status,
            int(get("attempts")),
            _opt_float(get("next_attempt_at")),
            float(get("created_at")),
            float(get("updated_at")),
            None if last_status is None else int(last_status),
            None if last_error is None else _s(last_error),
        )

    async def _rows(self, ids: Sequence[str]) -> list[dict[Any, Any]]:
        async with self._gate("webhook log read"):
            pipe = self._redis.pipeline(transaction=False)
            for delivery_id in ids:
                pipe.hgetall(self._dlv(delivery_id))
            rows: list[dict[Any, Any]] = await pipe.execute()
        return rows

    async def deliveries(
        self, endpoint_id: str, status: DeliveryStatus | None, limit: int, since: float | None = None
    ) -> list[Delivery]:
        found: list[Delivery] = []
        start = 0
        while len(found) < limit:
            async with self._gate("webhook log read"):
                ids = [
                    _s(i)
                    for i in await self._redis.zrevrange(self._ep(endpoint_id), start, start + SCAN_PAGE - 1)
                ]
            if not ids:
                break
            start += len(ids)
            for delivery_id, row in zip(ids, await self._rows(ids), strict=True):
                if not row:
                    continue
                delivery = self._delivery(delivery_id, row)
                if status is not None and delivery.status != status:
                    continue
                if since is not None and delivery.created_at < since:
                    continue
                found.append(delivery)
                if len(found) >= limit:
                    break
        return found

    async def delivery(self, delivery_id: str) -> Delivery | None:
        async with self._gate("webhook log read"):
            pipe = self._redis.pipeline(transaction=False)
            pipe.hgetall(self._dlv(delivery_id))
            pipe.lrange(self._log(delivery_id), 0, -1)
            row, entries = await pipe.execute()
        if not row:
            return None
        return replace(self._delivery(delivery_id, row), log=[Attempt(**orjson.loads(e)) for e in entries])

    async def replay(
        self, endpoint_id: str, delivery_id: str | None, since: float | None, now: float
    ) -> list[Due]:
        if delivery_id is not None:
            rows = await self._rows([delivery_id])
            if not rows[0] or _s(rows[0].get(b"endpoint_id")) != endpoint_id:
                return []
            ids = [delivery_id]
        else:
            ids = []
            async with self._gate("webhook log read"):
                every = [_s(i) for i in await self._redis.zrange(self._ep(endpoint_id), 0, -1)]
            for start in range(0, len(every), SCAN_PAGE):
                chunk = every[start : start + SCAN_PAGE]
                for candidate, row in zip(chunk, await self._rows(chunk), strict=True):
                    if (
                        row
                        and row.get(b"status") == b"failed"
                        and float(row[b"created_at"]) >= (since or 0.0)
                    ):
                        ids.append(candidate)
        if not ids:
            return []
        keys = [
            self._k_pending,
            self._k_due,
            self._k_inflight,
            self._k_owner,
            self._k_next,
            *[self._dlv(i) for i in ids],
        ]
        seqs = await self._script("replay", keys, [repr(now), repr(self._lease_end()), self.token, *ids])
        return [Due(i, endpoint_id, int(seq), now) for i, seq in zip(ids, seqs, strict=True) if int(seq) > 0]

    # inbound -----------------------------------------------------------------------------------

    async def remember_inbound(self, receiver: str, delivery_id: str, now: float, ttl: float) -> bool:
        added = await self._script(
            "inbound", [f"{self._p}:inbound:{receiver}"], [delivery_id, repr(now), repr(now - ttl)]
        )
        return int(added) == 1

    async def forget_inbound(self, receiver: str, delivery_id: str) -> None:
        async with self._gate("webhook inbound write"):
            await self._redis.zrem(f"{self._p}:inbound:{receiver}", delivery_id)
