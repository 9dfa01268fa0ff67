"""Drive a tidings server like the peerbench F2/S1/C1 scenarios, deterministically enough for
callgrind: N subscribers (ws or sse) on one channel, a probe until all are live, then M
publishes over K keep-alive connections (each waits for its answer), until all delivered.

Used by measure.sh (instructions per delivery: run.sh twice, with M1 and M2 publishes, under
callgrind) and, with ``--idle``, to hold idle subscribed connections while memwrap.py reports
the server's RSS growth per connection (issue 18's item 8: docs/topics/performance.md). The
WebSocket client offers no extension, like the benchmark's picows clients, and answers pings.

  OUT=/tmp/cg benchmarks/callgrind/measure.sh src now 18700 ws 100 100 500
"""

import argparse
import asyncio
import base64
import os
import resource
import socket
import struct
import time
from pathlib import Path

HOST = "127.0.0.1"


def record(kind: bytes, seq: int) -> bytes:
    head = b"%s|%08d|%019d|" % (kind, seq, 0)
    return head + b"x" * (100 - len(head))


class Sub(asyncio.Protocol):
    def __init__(self, kind, port, channel, st):
        self.kind, self.port, self.channel, self.st = kind, port, channel, st
        self.buf = b""
        self.head = False
        self.got = 0
        self.probed = False
        self.ready = asyncio.get_running_loop().create_future()
        self.tail = b""

    def connection_made(self, t):
        self.t = t
        if self.kind == "ws":
            key = base64.b64encode(os.urandom(16)).decode()
            t.write(
                (
                    f"GET /ws HTTP/1.1\r\nHost: {HOST}:{self.port}\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                ).encode()
            )
        else:
            t.write(
                (
                    f"GET /sse?channel={self.channel} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n"
                    "Accept: text/event-stream\r\n\r\n"
                ).encode()
            )

    def send_frame(self, payload: bytes, first=0x81):
        mask = b"\x01\x02\x03\x04"
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        n = len(payload)
        hdr = bytes([first, 0x80 | n]) if n < 126 else bytes([first, 0x80 | 126]) + struct.pack("!H", n)
        self.t.write(hdr + mask + masked)

    def data_received(self, data):
        if not self.head:
            self.buf += data
            i = self.buf.find(b"\r\n\r\n")
            if i < 0:
                return
            self.head = True
            data = self.buf[i + 4 :]
            self.buf = b""
            if self.kind == "ws":
                self.send_frame(b'{"op":"subscribe","channel":"%s"}' % self.channel.encode())
            if not self.ready.done():
                self.ready.set_result(None)
        if self.kind == "ws":
            self.buf += data
            b = self.buf
            i = 0
            n = len(b)
            while n - i >= 2:
                op = b[i] & 0x0F
                ln = b[i + 1] & 0x7F
                h = 2
                if ln == 126:
                    if n - i < 4:
                        break
                    ln = struct.unpack_from("!H", b, i + 2)[0]
                    h = 4
                elif ln == 127:
                    if n - i < 10:
                        break
                    ln = struct.unpack_from("!Q", b, i + 2)[0]
                    h = 10
                if n - i < h + ln:
                    break
                payload = b[i + h : i + h + ln]
                i += h + ln
                if op == 9:
                    self.send_frame(payload, 0x8A)
                    self.st["pings"] += 1
                elif op in (1, 2):
                    self.count(payload)
            self.buf = b[i:]
        else:
            s = self.tail + data
            self.count(s)
            self.tail = s[-3:]

    def count(self, s):
        p = s.count(b"P|0")
        if p and not self.probed:
            self.probed = True
            self.st["probed"] += 1
        n = s.count(b"T|0")
        self.got += n
        self.st["got"] += n

    def connection_lost(self, exc):
        self.st["closed"] += 1


class Pub(asyncio.Protocol):
    def __init__(self):
        self.buf = b""
        self.waiter = None

    def connection_made(self, t):
        self.t = t

    def data_received(self, data):
        self.buf += data
        i = self.buf.find(b"\r\n\r\n")
        if i < 0:
            return
        head = self.buf[:i].decode("latin1").lower()
        clen = 0
        for line in head.split("\r\n"):
            if line.startswith("content-length:"):
                clen = int(line.split(":")[1])
        if len(self.buf) < i + 4 + clen:
            return
        status = int(head.split(" ")[1])
        self.buf = self.buf[i + 4 + clen :]
        w, self.waiter = self.waiter, None
        w.set_result(status)

    async def publish(self, port, channel, payload):
        body = b'{"channel":"%s","data":"%s"}' % (channel.encode(), payload)
        self.waiter = asyncio.get_running_loop().create_future()
        self.t.write(
            b"POST /api/publish HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % (HOST.encode(), port, len(body)) + body
        )
        return await self.waiter


async def main(a):
    loop = asyncio.get_running_loop()
    for _ in range(6000):
        try:
            socket.create_connection((HOST, a.port), timeout=1).close()
            break
        except OSError:
            await asyncio.sleep(0.1)
    st = {"probed": 0, "got": 0, "closed": 0, "pings": 0}
    subs = []
    sem = asyncio.Semaphore(50)

    async def one():
        async with sem:
            _, s = await loop.create_connection(lambda: Sub(a.transport, a.port, a.channel, st), HOST, a.port)
            await s.ready
            subs.append(s)

    t0 = time.monotonic()
    await asyncio.gather(*(one() for _ in range(a.subs)))
    pubs = [(await loop.create_connection(Pub, HOST, a.port))[1] for _ in range(a.conns)]
    k = 0
    while not a.noprobe and st["probed"] < len(subs):
        status = await pubs[0].publish(a.port, a.channel, record(b"P", k))
        k += 1
        assert status == 200, status
        for _ in range(20):
            await asyncio.sleep(0.1)
            if st["probed"] >= len(subs):
                break
    print(f"OPENED {len(subs)} probes {k} in {time.monotonic() - t0:.1f}s", flush=True)
    if a.idle:
        if a.marker:
            Path(a.marker).write_text("opened\n")  # noqa: ASYNC240 (a few bytes, once)
        await asyncio.sleep(a.idle)
        return
    nxt = 0

    async def worker(p):
        nonlocal nxt
        while nxt < a.msgs:
            seq = nxt
            nxt += 1
            status = await p.publish(a.port, a.channel, record(b"T", seq))
            assert status == 200, status

    t1 = time.monotonic()
    await asyncio.gather(*(worker(p) for p in pubs))
    want = a.msgs * len(subs)
    for _ in range(100000):
        if st["got"] >= want:
            break
        await asyncio.sleep(0.05)
    print(
        f"BURST {a.msgs} msgs to {len(subs)} subs: got {st['got']}/{want} closed {st['closed']} "
        f"pings {st['pings']} in {time.monotonic() - t1:.1f}s",
        flush=True,
    )


p = argparse.ArgumentParser()
p.add_argument("--port", type=int, default=18700)
p.add_argument("--transport", default="ws")
p.add_argument("--subs", type=int, default=100)
p.add_argument("--msgs", type=int, default=200)
p.add_argument("--conns", type=int, default=4)
p.add_argument("--channel", default="bench")
p.add_argument("--idle", type=float, default=0)
p.add_argument("--marker")
p.add_argument("--noprobe", action="store_true")
a = p.parse_args()

h = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (h, h))
asyncio.run(main(a))
