#!/usr/bin/env bash
# Makes sure the Standard Webhooks reference library for Python (`standardwebhooks` on PyPI) is
# installed in a private virtualenv, cached across runs: $KINETIC_STANDARDWEBHOOKS_VENV, default
# ~/.cache/kinetic-standardwebhooks. The end-to-end tests of signed deliveries verify kinetic's
# signatures with it, an implementation kinetic shares no code with. Prints nothing when it is
# already there. The tests find its Python through $KINETIC_STANDARDWEBHOOKS_PYTHON (set by
# scripts/test.sh) or at the default path.
set -euo pipefail
venv=${KINETIC_STANDARDWEBHOOKS_VENV:-$HOME/.cache/kinetic-standardwebhooks}
version=1.1.0

installed() {
  [ -x "$venv/bin/python" ] &&
    [ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("standardwebhooks"))' 2>/dev/null)" = "$version" ] &&
    "$venv/bin/python" -c 'from standardwebhooks.webhooks import Webhook' 2>/dev/null
}
if installed; then exit 0; fi

echo "standardwebhooks $version is not installed; installing it into $venv (pip)..." >&2
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet "standardwebhooks==$version"
installed || { echo "error: installing standardwebhooks into $venv failed" >&2; exit 1; }
