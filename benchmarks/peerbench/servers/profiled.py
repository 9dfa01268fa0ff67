"""Run a Python server script under cProfile and write the profile when it is stopped.

usage: python profiled.py OUT.prof SCRIPT.py [ARGS...]
       python profiled.py OUT.prof -m MODULE [ARGS...]
uvicorn re-raises SIGTERM after its graceful shutdown, which would kill the process before
cProfile writes anything, so the profile is dumped just before that (and at a normal exit).
"""

import cProfile
import runpy
import signal
import sys

out, script = sys.argv[1], sys.argv[2]
module = None
if script == "-m":
    module = sys.argv[3]
    sys.argv = [module, *sys.argv[4:]]
else:
    sys.argv = sys.argv[2:]
prof = cProfile.Profile()
dumped = False


def dump():
    global dumped
    if not dumped:
        dumped = True
        prof.disable()
        prof.dump_stats(out)


_raise_signal = signal.raise_signal


def raise_signal(sig):
    dump()
    _raise_signal(sig)


signal.raise_signal = raise_signal
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # for servers that do not handle SIGTERM
prof.enable()
try:
    if module is not None:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    else:
        runpy.run_path(script, run_name="__main__")
finally:
    dump()
