#!/usr/bin/env bash
# Runs a local S3 and SQS (moto) on 127.0.0.1:${S3_PORT:-5000} in the foreground for the image
# pipeline example, with the bucket `photos` telling the queue `photos-events` about every object
# created in it. Installs moto first when missing (scripts/ensure-moto.sh). Ctrl-C stops it.
# Upload with any S3 client, e.g.:
#   ~/.cache/kinetic-moto/bin/python scripts/s3.sh.py upload cat.jpg uploads/cat.jpg
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-moto.sh
venv=${KINETIC_MOTO_VENV:-$HOME/.cache/kinetic-moto}
port=${S3_PORT:-5000}
"$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >/dev/null 2>&1 &
moto=$!
trap 'kill "$moto" 2>/dev/null' EXIT INT TERM
for _ in $(seq 1 100); do
  (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done
S3_ENDPOINT="http://127.0.0.1:$port" "$venv/bin/python" scripts/s3.sh.py setup
echo "S3 and SQS on http://127.0.0.1:$port: bucket photos, queue photos-events (Ctrl-C stops)" >&2
wait "$moto"
