"""Load generator for peerbench. bench.py starts one process per role:

  sub   N subscribers (WebSocket via picows, or SSE via a raw asyncio protocol); probes until all
        are live, says READY, then counts every timed record until all arrived or it gives up.
  pub   the burst publisher: K keep-alive HTTP/1.1 connections, each sending the next message as
        soon as the previous publish was answered ("as fast as the server accepts them").
  idle  C1: opens N WebSocket subscribers, holds them, optionally checks they are live.
  lp    L1: N long-poll clients re-polling in a loop while one publisher publishes continuously.

Protocol with the driver: JSON after a keyword on stdout lines (READY, DONE, RESULT, OPENED,
PROBED); commands on stdin lines (PUBDONE, PROBE, CLOSE). Every role has a hard deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
from array import array

import uvloop
from common import (
    KIND_TIMED,
    REC_LEN,
    ChunkedDecoder,
    http_request,
    make_record,
    mono_ns,
    parse_head,
)
from peers import get_peer
from picows import WSListener, WSMsgType, ws_connect

TEXT, BINARY, CLOSE = WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.CLOSE
I_TEXT, I_BINARY, I_CLOSE = int(TEXT), int(BINARY), int(CLOSE)


def emit(tag: str, obj=None) -> None:
    sys.stdout.write(tag + (" " + json.dumps(obj) if obj is not None else "") + "\n")
    sys.stdout.flush()


def cpu_now() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Shared:
    """Counters shared by all subscribers of one process."""

    def __init__(self, nmsgs: int, nsubs: int):
        self.nmsgs = nmsgs
        self.expected = nmsgs * nsubs
        self.got = self.dup = self.bad = self.probed = self.closed = 0
        self.lat = array("q")
        self.t_last = 0
        self.done = asyncio.Event()


def on_record(sub, p, i: int) -> None:
    """p[i:i+REC_LEN] is a record (see common.py). Counts it once per subscriber."""
    sh = sub.sh
    if p[i] == KIND_TIMED:
        now = mono_ns()
        try:
            seq = int(p[i + 2 : i + 10])
            ts = int(p[i + 11 : i + 30])
            seen = sub.seen[seq]
        except (ValueError, IndexError):
            sh.bad += 1
            return
        if seen:
            sh.dup += 1
            return
        sub.seen[seq] = 1
        sh.lat.append(now - ts)
        sh.got += 1
        sh.t_last = now
        if sh.got == sh.expected:
            sh.done.set()
    elif not sub.probed:
        sub.probed = True
        sh.probed += 1


# ------------------------------------------------------------------ WebSocket subscriber (picows)
class WsSub(WSListener):
    """One WebSocket subscriber. `flavor` is the peer's ws_flavor (see peers/base.py)."""

    def __init__(self, sh: Shared, flavor: str, subscribe: bytes = b""):
        super().__init__()
        self.sh = sh
        self.sio = flavor == "socketio"
        self.json = flavor == "tidings"
        self.subscribe = subscribe
        self.seen = bytearray(sh.nmsgs)
        self.probed = False
        self.ready = asyncio.get_running_loop().create_future()
        self.gone = False

    def on_ws_connected(self, transport):
        self.transport = transport
        if self.json:
            transport.send(TEXT, self.subscribe)
        elif not self.sio:
            self.ready.set_result(True)

    def on_ws_frame(self, transport, frame):
        mt = frame.msg_type
        if mt in (I_TEXT, I_BINARY):
            p = frame.get_payload_as_bytes()
            if self.json:
                # a JSON publication: the record is the string value of "data"; searching from
                # that key keeps a '|' in another field from being taken for the record
                j = p.find(b'"data":"')
                i = p.find(b"|", j) - 1 if j >= 0 else -1
                if i > j:
                    on_record(self, p, i)
                elif not self.ready.done():
                    if b'"op":"subscribed"' in p:
                        self.ready.set_result(True)
                    elif b'"op":"error"' in p:
                        self.ready.set_exception(ConnectionError(p[:200].decode(errors="replace")))
                return
            i = p.find(b"|") - 1
            if i >= 0:
                on_record(self, p, i)
            elif self.sio:
                # Engine.IO v4 / Socket.IO v5 control packets
                if p == b"2":  # ping -> pong
                    transport.send(TEXT, b"3")
                elif p[:1] == b"0":  # EIO open -> connect to the default namespace
                    transport.send(TEXT, b"40")
                elif p[:2] == b"40" and not self.ready.done():
                    self.ready.set_result(True)
                elif p[:2] == b"44" and not self.ready.done():
                    self.ready.set_exception(ConnectionError(p.decode()))
        elif mt == I_CLOSE:
            if not self.ready.done():
                code = frame.get_close_code()
                self.ready.set_exception(ConnectionError(f"closed with {int(code)}"))
            transport.send_close()
            transport.disconnect()

    def on_ws_disconnected(self, transport):
        if not self.gone:
            self.gone = True
            self.sh.closed += 1
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed during handshake"))


