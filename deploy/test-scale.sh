#!/usr/bin/env bash
# The scale test: Strata's scale stack (deploy/docker-compose.scale.yml:
# PostgreSQL and S3 under 2 blob stores, 2 metadata services and 3 builders)
# on the machine's Docker Engine, reached from here through the replicas'
# published loopback ports as one list, which the CLI spreads its calls
# over (round robin to the healthy ones).
#
#   1. 30 builds of 10 Dockerfiles from 6 concurrent clients, spread over
#      the 3 builders: each Dockerfile once, then twice more, hitting the
#      cache records whatever builder wrote them.
#   2. The same 30 again: every step a cache hit on every builder, and each
#      Dockerfile's image (so its ID, tags and history) the same whichever
#      builder served it.
#   3. One builder killed (docker kill, SIGKILL) while RUN steps run on it:
#      those builds fail UNAVAILABLE and succeed when tried again, on
#      another builder.
#   4. One metadata replica and one blob store killed during a round of
#      builds and imports: tried again, they succeed through the others.
#   5. Nothing half-recorded: every tag names an image whose config,
#      manifest and layers are all readable (strata save), and every stored
#      blob matches its digest (strata blob verify).
#
# It runs under a project name and an image tag of its own, holds
# /tmp/strata-compose.lock while it uses the Docker Engine (other stacks'
# tests take it too), and removes what it started whatever happens. Each
# check prints ok/FAIL; the last line is "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
strata=$root/bin/strata
[ -x "$strata" ] || { echo "bin/strata missing: run make build" >&2; exit 1; }
docker info >/dev/null 2>&1 || { echo "the Docker Engine is not reachable (docker info failed)" >&2; exit 1; }

exec 9>/tmp/strata-compose.lock
flock 9

export COMPOSE_PROJECT_NAME=strata-scale-$$ STRATA_SCALE=1 STRATA_IMAGE_TAG=${STRATA_IMAGE_TAG:-scale}
export STRATA_CONFIG=$root/deploy/.state/$COMPOSE_PROJECT_NAME.config.json
work=$(mktemp -d)
started=$SECONDS

passed=0 failed=0
ok() { passed=$((passed + 1)); echo "ok   $* ($((SECONDS - started))s)"; }
fail() { failed=$((failed + 1)); echo "FAIL $* ($((SECONDS - started))s)"; }
check() {
  local what=$1 out
  shift
  if out=$("$@" 2>&1); then
    ok "$what"
    [ -z "$out" ] || printf '%s\n' "$out" | tail -5 | sed 's/^/     /'
  else
    fail "$what"
    printf '%s\n' "$out" | tail -30 | sed 's/^/     /'
  fi
}

stack() { "$root/deploy/stack.sh" "$@"; }
compose() { stack compose "$@"; }

