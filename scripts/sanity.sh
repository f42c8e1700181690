#!/usr/bin/env bash
# ansible-test sanity --local on a copy of the collection laid out as
# ansible_collections/tokotani/dr (ansible-test requires that path).
#
# ansible-test bootstraps pip in its sanity venvs with a get-pip script it would
# download from a host this machine cannot reach; it looks first in its cache,
# so we place a small bootstrap there that uses ensurepip and then pip itself.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
venv=${VENV:-$here/.venv}

pip_version=$("$venv/bin/python" - <<'PY'
from ansible_test._internal.python_requirements import get_venv_packages
from ansible_test._internal.host_configs import NativePythonConfig
print(get_venv_packages(NativePythonConfig(version="3.11"))["pip"])
PY
)
cache="$HOME/.ansible/test/cache/get_pip_${pip_version//./_}.py"
mkdir -p "$(dirname "$cache")"
cat >"$cache" <<'PY'
"""Offline stand-in for get-pip.py: ensurepip, then pip install with the given arguments."""
import subprocess
import sys

args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"], stdout=subprocess.DEVNULL)
sys.exit(subprocess.call([sys.executable, "-m", "pip", "install", "--upgrade"] + args))
PY

work=$(mktemp -d /tmp/tokotani-sanity.XXXXXX)
trap 'rm -rf "$work"' EXIT
dest="$work/ansible_collections/tokotani/dr"
mkdir -p "$dest"
# Only what git would ship: tracked and new-but-not-ignored files.
(cd "$here" && git ls-files -co --exclude-standard -z | tar --null -T - -cf -) | tar -xf - -C "$dest"
cd "$dest"
git init -q && git add -A >/dev/null
"$venv/bin/ansible-test" sanity --local --python 3.11 --color no "$@"