# ------------------------------------------------------------------ SSE subscriber (raw protocol)
class SseSub(asyncio.Protocol):
    def __init__(self, sh: Shared, request: bytes):
        self.sh = sh
        self.request = request
        self.seen = bytearray(sh.nmsgs)
        self.probed = False
        self.ready = asyncio.get_running_loop().create_future()
        self.head = bytearray()
        self.dec = None
        self.sbuf = bytearray()
        self.gone = False
        self.in_body = False

    def connection_made(self, transport):
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data):
        if not self.in_body:
            self.head += data
            i = self.head.find(b"\r\n\r\n")
            if i < 0:
                return
            status, hdrs = parse_head(bytes(self.head[:i]))
            data = bytes(self.head[i + 4 :])
            self.head = None
            self.in_body = True
            if status != 200:
                self.ready.set_exception(ConnectionError(f"HTTP {status}"))
                self.transport.close()
                return
            if hdrs.get(b"transfer-encoding", b"").lower() == b"chunked":
                self.dec = ChunkedDecoder()
            self.ready.set_result(True)
        if self.dec is not None:
            data = self.dec.feed(data)
        buf = self.sbuf
        buf += data
        pos = 0
        n = len(buf)
        while True:
            j = buf.find(b"|", pos)
            if j < 1:
                pos = n
                break
            if n - (j - 1) < REC_LEN:
                pos = j - 1
                break
            on_record(self, buf, j - 1)
            pos = j - 1 + REC_LEN
        del buf[:pos]

    def connection_lost(self, exc):
        if not self.gone:
            self.gone = True
            self.sh.closed += 1
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed before response"))


# ------------------------------------------------------------------ minimal keep-alive HTTP client
class HttpConn(asyncio.Protocol):
    """One request at a time; reconnects if the server closed the connection."""

    def __init__(self):
        self.buf = bytearray()
        self.fut = None
        self.transport = None
        self.lost = False

    @classmethod
    async def open(cls, host: str, port: int) -> HttpConn:
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_connection(cls, host, port)
        proto.addr = (host, port)
        return proto

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.buf += data
        if self.fut is None or self.fut.done():
            return
        buf = self.buf
        i = buf.find(b"\r\n\r\n")
        if i < 0:
            return
        status, hdrs = parse_head(bytes(buf[:i]))
        cl = hdrs.get(b"content-length")
        if cl is not None:
            end = i + 4 + int(cl)
            if len(buf) < end:
                return
            body = bytes(buf[i + 4 : end])
            del buf[:end]
        elif hdrs.get(b"transfer-encoding", b"").lower() == b"chunked":
            dec = ChunkedDecoder()
            body = dec.feed(bytes(buf[i + 4 :]))
            if not dec.done:
                return
            del buf[:]
        else:
            body = b""
            del buf[: i + 4]
        if hdrs.get(b"connection", b"").lower() == b"close":
            self.lost = True
        self.fut.set_result((status, body))

    def connection_lost(self, exc):
        self.lost = True
        if self.fut is not None and not self.fut.done():
            self.fut.set_exception(ConnectionError("publish connection lost"))

    async def request(self, data: bytes) -> tuple[int, bytes]:
        self.fut = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return await self.fut


