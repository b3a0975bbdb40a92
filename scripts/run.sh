#!/usr/bin/env bash
# Runs the four services with their embedded defaults — blobs in a local
# directory, metadata in SQLite, the registry on :5000 — under .run/, logging
# to this terminal. Ctrl-C stops them all.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${STRATA_RUN_DIR:-$PWD/.run}
mkdir -p "$data"
trap 'kill $(jobs -p) 2>/dev/null; wait' EXIT INT TERM
STRATA_FS_ROOT="$data/blobs" bin/strata-blobstore &
STRATA_SQLITE_PATH="$data/metadata.db" bin/strata-metadata &
STRATA_STATE_DIR="$data/builder" bin/strata-builder &
bin/strata-registry &
echo "strata: builder :50051, metadata :50052, blobstore :50053, registry :5000 (data in $data); Ctrl-C stops all" >&2
wait -n
