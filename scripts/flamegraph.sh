#!/usr/bin/env bash
# The flamegraphs behind BENCHMARKS.md's "Where a delivery's CPU goes":
# where host-bridge spends its CPU on one delivery, and on one request to an
# HTTP component doing the same work.
#
#   scripts/flamegraph.sh [delivery|http|both]
#
# - delivery: `host-bridge up -f spin.toml --in-memory`, and CloudEvents
#   POSTed to `/orders-events` exactly as daprd posts them (the order
#   processor, a fresh instance per delivery).
# - http: the same work behind plain wasi:http, `handler/order-processor-http`
#   on an HTTP route, with the same CloudEvent as the request body.
#
# host-bridge runs on the second CPU and the load (wrk, 16 connections,
# closed loop) on the first, as `make bench` pins. perf samples host-bridge
# alone for PROFILE_SECONDS (8) with DWARF call graphs, and inferno (from
# crates.io, installed once into ~/.cache/host-bridge/tools) draws
# docs/bench/flamegraph-{delivery,http}.svg. The script prints the requests
# per second and the CPU per request it saw. Its load generator is wrk, not
# the harness's, so those two figures are this profile's own: the tables of
# BENCHMARKS.md come from `make bench`.
#
# Needs perf and wrk (Debian's linux-perf and wrk), and two CPUs.
set -euo pipefail
which=${1:-both}
seconds=${PROFILE_SECONDS:-8}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export PATH="$HOME/.cargo/bin:$PATH"

case $which in delivery|http|both) ;; *)
    echo "flamegraph: usage: scripts/flamegraph.sh [delivery|http|both], not '$which'" >&2; exit 2 ;;
esac
for tool in perf wrk curl taskset; do
    command -v $tool >/dev/null || { echo "flamegraph: needs $tool (apt-get install linux-perf wrk curl util-linux)" >&2; exit 2; }
done
[ "$(nproc)" -ge 2 ] || { echo "flamegraph: needs two CPUs, one for the load and one for host-bridge" >&2; exit 2; }

INFERNO_VERSION=0.12.3
inferno=$HOME/.cache/host-bridge/tools/inferno-$INFERNO_VERSION/bin
if [ ! -x "$inferno/inferno-flamegraph" ]; then
    echo "flamegraph: installing inferno $INFERNO_VERSION into $(dirname "$inferno"), once"
    cargo install --locked inferno --version $INFERNO_VERSION --root "$(dirname "$inferno")"
fi

echo "flamegraph: building host-bridge and the guests (release)"
cargo build --release -p host-bridge
cargo build --release --target wasm32-wasip2 -p order-api -p order-processor -p dead-letter -p order-processor-http

work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
mkdir -p docs/bench

# The CloudEvent daprd would post for one order (as the harness's delivery workload).
cat > "$work/event.lua" <<'EOF'
local n = 0
local path = os.getenv("PROFILE_PATH")
request = function()
  n = n + 1
  local body = '{"specversion":"1.0","id":"e-' .. n .. '","source":"bench","type":"com.dapr.event.sent",'
    .. '"datacontenttype":"application/json","topic":"orders","pubsubname":"pubsub",'
    .. '"traceid":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",'
    .. '"data":{"orderId":"o-' .. (n % 1000) .. '","customer":"ada","items":[{"sku":"book","qty":2,"price":12.5},{"sku":"pen","qty":3,"price":1.2}]}}'
  return wrk.format("POST", path, {["Content-Type"]="application/cloudevents+json"}, body)
end
EOF

cat > "$work/http.toml" <<EOF
spin_manifest_version = 2
[application]
name = "flamegraph-http"
[[trigger.http]]
route = "/process/..."
component = "order-processor-http"
[component.order-processor-http]
source = "$root/target/wasm32-wasip2/release/order_processor_http.wasm"
[component.order-processor-http.tool.host-bridge]
clock = true
EOF

port=${PORT:-3998}
ticks=$(getconf CLK_TCK)

profile() {
    local name=$1 manifest=$2 path=$3
    echo "flamegraph: $name: host-bridge on CPU 1, wrk on CPU 0"
    taskset -c 1 target/release/host-bridge up --manifest "$manifest" --in-memory \
        --listen 127.0.0.1:$port --sidecar-listen 127.0.0.1:$((port + 1)) \
        --cache-dir "$work/cache" > "$work/$name.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 600); do
        curl -sf 127.0.0.1:$port/healthz >/dev/null && break
        kill -0 $pid 2>/dev/null || { cat "$work/$name.log" >&2; exit 1; }
        sleep 0.2
    done
    export PROFILE_PATH=$path
    # Warm up, then profile the middle of a longer run.
    taskset -c 0 wrk -t1 -c16 -d3s -s "$work/event.lua" http://127.0.0.1:$port >/dev/null
    local before after
    before=$(awk '{print $14 + $15}' /proc/$pid/stat)
    taskset -c 0 wrk -t1 -c16 -d$((seconds + 2))s -s "$work/event.lua" http://127.0.0.1:$port > "$work/wrk.out" &
    local wrk=$!
    sleep 1
    perf record -q -F 499 --call-graph dwarf,16384 -p $pid -o "$work/perf.data" -- sleep "$seconds" 2>/dev/null
    wait $wrk
    after=$(awk '{print $14 + $15}' /proc/$pid/stat)
    kill $pid; wait $pid 2>/dev/null || true; pid=
    local requests rate
    requests=$(awk '/requests in/ {print $1}' "$work/wrk.out")
    rate=$(awk '/Requests\/sec/ {print $2}' "$work/wrk.out")
    if grep -q 'Non-2xx' "$work/wrk.out"; then
        echo "flamegraph: $name: some answers were not 2xx:" >&2; cat "$work/wrk.out" >&2; exit 1
    fi
    # --no-inline: addr2line hangs on the compiled guest code mapped from the cache.
    perf script --no-inline -i "$work/perf.data" 2>/dev/null \
        | "$inferno/inferno-collapse-perf" \
        | "$inferno/inferno-flamegraph" --title "host-bridge: $name (scripts/flamegraph.sh, $(git rev-parse --short HEAD))" \
        > "docs/bench/flamegraph-$name.svg"
    echo "flamegraph: $name: $rate req/s, $(( (after - before) * 1000000 / ticks / requests )) µs of host-bridge CPU per request (wrk, c=16, pinned) -> docs/bench/flamegraph-$name.svg"
}

[ "$which" = http ] || profile delivery spin.toml /orders-events
[ "$which" = delivery ] || profile http "$work/http.toml" /process/order
