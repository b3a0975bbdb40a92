#!/usr/bin/env bash
# Fails when gen/ differs from what `make generate` makes of proto/.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
buf generate --output "$tmp" >/dev/null
buf build -o "$tmp/gen/descriptors.binpb"
if ! diff -r "$tmp/gen/strata" gen/strata >/dev/null || ! cmp -s "$tmp/gen/descriptors.binpb" gen/descriptors/descriptors.binpb; then
  echo "gen/ is stale: run 'make generate' and commit the result" >&2
  diff -r "$tmp/gen/strata" gen/strata | head -20 >&2
  exit 1
fi
