"""Turn an Autobahn fuzzingclient report into docs/conformance/autobahn.md and a summary JSON.

``python scripts/autobahn_report.py REPORT_DIR DOCS_DIR SET SECONDS``; exits 1 if a case FAILED.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

# Why a verdict other than OK is acceptable, by case group (written after reading the case reports).
BATCHED = (
    "The test sends a valid message and then a bad frame in the same TCP segment. The server's "
    "sans-I/O parser (websockets' ServerProtocol under uvicorn) parses everything received in one "
    "read before the application runs, so it fails the connection with the right close code (1002) "
    "before the echo of the valid message is written. Autobahn accepts either order (NON-STRICT); "
    "whether the two frames land in one read varies from run to run, so these cases flip between "
    "OK and NON-STRICT."
)
EXPLAINED = {
    "3": BATCHED,
    "4": BATCHED,
    "5.15": BATCHED,
    "6.4": "Fail-fast on invalid UTF-8 in a text message: the server checks UTF-8 when a frame is "
           "complete (fast server) or when the whole message is (ASGI path: uvicorn joins the "
           "fragments, then decodes), not byte by byte as a frame's bytes trickle in, so it closes "
           "with 1007 a little later than the first bad byte. The close code is right; only the "
           "moment differs, which RFC 6455 allows (8.1: the endpoint MUST fail the connection, "
           "with no deadline).",
    "7.1.6": "INFORMATIONAL: a large message is queued, then a close; the close was processed "
             "before the message could be echoed, which the spec leaves open.",
    "7.13": "INFORMATIONAL: close codes in the 5000+ / private range; the spec does not define what "
            "the server must answer, Autobahn only records it.",
}


COMPRESSION_MARK = "<!-- cases 12 and 13 (scripts/autobahn.sh compression) below -->"


def group_of(case: str) -> str:
    parts = case.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in EXPLAINED:
            return ".".join(parts[:n])
    return case


def case_key(case: str) -> tuple[int, ...]:
    return tuple(int(p) for p in case.split("."))


def main() -> int:
    report_dir, docs_dir, case_set, seconds = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]
    index = json.loads((report_dir / "index.json").read_text())
    agents = {}
    failed = 0
    unexplained: list[str] = []
    for agent, cases in sorted(index.items()):
        counts: Counter[str] = Counter()
        close_counts: Counter[str] = Counter()
        others: list[tuple[str, str, str, str]] = []
        by_major: dict[str, Counter[str]] = {}
        for case in sorted(cases, key=case_key):
            verdict = cases[case]
            counts[verdict["behavior"]] += 1
            close_counts[verdict["behaviorClose"]] += 1
            by_major.setdefault(case.split(".")[0], Counter())[verdict["behavior"]] += 1
            if verdict["behavior"] != "OK" or verdict["behaviorClose"] not in ("OK", "INFORMATIONAL"):
                detail = json.loads((report_dir / verdict["reportfile"]).read_text())
                why = EXPLAINED.get(group_of(case), "NOT EXPLAINED")
                others.append((case, f"{verdict['behavior']} / close {verdict['behaviorClose']}",
                               str(detail.get("result", ""))[:160], why))
        failed += counts["FAILED"] + close_counts["FAILED"]
        unexplained += [f"{agent} {c}" for c, _, _, w in others if w == "NOT EXPLAINED"]
        agents[agent] = (cases, counts, close_counts, others, by_major)
    docs_dir.mkdir(parents=True, exist_ok=True)
    summary = {
        "set": case_set, "seconds": int(seconds),
        "agents": {agent: {
            "cases": len(cases), "behavior": dict(counts), "behaviorClose": dict(close_counts),
            "by_group": {k: dict(v) for k, v in sorted(by_major.items(), key=lambda kv: int(kv[0]))},
            "not_ok": [{"case": c, "verdict": v, "result": r, "why": w} for c, v, r, w in others],
        } for agent, (cases, counts, close_counts, others, by_major) in agents.items()},
    }
    compression = case_set == "compression"
    summary_name = "autobahn-compression-summary.json" if compression else "autobahn-summary.json"
    (docs_dir / summary_name).write_text(json.dumps(summary, indent=2) + "\n")
    lines = [
        "# Autobahn WebSocket testsuite",
        "",
        "Written by `scripts/autobahn.sh` (set-up: `scripts/setup-autobahn.sh`, a private Python 2.7 "
        "from Debian 11 packages running autobahntestsuite 25.10.1; see `../shared/recipes/autobahn.md`).",
        "Two agents, each an echo endpoint `/ws-echo` on one of tidings' two WebSocket stacks "
        "(`scripts/autobahn_server.py`):",
        "",
        "- `tidings-fast`: the fast server's own framing (`server.engine = \"fast\"`, the default "
        "of `tidings serve`; `server.debug_echo` turns the echo on);",
        "- `tidings-asgi`: the ASGI path (`server.engine = \"uvicorn\"`, and any app mounting "
        "`create_app()`): uvicorn's sans-I/O `websockets` protocol under Starlette, with "
        "`tidings.server.echo` mounted only by the script.",
        "",
        f"Set `{case_set}`, run in {seconds} s.",
        "",
    ]
    if compression:
        # a section of its own, after the other sets' report (which keeps it when rewritten)
        lines = [
            "## Compression: cases 12 and 13",
            "",
            "permessage-deflate (RFC 7692; docs/topics/compression.md), set `compression` "
            f"(`scripts/autobahn.sh compression`), run in {seconds} s.",
            "",
        ]
    level = "###" if compression else "##"
    for agent, (cases, counts, close_counts, others, by_major) in agents.items():
        lines += [f"{level} {agent}: {len(cases)} cases", "",
                  "| verdict | cases | closing handshake |", "| --- | ---: | ---: |"]
        for verdict in ("OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"):
            lines.append(f"| {verdict} | {counts.get(verdict, 0)} | {close_counts.get(verdict, 0)} |")
        lines += ["", "| group | verdicts |", "| --- | --- |"]
        for major, counter in sorted(by_major.items(), key=lambda kv: int(kv[0])):
            lines.append(f"| {major} | {', '.join(f'{k} {v}' for k, v in sorted(counter.items()))} |")
        lines += ["", "Cases not plainly OK, and why:", ""]
        if others:
            lines += ["| case | verdict | Autobahn says | why it is acceptable |",
                      "| --- | --- | --- | --- |"]
            for case, verdict, result, why in others:
                lines.append(f"| {case} | {verdict} | {result.replace('|', '/')} | {why} |")
        else:
            lines.append("None: every case is OK (INFORMATIONAL closes only report the close code).")
        lines.append("")
    report = docs_dir / "autobahn.md"
    before, _, section = (report.read_text() if report.exists() else "").partition(COMPRESSION_MARK)
    if compression:
        text = before.rstrip("\n") + "\n\n" + COMPRESSION_MARK + "\n\n" + "\n".join(lines)
    else:
        text = "\n".join(lines) + (f"\n{COMPRESSION_MARK}{section}" if section else "")
    report.write_text(text)
    for agent, (_, counts, close_counts, _, _) in agents.items():
        print(f"autobahn: {agent}: {dict(counts)} (close: {dict(close_counts)})")
    if unexplained:
        print(f"autobahn: verdicts nobody explained yet: {', '.join(unexplained)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
