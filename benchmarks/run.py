#!/usr/bin/env python3
"""tidings benchmarks: one command per benchmark, on top of the vendored harness (peerbench/).

  python benchmarks/run.py setup                 install the peers' dependencies into /tmp
  python benchmarks/run.py ws-fanout             issue 2: F1 (1,000 WebSocket subscribers x 1,000
                                                 messages) for tidings and its peers, side by side
  python benchmarks/run.py suite                 F1 F2 S1 N1 C1 L1 for tidings and its peers
  python benchmarks/run.py publish-api           POST /api/publish requests/s, publish -> first
                                                 delivery (publish_api.py, about a minute)
  python benchmarks/run.py http-transports | webhooks | redis
                                                 the other tidings-only benchmarks
  python benchmarks/run.py compression           issue 19: 1,000 WebSocket subscribers of a 1 KB
                                                 ticker, tidings with/without permessage-deflate
                                                 and delta updates, Node ws with/without
                                                 perMessageDeflate (compression.py)
  python benchmarks/run.py all [--only A,B]      the suite, then http-transports, publish-api,
                                                 webhooks, redis and compression (`make bench`;
                                                 ~50-65 min)
  python benchmarks/run.py compare --before REF  tidings alone, the code of REF against the working
                                                 tree (or --after REF), runs alternating; each
                                                 figure within 5 % of before? (issue 18)
  python benchmarks/run.py report NAME FILE...   rewrite a section of docs/topics/performance.md
  python benchmarks/run.py profile               py-spy (or cProfile) of tidings during F1

Each command that measures appends one JSON line per run to benchmarks/results/<name>-<date>.jsonl,
writes the medians to benchmarks/results/<name>.json and rewrites its table in
docs/topics/performance.md (between the ``<!-- bench:<name> -->`` markers) unless ``--no-docs``,
with a PNG chart per scenario in docs/img/bench-<name>-<scenario>.png when matplotlib is
installed (``pip install -e '.[bench]'``; without it the tables are still written).
publish-api writes benchmarks/results/publish-api.json instead of JSON lines; the other
tidings-only benchmarks write what their own docstrings say.

This script needs only the standard library. The harness itself runs with the interpreter of
``$PEERBENCH_ENV/py`` (default /tmp/peerbench-env/py, made by ``setup``); tidings runs with
``$TIDINGS_PYTHON`` (default: the repository's .venv) and this checkout's ``src/``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
HARNESS = BENCH / "peerbench"
RESULTS = BENCH / "results"
DOC = REPO / "docs" / "topics" / "performance.md"
IMG = REPO / "docs" / "img"  # charts: bench-<section>-<scenario>.png
ENV = Path(os.environ.get("PEERBENCH_ENV", "/tmp/peerbench-env"))
HARNESS_PY = ENV / "py" / "bin" / "python"

# the peers run side by side with tidings (pushpin is optional: it needs an apt package)
DEFAULT_PEERS = "tidings,tidings-defaults,node-ws,rawref,starlette,socketio"
SUITE_SCENARIOS = "F1,F2,S1,N1,C1,L1"

Record = dict[str, Any]


# ------------------------------------------------------------------ running the harness
def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def ensure_env() -> None:
    if not HARNESS_PY.exists():
        print(f"{HARNESS_PY} is missing: running setup first", flush=True)
        setup()


def setup() -> None:
    subprocess.run(["bash", str(HARNESS / "setup.sh")], check=True)


def harness(*args: str, env: dict[str, str] | None = None) -> None:
    """Run ``bench.py`` with the harness interpreter (it pins server and load generator);
    ``env`` is added to this process's environment."""
    raise_nofile()
    cmd = [str(HARNESS_PY), str(HARNESS / "bench.py"), *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=HARNESS, env={**os.environ, **(env or {})})


def load(paths: list[Path]) -> list[Record]:
    recs: list[Record] = []
    for path in paths:
        with open(path) as f:
            recs.extend(json.loads(line) for line in f if line.strip())
    return recs


def measure(name: str, a: argparse.Namespace, scenarios: str, env: dict[str, str] | None = None) -> Path:
    ensure_env()
    RESULTS.mkdir(exist_ok=True)
    now = time.gmtime()
    out = RESULTS / f"{name}-{time.strftime('%Y-%m-%d-%H%M', now)}.jsonl"
    if out.exists():  # a second session in the same minute must not add to the first one's file
        out = out.with_stem(f"{out.stem}{time.strftime('%S', now)}")
    args = [
        "run",
        "--peers",
        a.peers,
        "--scenarios",
        scenarios,
        "--repeat",
        str(a.repeat),
        "--max-s",
        str(a.max_s),
        "--quiet-max",
        str(a.quiet_max),
        "--out",
        str(out),
    ]
    if a.subs:
        args += ["--subs", str(a.subs)]
    if a.msgs:
        args += ["--msgs", str(a.msgs)]
    harness(*args, env=env)
    return out


