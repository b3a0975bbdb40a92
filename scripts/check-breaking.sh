#!/usr/bin/env bash
# Checks proto/ for breaking changes against the previous commit of main,
# once that commit has protos. A fresh shallow clone has no previous commit;
# then there is nothing to compare against.
set -euo pipefail
cd "$(dirname "$0")/.."
base=${BREAKING_BASE:-HEAD~1}
git rev-parse --verify -q "$base^{commit}" >/dev/null || { echo "buf breaking: no $base to compare against"; exit 0; }
git cat-file -e "$base:proto" 2>/dev/null || { echo "buf breaking: $base has no protos"; exit 0; }
buf breaking --against ".git#ref=$base"
