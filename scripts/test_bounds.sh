#!/usr/bin/env bash
# The engine tests against the lowest and against the highest uvicorn and websockets that
# pyproject.toml allows (the engines build on their internals: tidings/engines/uvicorn_internals.py),
# each in its own venv (.venv-lowest, .venv-highest); every other package as constraints.txt pins it.
# Usage: scripts/test_bounds.sh [lowest|highest|both] [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
sides=${1:-both}
shift || true
[ "$sides" = both ] && sides="lowest highest"
tests=("$@")
[ ${#tests[@]} -gt 0 ] || tests=(tests/fast tests/e2e/test_websocket.py tests/e2e/test_hostile_clients.py tests/transports -x)

# "uvicorn[standard]>=0.35,<0.56" -> lowest: uvicorn[standard]==0.35; highest: the range itself
requirements() {
  "$PYTHON" - "$1" <<'PY'
import re, sys, tomllib
side = sys.argv[1]
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
for dep in deps:
    name = re.match(r"[A-Za-z0-9_.-]+", dep).group(0).lower()
    if name not in ("uvicorn", "websockets"):
        continue
    spec = dep.split(";")[0].strip()
    lowest = re.search(r">=\s*([0-9][^,\s]*)", spec)
    if lowest is None or "<" not in spec:
        sys.exit(f"pyproject.toml: {dep!r} needs a lower (>=) and an upper (<) bound")
    print(re.sub(r"(>=|<|,).*", "", spec) + "==" + lowest.group(1) if side == "lowest" else spec)
PY
}

for side in $sides; do
  venv=.venv-$side
  echo "== $side: $(requirements "$side" | tr '\n' ' ')"
  [ -x "$venv/bin/python" ] || "$PYTHON" -m venv "$venv"
  "$venv/bin/python" -m pip install -q -c constraints.txt --upgrade pip
  # constraints.txt pins both to today's versions: without those two pins here
  grep -v -i -E '^(uvicorn|websockets)==' constraints.txt > "$venv/constraints.txt"
  mapfile -t reqs < <(requirements "$side")
  "$venv/bin/python" -m pip install -q --upgrade -c "$venv/constraints.txt" -e '.[test]' "${reqs[@]}"
  "$venv/bin/python" -m pip freeze | grep -i -E '^(uvicorn|websockets)=='
  "$venv/bin/python" -m pytest -q -p no:cacheprovider "${tests[@]}"
done
