#!/usr/bin/env bash
# Where a subscriber's time and memory go, under load: the measurements
# behind BENCHMARKS.md's "Python and JavaScript guests".
#
#   scripts/profile-guest.sh MANIFEST [fresh|reuse] [perf]
#
# Starts `target/release/host-bridge up -f MANIFEST --in-memory` (build it
# first), with its order processor on a fresh instance per delivery (`fresh`:
# the manifest's `instance_reuse` and `max_instances` lines removed) or as
# written (`reuse`), and publishes orders to the embedded broker
# (`POST /v1.0/publish/pubsub/orders`, so no HTTP component is involved) for
# SECONDS_OF_LOAD (10) seconds from wrk with 8 connections. It prints deliveries/s, host CPU per delivery, minor
# page faults per delivery and peak RSS; with `perf`, it also records a
# profile and prints where the time went, by binary and by symbol. Set
# CPUS=0 to pin host-bridge to one core (taskset), as BENCHMARKS.md does to
# show what cross-core TLB shootdowns cost.
#
# Needs wrk and, for `perf`, linux-perf (both from Debian).
set -euo pipefail
manifest=${1:?usage: scripts/profile-guest.sh MANIFEST [fresh|reuse] [perf]}
mode=${2:-fresh}
profile=${3:-}
seconds=${SECONDS_OF_LOAD:-10}
root=$(cd "$(dirname "$0")/.." && pwd)
host_bridge=$root/target/release/host-bridge
port=${PORT:-3999}
for tool in wrk curl; do
    command -v $tool >/dev/null || { echo "profile-guest: needs $tool (apt-get install $tool)" >&2; exit 2; }
done
[ -x "$host_bridge" ] || { echo "profile-guest: build it first: cargo build --release -p host-bridge" >&2; exit 2; }
[ -f "$manifest" ] || { echo "profile-guest: no manifest at $manifest" >&2; exit 2; }

pid=""
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
# The manifest is copied next to the original, so its relative paths hold.
copy=$(dirname "$manifest")/.profile-$$.toml
case $mode in
    fresh) grep -v -e '^instance_reuse' -e '^max_instances' "$manifest" > "$copy" ;;
    reuse) cp "$manifest" "$copy" ;;
    *) echo "profile-guest: mode is fresh or reuse, not $mode" >&2; exit 2 ;;
esac
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work" "$copy"' EXIT

cat > "$work/post.lua" <<'EOF'
wrk.method = "POST"
wrk.body = '{"orderId":"o-1","customer":"ada","items":[{"sku":"book","qty":2,"price":12.5}]}'
wrk.headers["Content-Type"] = "application/json"
EOF

${CPUS:+taskset -c "$CPUS"} "$host_bridge" up -f "$copy" --in-memory --listen "127.0.0.1:$port" \
    > "$work/host.log" 2>&1 &
pid=$!
for _ in $(seq 600); do
    curl -sf "127.0.0.1:$port/healthz" >/dev/null && break
    kill -0 "$pid" 2>/dev/null || { cat "$work/host.log" >&2; exit 1; }
    sleep 0.2
done
success() {
    curl -s "127.0.0.1:$port/metrics" | awk '/^host_bridge_deliveries_total\{outcome="success"\}/ { print $2 }'
}
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$pid/stat"; }
faults() { awk '{ print $10 }' "/proc/$pid/stat"; }

echo "profile-guest: $manifest, $mode instances, ${CPUS:+pinned to CPU $CPUS, }$seconds s of 8 connections" >&2
wrk -t1 -c8 -d1s -s "$work/post.lua" "http://127.0.0.1:$port/v1.0/publish/pubsub/orders" >/dev/null # warm up
sleep 1
before=$(success) ticks=$(cpu_ticks) minflt=$(faults) started=$(date +%s.%N)
if [ "$profile" = perf ]; then
    perf record -q -o "$work/perf.data" -p "$pid" -- sleep "$seconds" 2>/dev/null &
    perf_pid=$!
fi
wrk -t1 -c8 -d"${seconds}s" -s "$work/post.lua" "http://127.0.0.1:$port/v1.0/publish/pubsub/orders" >/dev/null
[ "$profile" = perf ] && wait "$perf_pid"
# Wait until the queue is drained: two equal readings a second apart.
last=-1
while :; do now=$(success); [ "$now" = "$last" ] && break; last=$now; sleep 1; done
elapsed=$(echo "$(date +%s.%N) - $started - 1" | bc)
n=$((now - before))
ticks_per_second=$(getconf CLK_TCK)
awk -v n="$n" -v t="$elapsed" -v cpu="$(( $(cpu_ticks) - ticks ))" -v hz="$ticks_per_second" \
    -v f="$(( $(faults) - minflt ))" -v rss="$(awk '/VmHWM/ { print $2 }' "/proc/$pid/status")" \
    'BEGIN { printf "deliveries: %d in %.1f s = %.0f/s; CPU per delivery %.0f us; page faults per delivery %.0f; peak RSS %.0f MiB\n",
                    n, t, n / t, cpu / hz / n * 1e6, f / n, rss / 1024 }'
if [ "$profile" = perf ]; then
    perf report -i "$work/perf.data" --sort dso --stdio 2>/dev/null | grep '%' | head -6
    perf report -i "$work/perf.data" --sort sym --stdio 2>/dev/null | grep "%" | head -15
fi
