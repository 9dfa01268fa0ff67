"""The outbound worker: one lane per endpoint, so a slow or dead endpoint delays only itself.

A lane holds its endpoint's pending deliveries in a heap ordered by due time (or, for an
``ordered`` endpoint, by enqueue order, one in flight at a time, a failing head holding back the
rest). It starts an attempt when one is due, a slot of the endpoint's concurrency limit is free
and its rate limit (:class:`~tidings.webhooks.retry.RateWindow`) allows. An attempt: read the job
from the store (unless the fresh delivery carries its message), POST the signed body over the
endpoint's keep-alive pool (:mod:`.http_pool`: a new connection goes to an address the SSRF guard
checked) with redirects not followed and the response read up to a cap, decide
(``retry.decide``), and record the attempt, the delivery's new state and the endpoint's in one
store transaction (grouped with the other attempts finished meanwhile).

The store is the truth; the heaps are an index rebuilt from ``store.pending()`` at start, so a
node killed at any moment resumes every pending delivery when it starts again. With a queue
shared by several nodes (Redis, a :class:`LeasingStore`) the heaps hold only what this node leased:
see :class:`Dispatcher`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol, runtime_checkable

from tidings.exceptions import TidingsError, Unavailable
from tidings.webhooks.http_pool import HttpError, HttpPool
from tidings.webhooks.retry import AttemptResult, Outcome, RateWindow, RetryPolicy, decide
from tidings.webhooks.signing import signature_header
from tidings.webhooks.ssrf import Network
from tidings.webhooks.store import Attempt, DeliveryStatus, Due, Endpoint, Job, WebhookStore

__all__ = ["Dispatcher", "LeasingStore", "SendResult", "Sender"]

log = logging.getLogger("tidings.webhooks")

RESPONSE_LOG_BYTES = 1024
USER_AGENT = "tidings-webhooks/1"


@dataclass(frozen=True, slots=True)
class SendResult:
    result: AttemptResult
    duration_ms: float
    response: str


class Sender:
    """Sends one signed POST to an address the SSRF guard checked (:mod:`.http_pool`: one pool of
    keep-alive connections per endpoint, so a dead endpoint's connections never hold up
    another's)."""

    def __init__(
        self, *, timeout: float, allowed: Sequence[Network], response_cap: int, ca_file: str = ""
    ) -> None:
        self.timeout = timeout
        self.pool = HttpPool(
            allowed=list(allowed),
            response_cap=response_cap,
            verify=ssl.create_default_context(cafile=ca_file or None),
            user_agent=USER_AGENT,
        )

    async def forget(self, key: str) -> None:
        self.pool.forget(key)

    async def close(self) -> None:
        self.pool.close()

    async def send(self, key: str, url: str, headers: dict[str, str], body: bytes) -> SendResult:
        started = time.perf_counter()

        def done(result: AttemptResult, response: str = "") -> SendResult:
            return SendResult(result, (time.perf_counter() - started) * 1000.0, response)

        try:
            async with asyncio.timeout(self.timeout):
                response = await self.pool.post(key, url, headers, body)
        except TimeoutError:
            return done(AttemptResult(None, error="timeout", timed_out=True))
        except TidingsError as exc:
            return done(AttemptResult(None, error=exc.message))
        except HttpError as exc:
            return done(AttemptResult(None, error=str(exc)[:300]))
        ok = 200 <= response.status < 300
        return done(
            AttemptResult(
                response.status,
                retry_after=response.retry_after,
                error=None if ok else f"HTTP {response.status}",
            ),
            response.body[:RESPONSE_LOG_BYTES].decode("utf-8", "replace"),
        )


class _Lane:
    def __init__(self, dispatcher: Dispatcher, endpoint_id: str) -> None:
        self.dispatcher = dispatcher
        self.endpoint_id = endpoint_id
        self.heap: list[tuple[float, float, str]] = []
        self.queued: dict[str, Due] = {}
        self.inflight: dict[str, Due] = {}
        self.wake = asyncio.Event()
        self.rate: RateWindow | None = None
        self.task: asyncio.Task[None] | None = None

    def push(self, due: Due) -> None:
        if due.delivery_id in self.queued or due.delivery_id in self.inflight:
            return
        endpoint = self.dispatcher.endpoints.get(self.endpoint_id)
        ordered = endpoint is not None and endpoint.ordered
        key = (float(due.seq), due.due_at) if ordered else (due.due_at, float(due.seq))
        heapq.heappush(self.heap, (*key, due.delivery_id))
        self.queued[due.delivery_id] = due
        self.wake.set()

    def limit(self, endpoint: Endpoint) -> int:
        if endpoint.ordered:
            return 1
        return endpoint.max_concurrency or self.dispatcher.concurrency

    async def run(self) -> None:
        while True:
            endpoint = self.dispatcher.endpoints.get(self.endpoint_id)
            if endpoint is None:
                return
            wait: float | None = None
            if self.heap and endpoint.enabled and len(self.inflight) < self.limit(endpoint):
                head = self.queued[self.heap[0][2]]
                wait = head.due_at - time.time()
                if wait <= 0:
                    wait = self._rate_delay(endpoint)  # this lane waits for its turn; no other does
                if wait is not None and wait <= 0:
                    heapq.heappop(self.heap)
                    del self.queued[head.delivery_id]
                    self.inflight[head.delivery_id] = head
                    self.dispatcher.spawn(self._attempt(head))
                    continue
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self.wake.wait()

    def discard(self, delivery_id: str) -> None:
        """Forget a queued delivery (another node holds it now); one in flight finishes."""
        if self.queued.pop(delivery_id, None) is not None:
            self.heap = [item for item in self.heap if item[2] != delivery_id]
            heapq.heapify(self.heap)
            self.wake.set()

    def retry(self, due: Due) -> None:
        """Queue an in-flight delivery again (its attempt decided to retry)."""
        self.inflight.pop(due.delivery_id, None)
        self.push(due)

    def _rate_delay(self, endpoint: Endpoint) -> float | None:
        """0 (and the attempt is counted) if the endpoint's rate limit lets one start now, else
        the seconds to wait (None: until a running attempt ends)."""
        if endpoint.rate_limit is None:
            self.rate = None
            return 0.0
        if self.rate is None or self.rate.rate != endpoint.rate_limit:
            self.rate = RateWindow(endpoint.rate_limit)
            self.rate.running = len(self.inflight)
        delay = self.rate.delay(time.monotonic())
        if delay == 0:
            self.rate.start()
        return delay

    async def _attempt(self, due: Due) -> None:
        try:
            await self.dispatcher.attempt(due, self)
        except Exception:
            log.exception("webhook attempt %s crashed; retrying in 1 s", due.delivery_id)
            self.retry(replace(due, due_at=time.time() + 1.0))
        finally:
            self.inflight.pop(due.delivery_id, None)
            if self.rate is not None:
                self.rate.end(time.monotonic())
            self.wake.set()


@runtime_checkable
class LeasingStore(WebhookStore, Protocol):
    """A store shared by several nodes (see :mod:`tidings.webhooks.redis_store`): deliveries a
    node works on are held under a lease; due ones are claimed."""

    async def claim(self, limit: int = 100) -> list[Due]: ...
    async def renew(self, delivery_ids: Sequence[str]) -> list[str]: ...
    async def release(self, delivery_ids: Sequence[str]) -> None: ...


class Dispatcher:
    """See the module docstring. ``endpoints`` is shared with the service (the in-memory view
    of the endpoints; the dispatcher replaces entries when an attempt changes an endpoint).

    With a :class:`LeasingStore` (the Redis queue, shared by several nodes) the dispatcher does
    not load ``pending()`` at start: every ``poll_interval`` seconds it calls ``refresh`` (the
    service reloads the endpoints other nodes changed), renews the leases of what its lanes hold
    (dropping what another node took over), and claims due deliveries into its lanes; on stop it
    releases what it holds."""

    def __init__(
        self,
        store: WebhookStore,
        endpoints: dict[str, Endpoint],
        *,
        policy: RetryPolicy,
        sender: Sender,
        concurrency: int,
        rng: Callable[[], float] = random.random,
        on_attempt: Callable[[str], None] | None = None,
        poll_interval: float = 1.0,
        refresh: Callable[[], Awaitable[None]] | None = None,
        on_endpoint: Callable[[Endpoint], None] | None = None,
    ) -> None:
        self.store = store
        self.endpoints = endpoints
        self.policy = policy
        self.sender = sender
        self.concurrency = concurrency
        self.rng = rng
        self.on_attempt = on_attempt
        self.lanes: dict[str, _Lane] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.attempts = 0
        self.succeeded = 0
        self.poll_interval = poll_interval
        self.refresh = refresh
        self.poller: asyncio.Task[None] | None = None
        self.recording: set[asyncio.Task[None]] = set()  # records of final outcomes, in flight
        # Deliveries whose final record is in flight: the store still says pending, so a reader
        # of the store (a dispatcher process catching up) must not queue them again.
        self.finishing: set[str] = set()
        self.on_endpoint = on_endpoint  # an attempt changed an endpoint (failing, disabled)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def start(self) -> None:
        if isinstance(self.store, LeasingStore):
            self.poller = asyncio.get_running_loop().create_task(self._poll(self.store))
            return
        for due in await self.store.pending():
            self.add(due)

    def held(self) -> list[str]:
        return [i for lane in self.lanes.values() for i in (*lane.queued, *lane.inflight)]

    async def _poll(self, store: LeasingStore) -> None:
        failing = False  # log an outage once, not at every poll
        while True:
            try:
                if self.refresh is not None:
                    await self.refresh()
                lost = set(await store.renew(self.held()))
                for lane in self.lanes.values():
                    for delivery_id in lost & set(lane.queued):
                        lane.discard(delivery_id)
                for due in await store.claim():
                    self.add(due)
            except Unavailable as exc:
                if not failing:
                    log.warning("webhook queue unavailable (%s); polling on", exc.message)
                failing = True
            except Exception:
                log.exception("webhook queue poll failed; trying again")
            else:
                if failing:
                    log.warning("webhook queue available again")
                failing = False
            await asyncio.sleep(self.poll_interval)

    async def stop(self) -> None:
        if self.poller is not None:
            self.poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.poller
        held = self.held()
        for lane in self.lanes.values():
            if lane.task is not None:
                lane.task.cancel()
        if self.recording:  # let the records of finished attempts land before the store closes
            await asyncio.wait(list(self.recording), timeout=10)
        for task in list(self.tasks):
            task.cancel()
        tasks = [lane.task for lane in self.lanes.values() if lane.task is not None]
        for task in [*tasks, *self.tasks]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.lanes.clear()
        if isinstance(self.store, LeasingStore) and held:
            try:
                await self.store.release(held)
            except Exception:
                log.warning("could not release %d webhook deliveries; their leases will end", len(held))
        await self.sender.close()

    def lane(self, endpoint_id: str) -> _Lane:
        lane = self.lanes.get(endpoint_id)
        if lane is None or lane.task is None or lane.task.done():
            lane = _Lane(self, endpoint_id)
            self.lanes[endpoint_id] = lane
            lane.task = asyncio.get_running_loop().create_task(lane.run())
        return lane

    def add(self, due: Due) -> None:
        if due.endpoint_id in self.endpoints and due.delivery_id not in self.finishing:
            self.lane(due.endpoint_id).push(due)

    def endpoint_changed(self, endpoint_id: str) -> None:
        """Call after changing or deleting an endpoint (wakes its lane, re-sorts its queue)."""
        lane = self.lanes.get(endpoint_id)
        if lane is not None:
            queued = list(lane.queued.values())
            lane.heap.clear()
            lane.queued.clear()
            for due in queued:
                lane.push(due)
            lane.wake.set()
            if endpoint_id not in self.endpoints:
                del self.lanes[endpoint_id]
                self.spawn(self.sender.forget(endpoint_id))

    async def wait_idle(self, timeout: float) -> None:
        """Return once no attempt is in flight, or after ``timeout`` seconds."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self.recording or any(lane.inflight for lane in self.lanes.values()):
            if asyncio.get_running_loop().time() >= deadline:
                return
            await asyncio.sleep(0.05)

    def queued(self) -> int:
        return sum(len(lane.heap) + len(lane.inflight) for lane in self.lanes.values())

    async def _job(self, due: Due) -> Job | None:
        endpoint = self.endpoints.get(due.endpoint_id)
        if due.message is not None and endpoint is not None:
            return Job(due.delivery_id, due.attempts, due.message, endpoint)
        return await self.store.job(due.delivery_id)

    async def attempt(self, due: Due, lane: _Lane) -> None:
        job = await self._job(due)
        if job is None:
            return
        result = await self.sender.send(
            job.endpoint.id, job.endpoint.url, self._headers(job), job.message.body
        )
        self.attempts += 1
        now = time.time()
        endpoint = self.endpoints.get(job.endpoint.id)
        if endpoint is None:
            return  # deleted meanwhile
        decision = decide(
            self.policy, result.result, job.attempts + 1, now, endpoint.failing_since, self.rng()
        )
        changed = endpoint
        if decision.outcome is Outcome.SUCCEEDED:
            self.succeeded += 1
            if endpoint.failing_since is not None:
                changed = replace(endpoint, failing_since=None)
        elif endpoint.failing_since is None:
            changed = replace(endpoint, failing_since=now)
        if decision.disable_reason is not None and endpoint.enabled:
            changed = replace(changed, enabled=False, disabled_reason=decision.disable_reason, updated_at=now)
            log.warning("webhook endpoint %s disabled: %s", endpoint.id, decision.disable_reason)
        if changed is not endpoint:
            self.endpoints[endpoint.id] = changed
            if self.on_endpoint is not None:
                self.on_endpoint(changed)
        status: DeliveryStatus = (
            "succeeded"
            if decision.outcome is Outcome.SUCCEEDED
            else "pending"
            if decision.outcome is Outcome.RETRY
            else "failed"
        )
        next_at = now + decision.delay if decision.outcome is Outcome.RETRY else None
        attempt = Attempt(
            now,
            result.result.status,
            round(result.duration_ms, 3),
            result.result.error,
            result.response,
            status,
        )
        record = self.store.record_attempt(
            job.delivery_id, attempt, status, next_at, None if changed is endpoint else changed
        )
        if self.on_attempt is not None:
            self.on_attempt("success" if status == "succeeded" else "failure")
        if next_at is None:
            # A final outcome frees the endpoint's slot now and is recorded behind it (grouped
            # with the others): a crash before the record lands makes the delivery again, with
            # the same webhook-id (at least once, as after any crash mid-attempt).
            task = asyncio.get_running_loop().create_task(record)
            self.recording.add(task)
            self.finishing.add(job.delivery_id)
            task.add_done_callback(functools.partial(self._recorded, delivery_id=job.delivery_id))
        else:
            # A retry waits for its record: the next attempt's record must not overtake it.
            await record
            lane.retry(replace(due, due_at=next_at, attempts=job.attempts + 1, message=job.message))

    def _recorded(self, task: asyncio.Task[None], delivery_id: str) -> None:
        self.recording.discard(task)
        self.finishing.discard(delivery_id)
        if not task.cancelled() and task.exception() is not None:
            log.error("webhook attempt not recorded (it will be made again): %s", task.exception())

    def _headers(self, job: Job) -> dict[str, str]:
        timestamp = int(time.time())
        return {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": job.message.id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature_header(
                job.endpoint.keys, job.message.id, timestamp, job.message.body, time.time()
            ),
        }
