#!/usr/bin/env bash
# The build benchmark of ../shared/bench (issue 19): Strata, Docker's classic
# builder and BuildKit build the same workloads in the same run, interleaved
# run by run (each run times the three back to back, in an order that
# rotates), for the scenarios cold, warm and touch1. It prints each median
# and Strata's ratio to each peer (the median of the runs' ratios), and, when
# STRATA_BENCH_RESULTS names a file, appends them there as JSON lines for
# `make bench`'s table.
#
# What each side does:
#   Strata    `strata build` against the three services from bin/ (blob store
#             on S3 through versitygw, metadata on SQLite): layers written
#             with parallel gzip (level 1) straight into the blob store,
#             which checks every digest. Cold: a fresh stack, busybox:bench
#             imported, no client cache.
#   Docker    `docker build` with DOCKER_BUILDKIT=0, as
#             ../shared/bench/docker-baseline.sh runs it: the whole context
#             sent every build, layers kept uncompressed in its layer store
#             (fuse-overlayfs here). Cold: the image removed, builder and
#             dangling images pruned.
#   BuildKit  buildkitd v0.34.2 (make tools) with its OCI worker (runc),
#             `buildctl build` with the dockerfile frontend, busybox:bench
#             given as an OCI layout named context, exported to its image
#             store (type=image: layers gzip-compressed, default level).
#             Its built-in Dockerfile frontend serves `# syntax=` (cmdline:
#             no registry is reachable for the frontend image).
#             Cold: a fresh daemon on an empty root.
#
# The workloads: files and app of ../shared/bench, and stages (bench/stages):
# today's Dockerfile syntax, two independent stages and a cache mount, which
# Docker's classic builder cannot build, so only Strata and BuildKit run it.
#
# Usage: scripts/bench-build.sh [N] [WORKLOADS]
#   N           runs per scenario (default 3)
#   WORKLOADS   "files app stages" (default), or some of them
# Needs make build, make tools (versitygw, buildkitd, buildctl), runc,
# skopeo, docker.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
n=${1:-3}
workloads=${2:-files app stages}
shared=${STRATA_SHARED:-$root/../shared}
[ -d "$shared/bench" ] || shared=/work/shared
bench=$shared/bench
work=${STRATA_BENCH_DIR:-$(mktemp -d /tmp/strata-bench-XXXX)}
mkdir -p "$work"
work=$(cd "$work" && pwd)
tools=$root/.tools/bin
export PATH=$tools:$PATH
strata=$root/bin/strata
export XDG_CACHE_HOME=$work/client-cache
systems=(strata docker buildkit)

# num VALUE [UNIT]: VALUE to 3 decimals with UNIT, or "-" when it is nan.
num() { if [ "$1" = nan ]; then echo -; else printf '%.3f%s' "$1" "${2:-}"; fi; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
now() { date +%s.%N; }
# runs of "workload scenario system": one a line, in run order.
runs() { tr ' ' '\n' <<<"${times[$1]}" | grep .; }

# --- the workloads --------------------------------------------------------
[ -f "$work/rootfs.tar" ] || "$bench/make-rootfs.sh" "$work/rootfs.tar"
for w in $workloads; do
  case $w in
    files) [ -d "$work/ctx-files" ] || "$bench/make-context.sh" "$work/ctx-files" ;;
    app) [ -d "$work/ctx-app" ] || "$bench/app/make-context.sh" "$work/ctx-app" ;;
    stages) [ -d "$work/ctx-stages" ] || "$root/bench/stages/make-context.sh" "$work/ctx-stages" ;;
    *) echo "unknown workload $w (files, app or stages)" >&2; exit 2 ;;
  esac
done
dockerfile() {
  case $1 in
    files) echo "$bench/Dockerfile" ;;
    app) echo "$bench/app/Dockerfile" ;;
    stages) echo "$root/bench/stages/Dockerfile" ;;
  esac
}
touched() {
  case $1 in
    files) echo "$work/ctx-files/src/d1/f1.go" ;;
    app) echo "$work/ctx-app/$(cat "$bench/app/touch1")" ;;
    stages) echo "$work/ctx-stages/$(cat "$root/bench/stages/touch1")" ;;
  esac
}
# systems_of WORKLOAD: the systems that build it.
systems_of() { if [ "$1" = stages ]; then echo strata buildkit; else echo "${systems[@]}"; fi; }

