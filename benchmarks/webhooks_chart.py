"""Charts of the webhook benchmark (issue 22, items 1 and 2) from its JSON results.

    python benchmarks/webhooks_chart.py benchmarks/results/webhooks.json \
        benchmarks/results/webhooks-redis.json [--out docs/img/bench-webhooks.png]

One figure, one bar group per result file (its queue: SQLite or Redis), each panel beside its
target from the issue: durable deliveries/s (target 3,000), the publish API's rate with endpoints
as a share of its rate without (target 80 %), publish → first attempt p99 at 1,000 messages/s
(target 100 ms), one message to 1,000 endpoints (target 2 s), the most deliveries a 10/s endpoint
got in any second (its limit), and the healthy endpoints' rate beside a slow and a failing one as
a share of their rate alone. Needs matplotlib (the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

Panel = tuple[str, Callable[[dict[str, Any]], float], float, bool]  # title, value, target, higher

PANELS: list[Panel] = [
    (
        "durable deliveries/s\n(10,000 msgs × 10 endpoints)",
        lambda r: r["publish"]["deliveries_per_s"],
        3000,
        True,
    ),
    ("publish rate with endpoints\n÷ without (%)", lambda r: 100 * r["publish"]["publish_ratio"], 80, True),
    (
        "publish → first attempt p99 (ms)\nat 1,000 messages/s",
        lambda r: r["latency"]["first_attempt_p99_ms"],
        100,
        False,
    ),
    (
        "one message to 1,000 endpoints:\nlast first arrival (s), worst",
        lambda r: r["fanout"]["worst_s"],
        2,
        False,
    ),
    (
        "endpoint limited to 10/s:\nmost arrivals in any second",
        lambda r: r["rate_limit"]["limited_max_in_any_second"],
        10,
        False,
    ),
    (
        "healthy endpoints' rate beside a\nslow and a failing one (%)",
        lambda r: 100 * r["isolation"]["ratio"],
        80,
        True,
    ),
]


def chart(results: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(11, 5.2), dpi=100)
    names = [f"{r['store']} queue" for r in results]
    for ax, (title, value, target, higher) in zip(axes.flat, PANELS, strict=True):
        values = [float(value(r)) for r in results]
        colors = ["#1f6feb" if (v >= target if higher else v <= target) else "#d1242f" for v in values]
        ax.bar(names, values, color=colors, width=0.55)
        ax.axhline(target, color="#444444", linestyle="--", linewidth=1)
        ax.text(
            1.02,
            target,
            f"target {'≥' if higher else '≤'} {target:,g}",
            va="center",
            fontsize=7,
            transform=ax.get_yaxis_transform(),
            color="#444444",
        )
        top = max([*values, target]) * 1.25
        for i, v in enumerate(values):
            ax.text(i, v + top * 0.02, f"{v:,.3g}" if v < 10 else f"{v:,.0f}", ha="center", fontsize=8)
        ax.set_ylim(0, top)
        ax.set_title(title, fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    loads = "; ".join(
        f"{r['store']}: load {' '.join(r.get('load_average_before', []))} before" for r in results
    )
    fig.suptitle(
        "Webhook delivery, one tidings node (blue: target met, red: not)", fontsize=9, fontweight="bold"
    )
    fig.text(0.01, 0.01, f"benchmarks/webhooks.py, 2 cores; {loads}", fontsize=6.5, color="#555555")
    fig.tight_layout(rect=(0, 0.04, 0.97, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100, metadata={"Software": None})
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path, help="JSON files written by webhooks.py --json")
    parser.add_argument("--out", type=Path, default=Path("docs/img/bench-webhooks.png"))
    args = parser.parse_args()
    chart([json.loads(p.read_text()) for p in args.results], args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
