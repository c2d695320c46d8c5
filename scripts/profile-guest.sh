#!/usr/bin/env bash
# Where a subscriber's time and memory go, under load: the profiles behind
# BENCHMARKS.md's "Python and JavaScript guests".
#
#   scripts/profile-guest.sh MANIFEST [fresh|reuse] [perf]
#
# Starts `target/release/host-bridge up -f MANIFEST --in-memory` (build it
# first), with its order processor on a fresh instance per delivery (`fresh`:
# the manifest's `instance_reuse` and `max_instances` lines removed) or as
# written (`reuse`), and publishes orders to the embedded broker
# (`POST /v1.0/publish/pubsub/orders` on its sidecar API, on PORT + 1, so
# no HTTP component is involved) for SECONDS_OF_LOAD (10) seconds from wrk
# with 8 connections, then waits until every published order is processed
# (counted in the time). It prints
# deliveries/s, host CPU per delivery, minor page faults per delivery and
# peak RSS; with `perf`, it also records a profile and prints where the time
# went, by binary and by symbol.
#
# Pinned as `make bench` pins: wrk on the first CPU (LOAD_CPUS), host-bridge
# on the others (CPUS); on a one-CPU machine, or with PIN=0, nothing is
# pinned. Its load generator is wrk, not the harness's, so its figures are
# its own: they are not comparable with `make bench`'s tables, and its
# output says so.
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
# The embedded broker's publish API is on the sidecar listener, not the app's.
sidecar_port=$((port + 1))
for tool in wrk curl taskset; do
    command -v $tool >/dev/null || { echo "profile-guest: needs $tool (apt-get install $tool)" >&2; exit 2; }
done
[ -x "$host_bridge" ] || { echo "profile-guest: build it first: cargo build --release -p host-bridge" >&2; exit 2; }
[ -f "$manifest" ] || { echo "profile-guest: no manifest at $manifest" >&2; exit 2; }

# The CPUs: the first for wrk, the rest for host-bridge, unless told.
first_cpu=$(taskset -pc $$ | sed 's/.*: //; s/[-,].*//')
if [ "${PIN:-1}" = 0 ] || [ "$(nproc)" -lt 2 ]; then
    load_pin="" host_pin="" pinning="not pinned"
else
    load_cpus=${LOAD_CPUS:-$first_cpu}
    host_cpus=${CPUS:-$(seq 0 $(($(nproc --all) - 1)) | grep -vx "$load_cpus" | paste -sd,)}
    load_pin="taskset -c $load_cpus" host_pin="taskset -c $host_cpus"
    pinning="wrk on CPU $load_cpus, host-bridge on CPU $host_cpus"
fi

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

$host_pin "$host_bridge" up -f "$copy" --in-memory --listen "127.0.0.1:$port" \
    --sidecar-listen "127.0.0.1:$sidecar_port" \
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

echo "profile-guest: $manifest, $mode instances, $pinning, $seconds s of 8 connections" >&2
$load_pin wrk -t1 -c8 -d1s -s "$work/post.lua" "http://127.0.0.1:$sidecar_port/v1.0/publish/pubsub/orders" >/dev/null # warm up
sleep 1
before=$(success) ticks=$(cpu_ticks) minflt=$(faults) started=$(date +%s.%N)
if [ "$profile" = perf ]; then
    perf record -q -o "$work/perf.data" -p "$pid" -- sleep "$seconds" 2>/dev/null &
    perf_pid=$!
fi
$load_pin wrk -t1 -c8 -d"${seconds}s" -s "$work/post.lua" "http://127.0.0.1:$sidecar_port/v1.0/publish/pubsub/orders" >/dev/null
[ "$profile" = perf ] && wait "$perf_pid"
# Wait until the queue is drained: two equal readings a second apart.
last=-1
while :; do now=$(success); [ "$now" = "$last" ] && break; last=$now; sleep 1; done
elapsed=$(echo "$(date +%s.%N) - $started - 1" | bc)
n=$((now - before))
ticks_per_second=$(getconf CLK_TCK)
awk -v n="$n" -v t="$elapsed" -v cpu="$(( $(cpu_ticks) - ticks ))" -v hz="$ticks_per_second" \
    -v f="$(( $(faults) - minflt ))" -v rss="$(awk '/VmHWM/ { print $2 }' "/proc/$pid/status")" \
    -v pinning="$pinning" \
    'BEGIN { printf "profile-guest (wrk, %s; not the make bench harness, not comparable with its tables): deliveries: %d in %.1f s = %.0f/s; CPU per delivery %.0f us; page faults per delivery %.0f; peak RSS %.0f MiB\n",
                    pinning, n, t, n / t, cpu / hz / n * 1e6, f / n, rss / 1024 }'
if [ "$profile" = perf ]; then
    perf report -i "$work/perf.data" --sort dso --stdio 2>/dev/null | grep '%' | head -6
    perf report -i "$work/perf.data" --sort sym --stdio 2>/dev/null | grep "%" | head -15
fi
