#!/usr/bin/env bash
# Runs the four services with their embedded defaults — blobs in a local
# directory, metadata in SQLite, the registry on :5000 — under .run/, logging
# to this terminal. Ctrl-C stops them all. They listen on loopback only,
# without TLS or tokens (a single user's development stack: anyone who can
# reach loopback on this machine may call them), and the builder may pull
# from and push to registries on loopback (a local `registry serve`, or
# strata-registry itself).
set -euo pipefail
cd "$(dirname "$0")/.."
data=${STRATA_RUN_DIR:-$PWD/.run}
mkdir -p "$data"
trap 'kill $(jobs -p) 2>/dev/null; wait' EXIT INT TERM
STRATA_LISTEN=127.0.0.1:50053 STRATA_FS_ROOT="$data/blobs" bin/strata-blobstore &
STRATA_LISTEN=127.0.0.1:50052 STRATA_SQLITE_PATH="$data/metadata.db" bin/strata-metadata &
STRATA_LISTEN=127.0.0.1:50051 STRATA_STATE_DIR="$data/builder" STRATA_ALLOW_REGISTRIES=127.0.0.0/8,::1 bin/strata-builder &
STRATA_LISTEN=127.0.0.1:5000 bin/strata-registry &
echo "strata: builder 127.0.0.1:50051, metadata 127.0.0.1:50052, blobstore 127.0.0.1:50053, registry 127.0.0.1:5000 (data in $data); Ctrl-C stops all" >&2
wait -n
