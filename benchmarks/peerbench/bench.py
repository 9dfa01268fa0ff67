#!/usr/bin/env python3
"""peerbench driver: starts a peer's server processes pinned to the server CPU(s), runs the load
generator roles (loadgen.py) pinned to the client CPU(s), samples the server's CPU and RSS from
/proc, and appends one JSON line per run.

  run     python bench.py run --peers node-ws,rawref --scenarios F1,F2 --repeat 3
  report  python bench.py report [--in FILE]          (markdown tables: median [min-max])
  list    python bench.py list

Every run starts a fresh server and stops it afterwards (SIGTERM, then SIGKILL, by PID, only the
processes this driver started and their descendants). All traffic is on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import signal
import socket
import statistics
import sys
import time
from typing import BinaryIO

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from common import (  # noqa: E402
    all_proc_cpu,
    cpu_busy,
    cpu_times,
    foreign_cpu,
    proc_tree,
    tree_delta,
    tree_sample,
)
from peers import PEERS, get_peer  # noqa: E402
from peers.base import PY  # noqa: E402

SCENARIOS = {
    "F1": {
        "kind": "fanout",
        "transport": "ws",
        "subs": 1000,
        "msgs": 1000,
        "what": "1,000 WebSocket subscribers x 1,000 msgs (~100 B), burst publish",
    },
    "F2": {
        "kind": "fanout",
        "transport": "ws",
        "subs": 100,
        "msgs": 10000,
        "what": "100 WebSocket subscribers x 10,000 msgs, burst publish (publish-rate bound)",
    },
    "S1": {"kind": "fanout", "transport": "sse", "subs": 1000, "msgs": 1000, "what": "F1 over SSE"},
    "N1": {
        "kind": "fanout",
        "transport": "stream",
        "subs": 1000,
        "msgs": 1000,
        "what": "F1 over HTTP streaming (chunked NDJSON)",
    },
    "C1": {
        "kind": "idle",
        "transport": "ws",
        "subs": 10000,
        "what": "10,000 idle subscribed WebSocket connections: server RSS growth",
    },
    "L1": {
        "kind": "lp",
        "transport": "lp",
        "subs": 100,
        "duration": 10.0,
        "lp_interval": 0.02,
        "what": "100 long-poll clients re-polling for 10 s; one publish every 20 ms "
        "(ideal 5,000 round trips/s)",
    },
    "L2": {
        "kind": "lp",
        "transport": "lp",
        "subs": 100,
        "duration": 10.0,
        "lp_interval": 0.002,
        "what": "L1 with one publish every 2 ms (ideal 50,000 round trips/s): long-poll capacity",
    },
}
DEFAULT_OUT = "/tmp/peerbench-results/results.jsonl"
RUN_ROOT = "/tmp/peerbench-run"


# ------------------------------------------------------------------ process handling
def preexec(cpus: set[int]):
    def f():
        if cpus:
            os.sched_setaffinity(0, cpus)
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    return f


async def spawn(argv, cpus, env=None, cwd=None, log=None, pipe=False):
    full_env = dict(os.environ)
    full_env.update(env or {})
    # the child gets its own copy of the log's descriptor; ours is closed once it has started
    with contextlib.ExitStack() as stack:
        logf = stack.enter_context(open_log(log)) if log else None
        dev = asyncio.subprocess.DEVNULL
        return await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if pipe else dev,
            stdout=asyncio.subprocess.PIPE if pipe else (logf or dev),
            stderr=logf or dev,
            env=full_env,
            cwd=cwd,
            preexec_fn=preexec(cpus),
            start_new_session=True,
            limit=1 << 24,
        )


def open_log(path: str) -> BinaryIO:
    return open(path, "ab")  # the caller's ExitStack closes it


def append_record(path: str, rec: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def stop_all(procs) -> None:
    """SIGTERM every started process and its descendants (by PID), SIGKILL what is left."""
    pids = []
    for p in procs:
        if p.returncode is None:
            pids.extend(proc_tree(p.pid))
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            if alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
        for _ in range(50):
            for p in procs:
                if p.returncode is None:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(p.wait(), 0.01)
            if not any(alive(pid) for pid in pids):
                return
            await asyncio.sleep(0.1)


async def wait_ports(ports, within=30.0) -> None:
    t0 = time.monotonic()
    for port in ports:
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() - t0 > within:
                    raise RuntimeError(f"port {port} not ready after {within}s") from None
                await asyncio.sleep(0.1)


async def read_tag(proc, tag: str, within: float):
    """Read stdout lines until one starts with tag; return its JSON (or None)."""
    end = time.monotonic() + within
    while True:
        left = end - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no {tag} within {within}s")
        line = await asyncio.wait_for(proc.stdout.readline(), left)
        if not line:
            raise RuntimeError(f"load generator exited before {tag}")
        line = line.decode().strip()
        if line.startswith(tag):
            rest = line[len(tag) :].strip()
            return json.loads(rest) if rest else None


# ------------------------------------------------------------------ one run
class Run:
    def __init__(self, a, peer_name: str, scen: str, rep: int):
        self.a = a
        self.sc = dict(SCENARIOS[scen])
        for k in ("subs", "msgs"):
            if getattr(a, k):
                self.sc[k] = getattr(a, k)
        self.scen = scen
        self.rep = rep
        self.rundir = os.path.join(RUN_ROOT, f"{peer_name}-{scen}-{rep}")
        os.makedirs(self.rundir, exist_ok=True)
        self.peer = get_peer(peer_name, self.rundir)
        self.server_procs = []
        self.client_procs = []

    def lg(self, role, *extra):
        sc, a = self.sc, self.a
        return [
            PY,
            os.path.join(HERE, "loadgen.py"),
            role,
            "--peer",
            self.peer.name,
            "--rundir",
            self.rundir,
            "--transport",
            sc["transport"],
            "--subs",
            str(sc["subs"]),
            "--msgs",
            str(sc.get("msgs", 1)),
            "--max-s",
            str(a.max_s),
            *extra,
        ]

    async def start_server(self):
        for port in self.peer.ready_ports():  # a server left over would answer in its place
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                raise RuntimeError(f"port {port} is already in use by another process")
        for c in self.peer.commands():
            argv = c.argv
            if self.a.cprofile and argv[0] in self.peer.python_executables():
                # profile Python servers (slows them down)
                argv = [
                    argv[0],
                    os.path.join(HERE, "servers", "profiled.py"),
                    os.path.join(self.rundir, f"{c.name}.prof"),
                    *argv[1:],
                ]
            p = await spawn(
                argv,
                self.a.server_cpus,
                c.env,
                c.cwd,
                log=os.path.join(self.rundir, f"{c.name}.log"),
            )
            self.server_procs.append(p)
        await wait_ports(self.peer.ready_ports())
        await asyncio.sleep(self.a.settle)
        for p in self.server_procs:
            if p.returncode is not None:
                raise RuntimeError(f"server process exited with {p.returncode}")

    def server_pids(self):
        return [p.pid for p in self.server_procs]

    def mine(self) -> set[int]:
        """PIDs of this driver, its server trees and its load generators."""
        pids = {os.getpid()}
        for p in self.server_procs + self.client_procs:
            pids.update(proc_tree(p.pid))
        return pids

    async def client(self, role, *extra):
        p = await spawn(
            self.lg(role, *extra),
            self.a.client_cpus,
            cwd=HERE,
            pipe=True,
            log=os.path.join(self.rundir, f"loadgen-{role}.log"),
        )
        self.client_procs.append(p)
        return p

    async def fanout(self) -> dict:
        a, sc = self.a, self.sc
        sub = await self.client("sub", "--conc", str(a.conc))
        ready = await read_tag(sub, "READY", 300)
        s0 = tree_sample(self.server_pids())
        c0, f0 = cpu_times(), all_proc_cpu()
        pub = await self.client("pub", "--conns", str(a.conns))
        pubres = await read_tag(pub, "RESULT", a.max_s + 60)
        await pub.wait()
        try:  # the subscribers may already be done (and gone) when the publisher finishes
            sub.stdin.write(b"PUBDONE\n")
            await sub.stdin.drain()
        except (ConnectionResetError, BrokenPipeError):
            pass
        await read_tag(sub, "DONE", a.max_s + 60)
        s1 = tree_sample(self.server_pids())
        c1, f1 = cpu_times(), all_proc_cpu()
        res = await read_tag(sub, "RESULT", 120)
        await sub.wait()
        d = tree_delta(s0, s1)
        window = max(1, (res["t_last"] or pubres["t_end"]) - pubres["t_first"]) / 1e9
        expected_all = sc["subs"] * sc["msgs"]
        return {
            "subs_ok": ready["ok"],
            "connect_failed": ready["failed"],
            "connect_errors": ready["errors"],
            "open_s": ready["open_s"],
            "probe_s": ready["probe_s"],
            "msgs": sc["msgs"],
            "expected": expected_all,
            "got": res["got"],
            "lost": expected_all - res["got"],
            "dup": res["dup"],
            "bad": res["bad"],
            "closed_during_run": res["closed"],
            "stop": res["stop"],
            "window_s": round(window, 3),
            "deliveries_per_s": round(res["got"] / window),
            "publish_s": pubres["pub_s"],
            "publish_per_s": round(pubres["published"] / max(pubres["pub_s"], 1e-9)),
            "publish_status": pubres["status"],
            "pub_cpu_s": pubres["pub_cpu_s"],
            **{k: res.get(k) for k in ("p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms")},
            "server_cpu_s": d["cpu_s"],
            "server_user_s": d["user_s"],
            "server_sys_s": d["sys_s"],
            "server_cpu_by_comm": d["by_comm"],
            "server_util": round(d["cpu_s"] / window, 3),
            "server_us_per_delivery": round(d["cpu_s"] / max(res["got"], 1) * 1e6, 2),
            "server_rss_mb": round(s1["rss_kb"] / 1024, 1),
            "client_cpu_s": res["client_cpu_s"],
            "client_util": round(res["client_cpu_s"] / window, 3),
            "cores": cpu_busy(c0, c1),
            "other_cpu_s": foreign_cpu(f0, f1, self.mine()),
        }

    async def idle(self) -> dict:
        a = self.a
        s0 = tree_sample(self.server_pids())
        cl = await self.client("idle", "--conc", str(a.conc))
        opened = await read_tag(cl, "OPENED", 600)
        await asyncio.sleep(3)
        s1 = tree_sample(self.server_pids())
        cl.stdin.write(b"PROBE\n")
        await cl.stdin.drain()
        probed = await read_tag(cl, "PROBED", 120)
        cl.stdin.write(b"CLOSE\n")
        await cl.stdin.drain()
        await read_tag(cl, "RESULT", 60)
        await cl.wait()
        d = tree_delta(s0, s1)
        n = max(opened["ok"], 1)
        rss_by_comm = {}
        for p in s1["procs"]:
            rss_by_comm[p["comm"]] = rss_by_comm.get(p["comm"], 0) + p["rss_kb"]
        return {
            "target": self.sc["subs"],
            "opened": opened["ok"],
            "failed": opened["failed"],
            "errors": opened["errors"],
            "open_s": opened["open_s"],
            "live_after_probe": probed["probed"],
            "closed": probed["closed"],
            "rss_mb_before": round(s0["rss_kb"] / 1024, 1),
            "rss_mb_after": round(s1["rss_kb"] / 1024, 1),
            "rss_kb_per_conn": round((s1["rss_kb"] - s0["rss_kb"]) / n, 2),
            "rss_kb_by_comm_after": rss_by_comm,
            "server_cpu_s_open": d["cpu_s"],
            "server_cpu_us_per_conn": round(d["cpu_s"] / n * 1e6, 1),
            "server_cpu_by_comm": d["by_comm"],
        }

    async def longpoll(self) -> dict:
        cl = await self.client(
            "lp",
            "--duration",
            str(self.sc["duration"]),
            "--lp-interval",
            str(self.a.lp_interval or self.sc["lp_interval"]),
        )
        await read_tag(cl, "READY", 60)
        s0 = tree_sample(self.server_pids())
        c0, f0 = cpu_times(), all_proc_cpu()
        res = await read_tag(cl, "RESULT", self.sc["duration"] + 120)
        s1 = tree_sample(self.server_pids())
        c1, f1 = cpu_times(), all_proc_cpu()
        await cl.wait()
        d = tree_delta(s0, s1)
        return {
            **res,
            "lp_interval": self.a.lp_interval or self.sc["lp_interval"],
            "server_cpu_s": d["cpu_s"],
            "server_cpu_by_comm": d["by_comm"],
            "server_util": round(d["cpu_s"] / res["wall_s"], 3),
            "client_util": round(res["client_cpu_s"] / res["wall_s"], 3),
            "cores": cpu_busy(c0, c1),
            "other_cpu_s": foreign_cpu(f0, f1, self.mine()),
        }

    async def go(self) -> dict:
        rec = {
            "peer": self.peer.name,
            "label": self.peer.label,
            "scenario": self.scen,
            "rep": self.rep,
            "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "server_cpus": sorted(self.a.server_cpus),
            "client_cpus": sorted(self.a.client_cpus),
            "pub_conns": self.a.conns,
            "subs": self.sc["subs"],
        }
        kind = self.sc["kind"]
        if self.sc["transport"] not in self.peer.transports:
            return {**rec, "status": "unsupported"}
        t0 = time.monotonic()
        try:
            rec["versions"] = self.peer.versions()
            await self.start_server()
            rec["server_rss_mb_idle"] = round(tree_sample(self.server_pids())["rss_kb"] / 1024, 1)
            why = self.peer.check(self.sc["transport"], "bench")
            if why is not None:  # e.g. an endpoint this build does not serve yet
                rec["status"] = "n/a"
                rec["error"] = why
                return rec
            fn = {"fanout": self.fanout, "idle": self.idle, "lp": self.longpoll}[kind]
            rec.update(await asyncio.wait_for(fn(), self.a.max_s + 600))
            rec["status"] = "ok"
            if rec.get("lost") or rec.get("closed_during_run"):
                rec["status"] = "incomplete"
        except Exception as e:
            rec["status"] = "error"
            rec["error"] = f"{type(e).__name__}: {e}"
        finally:
            await stop_all(self.client_procs)
            await stop_all(self.server_procs)
        rec["run_s"] = round(time.monotonic() - t0, 1)
        return rec


async def wait_quiet(a) -> dict:
    """The machine is shared: wait (bounded) until other tenants use < a.quiet_cores of CPU."""
    t0 = time.monotonic()
    load = None
    while True:
        f0 = all_proc_cpu()
        await asyncio.sleep(1.0)
        load = foreign_cpu(f0, all_proc_cpu(), {os.getpid()})
        if load < a.quiet_cores or time.monotonic() - t0 >= a.quiet_max:
            return {
                "background_cores_at_start": load,
                "quiet_wait_s": round(time.monotonic() - t0, 1),
            }


async def cmd_run(a) -> None:
    peers = a.peers.split(",")
    scens = a.scenarios.split(",")
    for p in peers:
        if p not in PEERS:
            sys.exit(f"unknown peer {p}; known: {', '.join(PEERS)}")
    for s in scens:
        if s not in SCENARIOS:
            sys.exit(f"unknown scenario {s}; known: {', '.join(SCENARIOS)}")
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    machine = {
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }
    # repeats are the outer loop so that the runs of one peer are spread over time
    plan = [
        (rep, s, p)
        for rep in range(1, a.repeat + 1)
        for s in scens
        for p in peers
        if SCENARIOS[s]["transport"] in PEERS[p].transports  # the others are recorded at once
    ]
    print(f"{len(plan)} runs ({', '.join(peers)} x {', '.join(scens)} x {a.repeat}) -> {a.out}")
    started = time.monotonic()
    done = 0
    for rep in range(1, a.repeat + 1):
        for s in scens:
            for p in peers:
                supported = SCENARIOS[s]["transport"] in PEERS[p].transports
                if supported:
                    done += 1
                    print(f"[{done}/{len(plan)}] {p} {s} run {rep}/{a.repeat} …", end=" ", flush=True)
                q = await wait_quiet(a) if supported else {}
                rec = await Run(a, p, s, rep).go()
                rec.update(q)
                rec["machine"] = machine
                append_record(a.out, rec)
                if supported:
                    print(progress(rec, started, done, len(plan)), flush=True)
                if a.verbose:
                    brief = {k: rec.get(k) for k in BRIEF if rec.get(k) is not None}
                    print(json.dumps(brief), flush=True)


BRIEF = (
    "peer",
    "scenario",
    "rep",
    "status",
    "error",
    "deliveries_per_s",
    "p50_ms",
    "p99_ms",
    "max_ms",
    "lost",
    "server_cpu_s",
    "client_util",
    "cores",
    "other_cpu_s",
    "background_cores_at_start",
    "quiet_wait_s",
    "stop",
    "opened",
    "rss_kb_per_conn",
    "rt_per_s",
    "run_s",
)


def clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"


def progress(rec: dict, started: float, done: int, total: int) -> str:
    """The end of a run's progress line: its time, its headline figure, elapsed and ETA."""
    status = rec.get("status")
    if status in ("ok", "incomplete"):
        if rec.get("deliveries_per_s") is not None:
            fig = f"{rec['deliveries_per_s']:,} deliveries/s, p99 {rec.get('p99_ms') or 0:,.0f} ms"
            if rec.get("lost"):
                fig += f", lost {rec['lost']:,}"
        elif rec.get("rss_kb_per_conn") is not None:
            fig = f"{rec.get('opened', 0):,} opened, {rec['rss_kb_per_conn']:,.1f} KiB/conn"
        else:
            fig = f"{rec.get('rt_per_s') or 0:,.0f} round trips/s, p99 {rec.get('p99_ms') or 0:,.1f} ms"
        if status != "ok":
            fig += f" ({status})"
    else:
        fig = f"{status}: {rec.get('error') or ''}".rstrip(": ")
    wait = rec.get("quiet_wait_s") or 0
    elapsed = time.monotonic() - started
    eta = elapsed / done * (total - done)
    return (
        f"{rec.get('run_s', 0):.1f} s{f' (+{wait:.0f} s waiting for quiet)' if wait >= 2 else ''}, "
        f"{fig}; elapsed {clock(elapsed)}" + (f", ETA ~{clock(eta)}" if done < total else "")
    )