# ------------------------------------------------------------------ summarising
def median(values: list[float | int | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def cell(values: list[float | int | None], nd: int = 0, scale: float = 1.0) -> str:
    vals = [v * scale for v in values if v is not None]
    if not vals:
        return "–"
    m, lo, hi = statistics.median(vals), min(vals), max(vals)
    if len(vals) == 1 or lo == hi:
        return f"{m:,.{nd}f}"
    return f"{m:,.{nd}f} [{lo:,.{nd}f}–{hi:,.{nd}f}]"


def ok_runs(recs: list[Record]) -> list[Record]:
    return [r for r in recs if r.get("status") in ("ok", "incomplete")]


def peer_order(recs: list[Record]) -> list[str]:
    seen: dict[str, None] = {}
    for r in recs:
        seen.setdefault(r["peer"], None)
    return sorted(seen, key=lambda p: (p != "tidings", list(seen).index(p)))


FANOUT_COLS: list[tuple[str, str, int, float]] = [
    ("deliveries/s", "deliveries_per_s", 0, 1),
    ("p50 ms", "p50_ms", 1, 1),
    ("p99 ms", "p99_ms", 0, 1),
    ("lost", "lost", 0, 1),
    ("server RSS MiB", "server_rss_mb", 0, 1),
    ("server CPU µs/delivery", "server_us_per_delivery", 1, 1),
    ("server core busy %", "server_core_busy", 0, 100),
    ("loadgen CPU %", "client_util", 0, 100),
    ("other tenants, cores", "other_cores", 2, 1),
]
IDLE_COLS: list[tuple[str, str, int, float]] = [
    ("opened", "opened", 0, 1),
    ("live", "live_after_probe", 0, 1),
    ("RSS KiB/conn", "rss_kb_per_conn", 1, 1),
    ("RSS MiB after", "rss_mb_after", 0, 1),
    ("server CPU µs/conn", "server_cpu_us_per_conn", 0, 1),
    ("open s", "open_s", 1, 1),
]
LP_COLS: list[tuple[str, str, int, float]] = [
    ("round trips/s", "rt_per_s", 0, 1),
    ("msgs/s", "msgs_per_s", 0, 1),
    ("p50 ms", "p50_ms", 1, 1),
    ("p99 ms", "p99_ms", 1, 1),
    ("server CPU %", "server_util", 0, 100),
    ("other tenants, cores", "other_cores", 2, 1),
]
COLS = {"fanout": FANOUT_COLS, "idle": IDLE_COLS, "lp": LP_COLS}  # by kind_of(scenario)
SCENARIO_TITLES = {
    "F1": "F1: 1,000 WebSocket subscribers × 1,000 messages of 100 B, burst",
    "F2": "F2: 100 WebSocket subscribers × 10,000 messages, burst (publish-rate bound)",
    "S1": "S1: F1 over SSE",
    "N1": "N1: F1 over HTTP streaming (NDJSON)",
    "C1": "C1: 10,000 idle subscribed WebSocket connections",
    "L1": "L1: 100 long-poll clients for 10 s, one publish every 20 ms (ideal 5,000 round trips/s)",
    "L2": "L2: L1 with one publish every 2 ms",
}


def enrich(r: Record) -> Record:
    w = r.get("window_s") or r.get("wall_s")
    if r.get("other_cpu_s") is not None and w:
        r["other_cores"] = r["other_cpu_s"] / w
    server_cpus = r.get("server_cpus") or []
    cores = r.get("cores") or {}
    if len(server_cpus) == 1 and f"cpu{server_cpus[0]}" in cores:
        r["server_core_busy"] = cores[f"cpu{server_cpus[0]}"]["busy"]
    return r


def kind_of(scenario: str) -> str:
    return "idle" if scenario == "C1" else "lp" if scenario.startswith("L") else "fanout"


def table(scenario: str, recs: list[Record], chart: Path | None = None) -> str:
    rows = [enrich(r) for r in recs if r["scenario"] == scenario]
    if not rows:
        return ""
    cols = COLS[kind_of(scenario)]
    title = SCENARIO_TITLES.get(scenario, scenario)
    out = [f"**{title}**", ""]
    if chart is not None:
        out += [image_link(title, chart), ""]
    out += ["| peer | runs | " + " | ".join(c[0] for c in cols) + " |", "|---|---|" + "---|" * len(cols)]
    for peer in peer_order(rows):
        rs = [r for r in rows if r["peer"] == peer]
        if all(r["status"] == "unsupported" for r in rs):
            continue  # a peer without this transport
        label = rs[0]["label"]
        ok = ok_runs(rs)
        if not ok:
            why = rs[0].get("error") or rs[0]["status"]
            status = "n/a" if rs[0]["status"] == "n/a" else rs[0]["status"]
            out.append(f"| {label} | {status} | {why} |" + " |" * (len(cols) - 1))
            continue
        cells = [cell([r.get(k) for r in ok], nd, scale) for _, k, nd, scale in cols]
        out.append(f"| {label} | {len(ok)}/{len(rs)} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def summary(recs: list[Record]) -> dict[str, Any]:
    """Medians per scenario and peer (the JSON next to the raw records)."""
    keys = [
        "deliveries_per_s",
        "p50_ms",
        "p99_ms",
        "max_ms",
        "lost",
        "server_rss_mb",
        "server_us_per_delivery",
        "server_util",
        "client_util",
        "rss_kb_per_conn",
        "rss_mb_after",
        "opened",
        "live_after_probe",
        "server_cpu_us_per_conn",
        "rt_per_s",
        "msgs_per_s",
    ]
    out: dict[str, Any] = {}
    for r in recs:
        enrich(r)
    for scen in sorted({r["scenario"] for r in recs}):
        rows = [r for r in recs if r["scenario"] == scen]
        for peer in peer_order(rows):
            rs = [r for r in rows if r["peer"] == peer]
            ok = ok_runs(rs)
            entry: dict[str, Any] = {
                "label": rs[0]["label"],
                "runs": len(rs),
                "ok": len(ok),
                "status": rs[0]["status"] if not ok else "ok",
            }
            if not ok:
                entry["why"] = rs[0].get("error")
            for k in keys:
                m = median([r.get(k) for r in ok])
                if m is not None:
                    entry[k] = m
            entry["versions"] = rs[-1].get("versions", {})
            out.setdefault(scen, {})[peer] = entry
    return out


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        return ""


def machine_line(recs: list[Record]) -> str:
    m = recs[0].get("machine", {}) if recs else {}
    when = sorted(r["when"] for r in recs if "when" in r)
    span = f"{when[0]} – {when[-1]} (local time of the machine)" if when else "?"
    cpu = cpu_model() or "?"
    server = ",".join(map(str, recs[0].get("server_cpus", []))) if recs else "?"
    client = ",".join(map(str, recs[0].get("client_cpus", []))) if recs else "?"
    return (
        f"{m.get('cpus', '?')} vCPUs ({cpu}), kernel {m.get('kernel', '?')}, "
        f"Python {m.get('python', '?')}; runs {span}; server pinned to CPU {server}, "
        f"load generator to CPU {client}"
    )


def image_link(title: str, path: Path) -> str:
    """A Markdown image link to ``path`` as seen from the performance page."""
    return f"![{title}]({Path(os.path.relpath(path, DOC.parent)).as_posix()})"


def section(
    name: str, recs: list[Record], files: list[Path], command: str, charts: dict[str, Path] | None = None
) -> str:
    scens = [s for s in ("F1", "F2", "S1", "N1", "C1", "L1", "L2") if any(r["scenario"] == s for r in recs)]
    charts = charts or {}
    reps = max((r.get("rep", 1) for r in recs), default=1)
    rels = ", ".join(f"`{p.relative_to(REPO)}`" if p.is_relative_to(REPO) else f"`{p}`" for p in files)
    head = [
        f"Generated by `{command}` from {rels}. Cells: median [min–max] over the runs "
        f"counted in *runs* (up to {reps} per peer); every run starts a fresh server.",
        "",
        f"Machine: {machine_line(recs)}.",
        "",
    ]
    tid = next((r.get("versions") for r in recs if r["peer"] == "tidings" and r.get("versions")), None)
    if tid:
        head += ["tidings: " + ", ".join(f"{k} {v}" for k, v in tid.items()) + ".", ""]
    head.append("")
    return "\n".join(head) + "\n".join(table(s, recs, charts.get(s)) for s in scens)


def write_docs(name: str, body: str) -> None:
    """Put ``body`` between the ``<!-- bench:<name> begin/end -->`` markers of the page."""
    begin, end = f"<!-- bench:{name} begin -->", f"<!-- bench:{name} end -->"
    DOC.parent.mkdir(parents=True, exist_ok=True)
    text = DOC.read_text() if DOC.exists() else "# Performance\n"
    block = f"{begin}\n{body}\n{end}"
    if begin in text and end in text:
        text = re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip("\n") + f"\n\n## Results: {name}\n\n{block}\n"
    DOC.write_text(text)
    print(f"wrote the {name} table to {DOC}")


# ------------------------------------------------------------------ charts (PNG)
# What each kind of scenario draws: one panel per (axis label, record key).
CHART_PANELS: dict[str, list[tuple[str, str]]] = {
    "fanout": [("deliveries/s (median, min–max)", "deliveries_per_s"), ("p99 latency, ms", "p99_ms")],
    "idle": [("server RSS KiB per idle connection", "rss_kb_per_conn")],
    "lp": [("round trips/s (median, min–max)", "rt_per_s")],
}
HIGHLIGHT, OTHERS = "#d9480f", "#8fa3b8"
INSTALL_HINT = "pip install -e '.[bench]'"
Bar = tuple[float, float, float]  # median, min, max


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend, or None (with one line saying how to install it)."""
    try:
        import matplotlib
    except ImportError:
        print(f"charts skipped: matplotlib is not installed ({INSTALL_HINT})")
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def bar_chart(
    plt: Any,
    path: Path,
    title: str,
    note: str,
    labels: list[str],
    panels: list[tuple[str, list[Bar | None]]],
    highlight: set[int],
) -> Path:
    """Horizontal bars, one row per label, one panel per measure; rows in ``highlight`` stand out.
    A ``None`` value is drawn as an empty row."""
    fig, axes = plt.subplots(
        1, len(panels), figsize=(8, max(2.4, 1.5 + 0.34 * len(labels))), dpi=100, sharey=True, squeeze=False
    )
    from matplotlib import ticker  # only here: run.py itself needs no matplotlib

    rows = list(range(len(labels)))
    for ax, (xlabel, bars) in zip(axes[0], panels, strict=True):
        meds = [b[0] if b else 0.0 for b in bars]
        err = [[b[0] - b[1] if b else 0.0 for b in bars], [b[2] - b[0] if b else 0.0 for b in bars]]
        ax.barh(
            rows,
            meds,
            xerr=err if any(map(any, err)) else None,
            capsize=2,
            error_kw={"elinewidth": 0.8},
            color=[HIGHLIGHT if i in highlight else OTHERS for i in rows],
        )
        top = max((b[2] for b in bars if b), default=0.0) or 1.0
        for i, b in enumerate(bars):
            text = "n/a" if b is None else f"{b[0]:,.0f}" if b[0] >= 100 else f"{b[0]:,.1f}"
            ax.text((b[2] if b else 0) + top * 0.02, i, text, va="center", fontsize=7)
        ax.set_xlim(0, top * 1.22)
        ax.xaxis.set_major_locator(ticker.MaxNLocator(5))
        ax.xaxis.set_major_formatter(
            ticker.FuncFormatter(lambda v, _: f"{v / 1000:g}k" if v >= 10_000 else f"{v:g}")
        )
        ax.set_xlabel(xlabel, fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(axis="x", alpha=0.3)
        ax.set_axisbelow(True)
    axes[0][0].set_yticks(rows, labels)
    axes[0][0].invert_yaxis()
    fig.suptitle(title, fontsize=9, fontweight="bold")
    fig.text(0.01, 0.01, note, fontsize=6.5, color="#555555")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return path


def short_label(label: str) -> str:
    """ "Node ws (broadcast loop)" -> "Node ws": the charts' row labels."""
    return label.split(" (", 1)[0]


def chart_note(recs: list[Record], extra: str = "") -> str:
    m = recs[0].get("machine", {}) if recs else {}
    days = sorted({str(r["when"])[:10] for r in recs if r.get("when")})
    cpu = cpu_model()
    return (
        f"{m.get('cpus', '?')} vCPUs{f' ({cpu})' if cpu else ''}, kernel {m.get('kernel', '?')}, "
        f"Python {m.get('python', '?')}; {' – '.join(days[:1] + days[1:][-1:]) or '?'}"
        f"{extra}"
    )


def write_charts(name: str, recs: list[Record]) -> dict[str, Path]:
    """One PNG per scenario of the section (``IMG/bench-<name>-<scenario>.png``); {} without
    matplotlib."""
    scens = [s for s in SCENARIO_TITLES if any(r["scenario"] == s for r in recs)]
    plt = pyplot() if scens else None
    if plt is None:
        return {}
    out: dict[str, Path] = {}
    for scen in scens:
        rows = [enrich(r) for r in recs if r["scenario"] == scen]
        panels = CHART_PANELS[kind_of(scen)]
        labels: list[str] = []
        values: list[list[Bar | None]] = [[] for _ in panels]
        highlight: set[int] = set()
        reps = 0
        for peer in peer_order(rows):
            ok = ok_runs([r for r in rows if r["peer"] == peer])
            if not ok:
                continue  # unsupported or n/a: the table says why
            reps = max(reps, len(ok))
            if peer == "tidings":
                highlight.add(len(labels))
            labels.append(short_label(ok[0]["label"]))
            for col, (_, key) in zip(values, panels, strict=True):
                vals = [float(r[key]) for r in ok if r.get(key) is not None]
                col.append((statistics.median(vals), min(vals), max(vals)) if vals else None)
        if not labels:
            continue
        note = chart_note(rows, f"; median of up to {reps} runs, bars min–max; server on 1 pinned core")
        out[scen] = bar_chart(
            plt,
            IMG / f"bench-{name}-{scen}.png",
            SCENARIO_TITLES[scen],
            note,
            labels,
            [(label, col) for (label, _), col in zip(panels, values, strict=True)],
            highlight,
        )
    if out:
        print(f"wrote {len(out)} chart(s) to {IMG}")
    return out


def write_summary(name: str, recs: list[Record], files: list[Path], **extra: Any) -> None:
    """``RESULTS/<name>.json``: the medians per scenario and peer, and what they came from."""
    summ = {
        "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": [str(p.relative_to(REPO)) if p.is_relative_to(REPO) else str(p) for p in files],
        "machine": recs[0].get("machine") if recs else None,
        "scenarios": summary(recs),
        **extra,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(summ, indent=1, sort_keys=True) + "\n")


def finish(name: str, files: list[Path], a: argparse.Namespace, command: str) -> None:
    recs = load(files)
    if name == "ws-fanout":
        recs = [r for r in recs if r["scenario"] == "F1"]
    write_summary(name, recs, files)
    print("\n".join(table(s, recs) for s in sorted({r["scenario"] for r in recs})))
    if not getattr(a, "no_docs", False):
        write_docs(name, section(name, recs, files, command, write_charts(name, recs)))


# ------------------------------------------------------------------ publish API (publish_api.py)
PUBLISH_TITLES = {
    "throughput": "Publish throughput: `POST /api/publish` on N keep-alive connections, no subscriber",
    "latency": "Publish → first delivery, paced, one WebSocket and one SSE subscriber",
}


def publish_section(res: Record, path: Path, charts: dict[str, Path]) -> str:
    """The performance.md section for a publish_api.py result (``res``, read from ``path``)."""
    runs = res["throughput"]
    lat = res["latency"]
    rel = f"`{path.relative_to(REPO)}`" if path.is_relative_to(REPO) else f"`{path}`"
    out = [
        f"Generated by `python benchmarks/run.py publish-api` (`{res.get('command', '?')}`) "
        f"from {rel}. Cells: median [min–max] over the runs counted in *runs*, "
        f"{res.get('seconds_per_run', '?')} s each, interleaved; one server for all of them.",
        "",
        f"Machine: {machine_line(publish_recs(res))}; 1-minute load average before the run "
        f"{res.get('load_average_before', ['?'])[0]}.",
        "",
    ]
    if res.get("versions"):
        out += ["tidings: " + ", ".join(f"{k} {v}" for k, v in res["versions"].items()) + ".", ""]
    out += [f"**{PUBLISH_TITLES['throughput']}**", ""]
    if "throughput" in charts:
        out += [image_link(PUBLISH_TITLES["throughput"], charts["throughput"]), ""]
    cols = [
        ("requests/s", "requests_per_s", 0, 1.0),
        ("p50 ms", "p50_ms", 2, 1.0),
        ("p99 ms", "p99_ms", 1, 1.0),
        ("server CPU µs/request", "server_cpu_us_per_request", 0, 1.0),
        ("server CPU %", "server_util", 0, 100.0),
        ("loadgen CPU %", "client_util", 0, 100.0),
        ("errors", "errors", 0, 1.0),
    ]
    out += [
        "| connections | runs | " + " | ".join(c[0] for c in cols) + " |",
        "|---|---|" + "---|" * len(cols),
    ]
    for conns in sorted({r["conns"] for r in runs}):
        rs = [r for r in runs if r["conns"] == conns]
        out.append(
            f"| {conns} | {len(rs)} | "
            + " | ".join(cell([r.get(k) for r in rs], nd, sc) for _, k, nd, sc in cols)
            + " |"
        )
    title = (
        f"{PUBLISH_TITLES['latency']}: {lat['rate']:g} publishes/s for {lat['seconds']:g} s "
        f"({lat['publications']:,} publications)"
    )
    out += ["", f"**{title}**", ""]
    if "latency" in charts:
        out += [image_link(PUBLISH_TITLES["latency"], charts["latency"]), ""]
    out += [
        "| from the request being sent to | samples | p50 ms | p90 ms | p99 ms | max ms | lost |",
        "|---|---|---|---|---|---|---|",
    ]
    for what, v in lat["paths"].items():
        what = what.split(" (", 1)[0]
        out.append(
            f"| {what} | {v['samples']:,} | "
            + " | ".join(cell([v.get(k)], 2) for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms"))
            + f" | {v['lost']:,} |"
        )
    return "\n".join(out) + "\n"


def publish_recs(res: Record) -> list[Record]:
    """What machine_line() and chart_note() read, from a publish_api.py result."""
    pinned = res.get("pinned") or {}
    return [
        {
            "machine": res.get("machine", {}),
            "when": w,
            "server_cpus": pinned.get("server", []),
            "client_cpus": pinned.get("loadgen", []),
        }
        for w in (res.get("started"), res.get("when"))
        if w
    ]


def publish_charts(res: Record) -> dict[str, Path]:
    plt = pyplot()
    if plt is None:
        return {}
    runs, lat = res["throughput"], res["latency"]
    conns = sorted({r["conns"] for r in runs})
    recs = publish_recs(res)

    def bars(key: str) -> list[Bar | None]:
        found: list[Bar | None] = []
        for c in conns:
            vals = [float(r[key]) for r in runs if r["conns"] == c and r.get(key) is not None]
            found.append((statistics.median(vals), min(vals), max(vals)) if vals else None)
        return found

    reps = max((sum(r["conns"] == c for r in runs) for c in conns), default=0)
    out = {
        "throughput": bar_chart(
            plt,
            IMG / "bench-publish-api-throughput.png",
            PUBLISH_TITLES["throughput"].replace("`", ""),
            chart_note(recs, f"; median of {reps} runs, bars min–max; server on 1 pinned core"),
            [f"{c} connection{'s' if c > 1 else ''}" for c in conns],
            [
                ("requests/s (median, min–max)", bars("requests_per_s")),
                ("p99 request latency, ms", bars("p99_ms")),
            ],
            set(range(len(conns))),
        )
    }
    paths = list(lat["paths"].items())

    def point(key: str) -> list[Bar | None]:
        return [(v[key], v[key], v[key]) if v.get(key) is not None else None for _, v in paths]

    out["latency"] = bar_chart(
        plt,
        IMG / "bench-publish-api-latency.png",
        f"{PUBLISH_TITLES['latency']} ({lat['rate']:g}/s)",
        chart_note(recs, f"; {lat['publications']:,} publications"),
        [k.split(" (", 1)[0] for k, _ in paths],
        [("p50, ms", point("p50_ms")), ("p99, ms", point("p99_ms"))],
        set(range(1, len(paths))),
    )
    print(f"wrote {len(out)} chart(s) to {IMG}")
    return out


def publish_finish(path: Path, a: argparse.Namespace) -> None:
    res = json.loads(path.read_text())
    for conns in sorted({r["conns"] for r in res["throughput"]}):
        rs = [r for r in res["throughput"] if r["conns"] == conns]
        print(
            f"{conns:>3} connection(s): {cell([r['requests_per_s'] for r in rs])} requests/s, "
            f"p99 {cell([r['p99_ms'] for r in rs], 1)} ms"
        )
    if not getattr(a, "no_docs", False):
        write_docs("publish-api", publish_section(res, path, publish_charts(res)))


# ------------------------------------------------------------------ tidings-only benchmarks
def tidings_python() -> Path:
    """The interpreter with tidings' dependencies: $TIDINGS_PYTHON, else the repository's .venv."""
    env = os.environ.get("TIDINGS_PYTHON")
    local = REPO / ".venv" / "bin" / "python"
    return Path(env) if env else local if local.exists() else Path(sys.executable)


def tidings_script(script: str, *args: str) -> None:
    cmd = [str(tidings_python()), str(BENCH / script), *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO / "src")})


# name: (what it does and writes, about how long here)
STEPS = {
    "suite": ("every scenario, tidings and its peers side by side -> performance.md", "30-45 min"),
    "http-transports": (
        "http_transports.py: SSE, NDJSON, long and short polling -> docs/topics/performance-http.md",
        "2-3 min",
    ),
    "publish-api": (
        "publish_api.py: POST /api/publish requests/s and publish -> first delivery "
        "-> results/publish-api.json, performance.md",
        "1 min",
    ),
    "webhooks": (
        "webhooks.py: webhook delivery rate, publish cost, latency, isolation, rate limit, outage, "
        "fan-out (needs node) -> results/webhooks.json",
        "5-7 min",
    ),
    "redis": (
        "redis_broker.py: Redis broker vs memory, 1 and 2 nodes -> results/redis_broker.json "
        "(needs redis-server)",
        "1.5 min",
    ),
    "compression": (
        "compression.py: WebSocket fan-out of a 1 KB ticker, bytes on the wire, CPU, deliveries/s, "
        "p99, compressed or not, delta or not, Node ws alike -> docs/topics/performance.md",
        "3-6 min",
    ),
}
ALL_STEPS = ",".join(STEPS)


def run_step(step: str, a: argparse.Namespace) -> None:
    if step == "suite":
        out = measure("suite", a, a.scenarios)
        finish("suite", [out], a, "python benchmarks/run.py suite")
    elif step == "http-transports":
        tidings_script("http_transports.py")
    elif step == "publish-api":
        path = RESULTS / "publish-api.json"
        tidings_script(
            "publish_api.py",
            "--json",
            str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path),
        )
        publish_finish(path, a)
    elif step == "webhooks":
        tidings_script("webhooks.py", "--json", str(RESULTS / "webhooks.json"))
    elif step == "redis":
        tidings_script("redis_broker.py", "--json", str(RESULTS / "redis_broker.json"))
    elif step == "compression":
        tidings_script("compression.py", *(["--no-docs"] if getattr(a, "no_docs", False) else []))


def run_all(a: argparse.Namespace) -> None:
    """The chosen steps one after the other; a failed step is reported and the others still run."""
    steps = [s.strip() for s in a.only.split(",") if s.strip()]
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        sys.exit(f"unknown step(s) {', '.join(unknown)}; known: {ALL_STEPS}")
    started = time.monotonic()
    failed: list[str] = []
    for i, step in enumerate(steps, 1):
        what, takes = STEPS[step]
        print(
            f"\n== [{i}/{len(steps)}] {step} (about {takes}): {what}; "
            f"elapsed {(time.monotonic() - started) / 60:.1f} min ==",
            flush=True,
        )
        try:
            run_step(step, a)
        except (subprocess.CalledProcessError, OSError) as exc:
            failed.append(step)
            print(f"!! {step} failed: {exc}", flush=True)
    print(
        f"\n== {len(steps) - len(failed)}/{len(steps)} benchmark(s) done in "
        f"{(time.monotonic() - started) / 60:.1f} min"
        + (f"; failed: {', '.join(failed)}" if failed else "")
        + " =="
    )
    if failed:
        sys.exit(1)


# ------------------------------------------------------------------ before/after (issue 18)
# The two sides are peers of the harness (peers/tidings.py), each run from its own copy of src/;
# the rest of the run (harness, load generator, settings, interpreter) is the same for both.
SIDES = {"before": "tidings-before", "after": "tidings-after"}
WITHIN = 0.05  # after may be this much worse than before
WITHIN_TEXT = f"within {WITHIN * 100:g} % of before"
# the figures compared, by kind_of(scenario); their labels and digits come from COLS
COMPARED = {
    "fanout": ("deliveries_per_s", "p50_ms", "p99_ms", "server_us_per_delivery"),
    "idle": ("rss_kb_per_conn", "server_cpu_us_per_conn"),
    "lp": ("rt_per_s", "p50_ms", "p99_ms"),
}
HIGHER_IS_BETTER = {"deliveries_per_s", "rt_per_s"}  # for the others (time, memory) lower is
SECONDS_PER_RUN = 15  # one full-size run here with its quiet check (records' run_s: 11-14 s)


def git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)


