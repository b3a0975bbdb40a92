#!/usr/bin/env bash
# The build benchmark of ../shared/bench: Strata (blob store on S3 through
# versitygw, metadata on SQLite) and Docker's classic builder on the same
# workload in the same run — cold, warm and touch1, the median of N runs
# each — printing both times and Strata's ratio to Docker's.
# Usage: scripts/bench-build.sh [N]   (needs make build, versitygw, runc, docker)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
n=${1:-3}
shared=${STRATA_SHARED:-$root/../shared}
[ -d "$shared/bench" ] || shared=/work/shared
bench=$shared/bench
work=${STRATA_BENCH_DIR:-$(mktemp -d /tmp/strata-bench-XXXX)}
mkdir -p "$work"
[ -d "$work/ctx" ] || "$bench/make-context.sh" "$work/ctx"
[ -f "$work/rootfs.tar" ] || "$bench/make-rootfs.sh" "$work/rootfs.tar"
strata=$root/bin/strata
export XDG_CACHE_HOME=$work/client-cache

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
timed() { local s e; s=$(date +%s.%N); "$@"; e=$(date +%s.%N); echo "$e - $s" | bc; }
build() { "$strata" build -q -t bench:strata -f "$bench/Dockerfile" "$work/ctx" >/dev/null; }

stack=
up() { # a fresh stack: no blobs, no metadata, no builder state, no client cache
  stack=$(mktemp -d "$work/stack-XXXX")
  rm -rf "$XDG_CACHE_HOME"
  eval "$("$root/scripts/stack.sh" "$stack" s3)"
  "$strata" import "$work/rootfs.tar" busybox:bench >/dev/null
}
down() { "$root/scripts/stack.sh" stop "$stack"; rm -rf "$stack"; }
trap '[ -n "$stack" ] && down' EXIT

cold() { up; timed build; down; stack=; }
warm() { build; timed build; }
touch1() { build; echo "// $(date +%s%N)" >>"$work/ctx/src/d1/f1.go"; timed build; }

declare -A strata_t docker_t
strata_t[cold]=$(for _ in $(seq "$n"); do cold; done | median)
up
strata_t[warm]=$(for _ in $(seq "$n"); do warm; done | median)
strata_t[touch1]=$(for _ in $(seq "$n"); do touch1; done | median)
down; stack=

while read -r _ scenario t; do docker_t[$scenario]=${t%s}; done < <("$bench/docker-baseline.sh" "$work" "$n")

printf '%-8s %12s %12s %8s %8s\n' scenario strata docker ratio target
for s in cold warm touch1; do
  case $s in cold) target=0.35;; warm) target=0.03;; touch1) target=0.15;; esac
  ratio=$(echo "scale=3; ${strata_t[$s]} / ${docker_t[$s]}" | bc)
  printf '%-8s %11.3fs %11.3fs %8s %8s\n' "$s" "${strata_t[$s]}" "${docker_t[$s]}" "$ratio" "≤$target"
done
