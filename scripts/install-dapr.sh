#!/usr/bin/env bash
# Installs what the Dapr integration tests need, idempotently:
#   - daprd (the real Dapr sidecar, v1.18.3) built from Go modules via tests/daprd,
#     installed as ~/.dapr/bin/daprd; rebuilt when tests/daprd (its component set)
#     changes, which ~/.dapr/bin/daprd.stamp records
#   - ~/.dapr/config.yaml and ~/.dapr/components (the self-hosted layout `dapr run` expects)
#   - redis-server (Debian package) if it is not on PATH
#   - docker-registry (Debian package: the distribution registry) if it is not
#     on PATH, for the tests of `host-bridge push` and `up --from`
#   - the Dapr CLI (`dapr`), best effort: built from the newest github.com/dapr/cli
#     module version the Go module proxy serves, checked against our daprd, then
#     installed to /usr/local/bin/dapr. Failure here is reported, not fatal.
#
# Prebuilt Dapr release binaries can't be downloaded on this project's machines,
# which is why everything is compiled from Go modules.
#
# Environment overrides:
#   DAPR_CLI_VERSIONS  space-separated CLI versions to try, newest first
#   DAPR_CLI_BIN       where to install the CLI (default /usr/local/bin/dapr)
#   SKIP_DAPR_CLI=1    don't try to build the CLI at all
set -euo pipefail

DAPR_VERSION=1.18.3
# The proxy refuses the module zips of github.com/dapr/cli v1.13.0 .. v1.18.x
# (403 "This module version is not available."); v1.12.0 is served and works with
# daprd 1.18.3 for `dapr run`. Newer versions are listed first so they're picked
# up automatically if they become available.
DAPR_CLI_VERSIONS=${DAPR_CLI_VERSIONS:-"1.18.0 1.17.0 1.16.0 1.15.0 1.14.0 1.13.0 1.12.0"}
DAPR_CLI_BIN=${DAPR_CLI_BIN:-/usr/local/bin/dapr}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DAPR_HOME="$HOME/.dapr"
DAPRD="$DAPR_HOME/bin/daprd"

log() { echo "[install-dapr] $*"; }
warn() { echo "[install-dapr] WARNING: $*" >&2; }

TMP=$(mktemp -d)
CLEANUP_PIDS=()
cleanup() {
  for pid in "${CLEANUP_PIDS[@]+"${CLEANUP_PIDS[@]}"}"; do
    kill "$pid" 2>/dev/null || true
  done
  rm -rf "$TMP"
}
trap cleanup EXIT

export GOTOOLCHAIN=auto CGO_ENABLED=0
# -mod=mod: never `go mod tidy` these modules (tidy resolves test deps whose
# versions the proxy refuses); the committed go.sum already covers the build.
GOFLAGS_BUILD=(-mod=mod -buildvcs=false -trimpath)

ensure_go() {
  if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
    export PATH="/usr/local/go/bin:$PATH"
  fi
  if ! command -v go >/dev/null 2>&1; then
    log "go not found; installing Debian's golang-go (GOTOOLCHAIN=auto fetches the Go version go.mod asks for)"
    apt_install golang-go
  fi
}

APT_UPDATED=0
apt_install() {
  if [ "$APT_UPDATED" = 0 ]; then
    log "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    APT_UPDATED=1
  fi
  log "apt-get install $*"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" > "$TMP/apt.log" 2>&1; then
    cat "$TMP/apt.log" >&2
    return 1
  fi
  grep -E 'policy-rc.d|invoke-rc.d' "$TMP/apt.log" | sed 's/^/    /' || true
}

# build_with_progress TOTAL go build ...: progress lines for a long Go build.
source "$ROOT/scripts/go-build.sh"

# --- daprd -------------------------------------------------------------------
# What the daprd build depends on besides the module cache, one "sha256  file"
# line per file (plus the Dapr version). Written next to the binary as
# daprd.stamp after a build; a daprd whose stamp differs is rebuilt, so adding a
# component to tests/daprd/main.go reaches ~/.dapr/bin/daprd on the next run.
DAPRD_STAMP="$DAPRD.stamp"
daprd_sources_stamp() {
  local src=$1
  echo "daprd $DAPR_VERSION"
  (cd "$src" && find main.go go.mod go.sum overlay -type f | LC_ALL=C sort | xargs sha256sum)
}

