"""Subscribe to a channel and print what arrives, resuming from where the last run stopped.

    python examples/python_subscribe.py news sse      # any of ws, sse, stream, longpoll, poll

Run `tidings serve` first; publish with `tidings publish news '"hello"'`.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import tidings

CURSOR_FILE = Path(".news-cursor")


async def main(channel: str, transport: str) -> None:
    cursor = CURSOR_FILE.read_text() if CURSOR_FILE.exists() else None
    async with tidings.Client("http://127.0.0.1:8600", transport=transport) as client:
        async for item in client.subscribe(channel, since=cursor):
            if isinstance(item, tidings.Gap):
                print(f"missed offsets {item.requested}..; history starts at {item.available_from}")
                continue
            print(item.offset, item.event, item.data)
            if item.cursor:
                CURSOR_FILE.write_text(item.cursor)  # resume here next time


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "news",
                     sys.argv[2] if len(sys.argv) > 2 else "ws"))
