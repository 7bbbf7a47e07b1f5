# DynamoKV task runner. `make help` lists the targets.
#
# Every Rust build uses the release profile and one target directory shared by all clones on
# the machine, so RocksDB bindings, tonic and the bindings' dependencies compile once.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

MULTIARCH := $(shell dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)
export CARGO_TARGET_DIR ?= $(HOME)/.cache/dynamokv/target
# Link the rocksdb crate against Debian's librocksdb (7.8) instead of compiling RocksDB's C++
# (about 25 minutes on 2 cores); see ARCHITECTURE.md.
export ROCKSDB_LIB_DIR ?= /usr/lib/$(MULTIARCH)
export ROCKSDB_INCLUDE_DIR ?= /usr/include
export DYNAMOKV_BIN := $(CARGO_TARGET_DIR)/release/dynamokv
# The interpreter config maturin would generate (abi3, Python 3.9+), so plain cargo builds
# (clippy, tests) and maturin share one pyo3 build instead of rebuilding it in turn.
export PYO3_CONFIG_FILE ?= $(CURDIR)/bindings-python/pyo3-build.cfg
export CARGO_TERM_COLOR ?= never

APT_PACKAGES := librocksdb-dev libclang-dev pkg-config
RUST_PACKAGES := -p dynamokv-proto -p dynamokv-common -p dynamokv-server -p dynamokv-client -p dynamokv-examples -p dynamokv-bench
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: help deps build run demo test test-rust test-python test-node test-swift faults attack elasticity fuzz fmt lint bench clean-data

help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

deps: ## Install the system packages the build needs (Debian/Ubuntu), if missing.
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

build: deps ## Build the server, the Rust client and the examples.
	cargo build --release $(RUST_PACKAGES) --bins

run: build ## Start a 3-node local cluster (data in ./dynamokv-data), run the demo, serve until Ctrl-C.
	$(DYNAMOKV_BIN) dev --nodes 3 --exec "$(CARGO_TARGET_DIR)/release/demo"

demo: build ## Like run, but stop the cluster when the demo ends.
	$(DYNAMOKV_BIN) dev --nodes 3 --exec "$(CARGO_TARGET_DIR)/release/demo" --exit-after-exec

test: build ## Run every test: Rust, Python, Node.js and the Swift checks.
	$(MAKE) --no-print-directory test-rust test-python test-node test-swift

test-rust: deps ## Rust unit, property, integration and cluster tests; then the attack campaign, alone, 5 s an attack.
	cargo test --release $(RUST_PACKAGES) -- --skip attack::
	$(MAKE) --no-print-directory attack ATTACK_SECONDS=5

test-python: build ## Build and install the Python package, run pytest.
	bash bindings-python/scripts/test.sh

test-node: build ## Build the Node.js addon, typecheck, run node --test.
	bash bindings-node/scripts/test.sh

test-swift: build ## Regenerate and parse the Swift bindings; drive their FFI from Python.
	bash bindings-swift/scripts/check.sh

CAMPAIGN_TABLE := $(or $(TMPDIR),/tmp)/dynamokv-campaign.txt

faults: deps ## The fault campaign alone: nodes killed, hung, partitioned and wiped under load; prints its table (also part of make test).
	@rm -f $(CAMPAIGN_TABLE); status=0; \
	DYNAMOKV_CAMPAIGN_TABLE=$(CAMPAIGN_TABLE) cargo test --release -p dynamokv-server --test it campaign -- --nocapture --test-threads 1 || status=$$?; \
	echo; echo "fault campaign, scenarios that passed ($(CAMPAIGN_TABLE)):"; cat $(CAMPAIGN_TABLE) 2>/dev/null || echo "(none)"; \
	exit $$status

ATTACK_TABLE := $(or $(TMPDIR),/tmp)/dynamokv-attack.txt
ATTACK_SECONDS ?= 30

# Alone (--test-threads 1, and not beside the other tests): two scenarios hold over 12,000
# connections from the test process, and the latency target means little beside other tests.
attack: deps ## The attack campaign: hostile clients against a secure cluster under load, ATTACK_SECONDS (30) each; prints its table (5 s each in make test).
	@rm -f $(ATTACK_TABLE); status=0; \
	DYNAMOKV_ATTACK_SECONDS=$(ATTACK_SECONDS) DYNAMOKV_ATTACK_TABLE=$(ATTACK_TABLE) cargo test --release -p dynamokv-server --test it attack:: -- --nocapture --test-threads 1 || status=$$?; \
	echo; echo "attack campaign, $(ATTACK_SECONDS) s an attack ($(ATTACK_TABLE)):"; cat $(ATTACK_TABLE) 2>/dev/null || echo "(none)"; \
	exit $$status

ELASTICITY_REPORT := $(or $(TMPDIR),/tmp)/dynamokv-elasticity.txt
elasticity: deps ## Membership changes under load: grow 3->5, leave to 4, remove, rolling restart; prints the figures (also part of make test).
	@rm -f $(ELASTICITY_REPORT); status=0; \
	cargo test --release -p dynamokv-server --test it elasticity -- --nocapture --test-threads 1 || status=$$?; \
	echo; echo "membership changes under load ($(ELASTICITY_REPORT)):"; cat $(ELASTICITY_REPORT) 2>/dev/null || echo "(none)"; \
	exit $$status

FUZZ_SECONDS ?= 60
FUZZ_TARGETS := context replica_state stored_record hint gossip merkle config
# Nightly and sanitizer builds stay apart from the release builds.
FUZZ_TARGET_DIR ?= $(CARGO_TARGET_DIR)/fuzz

fuzz: ## cargo-fuzz every decoder of outside bytes, FUZZ_SECONDS (default 60) per target (needs nightly); see docs/fuzzing.md.
	@rustup run nightly rustc --version >/dev/null 2>&1 || { \
	  echo "make fuzz needs a nightly Rust toolchain (cargo fuzz builds with sanitizers): rustup toolchain install nightly"; exit 1; }
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	@failed=""; cd fuzz; for t in $(FUZZ_TARGETS); do \
	  echo "== cargo fuzz run $$t, $(FUZZ_SECONDS) s"; \
	  CARGO_TARGET_DIR=$(FUZZ_TARGET_DIR) nice -n 19 cargo +nightly fuzz run $$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -malloc_limit_mb=512 -print_final_stats=1 \
	    || failed="$$failed $$t"; \
	done; \
	if [ -n "$$failed" ]; then echo "fuzz targets that failed:$$failed (inputs in fuzz/artifacts/)"; exit 1; fi

fmt: ## Format the Rust code.
	cargo fmt --all

lint: deps ## rustfmt check and clippy with warnings as errors.
	cargo fmt --all -- --check
	cargo clippy --release --workspace --all-targets -- -D warnings

bench: build ## Benchmark a local 3-node cluster against a bare gRPC hop, RocksDB and Redis (BENCH_ARGS=--quick: smoke run).
	cargo build --release -p dynamokv-bench
	$(CARGO_TARGET_DIR)/release/dynamokv-bench $(BENCH_ARGS)

clean-data: ## Remove the local cluster's data (./dynamokv-data).
	rm -rf dynamokv-data
