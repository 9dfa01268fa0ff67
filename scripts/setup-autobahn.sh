#!/bin/bash
# Set up the Autobahn WebSocket testsuite (wstest) on a private Python 2.7 unpacked from Debian 11
# packages (the PyPI autobahntestsuite is Python 2 only). Everything lands in ./.autobahn
# (git-ignored). Exits 0 with a message, leaving no .autobahn/ready, when packages cannot be fetched.
# See ../shared/recipes/autobahn.md for the measurements behind this (about 40 s, 143 MB).
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -f .autobahn/ready ] && ( . .autobahn/env.sh && wstest --autobahnversion >/dev/null 2>&1 ); then
  echo "autobahn: already set up in .autobahn"
  exit 0
fi
skip() { echo "autobahn: SKIPPED: $*" >&2; exit 0; }
command -v apt-get >/dev/null || skip "apt-get not available (needs a Debian-like machine)"
command -v dpkg >/dev/null || skip "dpkg not available"
rm -rf .autobahn
mkdir -p .autobahn && cd .autobahn && R=$PWD
MAIN=$(apt-cache policy | awk '$3 ~ /^bookworm\/main/ {print $2; exit}')
SEC=$(apt-cache policy | awk '$3 ~ /^bookworm-security\/main/ {print $2; exit}')
[ -n "$MAIN" ] || skip "no Debian bookworm mirror configured (run apt-get update first?)"
[ -n "$SEC" ] || SEC="$MAIN"
mkdir -p apt/lists/partial apt/cache/archives/partial apt/parts debs py27root
printf 'deb %s bullseye main\ndeb %s bullseye-security main\n' "$MAIN" "$SEC" > apt/sources.list
APT=(-o Dir::Etc::SourceList="$R/apt/sources.list" -o Dir::Etc::SourceParts="$R/apt/parts"
     -o Dir::State::Lists="$R/apt/lists" -o Dir::Cache="$R/apt/cache")
apt-get "${APT[@]}" update -qq 2>/dev/null || skip "cannot fetch the Debian 11 package lists"
(cd debs && apt-get "${APT[@]}" download -qq python2.7 python2.7-minimal libpython2.7-minimal \
    libpython2.7-stdlib libpython2.7 libpython2.7-dev python2.7-dev libssl1.1 libffi7 2>/dev/null) \
  || skip "cannot download the Python 2.7 packages from Debian 11"
for d in debs/*.deb; do dpkg -x "$d" py27root; done
cat > env.sh <<ENV
export LD_LIBRARY_PATH=$R/py27root/usr/lib/x86_64-linux-gnu
export PYTHONUSERBASE=$R/py27user
export PATH=$R/py27user/bin:$R/py27root/usr/bin:\$PATH
export CFLAGS="-I$R/py27root/usr/include -I$R/py27root/usr/include/python2.7"
export PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1
ENV
. ./env.sh
PY3=${PYTHON3:-python3}
$PY3 -m pip download -q --no-deps -d wheels 'pip==20.3.4' || skip "cannot download pip 20.3.4 from PyPI"
python2.7 wheels/pip-20.3.4-py2.py3-none-any.whl/pip install -q --user 'pip==20.3.4' 'setuptools==44.0.0' \
    'wheel==0.36.2' || skip "cannot install pip for Python 2.7"
pip2.7 install -q --user 'incremental==16.10.1' 'pyOpenSSL==19.1.0' 'cryptography==3.3.2' \
  || skip "cannot install the testsuite's crypto pins"
pip2.7 install -q --user --no-build-isolation 'Twisted==19.10.0' || skip "cannot install Twisted 19.10"
pip2.7 install -q --user --no-build-isolation 'txaio==2.1.0' 'zope.interface==4.6.0' 'jinja2==2.11.3' \
    'markupsafe==1.1.1' 'Werkzeug==1.0.1' 'klein==17.10.0' 'service_identity==18.1.0' 'unittest2==1.1.0' \
    'six==1.16.0' 'autobahn[twisted,accelerate]==0.10.9' || skip "cannot install autobahn 0.10.9"
pip2.7 install -q --user --no-deps 'autobahntestsuite==25.10.1' || skip "cannot install autobahntestsuite"
wstest --autobahnversion || skip "wstest does not run"
touch ready
echo "autobahn: ready in $R"
