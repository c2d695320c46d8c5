# The two commands of the README:
#   make up    set up, build and run the example app on the embedded broker
#   make test  set up and run every test
# Both are safe to run again; each step skips what is already done.

SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:$(PATH)

LISTEN ?= 127.0.0.1:3000

.PHONY: up test soak fuzz bench bench-smoke compose setup setup-dapr setup-bench setup-wasmtime setup-wac setup-guests guests setup-brokers setup-browser setup-jaeger

## Set up, build the guests and the host, and run the orders app.
up: setup
	cargo build --release -p host-bridge
	./target/release/host-bridge up --build --listen $(LISTEN)

## Set up and run all the tests (unit, end-to-end embedded, end-to-end under
## real Dapr on Redis, Kafka, RabbitMQ, NATS JetStream and MQTT).
test: setup setup-dapr setup-brokers setup-guests setup-wac setup-wasmtime setup-browser setup-jaeger
	WAC=$(WAC) WASMTIME=$(WASMTIME) cargo test -p host-bridge -p orders

## The five-minute soak through daprd and Redis (make test runs 30 s of it).
soak: setup setup-dapr
	SOAK_SECONDS=300 SOAK_RATE=200 cargo test -p host-bridge --test soak -- --nocapture

## The benchmarks behind BENCHMARKS.md: the harness runs the criterion
## micro-benchmarks of the sandbox itself (so their figures come from this
## run), then the system benchmarks (host-bridge side by side with a native
## server, wasmtime serve and daprd; the load generator pinned to one core,
## the systems to the others). BENCH_ONLY=sandbox,delivery,http,embedded,languages,dapr,brokers,startup
## runs some sections (results then go under target/bench/); BENCH_SECONDS and
## BENCH_ROUNDS set the length (3 s, 5 rounds).
bench: setup setup-dapr setup-brokers setup-guests setup-bench setup-jaeger
	WASMTIME=$(WASMTIME) cargo bench -p host-bridge --bench load

## Every section of the harness, briefly, failing on any error; results go
## to target/bench/ and BENCHMARKS.md is left alone. CI runs it after
## `make test`, which installs wasmtime-cli, so it compares with wasmtime serve too.
## It runs on the test build (`cargo test --bench`), which `make test` has
## just made, rather than building everything again in release: its figures
## mean nothing, only its errors do.
bench-smoke: setup setup-dapr setup-brokers setup-guests setup-jaeger
	BENCH_SMOKE=1 WASMTIME=$(WASMTIME) cargo test -p host-bridge --bench load

## wasmtime-cli, the reference wasi:http runtime, at the wasmtime version
## host-bridge embeds, installed once outside the repo with only what
## `wasmtime run` and `wasmtime serve` need (all its features took 40 min to
## build on 2 cores; these took 9 min).
WASMTIME_VERSION := 48.0.8
WASMTIME_FEATURES := run,serve,cranelift,component-model-async,parallel-compilation,cache,pooling-allocator
WASMTIME_ROOT := $(HOME)/.cache/host-bridge/tools/wasmtime-serve-$(WASMTIME_VERSION)
WASMTIME := $(WASMTIME_ROOT)/bin/wasmtime
setup-wasmtime:
	@test -x $(WASMTIME) \
		|| { echo "installing wasmtime-cli $(WASMTIME_VERSION) (run and serve only) into $(WASMTIME_ROOT), once"; \
		     cargo install --locked wasmtime-cli --version $(WASMTIME_VERSION) --no-default-features \
		       --features $(WASMTIME_FEATURES) --root $(WASMTIME_ROOT); }
setup-bench: setup-wasmtime

## wac, the component composition tool, installed once outside the repo
## (without its registry client: compose works on local files).
WAC_VERSION := 0.12.0
WAC_ROOT := $(HOME)/.cache/host-bridge/tools/wac-$(WAC_VERSION)
WAC := $(WAC_ROOT)/bin/wac
setup-wac:
	@test -x $(WAC) \
		|| { echo "installing wac-cli $(WAC_VERSION) into $(WAC_ROOT), once"; \
		     cargo install --locked wac-cli --version $(WAC_VERSION) --no-default-features --root $(WAC_ROOT); }

## Compose the orders app into two standalone components for any wasi:http
## runtime next to daprd, in target/composed/: order-api.wasm (the API with
## the publisher plug) and order-processor.wasm (the app-protocol adapter in
## front of the processor, with the publisher plug). See the README.
COMPOSED := target/composed
compose: setup setup-wac
	cargo build --release --target wasm32-wasip2 -p order-api -p order-processor -p publisher-plug -p app-protocol-adapter
	@mkdir -p $(COMPOSED)
	$(WAC) plug target/wasm32-wasip2/release/order_api.wasm \
		--plug target/wasm32-wasip2/release/publisher_plug.wasm -o $(COMPOSED)/order-api.wasm
	$(WAC) plug target/wasm32-wasip2/release/order_processor.wasm \
		--plug target/wasm32-wasip2/release/publisher_plug.wasm -o $(COMPOSED)/order-processor-plugged.wasm
	$(WAC) plug target/wasm32-wasip2/release/app_protocol_adapter.wasm \
		--plug $(COMPOSED)/order-processor-plugged.wasm -o $(COMPOSED)/order-processor.wasm
	@rm $(COMPOSED)/order-processor-plugged.wasm
	@echo "composed: $(COMPOSED)/order-api.wasm $(COMPOSED)/order-processor.wasm"

