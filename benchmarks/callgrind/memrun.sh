#!/bin/bash
# usage: memrun.sh SRC PORT NCONN  (TM=1: tracemalloc lines too)
SRC=$1; PORT=$2; N=$3
PY=${TIDINGS_PYTHON:-/work/main/.venv/bin/python}
ulimit -n $(ulimit -Hn)
export PYTHONPATH=$SRC PYTHONHASHSEED=0 PYTHONUNBUFFERED=1 NCONN=$N
$PY $(dirname $0)/memwrap.py serve --port $PORT --config ${TOML:-$(dirname $0)/bench.toml} &
SPID=$!
until (echo > /dev/tcp/127.0.0.1/$PORT) 2>/dev/null; do sleep 0.2; done
sleep 1; kill -USR2 $SPID; sleep 1
rm -f ${OUT:-/tmp}/opened-$PORT
env -u PYTHONPATH $PY $(dirname $0)/drive.py --port $PORT --subs $N --idle 600 --noprobe --marker ${OUT:-/tmp}/opened-$PORT &
CPID=$!
until [ -e ${OUT:-/tmp}/opened-$PORT ]; do sleep 0.5; done
sleep 3; kill -USR1 $SPID; sleep 3
kill $CPID; kill -TERM $SPID; wait $SPID