cleanup() {
  stack down >/dev/null 2>&1
  rm -rf "$work"
  local left
  left=$(docker ps -aq --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME")
  [ -z "$left" ] || docker rm -f $left >/dev/null 2>&1
}
trap cleanup EXIT

# dockerfiles writes 10 build contexts, each a Dockerfile with a RUN and a
# COPY, different from the others.
dockerfiles() {
  local i
  for i in $(seq 0 9); do
    mkdir -p "$work/df$i"
    echo "data of context $i" >"$work/df$i/data.txt"
    cat >"$work/df$i/Dockerfile" <<EOF
FROM busybox
ARG N=$i
ENV APP=app-$i
COPY data.txt /data.txt
RUN echo "built $i" > /built && cat /data.txt >> /built
LABEL context=$i
CMD ["cat", "/built"]
EOF
  done
  mkdir -p "$work/slow"
  cat >"$work/slow/Dockerfile" <<'EOF'
FROM busybox
ARG RUN_ID
RUN sleep 6 && echo "$RUN_ID" > /run-id
EOF
}

# build LOG ARGS...: strata build ARGS, its output in LOG, tried up to 4
# times while it fails; each failure's output goes to LOG.fail.N.
build() {
  local log=$1 try
  shift
  for try in 1 2 3 4; do
    if "$strata" build "$@" >"$log" 2>&1; then return 0; fi
    cp "$log" "$log.fail.$try"
    sleep 1
  done
  return 1
}
export -f build
export strata

# round NAME N...: builds context dfN as tag dfN:NAME-K for each argument,
# six at a time, each output in $work/NAME-K.log.
round() {
  local name=$1 k=0 n
  shift
  for n in "$@"; do
    echo "$name-$k $n"
    k=$((k + 1))
  done | xargs -P 6 -L 1 bash -c 'build "$0/$1.log" -t "df$2:$1" "$0/df$2"' "$work"
}

# spread: every builder served some of the builds so far.
spread() {
  local id n
  for id in $(compose ps -q builder); do
    n=$(docker logs "$id" 2>&1 | grep -c '"grpc.method":"Build".*"msg":"finished call"\|"msg":"finished call".*"grpc.method":"Build"')
    echo "$(docker inspect -f '{{.Name}}' "$id"): $n builds"
    [ "$n" -gt 0 ] || return 1
  done
}

# all_cached NAME: every build of round NAME hit the cache at every step
# after FROM, and ran nothing.
all_cached() {
  local f steps cached
  for f in "$work/$1"-*.log; do
    steps=$(grep -c '^Step ' "$f")
    cached=$(grep -c -- '---> Using cache' "$f")
    grep -q -- '---> Running in' "$f" && { echo "$f ran a step:"; cat "$f"; return 1; }
    [ "$cached" -eq $((steps - 1)) ] || { echo "$f: $cached of $((steps - 1)) steps cached:"; cat "$f"; return 1; }
  done
}

# same_images NAME...: the builds of each Dockerfile in those rounds made
# one image, and its tags name it with the same history.
same_images() {
  local i ids h first
  for i in $(seq 0 9); do
    ids=$(for r in "$@"; do "$strata" images --no-trunc --format '{{.Repository}}:{{.Tag}} {{.ID}}' "df$i" | awk -v r="$r" '$1 ~ ":"r"-" {print $2}'; done | sort -u)
    [ "$(wc -l <<<"$ids")" -eq 1 ] || { echo "df$i made several images: $ids"; return 1; }
    first=
    for t in $("$strata" images --format '{{.Repository}}:{{.Tag}}' "df$i"); do
      h=$("$strata" history --no-trunc --format '{{.ID}} {{.CreatedBy}} {{.Size}}' "$t") || return 1
      [ -z "$first" ] && first=$h
      [ "$h" = "$first" ] || { echo "history of $t differs:"; diff <(echo "$first") <(echo "$h"); return 1; }
    done
  done
}

# running_builder ROUND prints a builder that is running a RUN step of the
# slow round ROUND (the round robin decides which builders get its builds);
# none within 60 s fails, with what the round's builds printed so far.
running_builder() {
  local i id
  for i in $(seq 1 120); do
    for id in $(compose ps -q builder); do
      docker top "$id" 2>/dev/null | grep -q 'sleep 6' && { echo "$id"; return 0; }
    done
    sleep 0.5
  done
  echo "no RUN step ran on any builder within 60 s" >&2
  tail -n 5 "$work/$1"-*.log >&2
  return 1
}

# slow_round NAME N: N builds of the slow Dockerfile (a distinct build
# argument each, so nothing is cached), six at a time, in the background.
slow_round() {
  local name=$1 n=$2
  seq 1 "$n" | xargs -P 6 -I{} bash -c 'build "$0/$1-{}.log" --build-arg RUN_ID="$1-{}" -t "slow:$1-{}" "$0/slow"' "$work" "$name" &
}

# failed_unavailable NAME: some builds of round NAME failed, each because a
# service was unavailable, and every build succeeded in the end.
failed_unavailable() {
  local f n=0
  for f in "$work/$1"-*.log.fail.*; do
    [ -e "$f" ] || continue
    n=$((n + 1))
    grep -qi 'unavailable\|cannot be reached\|connection broke\|is the service running' "$f" || { echo "$f failed otherwise:"; cat "$f"; return 1; }
  done
  [ "$n" -gt 0 ] || { echo "no build of round $1 failed: the kill hit none"; return 1; }
  for f in "$work/$1"-*.log; do
    grep -q '^Successfully built' "$f" || { echo "$f did not succeed in the end:"; cat "$f"; return 1; }
  done
  echo "$n failed tries, all UNAVAILABLE; every build succeeded when tried again"
}

# referenced prints every blob digest an image recorded in metadata needs
# (ListReferencedBlobs through grpcurl, from the first replica that answers).
referenced() {
  local token addr out
  token=$(awk 'NF { print ($2 != "" ? $2 : $1); exit }' "$STRATA_CLIENT_TOKEN_FILE")
  for addr in ${STRATA_METADATA_ADDR//,/ }; do
    out=$("$root/.tools/bin/grpcurl" -cacert "$STRATA_CLIENT_TLS_CA" -H "authorization: Bearer $token" -d '{"page_size": 100000}' \
      "$addr" strata.metadata.v1.ImageService/ListReferencedBlobs 2>/dev/null) || continue
    grep -o '"sha256:[0-9a-f]*"' <<<"$out" | tr -d '"'
    return 0
  done
  echo "no metadata replica answered ListReferencedBlobs" >&2
  return 1
}

# intact: every tag names an image whose blobs all read back (strata save
# reads config, manifest and every layer, re-hashing each); every blob any
# recorded image needs, intermediate ones too, is stored and matches its
# digest; and so does every stored blob.
intact() {
  local t n=0 refs
  for t in $("$strata" images --format '{{.Repository}}:{{.Tag}}'); do
    "$strata" save -o "$work/save.tar" "$t" || { echo "save $t failed"; return 1; }
    n=$((n + 1))
  done
  refs=$(referenced) || return 1
  "$strata" blob verify -q $refs || { echo "blobs that recorded images need are damaged or missing"; return 1; }
  "$strata" blob verify -q || { echo "blob verify found damaged blobs"; return 1; }
  echo "$n tagged images read back whole; the $(wc -w <<<"$refs") blobs recorded images need, and every stored blob, verified"
}

rootfs() {
  local dir=$work/rootfs
  mkdir -p "$dir/bin" "$dir/etc" "$dir/tmp"
  chmod 1777 "$dir/tmp"
  cp "$(command -v busybox)" "$dir/bin/busybox"
  for a in $(busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$dir/bin/$a"; done
  printf 'root:x:0:0:root:/root:/bin/sh\n' >"$dir/etc/passwd"
  printf 'root:x:0:\n' >"$dir/etc/group"
  tar --numeric-owner --owner=0 --group=0 -C "$dir" -cf "$work/rootfs.tar" .
}

# imports NAME N: N imports of the rootfs under new tags, in the background.
imports() {
  seq 1 "$2" | xargs -P 2 -I{} bash -c 'for t in 1 2 3 4; do "$strata" import "$0/rootfs.tar" "imported:$1-{}" >"$0/$1-import-{}.out" 2>&1 && exit 0; sleep 1; done; exit 1' "$work" "$1" &
}

echo "--- the scale stack (project $COMPOSE_PROJECT_NAME, images :$STRATA_IMAGE_TAG)"
if ! stack up; then
  fail "make up-scale: the stack starts healthy"
  echo "$passed passed, $failed failed"
  exit 1
fi
ok "the scale stack starts healthy"
eval "$(stack env)"
check "the CLI reaches 3 builders, 2 metadata and 2 blob stores as lists" \
  bash -c '[ $(tr , "\n" <<<"$STRATA_BUILDER_ADDR" | wc -l) -eq 3 ] && [ $(tr , "\n" <<<"$STRATA_METADATA_ADDR" | wc -l) -eq 2 ] && [ $(tr , "\n" <<<"$STRATA_BLOBSTORE_ADDR" | wc -l) -eq 2 ] || { env | grep STRATA_; exit 1; }'
rootfs
dockerfiles
check "busybox imported" "$strata" import "$work/rootfs.tar" busybox:latest

t0=$SECONDS
round r1 $(seq 0 9)
round r1b $(seq 0 9) $(seq 0 9)
echo "     round 1 (30 builds): $((SECONDS - t0))s"
check "round 1: 30 builds of 10 Dockerfiles from 6 clients succeeded" bash -c "grep -L '^Successfully built' $work/r1-*.log $work/r1b-*.log | grep . && exit 1 || exit 0"
check "round 1: the 20 repeats hit the cache records whatever builder wrote them" all_cached r1b
t0=$SECONDS
round r2 $(seq 0 9) $(seq 0 9) $(seq 0 9)
echo "     round 2 (30 builds): $((SECONDS - t0))s"
check "round 2: every step of the 30 builds is a cache hit" all_cached r2
check "the builds spread over the 3 builders" spread
check "each Dockerfile made one image, the same history, whichever builder built it" same_images r1 r1b r2

slow_round killb 9
if victim=$(running_builder killb 2>"$work/running.err"); then
  ok "a RUN step runs on the builder to kill"
  docker kill "$victim" >/dev/null
else
  fail "a RUN step runs on the builder to kill"
  sed 's/^/     /' "$work/running.err"
fi
wait
check "builds on the killed builder failed UNAVAILABLE and succeeded on another" failed_unavailable killb

meta=$(compose ps -q metadata | head -1)
blob=$(compose ps -q blobstore | head -1)
slow_round killmb 8
imports killmb 4
running_builder killmb >/dev/null 2>&1
docker kill "$meta" "$blob" >/dev/null
wait
check "with a metadata and a blob store replica killed, every build succeeded (tried again)" bash -c "grep -L '^Successfully built' $work/killmb-*.log | grep . && exit 1 || exit 0"
check "with them killed, every import succeeded (tried again)" bash -c "for f in $work/killmb-import-*.out; do grep -q '^sha256:' \$f || { cat \$f; exit 1; }; done"
check "nothing half-recorded: every image whole, every blob matching its digest" intact

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
