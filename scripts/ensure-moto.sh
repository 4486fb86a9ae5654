#!/usr/bin/env bash
# Makes sure moto's server (an S3, SQS and SNS emulator the S3Source tests run; the `server` extra
# brings its HTTP front end, Flask) is installed in a
# private virtualenv, cached across runs: $KINETIC_MOTO_VENV, default ~/.cache/kinetic-moto. Prints
# nothing when it is already there. The tests find it through $KINETIC_MOTO_SERVER (set by
# scripts/test.sh) or at the default path.
set -euo pipefail
venv=${KINETIC_MOTO_VENV:-$HOME/.cache/kinetic-moto}
version=5.2.5

installed() {
  [ -x "$venv/bin/moto_server" ] &&
    [ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("moto"))' 2>/dev/null)" = "$version" ] &&
    "$venv/bin/python" -c 'import moto.moto_server.werkzeug_app' 2>/dev/null
}
if installed; then exit 0; fi

echo "moto $version is not installed; installing it into $venv (pip)..." >&2
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet "moto[server,s3,sqs,sns]==$version"
installed || { echo "error: installing moto into $venv failed" >&2; exit 1; }
