# sniper: an auction sniper on a durable NATS JetStream log.
#   make run    start the sniper (embedded NATS, HTTP on 127.0.0.1:8080)
#   make test   everything CI runs: vet, the race-enabled test suite, short fuzzing
SHELL    := /bin/bash
.SHELLFLAGS := -o pipefail -c
GO       ?= go
GOBIN    := $(shell $(GO) env GOPATH)/bin
export PATH := $(GOBIN):$(PATH)
DATA_DIR ?= ./sniper-data
FUZZTIME ?= 10s

FAULT_KILLS ?= 200
CLUSTER_KILLS ?= 50

.PHONY: run build test lint fuzz fuzz-short faults bench deps clean

run:
	$(GO) run ./cmd/sniper run --data-dir $(DATA_DIR)

build:
	$(GO) build -buildvcs=true -o bin/sniper ./cmd/sniper

# deps installs what the tests drive for real: Prosody (XMPP server),
# Chromium (UI tests) and the nats CLI. Needs root (apt-get) the first time.
deps:
	./scripts/install-deps.sh

test: deps
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 10m ./...
	$(MAKE) fuzz-short

fuzz-short:
	$(GO) test -run='^$$' -fuzz=FuzzDecodeAuctionEvent -fuzztime=$(FUZZTIME) ./messages/
	$(GO) test -run='^$$' -fuzz=FuzzDecodeInput -fuzztime=$(FUZZTIME) ./messages/
	$(GO) test -run='^$$' -fuzz=FuzzJoinRequest -fuzztime=$(FUZZTIME) -fuzzminimizetime=20x ./api/

fuzz:
	$(MAKE) fuzz-short FUZZTIME=5m

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	$(GO) vet ./...
	staticcheck ./...

clean:
	rm -rf bin $(DATA_DIR)

# The long kill suite: the real binary SIGKILLed FAULT_KILLS times at random
# moments and at fault points, checked against an uninterrupted run; and its
# cluster variant: the active instance of a 3-instance embedded cluster
# SIGKILLed CLUSTER_KILLS times; and a two-minute NATS outage.
faults: deps
	SNIPER_CLUSTER_CRASH=1 $(GO) test -count=1 -run TestSniperSurvivesTheLossOfTheStreamLeader -v ./acceptance/ | grep -E '^(---|ok|FAIL|PASS)|cluster_test.go'
	SNIPER_NATS_OUTAGE=2m $(GO) test -count=1 -run TestSniperRidesOutANATSServerRestart -v ./acceptance/ | grep -E '^(---|ok|FAIL|PASS)|natsoutage_test.go'
	SNIPER_FAULT_KILLS=$(FAULT_KILLS) SNIPER_FAULT_CLUSTER_KILLS=$(CLUSTER_KILLS) $(GO) test -count=1 -timeout 90m -run TestKillSuite -v ./faults/ | grep -E 'kill suite|^(---|ok|FAIL|PASS)|_test.go'


# Benchmarks (cmd/sniperbench): the baselines (nats bench, an XMPP echo bot
# on a stock Prosody) and the real sniper binary, measured in one run, medians
# of 3 runs; prints a Markdown table with ratios to the baselines and writes
# it into docs/benchmarks.md. BENCH_FLAGS e.g. -quick, -runs 5, -scale-max 100000.
BENCH_FLAGS ?=
bench: deps
	$(GO) run ./cmd/sniperbench -write $(BENCH_FLAGS)
	@echo "A fenced decision commit, one at a time, on one embedded server (R1) and three clustered (R3), fsync always:"
	$(GO) test -run XXX -bench BenchmarkCommitReplicas -benchtime 2000x -count 3 ./jetstream/ | grep -E '^Benchmark'
