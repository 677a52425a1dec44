# Keel developer entry points. The work is done by the scripts in scripts/.
SHELL := /bin/bash

.PHONY: help up down test status build bench

help:
	@echo "make up      build keel, start Postgres + broker + keel (state in .keel/)"
	@echo "make down    stop keel, broker and Postgres (data kept)"
	@echo "make test    fmt, clippy and the tests against throwaway services"
	@echo "make status  show what is running"
	@echo "make build   cargo build --release of the keel binary"
	@echo "make bench   benchmarks (print commands/s, latency, lag, memory, replay rate)"

up:
	@bash scripts/up.sh

down:
	@bash scripts/down.sh

test:
	@bash scripts/test.sh

status:
	@bash scripts/postgres.sh status || true
	@bash scripts/broker.sh status || true
	@if [ -s .keel/keel.pid ] && grep -qs target/release/keel "/proc/$$(cat .keel/keel.pid)/cmdline"; then \
		echo "keel: running (pid $$(cat .keel/keel.pid))"; else echo "keel: stopped"; fi

build:
	cargo build --release -p keel-gateway --bin keel

bench:
	@cargo build --release -p keel-gateway --bin keel
	@rm -f target/bench-figures.tsv
	@KEEL_BENCH_FIGURES="$(CURDIR)/target/bench-figures.tsv" KEEL_TEST_CMD='cargo bench -p keel-tests --bench backbone && cargo bench -p keel-tests --bench identity && cargo bench -p keel-tests --bench flags && cargo bench -p keel-tests --bench billing && cargo bench -p keel-tests --bench audit && cargo bench -p keel-tests --bench oidc' bash scripts/test.sh
	@python3 scripts/bench-table.py target/bench-figures.tsv tests/benches/baseline.tsv
