# Strata's developer entry points. `make` alone lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

TOOLS   := $(CURDIR)/.tools/bin
export PATH := $(TOOLS):$(PATH)

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/strata-build/strata/lib/version.Version=$(VERSION)
MODULES := bench gen lib client services/blobstore services/metadata services/builder services/registry cli deploy/k8s examples
PACKAGES := $(foreach m,$(MODULES),github.com/strata-build/strata/$(m)/...)
FUZZTIME ?= 30s
BINARIES := ./services/blobstore/cmd/strata-blobstore ./services/metadata/cmd/strata-metadata \
            ./services/builder/cmd/strata-builder ./services/registry/cmd/strata-registry ./cli/cmd/strata

.PHONY: help tools deps generate build docs run demo test test-docs parity parity-golden test-deploy test-scale fuzz lint bench bench-compare bench-xfer bench-blob bench-exec bench-build bench-meta bench-registry bench-scale up up-scale down

# make bench writes its table here as JSON; make bench-compare OLD.json
# compares it with an earlier one.
BENCH_JSON ?= bench/results/latest.json
BENCH_FIGURES := $(CURDIR)/bench/results/figures.jsonl
ifeq (bench-compare,$(firstword $(MAKECMDGOALS)))
OLD ?= $(word 2,$(MAKECMDGOALS))
$(eval $(OLD):;@:)
endif

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

tools: ## Install the pinned generators and test peers into .tools/bin
	@scripts/tools.sh

deps: tools ## Install everything the tests need (Debian packages need root)
	@scripts/deps.sh

generate: tools ## Regenerate gen/ from proto/ with buf
	rm -rf gen/strata
	buf format -w
	buf generate
	buf build -o gen/descriptors/descriptors.binpb

build: ## Build static binaries into bin/
	CGO_ENABLED=0 go build -trimpath -ldflags '$(LDFLAGS)' -o bin/ $(BINARIES)

docs: ## Regenerate the CLI reference (docs/cli) from the strata command tree; a test fails while it is stale
	go run ./cli/cmd/strata-docs -o docs/cli

run: build ## Run the four services locally (filesystem blobs, SQLite, registry on :5000); Ctrl-C stops all
	@scripts/run.sh

demo: build ## Start the services, import busybox, build the nginx example twice, show history, tag, list
	@scripts/demo.sh

test: deps build ## Run every test, with the race detector and the real S3, PostgreSQL, runc and Docker Engine they need
	go test -race -count=1 -timeout 30m $(PACKAGES)
	scripts/test-docs.sh
	deploy/test.sh

test-docs: build ## Run the sh blocks of docs/api.md as written against a fresh make run (part of make test); docs/cli's freshness is a go test
	scripts/test-docs.sh

PARITY := ./services/builder/internal/parity/

parity: ## Docker parity: moby's classic-builder tests built by Strata against Docker's goldens, plus a few rebuilt on the live Engine
	go test -count=1 -parallel 2 -timeout 60m $(PARITY)

parity-golden: ## Rewrite the parity goldens: every case of services/builder/internal/parity built by the Docker Engine (DOCKER_BUILDKIT=0)
	go test -count=1 -run '^TestGolden$$' -golden -parallel 2 -timeout 60m $(PARITY)

fuzz: ## Run each fuzz target for FUZZTIME (default 30s), one at a time
	@scripts/fuzz.sh $(FUZZTIME)

test-deploy: build ## Run the compose test alone: the stack on the Docker Engine, SQLite then PostgreSQL
	deploy/test.sh

test-scale: build ## The scale test: replicas on PostgreSQL and S3 in compose, 30 builds twice, replicas killed mid-round
	deploy/test-scale.sh

lint: tools ## buf lint and format, breaking-change check, gofmt, go vet, staticcheck, deadcode, gen/ freshness
	buf lint
	buf format --diff --exit-code
	@scripts/check-breaking.sh
	@test -z "$$(gofmt -l $(MODULES))" || { echo "gofmt would change:"; gofmt -l $(MODULES); exit 1; }
	go vet $(PACKAGES)
	staticcheck $(PACKAGES)
	@scripts/check-deadcode.sh $(PACKAGES)
	@scripts/check-generated.sh

