#!/usr/bin/env bash
# The build benchmark of the scale stack: builds per minute of a batch of
# 30 small builds (each its own build argument, so nothing is cached: FROM
# busybox, a RUN that writes a file, a COPY) from 6 concurrent clients,
# through 3 builders and through 1 of them (the other two idle) on the same
# machine's cores, N rounds of each (default 3), alternating, and the
# medians and their ratio. On one machine
# the figure shows what running replicas costs, not a cluster's speed-up.
#
#   deploy/bench-scale.sh [N]
#
# It holds /tmp/strata-compose.lock and runs its own project; it removes
# it at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
strata=$root/bin/strata
rounds=${1:-3}
[ -x "$strata" ] || { echo "bin/strata missing: run make build" >&2; exit 1; }

exec 9>/tmp/strata-compose.lock
flock 9

export COMPOSE_PROJECT_NAME=strata-bench-$$ STRATA_SCALE=1 STRATA_IMAGE_TAG=${STRATA_IMAGE_TAG:-scale}
export STRATA_CONFIG=$root/deploy/.state/$COMPOSE_PROJECT_NAME.config.json
work=$(mktemp -d)
trap '"$root/deploy/stack.sh" down >/dev/null 2>&1; rm -rf "$work"' EXIT
stack() { "$root/deploy/stack.sh" "$@"; }

stack up >"$work/up.log" 2>&1 || { cat "$work/up.log"; exit 1; }
eval "$(stack env)"

mkdir -p "$work/rootfs/bin" "$work/rootfs/etc" "$work/rootfs/tmp" "$work/ctx"
cp "$(command -v busybox)" "$work/rootfs/bin/busybox"
for a in $(busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$work/rootfs/bin/$a"; done
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$work/rootfs/etc/passwd"
tar --numeric-owner --owner=0 --group=0 -C "$work/rootfs" -cf "$work/rootfs.tar" .
"$strata" import "$work/rootfs.tar" busybox:latest >/dev/null
echo "a small file" >"$work/ctx/file.txt"
cat >"$work/ctx/Dockerfile" <<'EOF'
FROM busybox
ARG ID
RUN echo "$ID" > /id
COPY file.txt /file.txt
EOF

# batch NAME: 30 builds, 6 at a time; prints builds per minute.
batch() {
  local start end
  start=$(date +%s.%N)
  seq 1 30 | xargs -P 6 -I{} "$strata" build -q --build-arg "ID=$1-{}" -t "bench:$1-{}" "$work/ctx" >/dev/null
  end=$(date +%s.%N)
  awk -v s="$start" -v e="$end" 'BEGIN { printf "%.1f\n", 30 * 60 / (e - s) }'
}

# builders N: point the CLI at the first N builders. The others stay up,
# idle, so that each batch runs beside the same processes and every builder
# has busybox unpacked from the warm-up.
all_builders=$STRATA_BUILDER_ADDR
builders() { STRATA_BUILDER_ADDR=$(tr , '\n' <<<"$all_builders" | head -"$1" | paste -sd,); export STRATA_BUILDER_ADDR; }

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

batch warmup >/dev/null # unpack busybox on the builders, warm the connections
: >"$work/three" && : >"$work/one"
for r in $(seq 1 "$rounds"); do
  builders 3
  batch "three-$r" | tee -a "$work/three" | sed "s/^/round $r, 3 builders: builds\/min /"
  builders 1
  batch "one-$r" | tee -a "$work/one" | sed "s/^/round $r, 1 builder:  builds\/min /"
done
three=$(median <"$work/three")
one=$(median <"$work/one")
echo "median builds/min: 3 builders $three, 1 builder $one; ratio 3/1 $(awk -v a="$three" -v b="$one" 'BEGIN { printf "%.2f", a / b }') (target: at least 0.90)"