async def request_retry(conn: HttpConn, data: bytes) -> tuple[HttpConn, tuple[int, bytes]]:
    if conn.lost:
        conn.transport.close()
        conn = await HttpConn.open(*conn.addr)
    return conn, await conn.request(data)


# ------------------------------------------------------------------ helpers
async def open_subs(peer, a, sh: Shared, n: int) -> tuple[list, dict]:
    loop = asyncio.get_running_loop()
    sem = asyncio.Semaphore(a.conc)
    subs: list = []
    errors: dict[str, int] = {}
    flavor = peer.ws_flavor
    sub_frame = peer.ws_subscribe(a.channel)

    async def one():
        async with sem:
            try:
                if a.transport == "ws":
                    _, sub = await ws_connect(
                        lambda: WsSub(sh, flavor, sub_frame),
                        peer.ws_url(a.channel),
                        websocket_handshake_timeout=30,
                    )
                else:  # sse or stream: any chunked body holding the records
                    if a.transport == "sse":
                        host, port, path = peer.sse_path(a.channel)
                        accept = "text/event-stream"
                    else:
                        host, port, path = peer.stream_path(a.channel)
                        accept = "application/x-ndjson"
                    req = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: {accept}\r\n\r\n").encode()
                    _, sub = await loop.create_connection(lambda: SseSub(sh, req), host, port)
                await asyncio.wait_for(sub.ready, 30)
                subs.append(sub)
            except Exception as e:
                k = f"{type(e).__name__}: {e}"[:120]
                errors[k] = errors.get(k, 0) + 1

    t0 = time.monotonic()
    await asyncio.gather(*(one() for _ in range(n)))
    return subs, {
        "ok": len(subs),
        "failed": n - len(subs),
        "errors": errors,
        "open_s": round(time.monotonic() - t0, 3),
    }


async def probe(peer, a, sh: Shared, target: int, within: float) -> dict:
    """Publish probe records until `target` subscribers have seen one (or `within` s passed)."""
    conn = await HttpConn.open(*peer.publish_addr())
    t0 = time.monotonic()
    k = 0
    while sh.probed < target and time.monotonic() - t0 < within:
        conn, (_status, _) = await request_retry(
            conn, peer.publish_request(a.channel, make_record(b"P", k, mono_ns()), a.transport)
        )
        k += 1
        for _ in range(10):
            await asyncio.sleep(0.05)
            if sh.probed >= target:
                break
    conn.transport.close()
    return {"probed": sh.probed, "probes": k, "probe_s": round(time.monotonic() - t0, 3)}


def stdin_reader() -> asyncio.Queue:
    loop = asyncio.get_running_loop()
    q: asyncio.Queue = asyncio.Queue()
    loop.add_reader(sys.stdin.fileno(), lambda: q.put_nowait(sys.stdin.readline().strip()))
    return q


def percentiles(lat: array) -> dict:
    if not lat:
        return {}
    s = sorted(lat)
    n = len(s)

    def q(f):
        return round(s[min(n - 1, int(f * n))] / 1e6, 3)

    return {
        "p50_ms": q(0.5),
        "p90_ms": q(0.9),
        "p99_ms": q(0.99),
        "p999_ms": q(0.999),
        "max_ms": round(s[-1] / 1e6, 3),
        "min_ms": round(s[0] / 1e6, 3),
    }


