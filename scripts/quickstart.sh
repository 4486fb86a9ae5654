#!/usr/bin/env bash
# The quickstart: builds kinetic, runs `kinetic up` on the embedded default (SQLite, one process)
# with examples/quickstart/, starts a subscriber that prints what it receives, sends events through
# the broker, and shows what each trigger delivered, the retries and the dead letters, and a
# function that starts from zero for an event and goes back to zero when idle. Everything it starts
# is stopped at the end (by PID); its state lives in a temporary directory.
#   KINETIC_PORT (default 8080, the public listener), ADMIN_PORT (default 8070, the admin API),
#   GATEWAY_PORT (default 8081) and DISPLAY_PORT (default 9090) choose the ports.
set -euo pipefail
cd "$(dirname "$0")/.."
kport=${KINETIC_PORT:-8080}
aport=${ADMIN_PORT:-8070}
dport=${DISPLAY_PORT:-9090}
gport=${GATEWAY_PORT:-8081}

bash scripts/ensure-build-deps.sh
echo "==> Building kinetic, the event-display subscriber and the hello-fn function (the first build takes a few minutes)..."
cargo build --locked -p kinetic -p event-display -p hello-fn
# Where cargo put them (CARGO_TARGET_DIR when set), as an absolute path.
bin=$(cd "${CARGO_TARGET_DIR:-target}" && pwd)/debug

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
# The CLI finds the admin token kinetic makes in its state directory, as it does in `.kinetic/`.
export KINETIC_STATE_DIR=$work

# The example as shipped, with the chosen subscriber port and the function this script built.
for file in examples/quickstart/*.yaml; do
  sed -e "s/127.0.0.1:9090/127.0.0.1:$dport/g" -e "s#target/release/hello-fn#$bin/hello-fn#" \
    "$file" > "$work/$(basename "$file")"
done

"$bin/event-display" "127.0.0.1:$dport" > "$work/display.log" 2>&1 &
pids+=($!)
# The subscriber is on loopback, which deliveries may reach only when allowed (the egress guard).
KINETIC_LOG=${KINETIC_LOG:-warn} "$bin/kinetic" up -f "$work/shop.yaml" -f "$work/receipts.yaml" \
  --config examples/quickstart/config/autoscaler.yaml --listen "127.0.0.1:$kport" \
  --admin-listen "127.0.0.1:$aport" --gateway-listen "127.0.0.1:$gport" --state-dir "$work" --store "sqlite://$work/state.db" \
  --egress-allow loopback 2> >(tee "$work/kinetic.log" >&2) &
pids+=($!)

server="http://127.0.0.1:$aport"
ingress="http://127.0.0.1:$kport"
ready() { "$bin/kinetic" get brokers --server "$server" >/dev/null 2>&1; }
for _ in $(seq 1 100); do
  ready && break
  sleep 0.1
done
ready || { echo "kinetic did not become ready; see the log above" >&2; exit 1; }

revision_column() { # the named column of the receipts function's revision in `kinetic get revisions`
  "$bin/kinetic" get revisions --server "$server" | awk -v col="$1" '$3 == "receipts" { print $col; exit }'
}

echo
echo "==> Triggers"
"$bin/kinetic" get triggers --server "$server"
echo
echo "==> The receipts function is at zero: nothing runs until an event arrives"
"$bin/kinetic" get revisions --server "$server"
echo
echo "==> Sending three events to broker default/default"
"$bin/kinetic" send --ingress "$ingress" --broker default/default --type com.example.order.created \
  --source /shop --id order-1 -e amount=42 --data '{"order":1,"amount":42}'
"$bin/kinetic" send --ingress "$ingress" --broker default/default --type com.example.order.created \
  --source /shop --id order-2 -e amount=250 --data '{"order":2,"amount":250}'
"$bin/kinetic" send --ingress "$ingress" --broker default/default --type com.example.order.shipped \
  --source /shop --id order-1-shipped --data '{"order":1}'

echo
echo "==> Waiting for deliveries, retries, dead letters and the function's cold start..."
for _ in $(seq 1 300); do
  [ "$(grep -c '/dead-letters' "$work/display.log" || true)" -ge 2 ] &&
    "$bin/kinetic" logs receipts --server "$server" 2>/dev/null | grep -q 'event order-1-shipped' && break
  sleep 0.1
done
echo
echo "==> What the subscriber received (GOT = 2xx answered, FAIL = 500 answered)"
grep -E '^(GOT|FAIL)' "$work/display.log" || true
echo
echo "==> Dead letters kept in the store (kinetic dlq list)"
"$bin/kinetic" dlq list --server "$server"
echo
echo "==> The shipped event started the receipts function (kinetic get revisions, kinetic logs receipts)"
"$bin/kinetic" get revisions --server "$server"
"$bin/kinetic" logs receipts --server "$server"
got=$(grep -c '^GOT' "$work/display.log" || true)
if [ "$got" -lt 6 ]; then
  echo "error: expected 6 successful deliveries (3 at /orders, 1 at /big-orders, 2 at /dead-letters), got $got" >&2
  exit 1
fi
if ! "$bin/kinetic" logs receipts --server "$server" | grep -q 'event order-1-shipped'; then
  echo "error: the receipts function did not receive order-1-shipped; see the log above" >&2
  exit 1
fi
echo
echo "==> Waiting for the idle function to go back to zero (6 s stable window + 4 s grace)..."
idle_since=$SECONDS
for _ in $(seq 1 600); do
  [ "$(revision_column 5)" = "0" ] && break
  sleep 0.1
done
if [ "$(revision_column 5)" != "0" ]; then
  echo "error: the receipts function still has instances after $((SECONDS - idle_since)) s" >&2
  exit 1
fi
"$bin/kinetic" get revisions --server "$server"
echo "back at zero after $((SECONDS - idle_since)) s idle"
echo
cat <<NEXT
==> Done. What happened:
  - trigger 'orders' (prefix filter) got all three events at /orders
  - trigger 'big-orders' (CESQL: amount >= 100) got only order-2 at /big-orders
  - trigger 'audit' hit a failing subscriber: 1 attempt + 2 retries each, then the events went to
    the dead-letter sink /dead-letters with knativeerrorcode=500 and stay listed by 'kinetic dlq list'
  - trigger 'receipts' woke the function 'receipts' from zero for order-1-shipped (a cold start,
    counted by 'kinetic get revisions'); idle, it was stopped again
Next:
  - run it yourself: cargo build --release -p kinetic -p event-display -p hello-fn, then
      target/release/kinetic up --egress-allow loopback -f examples/quickstart/ \\
        --config examples/quickstart/config/autoscaler.yaml
      target/release/event-display 127.0.0.1:9090      # in a second terminal
    send events with 'kinetic send', watch 'kinetic get revisions' and 'kinetic logs receipts',
    replay dead letters with 'kinetic dlq replay --trigger default/audit --all'
  - the three jobs (thumbnails of uploads, queue consumers, signed webhooks): examples/*/README.md
  - every resource and field: docs/resources.md; Prometheus metrics: GET /metrics on the admin
    listener (127.0.0.1:8070, with the token in .kinetic/admin-token)
  - exposing kinetic to a network (tokens, roles, EventPolicy, TLS): README.md
NEXT
