#!/usr/bin/env bash
# The quickstart: builds kinetic, runs `kinetic up` on the embedded default (SQLite, one process)
# with examples/quickstart/, starts a subscriber that prints what it receives, sends events through
# the broker, and shows what each trigger delivered, the retries and the dead letters. Everything
# it starts is stopped at the end (by PID); its state lives in a temporary directory.
#   KINETIC_PORT (default 8080) and DISPLAY_PORT (default 9090) choose the ports.
set -euo pipefail
cd "$(dirname "$0")/.."
kport=${KINETIC_PORT:-8080}
dport=${DISPLAY_PORT:-9090}
gport=${GATEWAY_PORT:-8081}

echo "==> Building kinetic and the event-display subscriber (the first build takes a few minutes)..."
cargo build --locked -p kinetic -p event-display
bin=target/debug

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

sed "s/127.0.0.1:9090/127.0.0.1:$dport/g" examples/quickstart/shop.yaml > "$work/shop.yaml"

"$bin/event-display" "127.0.0.1:$dport" > "$work/display.log" 2>&1 &
pids+=($!)
# The subscriber is on loopback, which deliveries may reach only when allowed (the egress guard).
KINETIC_LOG=${KINETIC_LOG:-warn} "$bin/kinetic" up -f "$work/shop.yaml" --listen "127.0.0.1:$kport" --gateway-listen "127.0.0.1:$gport" \
  --store "sqlite://$work/state.db" --egress-allow loopback 2> >(tee "$work/kinetic.log" >&2) &
pids+=($!)

server="http://127.0.0.1:$kport"
ready() { "$bin/kinetic" get brokers --server "$server" >/dev/null 2>&1; }
for _ in $(seq 1 100); do
  ready && break
  sleep 0.1
done
ready || { echo "kinetic did not become ready; see the log above" >&2; exit 1; }

echo
echo "==> Triggers"
"$bin/kinetic" get triggers --server "$server"
echo
echo "==> Sending three events to broker default/default"
"$bin/kinetic" send --server "$server" --broker default/default --type com.example.order.created \
  --source /shop --id order-1 -e amount=42 --data '{"order":1,"amount":42}'
"$bin/kinetic" send --server "$server" --broker default/default --type com.example.order.created \
  --source /shop --id order-2 -e amount=250 --data '{"order":2,"amount":250}'
"$bin/kinetic" send --server "$server" --broker default/default --type com.example.order.shipped \
  --source /shop --id order-1-shipped --data '{"order":1}'

echo
echo "==> Waiting for deliveries, retries and dead letters..."
for _ in $(seq 1 100); do
  [ "$(grep -c '/dead-letters' "$work/display.log" || true)" -ge 2 ] && break
  sleep 0.1
done
echo
echo "==> What the subscriber received (GOT = 2xx answered, FAIL = 500 answered)"
grep -E '^(GOT|FAIL)' "$work/display.log" || true
echo
echo "==> Dead letters kept in the store (kinetic dlq list)"
"$bin/kinetic" dlq list --server "$server"
echo
got=$(grep -c '^GOT' "$work/display.log" || true)
if [ "$got" -lt 6 ]; then
  echo "error: expected 6 successful deliveries (3 at /orders, 1 at /big-orders, 2 at /dead-letters), got $got" >&2
  exit 1
fi
cat <<NEXT
==> Done. What happened:
  - trigger 'orders' (prefix filter) got all three events at /orders
  - trigger 'big-orders' (CESQL: amount >= 100) got only order-2 at /big-orders
  - trigger 'audit' hit a failing subscriber: 1 attempt + 2 retries each, then the events went to
    the dead-letter sink /dead-letters with knativeerrorcode=500 and stay listed by 'kinetic dlq list'
Next: run it yourself with 'target/debug/kinetic up --egress-allow loopback -f examples/quickstart/', send events with
'kinetic send', replay dead letters with 'kinetic dlq replay --trigger default/audit --all'.
NEXT