def resolve(ref: str, option: str) -> str:
    """The commit ``ref`` names, or exit saying that it names none."""
    found = git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if found.returncode:
        sys.exit(f"{option} {ref!r}: no such commit in {REPO} (try a branch, a tag, HEAD~N or a commit hash)")
    return found.stdout.strip()


def export_src(ref: str | None, dest: Path) -> tuple[Path, str]:
    """A copy of ``src/`` as it is at ``ref`` (None: the working tree now, uncommitted changes
    included) in ``dest``, and what the records call it. A copy, so that editing the checkout
    during a long run changes neither side."""
    dest.mkdir(parents=True)
    if ref is None:
        shutil.copytree(
            REPO / "src", dest / "src", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
        )
        head = git("rev-parse", "--short", "HEAD").stdout.strip()
        changed = git("status", "--porcelain", "--", "src").stdout.strip()
        return dest / "src", f"working tree ({head}{' + uncommitted changes' if changed else ''})"
    commit = resolve(ref, "--before/--after")
    tar = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", commit, "src"], capture_output=True, check=False
    )
    if tar.returncode:
        sys.exit(f"{ref!r} has no src/ to export: {tar.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(dest)], input=tar.stdout, check=True)
    short = commit[:7]
    return dest / "src", short if ref.startswith(short) else f"{ref} ({short})"


def check_import(src: Path, what: str) -> None:
    """Exit unless tidings' interpreter imports the package from ``src`` (and not, say, from an
    editable install that would win over PYTHONPATH): else both sides would run the same code."""
    found = subprocess.run(
        [str(tidings_python()), "-c", "import tidings; print(tidings.__file__)"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(src)},
    )
    where = Path(found.stdout.strip() or "?")
    if found.returncode or not where.is_relative_to(src):
        why = found.stderr.strip().splitlines()[-1:] or [f"it came from {where}"]
        sys.exit(f"{what}: {tidings_python()} does not import tidings from {src}: {why[0]}")


def compare_rows(recs: list[Record]) -> list[Record]:
    """One row per scenario and compared figure: both sides' values, medians, after/before, and
    whether after is within WITHIN of before, the right way round (None: no ratio to judge)."""
    rows: list[Record] = []
    for scen in SCENARIO_TITLES:
        runs = {
            side: [enrich(r) for r in recs if r["scenario"] == scen and r["peer"] == peer]
            for side, peer in SIDES.items()
        }
        if not any(runs.values()):
            continue
        ok = {side: ok_runs(rs) for side, rs in runs.items()}
        labels = {key: (label, nd, scale) for label, key, nd, scale in COLS[kind_of(scen)]}
        for key in COMPARED[kind_of(scen)]:
            label, nd, scale = labels[key]
            if key.endswith("_ms"):  # 7 against 7 would hide a ratio of 0.95
                nd = max(nd, 1)
            row: Record = {
                "scenario": scen,
                "metric": label,
                "key": key,
                "digits": nd,
                "scale": scale,
                "higher_is_better": key in HIGHER_IS_BETTER,
            }
            for side, rs in runs.items():
                row[side] = [r.get(key) for r in ok[side]]
                row[f"{side}_median"] = median(row[side])
                row[f"{side}_runs"] = f"{len(ok[side])}/{len(rs)}"
                if not ok[side]:  # why this side has no figure
                    row[f"{side}_why"] = (
                        f"{rs[0]['status']}: {rs[0].get('error') or ''}".rstrip(": ") if rs else "not run"
                    )
            b, a = row["before_median"], row["after_median"]
            row["ratio"] = a / b if a is not None and b else None
            row["within"] = (
                None
                if row["ratio"] is None
                else row["ratio"] >= 1 - WITHIN
                if row["higher_is_better"]
                else row["ratio"] <= 1 + WITHIN
            )
            rows.append(row)
    return rows


def compare_table(rows: list[Record]) -> str:
    """The comparison as Markdown: one line per figure, and a closing line that counts them."""
    out = [
        f"| scenario | figure | better | before | after | after/before | {WITHIN_TEXT} |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        sides = [
            cell(r[side], r["digits"], r["scale"]) if f"{side}_why" not in r else r[f"{side}_why"]
            for side in SIDES
        ]
        ratio = "–" if r["ratio"] is None else f"{r['ratio']:.3f}"
        within = {None: "–", True: "yes", False: "**no**"}[r["within"]]
        better = "higher" if r["higher_is_better"] else "lower"
        out.append(
            f"| {r['scenario']} | {r['metric']} | {better} | {' | '.join(sides)} | {ratio} | {within} |"
        )
    judged = [r for r in rows if r["within"] is not None]
    worse = [f"{r['scenario']} {r['metric']} ({r['ratio']:.3f})" for r in judged if not r["within"]]
    unjudged = sorted({r["scenario"] for r in rows if r["within"] is None})
    end = f"{len(judged) - len(worse)} of {len(judged)} figures {WITHIN_TEXT}"
    end += f"; not: {', '.join(worse)}" if worse else ""
    end += f"; no ratio for {', '.join(unjudged)}" if unjudged else ""
    return "\n".join(out) + f"\n\n{end}.\n"


def sides_line(recs: list[Record]) -> str:
    """ "before: HEAD~3 (1a2b3c4); after: working tree (…)", from the records' versions."""

    def rev(peer: str) -> str:
        return next(
            (
                str(r["versions"]["commit"])
                for r in recs
                if r["peer"] == peer and (r.get("versions") or {}).get("commit")
            ),
            "?",
        )

    return "; ".join(f"**{side}**: `{rev(peer)}`" for side, peer in SIDES.items())


def compare_finish(files: list[Path], a: argparse.Namespace, command: str) -> bool:
    """Table, summary JSON and performance.md section of a comparison; False if some scenario
    has no ratio (a side without a usable run)."""
    recs = [r for r in load(files) if r["peer"] in SIDES.values()]
    rows = compare_rows(recs)
    write_summary(
        "compare",
        recs,
        files,
        sides=sides_line(recs),
        comparison=[{k: v for k, v in r.items() if k not in ("digits", "scale")} for r in rows],
    )
    print("\n".join(filter(None, (table(s, recs) for s in SCENARIO_TITLES))))
    print(sides_line(recs).replace("*", "").replace("`", "") + "\n")
    print(compare_table(rows))
    if not getattr(a, "no_docs", False):
        write_docs(
            "compare",
            f"{sides_line(recs)}.\n\n{compare_table(rows)}\n" + section("compare", recs, files, command),
        )
    return all(r["within"] is not None for r in rows)


def compare(a: argparse.Namespace) -> None:
    """Export both sides, run them alternating through the harness, then compare_finish()."""
    scens = [s.strip() for s in a.scenarios.split(",") if s.strip()]
    unknown = [s for s in scens if s not in SCENARIO_TITLES]
    if unknown or not scens:
        sys.exit(
            f"unknown scenario(s) {', '.join(unknown) or '(none given)'}; known: {', '.join(SCENARIO_TITLES)}"
        )
    if a.repeat < 1:
        sys.exit("--repeat must be 1 or more")
    resolve(a.before, "--before")  # both refs before any work, so that a typo costs nothing
    if a.after:
        resolve(a.after, "--after")
    ensure_env()
    env = {"TIDINGS_PYTHON": str(tidings_python())}  # the interpreter checked is the one run
    with tempfile.TemporaryDirectory(prefix="tidings-compare-") as tmp:
        for side, ref in (("before", a.before), ("after", a.after)):
            src, rev = export_src(ref, Path(tmp) / side)
            check_import(src, f"{side} ({rev})")
            env |= {f"TIDINGS_{side.upper()}_SRC": str(src), f"TIDINGS_{side.upper()}_REV": rev}
            print(f"{side}: {rev}, src/ copied to {src}", flush=True)
        runs = len(scens) * a.repeat * len(SIDES)
        print(
            f"{runs} runs of tidings alone, before and after in turn (about "
            f"{max(1, round(runs * SECONDS_PER_RUN / 60))} min at full size)",
            flush=True,
        )
        a.peers = ",".join(SIDES.values())
        out = measure("compare", a, ",".join(scens), env)
    command = "python benchmarks/run.py " + shlex.join(sys.argv[1:])
    if not compare_finish([out], a, command):
        sys.exit("some scenario has no ratio: a side had no usable run (see its row)")


# ------------------------------------------------------------------ profiling
def profile(a: argparse.Namespace) -> None:
    """F1 on tidings with a sampling profiler attached (py-spy if installed, else cProfile).

    py-spy: 1,500 messages by default, so that the burst outlasts the 20 s of sampling."""
    ensure_env()
    pyspy = shutil.which("py-spy") or str(ENV / "py" / "bin" / "py-spy")
    rundir = Path("/tmp/peerbench-run") / "tidings-F1-1"
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "profile-F1.jsonl"
    if a.cprofile or not Path(pyspy).exists():
        harness(
            "run",
            "--peers",
            "tidings",
            "--scenarios",
            "F1",
            "--repeat",
            "1",
            "--cprofile",
            "--msgs",
            str(a.msgs or 300),
            "--quiet-max",
            str(a.quiet_max),
            "--out",
            str(out),
        )
        prof = rundir / "tidings.prof"
        print(f"cProfile written to {prof}")
        subprocess.run(
            [
                str(HARNESS_PY),
                "-c",
                "import pstats,sys; pstats.Stats(sys.argv[1]).sort_stats('tottime').print_stats(30)",
                str(prof),
            ],
            check=False,
        )
        return
    # py-spy attaches to the server that the harness started, once the burst has begun (the
    # harness opens loadgen-pub.log when it starts the publisher), and samples for --seconds.
    shutil.rmtree(rundir, ignore_errors=True)
    raise_nofile()
    cmd = [
        str(HARNESS_PY),
        str(HARNESS / "bench.py"),
        "run",
        "--peers",
        "tidings",
        "--scenarios",
        "F1",
        "--repeat",
        "1",
        "--quiet-max",
        str(a.quiet_max),
        "--msgs",
        str(a.msgs or 1500),
        "--max-s",
        "180",
        "--out",
        str(out),
    ]
    print("+", " ".join(cmd), flush=True)
    proc = subprocess.Popen(cmd, cwd=HARNESS)
    deadline = time.monotonic() + 300
    pid = None
    while time.monotonic() < deadline and proc.poll() is None:
        pid = find_server_pid(rundir)
        if pid is not None and (rundir / "loadgen-pub.log").exists():
            break
        time.sleep(0.05)
    if pid is None or proc.poll() is not None:
        proc.wait()
        sys.exit("could not attach py-spy: the tidings server or the burst was not found")
    raw = RESULTS / "profile-F1.txt"
    client_cpus = {1} if (os.cpu_count() or 1) > 1 else set()
    subprocess.run(
        [
            pyspy,
            "record",
            "--pid",
            str(pid),
            "--rate",
            "200",
            "--format",
            "raw",
            "--output",
            str(raw),
            "--duration",
            str(a.seconds),
            "--nonblocking",
        ],
        check=False,
        preexec_fn=(lambda: os.sched_setaffinity(0, client_cpus)) if client_cpus else None,
    )
    proc.wait(timeout=600)
    print(f"py-spy collapsed stacks in {raw.relative_to(REPO)}")
    top_frames(raw)


def find_server_pid(rundir: Path) -> int | None:
    """The PID of the tidings server the harness started (its argv names the run's config)."""
    conf = str(rundir / "tidings-bench.toml")
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            argv = Path(f"/proc/{d}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if conf.encode() in argv and b"tidings" in argv:
            return int(d)
    return None


def _frame_name(frame: str) -> str:
    m = re.match(r"(.*) \((.*?)(?::\d+)?\)$", frame.strip())
    if not m:
        return frame.strip()
    func, path = m.groups()
    short = "/".join(path.split("/")[-2:])
    return f"{func} ({short})"


def top_frames(raw: Path, n: int = 30) -> None:
    """Self and inclusive sample shares by function from py-spy's collapsed-stack output."""
    self_counts: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        c = int(count)
        total += c
        # "func (path/to/file.py:123)" -> "func (to/file.py)": one entry per function
        frames = [_frame_name(fr) for fr in stack.split(";")]
        leaf = frames[-1]
        self_counts[leaf] = self_counts.get(leaf, 0) + c
        for fr in set(frames):
            incl[fr] = incl.get(fr, 0) + c
    if not total:
        print("no samples")
        return
    print(f"{total} samples\n-- self --")
    for fr, c in sorted(self_counts.items(), key=lambda kv: -kv[1])[:n]:
        print(f"{100 * c / total:5.1f}%  {fr}")
    print("-- inclusive --")
    for fr, c in sorted(incl.items(), key=lambda kv: -kv[1])[:n]:
        print(f"{100 * c / total:5.1f}%  {fr}")


# ------------------------------------------------------------------ command line
def run_options(p: argparse.ArgumentParser) -> None:
    """The options of every command that runs the harness."""
    p.add_argument("--repeat", type=int, default=3, help="runs per peer (medians reported)")
    p.add_argument("--subs", type=int, default=0, help="override the subscriber count")
    p.add_argument("--msgs", type=int, default=0, help="override the message count")
    p.add_argument("--max-s", type=float, default=120.0, help="deadline of one measurement")
    p.add_argument(
        "--quiet-max",
        type=float,
        default=10.0,
        help="longest wait for other processes to calm down before a run",
    )
    p.add_argument("--no-docs", action="store_true", help="do not touch performance.md")


COMPARE_HELP = """\
tidings alone, the code of one git ref (--before) against another (--after; default: the working
tree as it is now, uncommitted changes included), side by side in one session. Each side's src/
is copied to a temporary folder and run with the same interpreter, harness and settings; the runs
alternate before, after, before, after… (repeats outermost), so that a change in the machine's
load hits both sides alike. Per scenario and figure: both medians, after/before, and whether
after is within 5 % of before (for deliveries/s and round trips/s higher is better, for
latencies, memory and CPU lower is). Writes benchmarks/results/compare-<date>.jsonl (one line per
run), benchmarks/results/compare.json and, unless --no-docs, the `compare` section of
docs/topics/performance.md. A full-size run takes about 15 s, so the six scenarios x 3 repeats
x 2 sides take about 9-15 minutes.

  python benchmarks/run.py compare --before main
  python benchmarks/run.py compare --before main --after HEAD --scenarios F1,C1 --repeat 5
  python benchmarks/run.py compare --before HEAD~3 --scenarios F1 --repeat 1 --subs 100 --msgs 100
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("setup", help="install the peers' dependencies into $PEERBENCH_ENV")
    for name, help_ in (
        ("ws-fanout", "issue 2: WebSocket fan-out, tidings and peers"),
        ("suite", "every scenario, tidings and peers"),
        ("all", "the suite, then the tidings-only benchmarks (--only picks)"),
    ):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--peers", default=DEFAULT_PEERS)
        run_options(p)
        if name in ("suite", "all"):
            p.add_argument("--scenarios", default=SUITE_SCENARIOS)
        if name == "all":
            p.add_argument(
                "--only", default=ALL_STEPS, help=f"comma-separated steps, in order (default {ALL_STEPS})"
            )
    c = sub.add_parser(
        "compare",
        help="tidings before and after a change, runs alternating (issue 18: each figure within 5 %%?)",
        description=COMPARE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    c.add_argument(
        "--before",
        required=True,
        metavar="REF",
        help="git ref of the code before (branch, tag, HEAD~N, commit)",
    )
    c.add_argument(
        "--after", metavar="REF", help="git ref of the code after (default: the working tree as it is)"
    )
    c.add_argument(
        "--scenarios",
        default=SUITE_SCENARIOS,
        help=f"comma-separated, of {', '.join(SCENARIO_TITLES)} (default %(default)s)",
    )
    run_options(c)
    for name in ("http-transports", "publish-api", "webhooks", "redis", "compression"):
        p = sub.add_parser(name, help=STEPS[name][0])
        p.add_argument("--no-docs", action="store_true", help="do not touch performance.md")
    r = sub.add_parser("report", help="rewrite performance.md tables from result files")
    r.add_argument("name", help="ws-fanout, suite, compare, publish-api (its JSON), or another section")
    r.add_argument("files", nargs="+", type=Path)
    pr = sub.add_parser("profile", help="profile tidings during F1")
    pr.add_argument("--cprofile", action="store_true", help="cProfile instead of py-spy")
    pr.add_argument("--seconds", type=int, default=20, help="py-spy recording time")
    pr.add_argument("--msgs", type=int, default=0)
    pr.add_argument("--quiet-max", type=float, default=10.0)
    a = ap.parse_args()
    if a.cmd == "setup":
        setup()
    elif a.cmd == "ws-fanout":
        out = measure("ws-fanout", a, "F1")
        finish("ws-fanout", [out], a, "python benchmarks/run.py ws-fanout")
    elif a.cmd == "all":
        run_all(a)
    elif a.cmd in STEPS:
        run_step(a.cmd, a)
    elif a.cmd == "compare":
        compare(a)
    elif a.cmd == "report" and a.name == "publish-api":
        publish_finish(a.files[0].resolve(), a)
    elif a.cmd == "report" and a.name == "compare":
        if not compare_finish([p.resolve() for p in a.files], a, "python benchmarks/run.py compare"):
            sys.exit("some scenario has no ratio: a side had no usable run (see its row)")
    elif a.cmd == "report":
        files = [p.resolve() for p in a.files]
        cmd = f"python benchmarks/run.py {'ws-fanout' if a.name == 'ws-fanout' else 'suite'}"
        scens = sorted({r["scenario"] for r in load(files)})
        if a.name not in ("ws-fanout", "suite"):
            cmd += f" --scenarios {','.join(scens)}"
        finish(a.name, files, a, cmd)
    elif a.cmd == "profile":
        profile(a)
    print(f"done ({platform.node()})")


if __name__ == "__main__":
    main()
