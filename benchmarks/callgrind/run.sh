#!/bin/bash
# usage: run.sh SRC PORT MODE OUT -- drive args...
# MODE: plain | cg (callgrind) | prof (cProfile)
SRC=$1; PORT=$2; MODE=$3; OUT=$4; shift 5
PY=${TIDINGS_PYTHON:-/work/main/.venv/bin/python}
TOML=${TOML:-$(dirname $0)/bench-noflow.toml}
ulimit -n $(ulimit -Hn)
export PYTHONPATH=$SRC PYTHONHASHSEED=0 PYTHONUNBUFFERED=1
case $MODE in
  plain) $PY -m tidings serve --port $PORT --config $TOML & ;;
  cg) valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=$OUT -q $PY -m tidings serve --port $PORT --config $TOML & ;;
  prof) $PY $(dirname $0)/../peerbench/servers/profiled.py $OUT -m tidings serve --port $PORT --config $TOML & ;;
esac
SPID=$!
until (echo > /dev/tcp/127.0.0.1/$PORT) 2>/dev/null; do sleep 0.2; done
if [ $MODE = cg ]; then callgrind_control -i on $SPID >/dev/null; sleep 1; fi
env -u PYTHONPATH $PY $(dirname $0)/drive.py --port $PORT "$@"
kill -TERM $SPID
wait $SPID
