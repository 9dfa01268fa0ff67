"""``tidings.outbox`` (at the edge, but pure enough to test with a running loop)."""

from __future__ import annotations

import asyncio

from tidings.outbox import Outbox


def test_push_queues_and_counts_bytes():
    box: Outbox[bytes] = Outbox(max_bytes=100, max_messages=10)
    assert box.push(b"abc")
    assert box.push(b"de")
    assert len(box) == 2
    assert box.queued_bytes == 5


async def test_wait_batch_returns_everything_queued_in_one_go():
    box: Outbox[str] = Outbox(max_bytes=100, max_messages=10)
    box.push("a")
    box.push("b")
    assert await box.wait_batch() == ["a", "b"]
    assert len(box) == 0
    assert box.queued_bytes == 0


async def test_wait_batch_waits_for_the_first_push():
    box: Outbox[str] = Outbox(max_bytes=100, max_messages=10)
    waiting = asyncio.create_task(box.wait_batch())
    await asyncio.sleep(0)
    assert not waiting.done()
    box.push("a")
    box.push("b")  # the waiter is already woken: no second wake-up
    assert await asyncio.wait_for(waiting, 1) == ["a", "b"]


async def test_close_wakes_the_writer_with_nothing():
    box: Outbox[str] = Outbox(max_bytes=100, max_messages=10)
    waiting = asyncio.create_task(box.wait_batch())
    await asyncio.sleep(0)
    box.close()
    assert await asyncio.wait_for(waiting, 1) == []


async def test_a_closed_outbox_refuses_pushes_and_returns_nothing():
    box: Outbox[str] = Outbox(max_bytes=100, max_messages=10)
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
    box: Outbox[bytes] = Outbox(max_bytes=5, max_messages=10,
                                on_overflow=lambda: calls.append(None))
    assert box.push(b"12345")
    assert box.push(b"6") is False
    assert box.overflowed
    assert box.closed
    assert len(box) == 0
    assert box.push(b"7") is False
    assert calls == [None]


def test_overflow_by_message_count_without_callback():
    box: Outbox[str] = Outbox(max_bytes=1000, max_messages=2)
    assert box.push("a")
    assert box.push("b")
    assert box.push("c") is False
    assert box.overflowed


async def test_overflow_wakes_a_waiting_writer():
    box: Outbox[str] = Outbox(max_bytes=1, max_messages=10)
    waiting = asyncio.create_task(box.wait_batch())
    await asyncio.sleep(0)
    box.push("too long")
    assert await asyncio.wait_for(waiting, 1) == []


async def test_a_cancelled_writer_leaves_no_waiter_behind():
    box: Outbox[str] = Outbox(max_bytes=100, max_messages=10)
    waiting = asyncio.create_task(box.wait_batch())
    await asyncio.sleep(0)
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    assert box.push("a")
    assert await box.wait_batch() == ["a"]