# The base image, for each system: Docker imports the rootfs; BuildKit reads
# Docker's image as an OCI layout; Strata imports it into each fresh stack.
docker image inspect busybox:bench >/dev/null 2>&1 || docker import "$work/rootfs.tar" busybox:bench >/dev/null
if [ ! -f "$work/base/index.json" ]; then
  skopeo copy -q docker-daemon:busybox:bench "oci:$work/base:bench"
fi
base_digest=$(jq -r '.manifests[0].digest' "$work/base/index.json")

# --- Strata ----------------------------------------------------------------
stack=
strata_up() { # a fresh stack: no blobs, no metadata, no builder state, no client cache
  strata_down
  stack=$(mktemp -d "$work/stack-XXXX")
  rm -rf "$XDG_CACHE_HOME"
  eval "$("$root/scripts/stack.sh" "$stack" s3)"
  "$strata" import "$work/rootfs.tar" busybox:bench >/dev/null
}
strata_down() { [ -z "$stack" ] || { "$root/scripts/stack.sh" stop "$stack"; rm -rf "$stack"; stack=; }; }
strata_cold() { strata_up; }
strata_build() { "$strata" build -q -t "bench-$1:strata" -f "$(dockerfile "$1")" "$work/ctx-$1" >/dev/null; }

# --- Docker's classic builder ---------------------------------------------
docker_cold() {
  docker rmi -f "bench-$1:docker" >/dev/null 2>&1 || true
  docker builder prune -af >/dev/null 2>&1 || true
  docker image prune -f >/dev/null 2>&1 || true
}
docker_build() {
  DOCKER_BUILDKIT=0 docker build -q -t "bench-$1:docker" -f "$(dockerfile "$1")" "$work/ctx-$1" >"$work/docker.log" 2>&1 ||
    { cat "$work/docker.log" >&2; return 1; }
}

# --- BuildKit --------------------------------------------------------------
bk=$work/buildkit
buildkit_down() {
  if [ -f "$bk/pid" ]; then
    kill "$(cat "$bk/pid")" 2>/dev/null || true
    while kill -0 "$(cat "$bk/pid")" 2>/dev/null; do sleep 0.05; done
    rm -f "$bk/pid"
  fi
}
buildkit_cold() { # a fresh daemon on an empty root
  buildkit_down
  rm -rf "$bk"
  mkdir -p "$bk"
  buildkitd --root "$bk/root" --addr "unix://$bk/sock" --oci-worker=true --containerd-worker=false >"$bk/log" 2>&1 &
  echo $! >"$bk/pid"
  for _ in $(seq 600); do
    buildctl --addr "unix://$bk/sock" debug workers >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "buildkitd did not start; see $bk/log" >&2
  exit 1
}
buildkit_build() {
  local df
  df=$(dockerfile "$1")
  buildctl --addr "unix://$bk/sock" build --progress quiet --frontend dockerfile.v0 \
    --local "context=$work/ctx-$1" --local "dockerfile=$(dirname "$df")" --opt "filename=$(basename "$df")" \
    --opt cmdline=docker/dockerfile:1 \
    --oci-layout "base=$work/base" --opt "context:busybox:bench=oci-layout://base@$base_digest" \
    --output "type=image,name=docker.io/library/bench-$1:buildkit" >"$bk/buildctl.log" 2>&1 ||
    { cat "$bk/buildctl.log" >&2; return 1; }
}

trap 'strata_down; buildkit_down' EXIT

