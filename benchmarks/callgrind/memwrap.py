"""tidings serve, with SIGUSR2: mark (RSS, and a tracemalloc snapshot with TM=1), SIGUSR1: report
the growth per connection since the mark ($NCONN connections; memrun.sh, drive.py --idle)."""

import gc
import os
import runpy
import signal
import sys
import tracemalloc

TM = os.environ.get("TM") == "1"
if TM:
    tracemalloc.start(1)
snap0 = None
rss0 = None


def rss():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def mark(*_):
    global snap0, rss0
    gc.collect()
    rss0 = rss()
    if TM:
        snap0 = tracemalloc.take_snapshot()
    print(f"MEMMARK rss={rss0}", file=sys.stderr, flush=True)


def report(*_):
    gc.collect()
    n = int(os.environ.get("NCONN", "1"))
    r = rss()
    print(f"MEMREPORT rss={r} growth/conn={(r - rss0) / n:.0f} B", file=sys.stderr, flush=True)
    if TM:
        snap = tracemalloc.take_snapshot()
        stats = snap.compare_to(snap0, "lineno")
        tot = sum(s.size_diff for s in stats)
        print(f"MEMREPORT traced growth/conn={tot / n:.1f} B", file=sys.stderr)
        for s in stats[:25]:
            print(
                f"  {s.size_diff / n:8.1f} B/conn {s.count_diff / n:6.2f} blk/conn {s.traceback}",
                file=sys.stderr,
            )
        sys.stderr.flush()


signal.signal(signal.SIGUSR1, report)
signal.signal(signal.SIGUSR2, mark)
sys.argv = ["tidings", *sys.argv[1:]]
runpy.run_module("tidings", run_name="__main__", alter_sys=True)
