"""``tidings.engines.asgi.sendqueue`` (at the edge, but pure enough to test with a running loop)."""

from __future__ import annotations

import asyncio

from tidings.engines.asgi.sendqueue import SendQueue
from tidings.machines.backlog import Backlog


def test_push_queues_and_counts_bytes():
    box: SendQueue[bytes] = SendQueue(max_bytes=100)
    assert box.push(b"abc")
    assert box.push(b"de")
    assert len(box) == 2
    assert box.queued_bytes == 5


async def test_wait_batch_returns_everything_queued_in_one_go():
    box: SendQueue[str] = SendQueue(max_bytes=100)
    box.push("a")
    box.push("b")
    assert await box.wait_batch() == ["a", "b"]
    assert len(box) == 0
    assert box.queued_bytes == 0


async def test_wait_batch_waits_for_the_first_push():
    box: SendQueue[str] = SendQueue(max_bytes=100)
    waiting = asyncio.create_task(box.wait_batch())
    await asyncio.sleep(0)
    assert not waiting.done()
    box.push("a")
    box.push("b")  # the waiter is already woken: no second wake-up
    assert await asyncio.wait_for(waiting, 1) == ["a", "b"]


async def test_close_wakes_the_writer_with_nothing():
    box: SendQueue[str] = SendQueue(max_bytes=100)
    waiting = asyncio.create_task(box.wait_batch())
    await asyncio.sleep(0)
    box.close()
    assert await asyncio.wait_for(waiting, 1) == []


async def test_a_closed_outbox_refuses_pushes_and_returns_nothing():
    box: SendQueue[str] = SendQueue(max_bytes=100)
    box.push("a")
    box.close()
    assert box.closed
    assert len(box) == 0
    assert box.queued_bytes == 0
    assert box.push("b") is False
    assert await box.wait_batch() == []
    box.close()  # idempotent


def test_overflow_by_bytes_drops_everything_and_calls_back_once():
    calls: list[None] = []
    box: SendQueue[bytes] = SendQueue(max_bytes=5, on_overflow=lambda: calls.append(None))
    assert box.push(b"12345")
    assert box.push(b"6") is False
    assert box.overflowed
    assert box.closed
    assert len(box) == 0
    assert box.push(b"7") is False
    assert calls == [None]


def test_a_replay_is_allowed_over_the_limit_until_the_backlog_is_back_within_it():
    box: SendQueue[bytes] = SendQueue(max_bytes=10)
    assert all(box.push(b"r" * 8, bounded=False) for _ in range(5))  # 40 bytes of replay
    assert box.push(b"live" * 2)  # 48 queued: within the limit plus the replay
    assert box.push(b"ab")  # 50 queued: still within it
    assert box.push(b"x") is False  # live data past the limit on top of the replay
    assert box.overflowed


async def test_once_the_replay_is_taken_only_live_data_counts():
    box: SendQueue[bytes] = SendQueue(max_bytes=10)
    box.push(b"r" * 40, bounded=False)
    assert await box.wait_batch() == [b"r" * 40]
    assert box.push(b"1234567890")
    assert box.push(b"1") is False


def test_the_backlog_rule_allows_until_the_backlog_is_within_the_limit():
    rule = Backlog(100)
    rule.allow(500)
    assert not rule.overflows(550)
    assert rule.overflows(601)
    assert not rule.overflows(100)  # the replay has been read: the allowance is spent
    assert rule.overflows(101)


async def test_overflow_wakes_a_waiting_writer():
    box: SendQueue[str] = SendQueue(max_bytes=1)
    waiting = asyncio.create_task(box.wait_batch())
    await asyncio.sleep(0)
    box.push("too long")
    assert await asyncio.wait_for(waiting, 1) == []


async def test_a_cancelled_writer_leaves_no_waiter_behind():
    box: SendQueue[str] = SendQueue(max_bytes=100)
    waiting = asyncio.create_task(box.wait_batch())
    await asyncio.sleep(0)
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    assert box.push("a")
    assert await box.wait_batch() == ["a"]