# --- the runs --------------------------------------------------------------
# timed SYSTEM WORKLOAD SCENARIO: gets SYSTEM ready for SCENARIO, untimed,
# then times one build into $t. (Not in a subshell: a cold start changes
# this shell's state, the stack's addresses and the daemon's pid.)
timed() {
  local sys=$1 w=$2 scenario=$3 s e
  case $scenario in
    cold) "${sys}_cold" "$w" ;;
    warm) "${sys}_build" "$w" ;;
    touch1) "${sys}_build" "$w"; echo "// $(date +%s%N)" >>"$(touched "$w")" ;;
  esac
  s=$(now); "${sys}_build" "$w"; e=$(now)
  t=$(awk -v s="$s" -v e="$e" 'BEGIN {printf "%.3f", e - s}')
}

declare -A times # "workload scenario system" -> the runs' seconds, in run order
for w in $workloads; do
  read -ra sys_w <<<"$(systems_of "$w")"
  for r in $(seq 0 $((n - 1))); do
    k=${#sys_w[@]}
    order=("${sys_w[@]:r%k}" "${sys_w[@]:0:r%k}")
    for scenario in cold warm touch1; do
      for sys in "${order[@]}"; do
        timed "$sys" "$w" "$scenario"
        times[$w $scenario $sys]+="$t "
        echo "build $w $scenario run $((r + 1)): $sys ${t}s" >&2
      done
    done
  done
done

# --- the report ------------------------------------------------------------
declare -A did=(
  [strata]="strata build; services from bin/, blob store on S3 (versitygw), metadata on SQLite; layers parallel-gzipped (level 1) into the blob store, every digest checked; cold: a fresh stack"
  [docker]="Docker 20.10 classic builder (DOCKER_BUILDKIT=0) on fuse-overlayfs; the whole context sent each build; layers stored uncompressed; cold: image removed, builder and dangling images pruned"
  [buildkit]="buildkitd v0.34.2, OCI worker (runc); base from an OCI layout named context; exported to its image store (gzip, default level); cold: a fresh daemon and root"
)
declare -A target=(
  [files cold docker]="<= 0.35" [files warm docker]="<= 0.03" [files touch1 docker]="<= 0.15"
  [app cold buildkit]="<= 0.6" [app warm buildkit]="<= 0.25" [app touch1 buildkit]="<= 0.6"
  [stages cold buildkit]="<= 0.8" [stages touch1 buildkit]="<= 0.8"
)
printf '%-6s %-7s %10s %10s %10s %14s %16s\n' workload scenario strata docker buildkit strata/docker strata/buildkit
for w in $workloads; do
  read -ra sys_w <<<"$(systems_of "$w")"
  for scenario in cold warm touch1; do
    declare -A med=([docker]=nan) ratio=([docker]=nan)
    for sys in "${sys_w[@]}"; do
      med[$sys]=$(runs "$w $scenario $sys" | median)
    done
    for peer in "${sys_w[@]:1}"; do
      ratio[$peer]=$(paste <(runs "$w $scenario strata") <(runs "$w $scenario $peer") |
        awk '{printf "%.6f\n", $1 / $2}' | median)
      if [ -n "${STRATA_BENCH_RESULTS:-}" ]; then
        jq -cn --arg name "$w workload, $scenario" --arg peer "$peer" --arg sdid "${did[strata]}" --arg pdid "${did[$peer]}" \
          --arg target "${target[$w $scenario $peer]:-}" --argjson s "${med[strata]}" --argjson p "${med[$peer]}" \
          --argjson ratio "${ratio[$peer]}" --argjson runs "$n" \
          '{bench: "build", name: $name, unit: "s", better: "lower", strata: $s, strata_did: $sdid,
            peer: (if $peer == "docker" then "Docker classic" else "BuildKit" end), peer_value: $p, peer_did: $pdid,
            ratio: $ratio, target: $target, runs: $runs}' >>"$STRATA_BENCH_RESULTS"
      fi
    done
    # Docker's columns are "-" for a workload it cannot build.
    printf '%-6s %-7s %9.3fs %10s %9.3fs %14s %16.3f\n' "$w" "$scenario" "${med[strata]}" \
      "$(num "${med[docker]}" s)" "${med[buildkit]}" "$(num "${ratio[docker]}")" "${ratio[buildkit]}"
  done
done
