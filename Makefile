# The two commands of the README:
#   make up    set up, build and run the example app on the embedded broker
#   make test  set up and run every test
# Both are safe to run again; each step skips what is already done.

SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:$(PATH)

LISTEN ?= 127.0.0.1:3000

.PHONY: up test setup guests host

## Set up, build the guests and the host, and run the orders app.
up: setup
	cargo build --release -p host-bridge
	./target/release/host-bridge up --build --listen $(LISTEN)

## Set up and run all the tests (unit and end-to-end).
test: setup
	cargo test -p host-bridge -p orders

## Install what building needs: the wasm32-wasip2 Rust target.
setup:
	@rustup target list --installed | grep -qx wasm32-wasip2 \
		|| { echo "installing the wasm32-wasip2 Rust target"; rustup target add wasm32-wasip2; }

## Build the guest components only.
guests: setup
	cargo build --release --target wasm32-wasip2 -p order-api -p order-processor -p dead-letter -p test-subscriber