# ------------------------------------------------------------------ report
def med(vals):
    vals = [v for v in vals if v is not None]
    if not vals:
        return None, None, None
    return statistics.median(vals), min(vals), max(vals)


def fmt(vals, nd=0, scale=1.0):
    m, lo, hi = med([v * scale if v is not None else None for v in vals])
    if m is None:
        return "–"

    def f(x):
        return f"{x:,.{nd}f}"

    if len(vals) == 1 or lo == hi:
        return f(m)
    return f"{f(m)} [{f(lo)}–{f(hi)}]"


COLUMNS = {
    "fanout": [
        ("deliveries/s", "deliveries_per_s", 0, 1),
        ("p50 ms", "p50_ms", 1, 1),
        ("p99 ms", "p99_ms", 0, 1),
        ("max ms", "max_ms", 0, 1),
        ("server CPU µs/delivery", "server_us_per_delivery", 1, 1),
        ("server CPU % of window", "server_util", 0, 100),
        ("lost", "lost", 0, 1),
        ("publish/s", "publish_per_s", 0, 1),
        ("loadgen CPU %", "client_util", 0, 100),
        ("other tenants, cores", "other_cores", 2, 1),
    ],
    "idle": [
        ("opened", "opened", 0, 1),
        ("live", "live_after_probe", 0, 1),
        ("RSS KiB/conn", "rss_kb_per_conn", 1, 1),
        ("RSS MiB after", "rss_mb_after", 0, 1),
        ("server CPU µs/conn", "server_cpu_us_per_conn", 0, 1),
        ("open s", "open_s", 1, 1),
        ("other tenants at start, cores", "background_cores_at_start", 2, 1),
    ],
    "lp": [
        ("round trips/s", "rt_per_s", 0, 1),
        ("msgs/s", "msgs_per_s", 0, 1),
        ("p50 ms", "p50_ms", 1, 1),
        ("p99 ms", "p99_ms", 1, 1),
        ("server CPU %", "server_util", 0, 100),
        ("loadgen CPU %", "client_util", 0, 100),
        ("other tenants, cores", "other_cores", 2, 1),
    ],
}