# The files (or the Dapr version) that differ between two stamps, comma-separated.
daprd_stamp_changes() {
  diff <(printf '%s\n' "$1") <(printf '%s\n' "$2") |
    awk '/^[<>] / { print ($2 == "daprd" ? "the Dapr version" : $3) }' | LC_ALL=C sort -u | paste -sd, - |
    sed 's/,/, /g'
}

# Why the installed daprd must be rebuilt, or nothing when it is up to date.
daprd_rebuild_reason() {
  local want=$1 have stamp
  if [ ! -x "$DAPRD" ]; then
    echo "$DAPRD does not exist"
    return
  fi
  have=$("$DAPRD" --version 2>/dev/null || true)
  if [ "$have" != "$DAPR_VERSION" ]; then
    echo "$DAPRD reports version '$have', want $DAPR_VERSION"
    return
  fi
  if [ ! -f "$DAPRD_STAMP" ]; then
    echo "$DAPRD_STAMP is missing (a daprd built before stamps, or by hand: its components are unknown)"
    return
  fi
  stamp=$(cat "$DAPRD_STAMP")
  [ "$stamp" = "$want" ] && return
  echo "tests/daprd changed since the last build: $(daprd_stamp_changes "$stamp" "$want") (the stamp is $DAPRD_STAMP)"
}