bench: deps build ## Every benchmark against its peers, in one table, also written as JSON (BENCH_JSON, bench/results/latest.json)
	@mkdir -p bench/results && rm -f $(BENCH_FIGURES)
	@# A benchmark that fails leaves its figures out; the others still make the table, and make bench fails.
	STRATA_BENCH_RESULTS=$(BENCH_FIGURES) $(MAKE) -k --no-print-directory bench-xfer bench-exec bench-build bench-blob bench-meta bench-registry; \
	  status=$$?; go run ./bench/cmd/benchreport table -o $(BENCH_JSON) $(BENCH_FIGURES) && exit $$status

bench-compare: ## Compare the last make bench with an earlier one: make bench-compare OLD.json
	@test -n "$(OLD)" || { echo "usage: make bench-compare OLD.json" >&2; exit 2; }
	@go run ./bench/cmd/benchreport compare $(OLD) $(BENCH_JSON)

bench-build: build tools ## Builds of ../shared/bench (files, app) and bench/stages: Strata, Docker classic (not stages) and BuildKit interleaved, cold/warm/touch1, N runs (3)
	@scripts/bench-build.sh $(or $(N),3)

bench-blob: build ## 1 GiB up and down through the blob store on versitygw against minio-go with the same settings, unsigned and signed
	go test -count=1 -run '^$$' -bench BenchmarkBlobTransfer -benchtime 5x -timeout 40m \
	  ./services/blobstore/cmd/strata-blobstore/

bench-xfer: ## Pull and push of a 512 MiB layer through loopback registries: Strata against docker, crane and skopeo, 5 runs
	go test -count=1 -run '^$$' -bench BenchmarkRegistryTransfer -benchtime 5x -timeout 40m \
	  ./services/builder/internal/transfer/interop/

bench-registry: ## Push and pull (crane) of a 512 MiB layer and of 200 small layers: strata-registry (S3 + SQLite) against distribution on the same versitygw, medians of paired rounds
	go test -count=1 -run '^$$' -bench BenchmarkRegistry -benchtime $(or $(N),3)x -timeout 30m \
	  ./services/registry/cmd/strata-registry/

bench-meta: ## Metadata: GetImage, TagImage, ListImages through gRPC at 100,000 images, SQLite and PostgreSQL, medians of 5 windows
	go test -count=1 -run '^$$' -bench BenchmarkImageService -benchtime 1x -timeout 30m \
	  ./services/metadata/internal/server/

bench-scale: build ## Replicas on one machine: builds/min of 30 builds through 3 builders against 1, GetImage/s through 2 metadata replicas against 1 (medians)
	deploy/bench-scale.sh $(or $(N),3)
	go test -count=1 -run '^$$' -bench BenchmarkReplicasGetImage -benchtime 1x -timeout 30m \
	  ./services/metadata/cmd/strata-metadata/

bench-exec: ## The builder's layer pipeline, snapshots and runc sandbox (upper dir → gzip → blob store on fs and S3)
	set -o pipefail; go test -count=1 -run '^$$' -bench . -benchtime 3x -timeout 30m \
	  ./services/builder/internal/layer/ ./services/builder/internal/snapshot/ ./services/builder/internal/sandbox/ | \
	  go run ./bench/cmd/benchreport ingest exec

up: build ## Build the images and start the docker-compose stack, healthy (STRATA_METADATA_STORE=postgres for PostgreSQL)
	@scripts/deps.sh
	@deploy/stack.sh up

up-scale: build ## Start the scale stack, healthy: PostgreSQL, S3, 2 blob stores, 2 metadata, 3 builders, 2 registries
	@scripts/deps.sh
	@STRATA_SCALE=1 deploy/stack.sh up

down: ## Remove the docker-compose stack (either): containers, network and volumes
	@deploy/stack.sh down