## Fuzz each parser of untrusted input (CloudEvents, bulk envelopes, the
## manifest, routes) for FUZZ_SECONDS each, with cargo-fuzz on nightly
## (installed if missing). Without a sanitizer: the code is safe Rust, and
## what is hunted is panics, overflows (debug assertions are on) and hangs.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := cloudevent bulk manifest manifest_paths route
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

## Install what building needs: the wasm32-wasip2 Rust target, and
## wasm32-wasip1 for the spin-sdk 3 app (handler/legacy-spin-redis), built
## as Spin 2 and 3 apps were.
setup:
	@for target in wasm32-wasip2 wasm32-wasip1; do \
		rustup target list --installed | grep -qx $$target \
			|| { echo "installing the $$target Rust target"; rustup target add $$target; } || exit 1; \
	done

## Install what the Python and JavaScript guests build with, pinned, inside
## their folders: componentize-py in handler/order-processor-py/.venv (from
## requirements.txt), componentize-js in handler/orders-js/node_modules
## (from package-lock.json).
PY_GUEST := handler/order-processor-py
JS_GUEST := handler/orders-js
setup-guests:
	@sha256sum $(PY_GUEST)/requirements.txt | cmp -s - $(PY_GUEST)/.venv/installed-from \
		|| { echo "installing componentize-py into $(PY_GUEST)/.venv (requirements.txt)"; \
		     python3 -m venv $(PY_GUEST)/.venv \
		     && $(PY_GUEST)/.venv/bin/pip install --quiet -r $(PY_GUEST)/requirements.txt \
		     && sha256sum $(PY_GUEST)/requirements.txt > $(PY_GUEST)/.venv/installed-from; }
	@sha256sum $(JS_GUEST)/package-lock.json | cmp -s - $(JS_GUEST)/node_modules/installed-from \
		|| { echo "installing componentize-js into $(JS_GUEST)/node_modules (package-lock.json)"; \
		     (cd $(JS_GUEST) && npm ci --no-audit --no-fund) \
		     && sha256sum $(JS_GUEST)/package-lock.json > $(JS_GUEST)/node_modules/installed-from; }

## Install what the admin page's browser test needs: Debian's chromium
## (/usr/bin/chromium, if missing) and Playwright for Python, pinned, in
## host-bridge/tests/browser/.venv (from requirements.txt). Playwright never
## downloads a browser of its own: the test launches /usr/bin/chromium.
BROWSER_TEST := host-bridge/tests/browser
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
APT := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600
setup-browser:
	@test -x /usr/bin/chromium \
		|| { echo "installing Debian's chromium"; \
		     $(APT) update -qq && $(APT) install -y -qq chromium >/dev/null; }
	@sha256sum $(BROWSER_TEST)/requirements.txt | cmp -s - $(BROWSER_TEST)/.venv/installed-from \
		|| { echo "installing playwright into $(BROWSER_TEST)/.venv (requirements.txt)"; \
		     python3 -m venv $(BROWSER_TEST)/.venv \
		     && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 $(BROWSER_TEST)/.venv/bin/pip install --quiet -r $(BROWSER_TEST)/requirements.txt \
		     && sha256sum $(BROWSER_TEST)/requirements.txt > $(BROWSER_TEST)/.venv/installed-from; }

## Jaeger v2, the trace backend the trace tests and the harness's `tracing`
## section export to, built once from Go modules (tests/jaeger pins it) into
## ~/.cache/host-bridge/tools. Needs Go, which setup-dapr installs.
setup-jaeger: setup-dapr
	bash scripts/install-jaeger.sh

## Install what the Dapr tests need: daprd 1.18.3 and the Dapr CLI built from
## Go modules, ~/.dapr, Debian's redis-server and docker-registry, and the Dapr Python SDK.
setup-dapr:
	bash scripts/install-dapr.sh
	@python3 -c 'import dapr.clients' 2>/dev/null \
		|| { echo "installing the Dapr Python SDK (PyPI: dapr)"; python3 -m pip install --quiet --root-user-action=ignore 'dapr==1.18.3'; }

## Install the five brokers scripts/broker.sh runs, without running them:
## Debian's redis-server, rabbitmq-server, nats-server and mosquitto (their
## services kept from starting), and Kafka 4.1.1 from Maven Central into
## $(HOME)/.cache/host-bridge/tools. Each is skipped if already there.
setup-brokers:
	bash scripts/broker.sh --install all

## Build the guest components only.
guests: setup
	cargo build --release --target wasm32-wasip2 -p order-api -p order-processor -p dead-letter -p test-subscriber -p hello -p http-probe -p fetcher -p order-processor-http -p publisher-plug -p app-protocol-adapter \
		-p spin-redis-app -p wasi-messaging-subscriber -p wasmcloud-subscriber
	cargo build --release --target wasm32-wasip1 -p legacy-spin-redis