# ------------------------------------------------------------------ roles
async def role_sub(a) -> None:
    peer = get_peer(a.peer, a.rundir)
    sh = Shared(a.msgs, a.subs)
    cmds = stdin_reader()
    subs, opened = await open_subs(peer, a, sh, a.subs)
    sh.expected = a.msgs * len(subs)
    pr = await probe(peer, a, sh, len(subs), a.probe_timeout)
    await asyncio.sleep(0.5)  # let late probes drain
    cpu0 = cpu_now()
    emit("READY", {**opened, **pr})
    deadline = time.monotonic() + a.max_s
    pubdone_at = None
    last_got, last_change = -1, time.monotonic()
    reason = "all received"
    while not sh.done.is_set():
        try:
            cmd = await asyncio.wait_for(cmds.get(), 0.05)
            if cmd == "PUBDONE":
                pubdone_at = time.monotonic()
        except TimeoutError:
            pass
        now = time.monotonic()
        if sh.got != last_got:
            last_got, last_change = sh.got, now
        if now > deadline:
            reason = f"deadline {a.max_s}s"
            break
        if pubdone_at is not None and now - max(last_change, pubdone_at) > a.idle_s:
            reason = f"no progress for {a.idle_s}s after the last publish"
            break
        if len(subs) and sh.closed >= len(subs):
            reason = "all subscribers closed"
            break
    cpu1 = cpu_now()
    emit("DONE")
    res = {
        "subs_ok": len(subs),
        "expected": sh.expected,
        "got": sh.got,
        "dup": sh.dup,
        "bad": sh.bad,
        "closed": sh.closed,
        "t_last": sh.t_last,
        "stop": reason,
        "client_cpu_s": round(cpu1 - cpu0, 3),
        **percentiles(sh.lat),
    }
    emit("RESULT", res)


async def role_pub(a) -> None:
    peer = get_peer(a.peer, a.rundir)
    conns = [await HttpConn.open(*peer.publish_addr()) for _ in range(a.conns)]
    nxt = 0
    status_counts: dict[str, int] = {}
    first = [0]
    cpu0 = cpu_now()
    deadline = time.monotonic() + a.max_s

    async def worker(conn):
        nonlocal nxt
        while nxt < a.msgs and time.monotonic() < deadline:
            seq = nxt
            nxt += 1
            ts = mono_ns()
            if not first[0]:
                first[0] = ts
            try:
                conn, (status, _) = await request_retry(
                    conn, peer.publish_request(a.channel, make_record(b"T", seq, ts), a.transport)
                )
            except Exception as e:
                status = type(e).__name__
                conn = await HttpConn.open(*peer.publish_addr())
            status_counts[str(status)] = status_counts.get(str(status), 0) + 1

    await asyncio.gather(*(worker(c) for c in conns))
    t_end = mono_ns()
    emit(
        "RESULT",
        {
            "t_first": first[0],
            "t_end": t_end,
            "published": nxt,
            "status": status_counts,
            "pub_cpu_s": round(cpu_now() - cpu0, 3),
            "pub_s": round((t_end - first[0]) / 1e9, 3),
        },
    )


async def role_idle(a) -> None:
    peer = get_peer(a.peer, a.rundir)
    sh = Shared(1, a.subs)
    cmds = stdin_reader()
    subs, opened = await open_subs(peer, a, sh, a.subs)
    emit("OPENED", opened)
    deadline = time.monotonic() + a.max_s
    while time.monotonic() < deadline:
        try:
            cmd = await asyncio.wait_for(cmds.get(), 0.5)
        except TimeoutError:
            continue
        if cmd == "PROBE":
            pr = await probe(peer, a, sh, len(subs), a.probe_timeout)
            emit("PROBED", {**pr, "closed": sh.closed})
        elif cmd == "CLOSE":
            break
    emit("RESULT", {"closed": sh.closed})


