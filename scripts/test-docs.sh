#!/usr/bin/env bash
# Runs the examples of the API guide exactly as written, so the guide cannot
# drift from the services: every ```sh block of docs/api.md (or of the files
# given), in order, in one bash with errexit and pipefail, from the
# repository's root, against a fresh `make run` (scripts/run.sh, its data in
# a temporary directory). A block right after a line starting with
# "<!-- not run" is skipped (it needs a deployment CI does not have).
#
# The services listen on make run's fixed ports (50051-50053, 5000), which
# the blocks name. To leave a developer's own `make run` (and anything else
# on those ports) alone, the script runs the services and the blocks in a
# network namespace of their own when it can (root and unshare); otherwise
# the ports must be free. Needs bin/ (make build), grpcurl (make tools), jq
# and busybox-static (make deps).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
files=("$@"); [ ${#files[@]} -gt 0 ] || files=(docs/api.md)

if [ -z "${STRATA_TEST_DOCS_NETNS:-}" ] && [ "$(id -u)" = 0 ] && command -v unshare >/dev/null; then
  exec env STRATA_TEST_DOCS_NETNS=1 unshare --net "$0" "${files[@]}"
fi
if [ -n "${STRATA_TEST_DOCS_NETNS:-}" ]; then
  ip link set lo up 2>/dev/null || { echo "test-docs: cannot bring up loopback in the namespace (need iproute2)" >&2; exit 1; }
fi

export PATH=$root/bin:$root/.tools/bin:$PATH
for tool in grpcurl jq busybox; do
  command -v "$tool" >/dev/null || { echo "test-docs: $tool not found (make tools, make deps)" >&2; exit 1; }
done
for p in 50051 50052 50053 5000; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "test-docs: 127.0.0.1:$p is in use; stop what listens there (make run?) or run as root" >&2; exit 1
  fi
done

work=$(mktemp -d)
run_pid=
cleanup() {
  if [ -n "$run_pid" ]; then kill "$run_pid" 2>/dev/null || true; wait "$run_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# The blocks, each preceded by a line saying where it comes from.
script=$work/blocks.sh
for f in "${files[@]}"; do
  awk -v file="$f" '
    /^<!-- not run/ { skip = 1; next }
    /^```sh[[:space:]]*$/ && !inblock { inblock = 1; if (!skip) printf "printf %s\n", "\047\\n--- " file ":" NR "\\n\047"; next }
    /^```[[:space:]]*$/ && inblock { inblock = 0; skip = 0; next }
    inblock && !skip { print; next }
    !inblock && NF { skip = skip && /^<!--/ }
  ' "$f" >>"$script"
done
grep -q . "$script" || { echo "test-docs: no sh blocks in ${files[*]}" >&2; exit 1; }

STRATA_RUN_DIR=$work/run scripts/run.sh >"$work/services.log" 2>&1 &
run_pid=$!
ready=
for _ in $(seq 1 600); do
  ready=1
  for p in 50051 50052 50053 5000; do
    grpcurl -plaintext -max-time 1 "127.0.0.1:$p" grpc.health.v1.Health/Check >/dev/null 2>&1 || { ready=; break; }
  done
  [ -n "$ready" ] && break
  kill -0 "$run_pid" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$ready" ]; then
  echo "test-docs: the services did not become healthy; their log:" >&2; cat "$work/services.log" >&2; exit 1
fi

echo "test-docs: running the sh blocks of ${files[*]}"
if ! (cd "$root" && bash -euo pipefail "$script"); then
  echo >&2
  echo "test-docs: FAILED: the block after the last '--- FILE:LINE' above did not run as written" >&2
  echo "test-docs: the services' log:" >&2; tail -n 30 "$work/services.log" >&2
  exit 1
fi
echo; echo "test-docs: every block ran"
