#!/usr/bin/env bash
# Makes sure PyJWT with the `cryptography` backend is installed in a private virtualenv, cached
# across runs: $KINETIC_PYJWT_VENV, default ~/.cache/kinetic-pyjwt. The end-to-end tests of
# EventPolicy sign tokens of an outside OIDC issuer with it (RS256, ES256, EdDSA), and make the test
# CA and certificates of the TLS tests with `cryptography`: implementations kinetic shares no code
# with. Prints nothing when it is already there. The tests find its Python through
# $KINETIC_PYJWT_PYTHON (set by scripts/test.sh) or at the default path.
set -euo pipefail
venv=${KINETIC_PYJWT_VENV:-$HOME/.cache/kinetic-pyjwt}
pyjwt=2.10.1
cryptography=45.0.7

installed() {
  [ -x "$venv/bin/python" ] &&
    [ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("pyjwt"), m.version("cryptography"))' 2>/dev/null)" = "$pyjwt $cryptography" ]
}
if installed; then exit 0; fi

echo "PyJWT $pyjwt is not installed; installing it into $venv (pip)..." >&2
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet "pyjwt==$pyjwt" "cryptography==$cryptography"
installed || { echo "error: installing PyJWT into $venv failed" >&2; exit 1; }