async def role_lp(a) -> None:
    """L1: a.subs long-poll clients loop for a.duration s while one publisher publishes paced."""
    peer = get_peer(a.peer, a.rundir)
    host, port, path = peer.lp_path(a.channel)
    lat = array("q")
    counts = {"ok": 0, "other": 0, "err": 0, "msgs": 0}
    stop = time.monotonic() + a.duration

    def get(p):
        return f"GET {p} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()

    def take(body: bytes) -> int:
        """Count the timed records in a poll answer (Engine.IO may batch several)."""
        n = 0
        j = body.find(b"|")
        while j >= 1:
            if body[j - 1] == KIND_TIMED:
                lat.append(mono_ns() - int(body[j + 10 : j + 29]))
                n += 1
            j = body.find(b"|", j + REC_LEN - 1)
        return n

    async def poller():
        conn = await HttpConn.open(host, port)
        req = get(path)
        while time.monotonic() < stop:
            try:
                conn, (status, body) = await asyncio.wait_for(request_retry(conn, req), 30)
            except Exception:
                counts["err"] += 1
                conn.transport.close()
                conn = await HttpConn.open(host, port)
                continue
            n = take(body) if status == 200 else 0
            counts["msgs"] += n
            counts["ok" if n else "other"] += 1
        conn.transport.close()

    async def sio_poller():
        # Engine.IO v4 polling transport: handshake, namespace connect, then GET polls; the
        # server queues packets per session, so one poll may carry several messages
        conn = await HttpConn.open(host, port)
        conn, (_, body) = await request_retry(conn, get(path))
        sid = json.loads(body[1 : body.index(b"}") + 1])["sid"]
        p = f"{path}&sid={sid}"

        def post(data: bytes) -> bytes:
            return http_request("POST", host, port, p, data, "text/plain;charset=UTF-8")

        conn, _ = await request_retry(conn, post(b"40"))
        req = get(p)
        while time.monotonic() < stop:
            try:
                conn, (status, body) = await asyncio.wait_for(request_retry(conn, req), 30)
            except Exception:
                counts["err"] += 1
                return
            n = take(body) if status == 200 else 0
            counts["msgs"] += n
            counts["ok" if n else "other"] += 1
            if b"\x1e2\x1e" in b"\x1e" + body + b"\x1e":  # ping -> pong
                conn, _ = await request_retry(conn, post(b"3"))
        conn.transport.close()

    async def publisher():
        # paced: one publish every a.lp_interval seconds, until the pollers have stopped
        conn = await HttpConn.open(*peer.publish_addr())
        k = 0
        nxt = time.monotonic()
        while time.monotonic() < stop + 0.5:
            conn, _ = await request_retry(
                conn, peer.publish_request(a.channel, make_record(b"T", k % 10**8, mono_ns()), "lp")
            )
            k += 1
            nxt += a.lp_interval
            delay = nxt - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        return k

    emit("READY", {})
    cpu0 = cpu_now()
    t0 = time.monotonic()
    pub = asyncio.ensure_future(publisher())
    one = sio_poller if peer.ws_flavor == "socketio" else poller
    await asyncio.wait_for(asyncio.gather(*(one() for _ in range(a.subs))), a.duration + 45)
    wall = time.monotonic() - t0
    published = await asyncio.wait_for(pub, 30)
    emit(
        "RESULT",
        {
            **counts,
            "wall_s": round(wall, 3),
            "published": published,
            "rt_per_s": round(counts["ok"] / wall, 1),
            "msgs_per_s": round(counts["msgs"] / wall, 1),
            "client_cpu_s": round(cpu_now() - cpu0, 3),
            **percentiles(lat),
        },
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("role", choices=["sub", "pub", "idle", "lp"])
    ap.add_argument("--peer", required=True)
    ap.add_argument("--rundir", required=True)
    ap.add_argument("--transport", default="ws", choices=["ws", "sse", "stream", "lp"])
    ap.add_argument("--channel", default="bench")
    ap.add_argument("--subs", type=int, default=1000)
    ap.add_argument("--msgs", type=int, default=1000)
    ap.add_argument("--conns", type=int, default=4, help="publisher connections (pub role)")
    ap.add_argument("--conc", type=int, default=100, help="connects in flight")
    ap.add_argument("--max-s", type=float, default=90.0, help="hard deadline of the role")
    ap.add_argument("--idle-s", type=float, default=5.0)
    ap.add_argument("--probe-timeout", type=float, default=30.0)
    ap.add_argument("--duration", type=float, default=10.0, help="lp role: seconds of polling")
    ap.add_argument("--lp-interval", type=float, default=0.002, help="lp role: seconds between publishes")
    a = ap.parse_args()
    fn = {"sub": role_sub, "pub": role_pub, "idle": role_idle, "lp": role_lp}[a.role]
    uvloop.run(fn(a))
    sys.stdout.flush()
    os._exit(0)  # skip closing thousands of sockets one by one; the kernel does it


if __name__ == "__main__":
    main()