def cmd_report(a) -> None:
    with open(a.inp) as f:
        recs = [json.loads(ln) for ln in f if ln.strip()]
    for r in recs:  # CPU that other tenants of the machine used, averaged over the window
        w = r.get("window_s") or r.get("wall_s")
        if r.get("other_cpu_s") is not None and w:
            r["other_cores"] = r["other_cpu_s"] / w
    for scen, sc in SCENARIOS.items():
        rows = [r for r in recs if r["scenario"] == scen]
        if not rows:
            continue
        cols = COLUMNS[sc["kind"]]
        print(f"\n### {scen}: {sc['what']}\n")
        print("| peer | runs | " + " | ".join(c[0] for c in cols) + " |")
        print("|---|---|" + "---|" * len(cols))
        for name in PEERS:
            rs = [r for r in rows if r["peer"] == name]
            if not rs:
                continue
            ok = [r for r in rs if r["status"] in ("ok", "incomplete")]
            label = rs[0]["label"]
            if not ok:
                why = rs[0].get("error") or rs[0]["status"]
                print(f"| {label} | 0/{len(rs)} | {why} |" + " |" * (len(cols) - 1))
                continue
            cells = [fmt([r.get(k) for r in ok], nd, scale) for _, k, nd, scale in cols]
            print(f"| {label} | {len(ok)}/{len(rs)} | " + " | ".join(cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--peers", default=",".join(PEERS))
    r.add_argument("--scenarios", default="F1,F2,S1,C1")
    r.add_argument("--repeat", type=int, default=3)
    r.add_argument("--out", default=DEFAULT_OUT)
    r.add_argument("--server-cpus", default="0", help="CPU list for the server processes ('' = any)")
    r.add_argument("--client-cpus", default="1", help="CPU list for the load generator ('' = any)")
    r.add_argument("--conns", type=int, default=4, help="publisher connections")
    r.add_argument("--conc", type=int, default=100, help="subscriber connects in flight")
    r.add_argument("--max-s", type=float, default=90.0, help="hard deadline for one measurement")
    r.add_argument("--settle", type=float, default=0.5, help="seconds after the ports answer")
    r.add_argument("--subs", type=int, default=0, help="override the scenario's subscriber count")
    r.add_argument("--msgs", type=int, default=0, help="override the scenario's message count")
    r.add_argument("--lp-interval", type=float, default=0, help="L1: seconds between publishes")
    r.add_argument(
        "--quiet-cores",
        type=float,
        default=0.15,
        help="start a run only when other processes use less CPU than this (cores)",
    )
    r.add_argument("--quiet-max", type=float, default=90.0, help="longest wait for that, seconds")
    r.add_argument("-v", "--verbose", action="store_true", help="also a JSON summary per run")
    r.add_argument(
        "--cprofile",
        action="store_true",
        help="run Python servers under cProfile; <rundir>/<name>.prof (not for figures)",
    )
    rp = sub.add_parser("report")
    rp.add_argument("--in", dest="inp", default=DEFAULT_OUT)
    sub.add_parser("list")
    a = ap.parse_args()
    if a.cmd == "run":
        a.server_cpus = {int(c) for c in a.server_cpus.split(",") if c != ""}
        a.client_cpus = {int(c) for c in a.client_cpus.split(",") if c != ""}
        asyncio.run(cmd_run(a))
    elif a.cmd == "report":
        cmd_report(a)
    else:
        for n, p in PEERS.items():
            print(f"{n:16} {p.label:40} {','.join(p.transports)}")
        for n, s in SCENARIOS.items():
            print(f"{n:4} {s['what']}")


if __name__ == "__main__":
    main()
