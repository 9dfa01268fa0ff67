"""A realistic market-data ticker for the compression benchmarks: ~1 KB of JSON per message, of
which each message changes a few fields (sequence, time, last trade, the top of the book and
one or two levels' sizes, the day's volume), as an exchange's ticker channel does.

Deterministic for a seed, standard library only (the load generators import it too).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any

__all__ = ["ticker_messages"]

LEVELS = 15


def _book(rng: random.Random, mid: float) -> dict[str, list[list[float]]]:
    return {
        "bids": [[round(mid - 0.5 * (k + 1), 2), round(rng.uniform(0.01, 4), 4)] for k in range(LEVELS)],
        "asks": [[round(mid + 0.5 * (k + 1), 2), round(rng.uniform(0.01, 4), 4)] for k in range(LEVELS)],
    }


def ticker_messages(seed: int = 19, symbol: str = "BTC-USD") -> Iterator[dict[str, Any]]:
    """An endless feed of ticker messages; the first is the full state, each next one a few
    fields off the one before. Each message's ``seq`` counts from 1."""
    rng = random.Random(seed)
    mid = 42_000.0
    state: dict[str, Any] = {
        "type": "ticker",
        "symbol": symbol,
        "seq": 0,
        "ts": 1_765_137_600_000,
        "exchange": "example-exchange",
        "status": "trading",
        "base": symbol.split("-")[0],
        "quote": symbol.split("-")[1],
        "last": mid,
        "last_size": 0.01,
        "side": "buy",
        "bid": mid - 0.5,
        "ask": mid + 0.5,
        "open_24h": 41_502.5,
        "high_24h": 43_110.0,
        "low_24h": 41_002.25,
        "volume_24h": 18_234.5521,
        "quote_volume_24h": 766_512_331.78,
        "trades_24h": 912_344,
        "vwap_24h": 42_050.12,
        "change_24h": 1.19,
        "tick_size": 0.01,
        "lot_size": 0.0001,
        "book": _book(rng, mid),
    }
    while True:
        state["seq"] += 1
        state["ts"] += rng.randint(20, 80)
        mid = round(mid + rng.choice((-0.5, 0.0, 0.0, 0.5)), 2)
        size = round(rng.uniform(0.001, 2), 4)
        state.update(last=mid, last_size=size, side=rng.choice(("buy", "sell")), bid=mid - 0.5, ask=mid + 0.5)
        state["volume_24h"] = round(state["volume_24h"] + size, 4)
        state["trades_24h"] += 1
        book = state["book"]
        for _ in range(rng.randint(1, 2)):
            side = book[rng.choice(("bids", "asks"))]
            level = rng.randrange(LEVELS)
            side[level] = [side[level][0], round(rng.uniform(0.01, 4), 4)]
        yield json.loads(json.dumps(state))  # a copy: the next message must not change this one


if __name__ == "__main__":
    feed = ticker_messages()
    for message in (next(feed) for _ in range(3)):
        print(len(json.dumps(message, separators=(",", ":"))), json.dumps(message)[:120], "…")
