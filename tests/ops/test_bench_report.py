"""``benchmarks/run.py``'s report step on synthetic records: the Markdown tables (rows, medians,
min–max), the section between its markers, and the PNG charts linked above each table."""

from __future__ import annotations

import argparse
import importlib.util
import json
import struct
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MACHINE = {"cpus": 2, "kernel": "6.1-test", "python": "3.11.7"}


@pytest.fixture
def bench(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """benchmarks/run.py with its page, image folder and results folder in tmp_path."""
    spec = importlib.util.spec_from_file_location("bench_run_under_test", ROOT / "benchmarks/run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "DOC", tmp_path / "docs" / "topics" / "performance.md")
    monkeypatch.setattr(module, "IMG", tmp_path / "docs" / "img")
    monkeypatch.setattr(module, "RESULTS", tmp_path / "results")
    module.DOC.parent.mkdir(parents=True)
    module.DOC.write_text(
        "# Performance\n\nIntro kept.\n\n<!-- bench:suite begin -->\nold table\n"
        "<!-- bench:suite end -->\n\nOutro kept.\n"
    )
    return module


def record(
    peer: str, label: str, scenario: str, rep: int, status: str = "ok", **figures: Any
) -> dict[str, Any]:
    return {
        "peer": peer,
        "label": label,
        "scenario": scenario,
        "rep": rep,
        "status": status,
        "when": f"2026-11-28T10:0{rep}:00",
        "machine": MACHINE,
        "server_cpus": [0],
        "client_cpus": [1],
        **figures,
    }


def synthetic(path: Path) -> Path:
    tid, node, sio = "tidings", "tidings (this checkout)", "node-ws"
    recs = [
        record(tid, node, "F1", 1, deliveries_per_s=100_000, p50_ms=40.0, p99_ms=90.0, lost=0),
        record(tid, node, "F1", 2, deliveries_per_s=300_000, p50_ms=20.0, p99_ms=70.0, lost=0),
        record(tid, node, "F1", 3, deliveries_per_s=200_000, p50_ms=30.0, p99_ms=80.0, lost=0),
        record(sio, "Node ws (broadcast loop)", "F1", 1, deliveries_per_s=50_000, p99_ms=100.0),
        record(sio, "Node ws (broadcast loop)", "F1", 2, deliveries_per_s=70_000, p99_ms=120.0),
        record(sio, "Node ws (broadcast loop)", "F1", 3, status="error", error="RuntimeError: x"),
        record(
            "socketio",
            "python-socketio (uvicorn)",
            "F1",
            1,
            status="n/a",
            error="/ws not served (404) by this build",
        ),
        record(tid, node, "C1", 1, opened=10_000, live_after_probe=10_000, rss_kb_per_conn=3.3),
        record(tid, node, "L1", 1, rt_per_s=4_321, msgs_per_s=4_321, p50_ms=2.0, p99_ms=9.0),
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width == 800 and 200 <= height <= 500  # figsize 8 x ~3 inches at 100 dpi
    assert len(data) > 5_000  # bars, labels and text, not an empty canvas


def test_report_writes_tables_with_medians_and_a_chart_linked_above_each(
    bench: ModuleType, tmp_path: Path
) -> None:
    jsonl = synthetic(tmp_path / "suite-test.jsonl")
    bench.finish("suite", [jsonl], argparse.Namespace(no_docs=False), "python run.py suite")

    text = bench.DOC.read_text()
    assert text.startswith("# Performance\n\nIntro kept.\n") and text.endswith("Outro kept.\n")
    assert "old table" not in text
    section = text.split("<!-- bench:suite begin -->")[1].split("<!-- bench:suite end -->")[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    assert (
        "| tidings (this checkout) | 3/3 | 200,000 [100,000–300,000] | 30.0 [20.0–40.0] "
        "| 80 [70–90] | 0 |" in "\n".join(rows)
    )
    assert any(r.startswith("| Node ws (broadcast loop) | 2/3 | 60,000 [50,000–70,000] |") for r in rows)
    assert any(r.startswith("| python-socketio (uvicorn) | n/a | /ws not served (404)") for r in rows)
    assert any(r.startswith("| tidings (this checkout) | 1/1 | 10,000 | 10,000 | 3.3 |") for r in rows)
    assert any(r.startswith("| tidings (this checkout) | 1/1 | 4,321 | 4,321 | 2.0 | 9.0 |") for r in rows)
    assert "Machine: 2 vCPUs" in section and "runs 2026-11-28T10:01:00 – 2026-11-28T10:03:00" in section

    for scenario in ("F1", "C1", "L1"):
        png = bench.IMG / f"bench-suite-{scenario}.png"
        assert_png(png)
        title = bench.SCENARIO_TITLES[scenario]
        link = f"![{title}](../img/bench-suite-{scenario}.png)"
        # the link sits between the scenario's title and its table
        block = section.split(f"**{title}**")[1]
        assert block.index(link) < block.index("| peer | runs |")
    assert sorted(p.name for p in bench.IMG.iterdir()) == [
        "bench-suite-C1.png",
        "bench-suite-F1.png",
        "bench-suite-L1.png",
    ]

    summary = json.loads((bench.RESULTS / "suite.json").read_text())["scenarios"]
    assert summary["F1"]["tidings"]["deliveries_per_s"] == 200_000
    assert (summary["F1"]["node-ws"]["ok"], summary["F1"]["node-ws"]["runs"]) == (2, 3)
    assert summary["F1"]["socketio"]["status"] == "n/a"


def test_without_matplotlib_the_tables_are_still_written_and_it_says_how_to_install_it(
    bench: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` fails
    jsonl = synthetic(tmp_path / "suite-test.jsonl")
    bench.finish("suite", [jsonl], argparse.Namespace(no_docs=False), "python run.py suite")
    out = capsys.readouterr().out
    assert "pip install -e '.[bench]'" in out
    text = bench.DOC.read_text()
    assert "| tidings (this checkout) | 3/3 | 200,000 [100,000–300,000]" in text
    assert "![" not in text
    assert not bench.IMG.exists()


def test_publish_api_section_and_charts(bench: ModuleType, tmp_path: Path) -> None:
    runs = [
        {
            "rep": rep,
            "conns": conns,
            "requests_per_s": rps,
            "p50_ms": 1.0 * conns,
            "p99_ms": 5.0 * conns,
            "server_cpu_us_per_request": 800.0,
            "server_util": 0.9,
            "client_util": 0.1,
            "errors": 0,
        }
        for rep, rps_by_conns in enumerate(([900, 1000], [1100, 1300], [1000, 1200]), 1)
        for conns, rps in zip((1, 4), rps_by_conns, strict=True)
    ]
    paths = {
        name: {"samples": 300, "lost": lost, "p50_ms": 2.0, "p90_ms": 3.0, "p99_ms": 8.0, "max_ms": 10.0}
        for name, lost in (
            ("publish request (sent → answered)", 0),
            ("WebSocket subscriber (sent → first delivery)", 0),
            ("SSE subscriber (sent → first delivery)", 2),
        )
    }
    result = {
        "machine": MACHINE,
        "started": "2026-11-28T10:00:00",
        "when": "2026-11-28T10:01:00",
        "pinned": {"server": [0], "loadgen": [1]},
        "load_average_before": [0.5],
        "versions": {"tidings": "0.1.0"},
        "command": "benchmarks/publish_api.py",
        "seconds_per_run": 4.0,
        "throughput": runs,
        "latency": {"rate": 100.0, "seconds": 3.0, "publications": 300, "paths": paths},
    }
    path = tmp_path / "publish-api.json"
    path.write_text(json.dumps(result))
    bench.DOC.write_text("x\n<!-- bench:publish-api begin -->\n<!-- bench:publish-api end -->\ny\n")

    bench.publish_finish(path, argparse.Namespace(no_docs=False))

    text = bench.DOC.read_text()
    assert text.startswith("x\n") and text.endswith("y\n")
    assert "| 1 | 3 | 1,000 [900–1,100] | 1.00 | 5.0 |" in text
    assert "| 4 | 3 | 1,200 [1,000–1,300] | 4.00 | 20.0 |" in text
    assert "| SSE subscriber | 300 | 2.00 | 3.00 | 8.00 | 10.00 | 2 |" in text
    assert "server pinned to CPU 0, load generator to CPU 1" in text
    for name in ("throughput", "latency"):
        assert_png(bench.IMG / f"bench-publish-api-{name}.png")
        assert f"](../img/bench-publish-api-{name}.png)" in text


def compare_records() -> list[dict[str, Any]]:
    """Two runs a side: F1 and L1 measured on both, C1 failing after; plus a row to ignore."""
    before, after = "tidings-before", "tidings-after"
    lb, la = "tidings before: main (1a2b3c4)", "tidings after: working tree (5d6e7f8)"
    fan = {
        before: [(90_000, 40.0, 70.0, 6.0), (110_000, 40.0, 90.0, 8.0)],
        after: [(95_000, 30.0, 85.0, 7.7), (97_000, 30.0, 85.0, 7.7)],
    }
    recs = [
        record(
            peer,
            label,
            "F1",
            rep,
            deliveries_per_s=d,
            p50_ms=p50,
            p99_ms=p99,
            server_us_per_delivery=us,
            lost=0,
        )
        for peer, label in ((before, lb), (after, la))
        for rep, (d, p50, p99, us) in enumerate(fan[peer], 1)
    ]
    recs += [
        record(peer, label, "L1", rep, rt_per_s=rt, p50_ms=5.0, p99_ms=20.0)
        for peer, label, rt in ((before, lb, 5_000), (after, la, 4_500))
        for rep in (1, 2)
    ]
    recs += [record(before, lb, "C1", rep, rss_kb_per_conn=3.1, server_cpu_us_per_conn=440) for rep in (1, 2)]
    recs += [
        record(after, la, "C1", rep, status="error", error="RuntimeError: server process exited with 1")
        for rep in (1, 2)
    ]
    for r in recs:
        r["versions"] = {
            "tidings": "0.1.0",
            "commit": "main (1a2b3c4)" if r["peer"] == before else "working tree (5d6e7f8)",
        }
    recs.append(record("tidings", "tidings (this checkout)", "F1", 1, deliveries_per_s=1))
    return recs


def test_compare_table_judges_each_figure_the_right_way_round(bench: ModuleType) -> None:
    text = bench.compare_table(bench.compare_rows(compare_records()))
    lines = text.splitlines()
    assert lines[0] == (
        "| scenario | figure | better | before | after | after/before | within 5 % of before |"
    )
    body = lines[2:]
    # throughput 4 % lower: within; p50 25 % lower: a gain; p99 and CPU/delivery higher: losses
    assert body[:4] == [
        "| F1 | deliveries/s | higher | 100,000 [90,000–110,000] | 96,000 [95,000–97,000] | 0.960 | yes |",
        "| F1 | p50 ms | lower | 40.0 | 30.0 | 0.750 | yes |",
        "| F1 | p99 ms | lower | 80.0 [70.0–90.0] | 85.0 | 1.062 | **no** |",
        "| F1 | server CPU µs/delivery | lower | 7.0 [6.0–8.0] | 7.7 | 1.100 | **no** |",
    ]
    # a side without a usable run says why, and there is no ratio to judge
    assert body[4:6] == [
        "| C1 | RSS KiB/conn | lower | 3.1 | error: RuntimeError: server process exited with 1 | – | – |",
        "| C1 | server CPU µs/conn | lower | 440 | error: RuntimeError: server process exited "
        "with 1 | – | – |",
    ]
    assert body[6] == "| L1 | round trips/s | higher | 5,000 | 4,500 | 0.900 | **no** |"
    assert body[7:9] == [
        "| L1 | p50 ms | lower | 5.0 | 5.0 | 1.000 | yes |",
        "| L1 | p99 ms | lower | 20.0 | 20.0 | 1.000 | yes |",
    ]
    assert lines[-1] == (
        "4 of 7 figures within 5 % of before; not: F1 p99 ms (1.062), "
        "F1 server CPU µs/delivery (1.100), L1 round trips/s (0.900); "
        "no ratio for C1."
    )


def test_compare_section_and_summary(bench: ModuleType, tmp_path: Path) -> None:
    jsonl = tmp_path / "compare-test.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in compare_records()))
    bench.DOC.write_text("x\n<!-- bench:compare begin -->\nold\n<!-- bench:compare end -->\ny\n")

    complete = bench.compare_finish([jsonl], argparse.Namespace(no_docs=False), "run.py compare")

    assert complete is False  # C1 has no ratio
    text = bench.DOC.read_text()
    assert text.startswith("x\n") and text.endswith("y\n") and "old" not in text
    section = text.split("<!-- bench:compare begin -->")[1].split("<!-- bench:compare end -->")[0]
    assert section.startswith(
        "\n**before**: `main (1a2b3c4)`; **after**: `working tree (5d6e7f8)`.\n\n| scenario | figure |"
    )
    # then the per-side detail, without the row of the other peer in the file
    assert "| tidings before: main (1a2b3c4) | 2/2 | 100,000 [90,000–110,000] |" in section
    assert "| tidings after: working tree (5d6e7f8) | error |" in section
    assert "tidings (this checkout)" not in section
    summary = json.loads((bench.RESULTS / "compare.json").read_text())
    f1 = {r["key"]: r for r in summary["comparison"] if r["scenario"] == "F1"}
    assert f1["deliveries_per_s"]["before_median"] == 100_000
    assert (f1["p99_ms"]["within"], f1["p50_ms"]["within"]) == (False, True)
    assert summary["scenarios"]["F1"]["tidings-after"]["deliveries_per_s"] == 96_000
