# Sourced by the scripts that build tools from Go modules (install-dapr.sh,
# install-jaeger.sh); expects a `log` function.

# Runs `go build -v` and turns its package list into progress lines.
# Usage: build_with_progress TOTAL_PACKAGES go build ...
build_with_progress() {
  local total=$1; shift
  local start=$SECONDS n=0 d=0 last=$SECONDS line
  "$@" 2>&1 | while IFS= read -r line; do
    case "$line" in
      "go: downloading "*)
        d=$((d + 1))
        if [ $((d % 50)) -eq 1 ]; then log "  downloading modules ($d so far, $((SECONDS - start))s elapsed)"; fi
        ;;
      *" "* | *:* | "#"*) echo "$line" ;; # compiler errors and other messages
      *)
        n=$((n + 1))
        if [ $((SECONDS - last)) -ge 20 ]; then
          last=$SECONDS
          log "  compiled $n/~$total packages ($((SECONDS - start))s elapsed)"
        fi
        ;;
    esac
  done
}

