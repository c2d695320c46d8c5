#!/usr/bin/env bash
# Installs Jaeger v2 (the `jaeger` binary: an OpenTelemetry Collector with
# Jaeger's storage and query API), which the trace tests export to, built from
# the Go module github.com/jaegertracing/jaeger v1.75.0 (tests/jaeger pins it
# and every dependency in go.sum) into ~/.cache/host-bridge/tools. Skipped when
# a binary built from the same go.mod and go.sum is there. Prebuilt Jaeger
# releases cannot be downloaded on this project's machines; the module proxy
# serves the sources.
set -euo pipefail

JAEGER_VERSION=1.75.0
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEST=${JAEGER_DIR:-$HOME/.cache/host-bridge/tools/jaeger-$JAEGER_VERSION}
BIN="$DEST/jaeger"
STAMP="$BIN.stamp"

log() { echo "[install-jaeger] $*"; }
source "$ROOT/scripts/go-build.sh"

stamp() { (cd "$ROOT/tests/jaeger" && sha256sum go.mod go.sum); }

if [ -x "$BIN" ] && [ -f "$STAMP" ] && stamp | cmp -s - "$STAMP"; then
  exit 0
fi
if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
  export PATH="/usr/local/go/bin:$PATH"
fi
command -v go >/dev/null 2>&1 || { log "go is not installed; make setup-dapr installs it"; exit 1; }

export GOTOOLCHAIN=auto CGO_ENABLED=0
log "building jaeger $JAEGER_VERSION from Go modules into $DEST (once; about 6 minutes on 2 cores)"
mkdir -p "$DEST"
cd "$ROOT/tests/jaeger"
total=$(go list -mod=mod -deps github.com/jaegertracing/jaeger/cmd/jaeger 2>/dev/null | wc -l || echo "?")
build_with_progress "$total" go build -v -mod=mod -buildvcs=false -trimpath -o "$BIN.tmp" \
  github.com/jaegertracing/jaeger/cmd/jaeger
mv "$BIN.tmp" "$BIN"
stamp > "$STAMP"
log "installed $BIN ($("$BIN" version 2>/dev/null | head -c 200 | tr '\n' ' '))"
