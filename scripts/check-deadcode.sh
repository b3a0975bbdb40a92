#!/usr/bin/env bash
# Fails when deadcode finds a function that no main package and no test
# reaches: code kept for nothing. (Test hooks stay: tests are roots.)
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(deadcode -test "$@")
if [ -n "$out" ]; then
  echo "deadcode: unreachable functions (remove them, or use them):"
  echo "$out"
  exit 1
fi
