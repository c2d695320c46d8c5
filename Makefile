# The two commands of the README:
#   make up    set up, build and run the example app on the embedded broker
#   make test  set up and run every test
# Both are safe to run again; each step skips what is already done.

SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:$(PATH)

LISTEN ?= 127.0.0.1:3000

.PHONY: up test soak fuzz setup setup-dapr guests

## Set up, build the guests and the host, and run the orders app.
up: setup
	cargo build --release -p host-bridge
	./target/release/host-bridge up --build --listen $(LISTEN)

## Set up and run all the tests (unit, end-to-end embedded, end-to-end under real Dapr).
test: setup setup-dapr
	cargo test -p host-bridge -p orders

## The five-minute soak through daprd and Redis (make test runs 30 s of it).
soak: setup setup-dapr
	SOAK_SECONDS=300 SOAK_RATE=200 cargo test -p host-bridge --test soak -- --nocapture

## Fuzz each parser of untrusted input (CloudEvents, bulk envelopes, the
## manifest, routes) for FUZZ_SECONDS each, with cargo-fuzz on nightly
## (installed if missing). Without a sanitizer: the code is safe Rust, and
## what is hunted is panics, overflows (debug assertions are on) and hangs.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := cloudevent bulk manifest route
fuzz:
	@rustup toolchain list | grep -q '^nightly' \
		|| { echo "installing the nightly Rust toolchain (for cargo fuzz)"; rustup toolchain install nightly --profile minimal; }
	@command -v cargo-fuzz >/dev/null \
		|| { echo "installing cargo-fuzz"; cargo install cargo-fuzz --locked; }
	cd host-bridge && for target in $(FUZZ_TARGETS); do \
		mkdir -p fuzz/corpus/$$target && \
		echo "fuzzing $$target for $(FUZZ_SECONDS) s" && \
		cargo +nightly fuzz run --sanitizer none --debug-assertions $$target \
			fuzz/corpus/$$target fuzz/seeds/$$target -- -max_total_time=$(FUZZ_SECONDS) || exit 1; \
	done

## Install what building needs: the wasm32-wasip2 Rust target.
setup:
	@rustup target list --installed | grep -qx wasm32-wasip2 \
		|| { echo "installing the wasm32-wasip2 Rust target"; rustup target add wasm32-wasip2; }

## Install what the Dapr tests need: daprd 1.18.3 and the Dapr CLI built from
## Go modules, ~/.dapr, Debian's redis-server, and the Dapr Python SDK.
setup-dapr:
	bash scripts/install-dapr.sh
	@python3 -c 'import dapr.clients' 2>/dev/null \
		|| { echo "installing the Dapr Python SDK (PyPI: dapr)"; python3 -m pip install --quiet --root-user-action=ignore 'dapr==1.18.3'; }

## Build the guest components only.
guests: setup
	cargo build --release --target wasm32-wasip2 -p order-api -p order-processor -p dead-letter -p test-subscriber
