"""Compressed HTTP streams: shared segments (what tidings does) against one compressor per
connection (what a gzip middleware or a proxy does), bytes per event and CPU, in one process.

It drives the real stream machine (:class:`tidings.machines.stream.StreamMachine`) with the
real SSE framing, as the engines do, with no network: ``--subscribers`` single-channel SSE
streams get ``--messages`` publications of the ~1 KB ticker (``benchmarks/ticker.py``), and it
times the fan-out (``time.process_time``) and counts the bytes each stream hands its driver::

    PYTHONPATH=src python benchmarks/stream_compression.py            # 1,000 x 200, ~1 min

Modes: ``identity`` (no Content-Encoding), ``shared, chained`` (``sse.compression``: each
publication's segment compressed once with the previous publication as its dictionary, every
stream sends it; per stream only a CRC-32), ``shared, independent`` (the same without the
chaining: what a stream gets after any other event, e.g. the first publication after its ready
notice), and
``per-connection`` with zlib's defaults (32 KiB window, memLevel 8) and with a small context
(4 KiB window, memLevel 5, what `websockets` uses for permessage-deflate): each stream's own
compressor with its history, a sync flush per event. Writes a Markdown table (``--out``) and
JSON to stdout.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
import tracemalloc
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ticker import ticker_messages

from tidings.core.disconnect import Disconnect
from tidings.core.events import Gap, Publication
from tidings.core.position import Position
from tidings.core.wire.content_coding import StreamCoding
from tidings.core.wire.frames import EncodedPublication
from tidings.machines.stream import StreamConfig, StreamMachine
from tidings.transports.sse import SSEFraming

CONFIG = StreamConfig(heartbeat=15.0, outbox_bytes=1 << 40, close_timeout=5.0)
CHANNEL = "ticker:BTC-USD"


class ConnectionCoding(StreamCoding):
    """One compressor per stream, its history kept from event to event (a sync flush each)."""

    __slots__ = ("_z",)

    def __init__(self, name: str, level: int, wbits: int, mem_level: int) -> None:
        super().__init__(name, level)
        self._z = zlib.compressobj(level, zlib.DEFLATED, -wbits, mem_level)

    def segment(self, data: bytes) -> bytes:
        self._unsent.append(data)
        return self._z.compress(data) + self._z.flush(zlib.Z_SYNC_FLUSH)


class OwnCopy:
    """The SSE framing, but each stream gets its own copy of the event: nothing is shared, so
    the machine compresses it with the stream's coder (the per-connection mode)."""

    def __init__(self, framing: SSEFraming) -> None:
        self.framing = framing
        self.content_type = framing.content_type
        self.heartbeat = framing.heartbeat
        self.preamble = framing.preamble

    def ready(self, positions: Mapping[str, Position], cursor: str) -> bytes:
        return self.framing.ready(positions, cursor)

    def gap(self, gap: Gap, cursor: str) -> bytes:
        return self.framing.gap(gap, cursor)

    def publication(self, encoded: EncodedPublication, cursor: str, single: bool) -> bytes:
        return bytes(bytearray(self.framing.publication(encoded, cursor, single)))

    def farewell(self, reason: Disconnect) -> bytes:
        return self.framing.farewell(reason)


MODES: dict[str, dict[str, Any]] = {
    "identity": {},
    "shared, chained (what tidings does)": {"shared": True},
    "shared, independent": {"shared": True, "independent": True},
    "per-connection (32 KiB window, memLevel 8)": {"wbits": 15, "mem_level": 8},
    "per-connection (4 KiB window, memLevel 5)": {"wbits": 12, "mem_level": 5},
}


def publications(count: int) -> list[Publication]:
    feed = ticker_messages()
    return [
        Publication(
            CHANNEL, offset, "AAAAAAAA", f"id-{offset}", 1_765_137_600_000 + offset, "ticker", next(feed)
        )
        for offset in range(1, count + 1)
    ]


def run(mode: dict[str, Any], subscribers: int, pubs: list[Publication], level: int) -> dict[str, Any]:
    framing = SSEFraming(2000)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    machines = []
    for _ in range(subscribers):
        if not mode:
            machines.append(StreamMachine(CONFIG, framing))
        elif mode.get("shared"):
            machines.append(StreamMachine(CONFIG, framing, StreamCoding("gzip", level)))
        else:
            coding = ConnectionCoding("gzip", level, mode["wbits"], mode["mem_level"])
            machines.append(StreamMachine(CONFIG, OwnCopy(framing), coding))  # type: ignore[arg-type]
    for m in machines:
        m.ready({CHANNEL: Position("AAAAAAAA", 0)}, "c")
        m.open(0.0)
        m.data_to_send()
    per_stream = (tracemalloc.get_traced_memory()[0] - before) / subscribers
    tracemalloc.stop()
    sent = 0
    plain = 0
    started = time.process_time()
    independent = mode.get("independent", False)
    for publication in pubs:
        encoded = EncodedPublication(publication)  # what the hub does once per publication
        for m in machines:
            if independent:
                m._last = None  # as if each stream had sent something else since: no chaining
            m.publication(encoded, encoded.token, True)
            sent += len(m.data_to_send())
            m.written(0)
        plain += len(encoded.sse)
    cpu = time.process_time() - started
    deliveries = subscribers * len(pubs)
    return {
        "bytes_per_event": sent / deliveries,
        "plain_bytes_per_event": plain / len(pubs),
        "cpu_us_per_delivery": cpu / deliveries * 1e6,
        "memory_per_stream_bytes": per_stream,
    }


def markdown(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> str:
    identity = results["identity"]  # the first row
    lines = [
        f"{args.subscribers:,} SSE streams of one channel, {args.messages} ticker publications "
        f"(~{identity['plain_bytes_per_event']:.0f} bytes per event), zlib level {args.level}; "
        "CPU of the fan-out through the stream machine, in one process, no network.",
        "",
        "| mode | bytes per event | vs identity | CPU per delivery | memory per stream |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        ratio = r["bytes_per_event"] / identity["bytes_per_event"]
        lines.append(
            f"| {name} | {r['bytes_per_event']:.0f} | {ratio:.0%} "
            f"| {r['cpu_us_per_delivery']:.2f} µs | {r['memory_per_stream_bytes'] / 1024:.1f} KiB |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--level", type=int, default=6)
    parser.add_argument("--out", type=Path, help="write the Markdown table there")
    args = parser.parse_args()
    pubs = publications(args.messages)
    results = {name: run(mode, args.subscribers, pubs, args.level) for name, mode in MODES.items()}
    table = markdown(results, args)
    print(table)
    if args.out:
        args.out.write_text(table)
    print(
        json.dumps({"subscribers": args.subscribers, "messages": args.messages, "results": results}, indent=1)
    )


if __name__ == "__main__":
    main()
