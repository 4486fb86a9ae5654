#!/usr/bin/env bash
# Makes sure the tools that check deploy/ offline are here (no Kubernetes API server can run on
# this machine): `kubectl` for `kubectl kustomize` (the one on PATH, or Debian's
# kubernetes-client, with apt-get, once) and PyPI's kubernetes-validate, which bundles the
# Kubernetes schemas, in a private virtualenv cached across runs: $KINETIC_K8S_VENV, default
# ~/.cache/kinetic-k8s. Prints nothing when both are there. The tests find them through
# $KINETIC_KUBECTL and $KINETIC_KUBERNETES_VALIDATE (set by scripts/test.sh) or on PATH and at the
# default path.
set -euo pipefail
venv=${KINETIC_K8S_VENV:-$HOME/.cache/kinetic-k8s}
validate=1.37.0

if ! command -v kubectl >/dev/null 2>&1; then
  echo "kubectl is not installed; installing Debian's kubernetes-client (apt-get, once)..." >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq kubernetes-client >/dev/null
fi

installed() {
  [ -x "$venv/bin/kubernetes-validate" ] &&
    [ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("kubernetes-validate"))' 2>/dev/null)" = "$validate" ]
}
if installed; then exit 0; fi
echo "kubernetes-validate $validate is not installed; installing it into $venv (pip)..." >&2
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet "kubernetes-validate==$validate"
installed || { echo "error: installing kubernetes-validate into $venv failed" >&2; exit 1; }