install_daprd() {
  local src="$ROOT/tests/daprd" want reason have
  want=$(daprd_sources_stamp "$src")
  reason=$(daprd_rebuild_reason "$want")
  if [ -z "$reason" ]; then
    log "daprd $DAPR_VERSION already installed at $DAPRD (built from the current tests/daprd, per $DAPRD_STAMP)"
    return
  fi
  log "rebuilding daprd: $reason"
  ensure_go
  local start=$SECONDS
  # Measured here with the Kafka, RabbitMQ, JetStream and MQTT components in, on
  # 2 cores shared with a Rust build: 230 s with an empty Go build cache (the
  # module downloads took seconds more); 50 s when the cache held the daprd
  # without them; 6 s when only main.go's comments changed.
  log "building daprd $DAPR_VERSION from $src (cold build takes ~4 min on 2 cores; cached rebuilds are faster)"
  cd "$src"

  # The overlay below must replace a file inside github.com/dapr/dapr, and Go
  # refuses overlays beneath GOMODCACHE, so go.mod points the module at a local
  # copy of the checksum-verified download (_deps/dapr, git-ignored).
  if [ "$(cat _deps/dapr.version 2>/dev/null || true)" != "v$DAPR_VERSION" ]; then
    log "downloading github.com/dapr/dapr@v$DAPR_VERSION into tests/daprd/_deps/dapr"
    local dir
    dir=$(cd "$TMP" && printf 'module probe\n\ngo 1.21\n' > go.mod &&
      GOFLAGS=-mod=mod go mod download -json "github.com/dapr/dapr@v$DAPR_VERSION" |
      sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
    [ -n "$dir" ] && [ -f "$dir/go.mod" ] || { echo "could not download github.com/dapr/dapr@v$DAPR_VERSION" >&2; exit 1; }
    rm -rf _deps/dapr _deps/dapr.version
    mkdir -p _deps
    cp -r "$dir" _deps/dapr
    chmod -R u+w _deps/dapr
    echo "v$DAPR_VERSION" > _deps/dapr.version
  fi
  printf '{"Replace":{"%s/_deps/dapr/cmd/daprd/components/zz_notag.go":"%s/overlay/components_empty.go"}}\n' \
    "$PWD" "$PWD" > overlay.json

  local total
  log "resolving dependencies (downloads modules on a fresh machine)"
  total=$(go list "${GOFLAGS_BUILD[@]}" -overlay overlay.json -deps . 2>/dev/null | wc -l || echo "?")
  build_with_progress "$total" go build -v "${GOFLAGS_BUILD[@]}" -overlay overlay.json \
    -ldflags "-s -w -X github.com/dapr/dapr/pkg/buildinfo.version=$DAPR_VERSION -X github.com/dapr/kit/logger.DaprVersion=$DAPR_VERSION" \
    -o "$TMP/daprd" .
  mkdir -p "$DAPR_HOME/bin"
  # No moment where the new binary sits beside the old stamp.
  rm -f "$DAPRD_STAMP"
  install -m 0755 "$TMP/daprd" "$DAPRD"
  have=$("$DAPRD" --version)
  [ "$have" = "$DAPR_VERSION" ] || { echo "built daprd reports version '$have', expected $DAPR_VERSION" >&2; exit 1; }
  # Stamp what the build actually used: `-mod=mod` may have added lines to
  # go.mod/go.sum, and a fresh machine needs them committed.
  local built
  built=$(daprd_sources_stamp "$src")
  if [ "$built" != "$want" ]; then
    warn "the build changed tests/daprd/{$(daprd_stamp_changes "$want" "$built")}: commit that so a fresh machine builds the same daprd"
  fi
  printf '%s\n' "$built" > "$DAPRD_STAMP.tmp"
  mv "$DAPRD_STAMP.tmp" "$DAPRD_STAMP"
  log "installed daprd $have at $DAPRD (build took $((SECONDS - start))s; stamp $DAPRD_STAMP)"
  cd "$ROOT"
}

# --- ~/.dapr layout ----------------------------------------------------------
install_dapr_home() {
  mkdir -p "$DAPR_HOME/bin"
  if [ -d "$DAPR_HOME/components" ]; then
    log "$DAPR_HOME/components exists"
  else
    mkdir -p "$DAPR_HOME/components"
    log "created $DAPR_HOME/components"
  fi
  if [ -f "$DAPR_HOME/config.yaml" ]; then
    log "$DAPR_HOME/config.yaml exists"
  else
    cat > "$DAPR_HOME/config.yaml" <<'EOF'
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: daprConfig
spec:
  tracing:
    samplingRate: "1"
EOF
    log "wrote $DAPR_HOME/config.yaml"
  fi
}

# --- Debian packages whose service must not start ------------------------------
# redis-server and docker-registry: the tests run their own, on their own ports.
install_debian_server() {
  local package=$1 command=$2
  if command -v "$command" >/dev/null 2>&1; then
    log "$package already installed"
    return
  fi
  log "installing $package (Debian package)"
  # Keep the package's service from starting. policy-rc.d exit 101 = "action
  # not allowed" for invoke-rc.d and deb-systemd-invoke. Only ours is removed
  # afterwards.
  local policy=/usr/sbin/policy-rc.d created_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod 0755 "$policy"
    created_policy=1
  fi
  local rc=0
  apt_install "$package" || rc=$?
  if [ "$created_policy" = 1 ]; then rm -f "$policy"; fi
  [ "$rc" = 0 ] || { echo "apt-get install $package failed ($rc)" >&2; exit "$rc"; }
  log "installed $package"
}

# --- Dapr CLI (best effort) --------------------------------------------------
free_port() {
  local p
  for p in $(seq 39000 39400); do
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return
    fi
  done
  echo 39555
}

# Checks that a dapr CLI binary can start our daprd: `dapr run` with an
# in-memory pubsub and no app; daprd's /v1.0/healthz/outbound must answer 204.
verify_cli() {
  local cli=$1 dir="$TMP/cli-smoke" port code=000 i pid
  mkdir -p "$dir/res"
  cat > "$dir/res/pubsub.yaml" <<'EOF'
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: pubsub
spec:
  type: pubsub.in-memory
  version: v1
  metadata: []
EOF
  port=$(free_port)
  local flags=(--app-id install-dapr-smoke --dapr-http-port "$port" --resources-path "$dir/res")
  # Older CLIs lack --scheduler-host-address; daprd then leaves the scheduler off.
  if "$cli" run --help 2>/dev/null | grep -q -- '--scheduler-host-address'; then
    flags+=(--scheduler-host-address "")
  fi
  "$cli" run "${flags[@]}" --placement-host-address "" -- sleep 20 > "$dir/run.log" 2>&1 &
  pid=$!
  CLEANUP_PIDS+=("$pid")
  for i in $(seq 1 40); do
    code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$port/v1.0/healthz/outbound" || true)
    [ "$code" = 204 ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  # `dapr run` stops daprd when it gets SIGTERM/SIGINT.
  kill -INT "$pid" 2>/dev/null || true
  for i in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  if [ "$code" = 204 ]; then
    return 0
  fi
  warn "'dapr run' smoke test failed: healthz/outbound on port $port answered '$code'; log:"
  sed 's/^/    /' "$dir/run.log" >&2
  return 1
}

install_cli() {
  if [ "${SKIP_DAPR_CLI:-0}" = 1 ]; then
    log "SKIP_DAPR_CLI=1: not installing the Dapr CLI"
    return 0
  fi
  local cur
  cur=$(dapr --version 2>/dev/null | sed -n "s/^CLI version: *\([^ ]*\).*/\1/p" || true)
  if [ -n "$cur" ]; then
    log "dapr CLI $cur already installed at $(command -v dapr)"
    return 0
  fi
  ensure_go
  command -v curl >/dev/null 2>&1 || apt_install curl ca-certificates
  local wrap="$TMP/cli" v dir="" err start=$SECONDS
  mkdir -p "$wrap"
  printf 'module dapr-cli-wrapper\n\ngo 1.21\n' > "$wrap/go.mod"
  for v in $DAPR_CLI_VERSIONS; do
    if err=$(cd "$wrap" && GOFLAGS=-mod=mod go mod download -json "github.com/dapr/cli@v$v" 2>&1); then
      dir=$(printf '%s\n' "$err" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
      [ -n "$dir" ] && break
    fi
    log "  dapr CLI v$v not available: $(printf '%s\n' "$err" | sed -n 's/^\t"Error": "\(.*\)",*$/\1/p' | sed 's/\\n\\t/ /g' | head -1)"
  done
  if [ -z "$dir" ]; then
    warn "no Dapr CLI module version could be downloaded (tried: $DAPR_CLI_VERSIONS); continuing without the dapr CLI"
    return 0
  fi
  log "building dapr CLI v$v from Go modules"
  # A dependency's replace directives are ignored, so repeat the CLI's own.
  {
    printf 'module dapr-cli-wrapper\n\ngo 1.21\n\nrequire github.com/dapr/cli v%s\n\n' "$v"
    awk '/^replace \($/ {inblk=1; print; next} inblk {print; if ($0 ~ /^\)$/) inblk=0; next} /^replace / {print}' "$dir/go.mod"
  } > "$wrap/go.mod"
  local total
  total=$(cd "$wrap" && go list -mod=mod -deps github.com/dapr/cli 2>/dev/null | wc -l || echo "?")
  if ! (cd "$wrap" && build_with_progress "$total" go build -v "${GOFLAGS_BUILD[@]}" \
    -ldflags "-s -w -X main.version=$v -X main.apiVersion=1.0" -o "$TMP/dapr" github.com/dapr/cli); then
    warn "building the Dapr CLI v$v failed (see above); continuing without the dapr CLI"
    return 0
  fi
  log "built dapr CLI v$v ($((SECONDS - start))s); checking 'dapr run' against daprd $DAPR_VERSION"
  if ! verify_cli "$TMP/dapr"; then
    warn "the Dapr CLI v$v does not work with daprd $DAPR_VERSION; not installing it (daprd itself is fine)"
    return 0
  fi
  install -m 0755 "$TMP/dapr" "$DAPR_CLI_BIN"
  log "installed dapr CLI v$v at $DAPR_CLI_BIN ('dapr run' verified with daprd $DAPR_VERSION)"
  if [ "$(command -v dapr || true)" != "$DAPR_CLI_BIN" ]; then
    warn "$(dirname "$DAPR_CLI_BIN") is not first on PATH for 'dapr'"
  fi
}

T0=$SECONDS
install_dapr_home
install_daprd
install_debian_server redis-server redis-server
install_debian_server docker-registry docker-registry
install_cli
log "done in $((SECONDS - T0))s"
