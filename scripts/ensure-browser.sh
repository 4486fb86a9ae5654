#!/usr/bin/env bash
# Makes sure the console's browser tests have what they drive: Debian's Chromium (apt-get, once)
# and, in a private directory cached across runs ($KINETIC_BROWSER_DIR, default
# ~/.cache/kinetic-browser), playwright-core (which drives the system Chromium; Playwright's own
# browser download is never used) and axe-core (the accessibility checks run inside the page), from
# the npm registry at pinned versions. Prints nothing when all is there. The tests find the modules
# through $KINETIC_BROWSER_DIR (set by scripts/test.sh) or at the default path, and Chromium at
# /usr/bin/chromium or $KINETIC_CHROMIUM.
set -euo pipefail
dir=${KINETIC_BROWSER_DIR:-$HOME/.cache/kinetic-browser}
playwright=1.65.2
axe=4.14.1

if ! [ -x "${KINETIC_CHROMIUM:-/usr/bin/chromium}" ]; then
  echo "installing Debian's chromium (apt-get) for the console's browser tests..." >&2
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo=sudo; fi
  $sudo apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq chromium >/dev/null
fi

installed() {
  [ "$(node -p "require('$dir/node_modules/playwright-core/package.json').version" 2>/dev/null)" = "$playwright" ] &&
    [ "$(node -p "require('$dir/node_modules/axe-core/package.json').version" 2>/dev/null)" = "$axe" ]
}
if installed; then exit 0; fi

if ! command -v npm >/dev/null 2>&1; then
  echo "installing Node.js and npm (apt-get) for the console's browser tests..." >&2
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo=sudo; fi
  $sudo apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq nodejs npm >/dev/null
fi
echo "playwright-core $playwright and axe-core $axe are not installed; installing them into $dir (npm)..." >&2
mkdir -p "$dir"
[ -f "$dir/package.json" ] || echo '{"name": "kinetic-browser-tests", "private": true}' > "$dir/package.json"
npm install --prefix "$dir" --no-audit --no-fund --silent "playwright-core@$playwright" "axe-core@$axe" >&2
installed || { echo "error: installing playwright-core and axe-core into $dir failed" >&2; exit 1; }
