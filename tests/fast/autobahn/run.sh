#!/bin/bash
# Autobahn fuzzing client against the fast server's /ws-echo (server.debug_echo = true).
# Usage, from the repository root: bash tests/fast/autobahn/run.sh ["1.*,2.*,..."]
# Sets up a private Python 2.7 + autobahntestsuite in ./.autobahn on first use (recipe:
# setup-autobahn.sh); skips cleanly (exit 0) when that cannot be fetched. Reports land in
# ./.autobahn/reports/servers/index.json and a summary is printed.
set -uo pipefail
ROOT=$(pwd)
CASES=${1:-"1.*,2.*,3.*,4.*,5.*,6.*,7.*,9.*,10.*"}
PORT=${AUTOBAHN_PORT:-9102}
PY=${PYTHON:-python}
if [ ! -f .autobahn/env.sh ]; then
    if ! bash "$(dirname "$0")/setup-autobahn.sh"; then
        echo "autobahn: could not set up the test suite here; skipped"; exit 0
    fi
fi
cd .autobahn
printf 'log_level = "warning"\ndemo = false\n[server]\ndebug_echo = true\n' > echo.toml
CASE_JSON=$(echo "$CASES" | sed 's/[^,][^,]*/"&"/g')
cat > fuzzingclient.json <<JSON
{"outdir": "./reports/servers",
 "servers": [{"agent": "tidings-fast", "url": "ws://127.0.0.1:$PORT/ws-echo"}],
 "cases": [$CASE_JSON], "exclude-cases": [], "exclude-agent-cases": {}}
JSON
PYTHONPATH="$ROOT/src" "$PY" -m tidings serve --port "$PORT" --config echo.toml > server.log 2>&1 &
SPID=$!
trap 'kill $SPID 2>/dev/null' EXIT
sleep 3
( . ./env.sh && timeout 3000 wstest -m fuzzingclient -s fuzzingclient.json > wstest.log 2>&1 )
"$PY" - <<'PYEOF'
import collections, json
cases = json.load(open("reports/servers/index.json"))["tidings-fast"]
print(len(cases), "cases:", dict(collections.Counter(v["behavior"] for v in cases.values())),
      "close:", dict(collections.Counter(v["behaviorClose"] for v in cases.values())))
for case, v in sorted(cases.items()):
    if v["behavior"] not in ("OK", "INFORMATIONAL", "NON-STRICT") or v["behaviorClose"] not in ("OK", "INFORMATIONAL"):
        print("FAILED", case, v["behavior"], v["behaviorClose"], v["remoteCloseCode"])
PYEOF
