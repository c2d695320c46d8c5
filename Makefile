# The two commands of the README:
#   make up    set up, build and run the example app on the embedded broker
#   make test  set up and run every test
# Both are safe to run again; each step skips what is already done.

SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:$(PATH)

LISTEN ?= 127.0.0.1:3000

.PHONY: up test setup setup-dapr guests

## Set up, build the guests and the host, and run the orders app.
up: setup
	cargo build --release -p host-bridge
	./target/release/host-bridge up --build --listen $(LISTEN)

## Set up and run all the tests (unit, end-to-end embedded, end-to-end under real Dapr).
test: setup setup-dapr
	cargo test -p host-bridge -p orders

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
