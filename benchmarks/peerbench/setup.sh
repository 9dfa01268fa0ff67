#!/usr/bin/env bash
# Installs everything peerbench needs, outside the repository:
#   Debian: pushpin (brings condure and zurl), only with PEERBENCH_PUSHPIN=1 (optional, slow)
#   Python venv  $PEERBENCH_ENV/py    (default /tmp/peerbench-env/py)
#   npm packages $PEERBENCH_ENV/node  (ws, bufferutil)
# Safe to re-run. Needs root for apt-get (Debian 12, Python 3.11, Node 20).
set -euo pipefail
ENV_DIR="${PEERBENCH_ENV:-/tmp/peerbench-env}"

if [ "${PEERBENCH_PUSHPIN:-0}" = 1 ] && ! command -v pushpin >/dev/null; then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y pushpin   # brings condure and zurl
fi
# The benchmark starts its own Pushpin with a generated config (peers/pushpin.py). A system-wide
# pushpin service started by the package would hold the same ports (7999, 5560-5563): stop it.

if [ ! -x "$ENV_DIR/py/bin/python" ]; then
  python3 -m venv "$ENV_DIR/py"
fi
# pinned to the versions behind RESULTS.md, so that the anchors can be reproduced
"$ENV_DIR/py/bin/pip" install -q \
  'uvloop==0.23.0' 'picows==2.3.1' \
  'python-socketio==5.18.1' 'python-engineio==4.15.1' \
  'uvicorn[standard]==0.54.0' 'httptools==0.9.0' 'websockets==17.4' \
  'starlette==1.10.0' 'sse-starlette==3.7.0' \
  'py-spy==0.4.3'   # run.py profile (a sampling profiler; attaches by PID)

mkdir -p "$ENV_DIR/node"
if [ ! -f "$ENV_DIR/node/package.json" ]; then
  (cd "$ENV_DIR/node" && npm init -y >/dev/null)
fi
(cd "$ENV_DIR/node" && npm install --no-audit --no-fund 'ws@8.23.0' 'bufferutil@4.1.0' >/dev/null)

echo "peerbench environment ready in $ENV_DIR"
"$ENV_DIR/py/bin/python" - <<'EOF'
from importlib.metadata import version
for d in ("uvloop", "picows", "python-socketio", "python-engineio", "uvicorn", "starlette",
          "sse-starlette", "websockets", "httptools"):
    print(f"  {d} {version(d)}")
EOF
echo "  pushpin $(pushpin --version 2>/dev/null | tail -1 || echo 'not installed'), node $(node --version), ws $(node -p "require('$ENV_DIR/node/node_modules/ws/package.json').version")"
