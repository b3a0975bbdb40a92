# Strata's developer entry points. `make` alone lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

TOOLS   := $(CURDIR)/.tools/bin
export PATH := $(TOOLS):$(PATH)

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/strata-build/strata/lib/version.Version=$(VERSION)
MODULES := gen lib services/blobstore services/metadata services/builder cli deploy/k8s
PACKAGES := $(foreach m,$(MODULES),github.com/strata-build/strata/$(m)/...)
BINARIES := ./services/blobstore/cmd/strata-blobstore ./services/metadata/cmd/strata-metadata \
            ./services/builder/cmd/strata-builder ./cli/cmd/strata

.PHONY: help tools deps generate build run demo test test-deploy test-scale lint bench bench-xfer bench-blob bench-exec bench-build bench-meta bench-scale up up-scale down

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

run: build ## Run the three services locally (filesystem blobs, SQLite); Ctrl-C stops all
	@scripts/run.sh

demo: build ## Start the services, import busybox, build the nginx example twice, show history, tag, list
	@scripts/demo.sh

test: deps build ## Run every test, with the real S3, PostgreSQL, runc and Docker Engine they need
	go test -count=1 -timeout 30m $(PACKAGES)
	deploy/test.sh

test-deploy: build ## Run the compose test alone: the stack on the Docker Engine, SQLite then PostgreSQL
	deploy/test.sh

test-scale: build ## The scale test: replicas on PostgreSQL and S3 in compose, 30 builds twice, replicas killed mid-round
	deploy/test-scale.sh

lint: tools ## buf lint and format, breaking-change check, gofmt, go vet, gen/ freshness
	buf lint
	buf format --diff --exit-code
	@scripts/check-breaking.sh
	@test -z "$$(gofmt -l $(MODULES))" || { echo "gofmt would change:"; gofmt -l $(MODULES); exit 1; }
	go vet $(PACKAGES)
	@scripts/check-generated.sh

bench: deps bench-xfer bench-exec bench-build bench-blob bench-meta ## Run the benchmarks against the peers' figures

bench-build: build ## The build benchmark (../shared/bench): Strata on S3+SQLite against Docker's classic builder, cold/warm/touch1
	@scripts/bench-build.sh $(or $(N),3)

bench-blob: ## Upload and download of a 1 GiB blob through the blob store against minio-go straight to versitygw
	go test -count=1 -run '^$$' -bench BenchmarkBlobTransfer -benchtime 5x -timeout 30m \
	  ./services/blobstore/cmd/strata-blobstore/

bench-xfer: ## Pull and push of a 512 MiB layer through a loopback registry: Strata against crane
	go test -count=1 -run '^$$' -bench BenchmarkRegistryTransfer -benchtime 2x -timeout 30m \
	  ./services/builder/internal/transfer/interop/

bench-meta: ## Metadata: GetImage, TagImage, ListImages (pages of 100) through gRPC at 100,000 images, SQLite and PostgreSQL
	go test -count=1 -run '^$$' -bench BenchmarkImageService -benchtime 1x -timeout 30m \
	  ./services/metadata/internal/server/

bench-scale: build ## Replicas on one machine: builds/min of 30 builds through 3 builders against 1, GetImage/s through 2 metadata replicas against 1 (medians)
	deploy/bench-scale.sh $(or $(N),3)
	go test -count=1 -run '^$$' -bench BenchmarkReplicasGetImage -benchtime 1x -timeout 30m \
	  ./services/metadata/cmd/strata-metadata/

bench-exec: ## The builder's layer pipeline, snapshots and runc sandbox (upper dir → gzip → blob store on fs and S3)
	go test -count=1 -run '^$$' -bench . -benchtime 3x -timeout 30m \
	  ./services/builder/internal/layer/ ./services/builder/internal/snapshot/ ./services/builder/internal/sandbox/

up: build ## Build the images and start the docker-compose stack, healthy (STRATA_METADATA_STORE=postgres for PostgreSQL)
	@scripts/deps.sh
	@deploy/stack.sh up

up-scale: build ## Start the scale stack, healthy: PostgreSQL, S3, 2 blob stores, 2 metadata, 3 builders
	@scripts/deps.sh
	@STRATA_SCALE=1 deploy/stack.sh up

down: ## Remove the docker-compose stack (either): containers, network and volumes
	@deploy/stack.sh down
