#!/usr/bin/env bash
# The compose test: Strata's stack on the machine's real Docker Engine, run
# the way `make up` runs it (deploy/stack.sh), under a project name and
# published ports of its own so that it leaves a developer's stack alone.
#
#   deploy/test.sh            the SQLite stack, then the PostgreSQL variant
#   deploy/test.sh sqlite     one of them
#
# Each check prints ok/FAIL; the last line is "N passed, N failed". Whatever
# happens, the test removes what it started (compose down -v) and checks that
# nothing of its project is left: containers, volumes, networks.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
strata=$root/bin/strata
[ -x "$strata" ] || { echo "bin/strata missing: run make build" >&2; exit 1; }
docker info >/dev/null 2>&1 || { echo "the Docker Engine is not reachable (docker info failed)" >&2; exit 1; }

passed=0 failed=0
ok() { passed=$((passed + 1)); echo "ok   $*"; }
fail() { failed=$((failed + 1)); echo "FAIL $*"; }
# check DESCRIPTION COMMAND...: passes when COMMAND succeeds; prints its output when not.
check() {
  local what=$1 out
  shift
  if out=$("$@" 2>&1); then ok "$what"; else fail "$what"; printf '%s\n' "$out" | tail -20 | sed 's/^/     /'; fi
}

stack() { "$root/deploy/stack.sh" "$@"; }
compose() { stack compose "$@"; }

# use_stack points the CLI at the ports the stack published (they are
# ephemeral, and a restarted container may get new ones), with the stack's
# CA and admin token.
use_stack() { eval "$(stack env)"; }

# through_config runs the CLI with no STRATA_* client variable, so that it
# reads the configuration file `stack.sh up` wrote, as a user after make up.
through_config() (
  unset STRATA_BUILDER_ADDR STRATA_METADATA_ADDR STRATA_BLOBSTORE_ADDR STRATA_CLIENT_TLS_CA STRATA_CLIENT_TOKEN_FILE
  "$@"
)

# refused ROLE WANT ARGS...: the CLI with ROLE's token fails, saying WANT.
refused() {
  local role=$1 want=$2 out
  shift 2
  if out=$("$strata" --token-file "$STRATA_SECRETS_DIR/$role.token" "$@" 2>&1); then
    echo "strata $* with the $role token succeeded: $out"; return 1
  fi
  grep -qF -- "$want" <<<"$out" || { echo "$out"; return 1; }
}

# no_token fails unless the services refuse a client with TLS and no token.
no_token() {
  local out
  if out=$(env -u STRATA_CLIENT_TOKEN_FILE "$strata" images 2>&1); then
    echo "a client without a token listed images: $out"; return 1
  fi
  grep -q "missing bearer token" <<<"$out" || { echo "$out"; return 1; }
}

# no_plaintext fails unless every service refuses a plaintext client.
no_plaintext() {
  local out
  if out=$(env -u STRATA_CLIENT_TLS_CA -u STRATA_CLIENT_TOKEN_FILE "$strata" images 2>&1); then
    echo "a plaintext client listed images: $out"; return 1
  fi
}

# all_healthy fails unless every container of the project runs and is healthy.
all_healthy() {
  local id n=0 status
  for id in $(compose ps -a -q); do
    status=$(docker inspect -f '{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}' "$id")
    case "$status" in *" running healthy") n=$((n + 1)) ;; *) echo "not healthy: $status"; return 1 ;; esac
  done
  [ "$n" -eq "$1" ] || { echo "$n healthy containers, want $1"; return 1; }
}

# serving fails unless `strata version` reaches all three services.
serving() {
  local out
  out=$("$strata" version) || return 1
  [ "$(grep -c '(SERVING)' <<<"$out")" -eq 3 ] || { echo "$out"; return 1; }
}

# published_on_loopback fails unless every published port listens on 127.0.0.1.
published_on_loopback() {
  local id bindings
  for id in $(compose ps -q); do
    bindings=$(docker inspect -f '{{range $p, $b := .NetworkSettings.Ports}}{{range $b}}{{.HostIp}} {{end}}{{end}}' "$id")
    for ip in $bindings; do
      [ "$ip" = 127.0.0.1 ] || { echo "$(docker inspect -f '{{.Name}}' "$id") publishes on $ip"; return 1; }
    done
  done
}

# runs_as SERVICE UID: every process of the service runs as that user.
runs_as() {
  local uids
  uids=$(docker top "$(compose ps -q "$1")" -eo pid,uid | awk 'NR > 1 { print $2 }' | sort -u)
  [ "$uids" = "$2" ] || { echo "$1 runs as uid $uids, want $2"; return 1; }
}

# restart_all restarts every service (SIGTERM, start) and waits until healthy.
restart_all() {
  compose restart >/dev/null && stack wait
}

# recreate_all replaces every container with a new one (the volumes stay)
# and waits until healthy.
recreate_all() {
  compose up -d --force-recreate >/dev/null && stack wait
}

# make_rootfs writes a busybox root filesystem tarball (Debian's
# busybox-static), the base image the builds start from.
make_rootfs() {
  local dir
  dir=$(mktemp -d)
  mkdir -p "$dir/bin" "$dir/etc" "$dir/tmp"
  chmod 1777 "$dir/tmp"
  cp "$(command -v busybox)" "$dir/bin/busybox"
  for a in $(busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$dir/bin/$a"; done
  printf 'root:x:0:0:root:/root:/bin/sh\n' >"$dir/etc/passwd"
  printf 'root:x:0:\n' >"$dir/etc/group"
  tar --numeric-owner --owner=0 --group=0 -C "$dir" -cf "$1" .
  rm -rf "$dir"
}

# build_seed builds the seed-like Dockerfile (busybox, LABEL, ENV, RUN, …).
build_seed() {
  local out
  out=$("$strata" build -t my-nginx "$root/deploy/testdata/seed") || { echo "$out"; return 1; }
  grep -q '^Successfully tagged my-nginx:latest$' <<<"$out" || { echo "$out"; return 1; }
}

# rebuild_cached builds the seed again: every step comes from the cache.
rebuild_cached() {
  local out
  out=$("$strata" build -t my-nginx "$root/deploy/testdata/seed") || { echo "$out"; return 1; }
  [ "$(grep -c -- '---> Using cache' <<<"$out")" -eq 9 ] || { echo "$out"; return 1; }
}

# record prints what users rely on: the images and their tags, the seed
# image's ID, layers and history.
record() {
  "$strata" images --no-trunc --format '{{.Repository}}:{{.Tag}} {{.ID}}' &&
    "$strata" inspect -f '{{.Id}} {{.RepoTags}} {{.Parent}} {{.RootFS.Layers}}' my-nginx &&
    "$strata" history --no-trunc --format '{{.ID}} {{.Size}} {{.CreatedBy}} {{.Comment}}' my-nginx
}

# same_record fails unless record prints what it printed into FILE before.
same_record() {
  local now
  now=$(record 2>&1) || { echo "$now"; return 1; }
  diff <(cat "$1") <(echo "$now")
}

# history_rows N: the seed image has N history rows.
history_rows() {
  local n
  n=$("$strata" history -q my-nginx | wc -l)
  [ "$n" -eq "$1" ] || { echo "$n history rows, want $1"; return 1; }
}

# in_s3 DIGEST: the blob lies in the S3 server's volume, where the blob store
# keeps it (blobs/sha256/<hex> in the bucket).
in_s3() {
  compose exec -T s3 /bin/busybox test -f "/var/lib/strata/${STRATA_S3_BUCKET:-strata}/blobs/sha256/${1#sha256:}" ||
    { echo "no $1 in the S3 volume"; return 1; }
}

# metadata_file_is PRESENT|ABSENT: whether metadata.db is in metadata's volume.
metadata_file_is() {
  local got=ABSENT
  docker cp "$(compose ps -q metadata):/var/lib/strata/metadata.db" - >/dev/null 2>&1 && got=PRESENT
  [ "$got" = "$1" ] || { echo "metadata.db is $got, want $1"; return 1; }
}

# layers_read_back saves the seed image from Strata (config, manifest and
# every layer read from the blob store), loads it into the Docker Engine and
# runs a file the RUN step wrote.
# registry_pull logs in to the stack's registry with the read token (a
# Docker configuration of its own), pulls my-nginx with the Docker Engine
# (which takes a loopback registry's certificate as is) and reads its layers
# back; without the login the pull is refused.
registry_pull() {
  local ref out cfg
  ref=$(compose port registry 5000)/my-nginx:latest
  cfg=$(mktemp -d)
  if DOCKER_CONFIG=$cfg docker pull -q "$ref" >/dev/null 2>&1; then
    echo "pulled without logging in"; rm -rf "$cfg"; return 1
  fi
  # A role's token file is a line of the servers' token file: ROLE TOKEN NAME.
  awk '{ print $2 }' "$STRATA_SECRETS_DIR/read.token" | DOCKER_CONFIG=$cfg docker login -u reader --password-stdin "${ref%%/*}" >/dev/null &&
    DOCKER_CONFIG=$cfg docker pull -q "$ref" >/dev/null &&
    out=$(docker run --rm --entrypoint /bin/cat "$ref" /var/log/nginx/install.log)
  local rc=$?
  docker rmi -f "$ref" >/dev/null 2>&1
  rm -rf "$cfg"
  [ $rc -eq 0 ] || return 1
  [ "$out" = ok ] || { echo "read back: $out"; return 1; }
}

layers_read_back() {
  local tag=strata-compose-test-$$/my-nginx:latest tar out
  tar=$(mktemp)
  "$strata" tag my-nginx "$tag" &&
    "$strata" save -o "$tar" "$tag" &&
    docker load -q -i "$tar" >/dev/null &&
    out=$(docker run --rm --entrypoint /bin/cat "$tag" /var/log/nginx/install.log /etc/group)
  local rc=$?
  docker rmi -f "$tag" >/dev/null 2>&1
  "$strata" rmi "$tag" >/dev/null 2>&1
  rm -f "$tar"
  [ $rc -eq 0 ] || return 1
  [ "$out" = "$(printf 'ok\nroot:x:0:\nnginx:x:101:')" ] || { echo "read back: $out"; return 1; }
}

# build_with_blobstore_killed kills the blob store while a RUN step runs: the
# build must fail, say the service is unavailable, and record no image.
build_with_blobstore_killed() {
  local log rc images_before out
  log=$(mktemp)
  images_before=$("$strata" images -a --no-trunc -q | sort)
  "$strata" build --build-arg WAIT=1 -t killed:1 "$root/deploy/testdata/blobstore-killed" >"$log" 2>&1 &
  local pid=$!
  local deadline=$((SECONDS + 120))
  until grep -q '^Step 3/4 : RUN' "$log"; do
    kill -0 $pid 2>/dev/null && [ $SECONDS -lt $deadline ] || { cat "$log"; return 1; }
    sleep 0.1
  done
  docker kill "$(compose ps -q blobstore)" >/dev/null
  wait $pid
  rc=$?
  out=$(cat "$log")
  echo "$out"
  rm -f "$log"
  [ $rc -ne 0 ] || { echo "the build succeeded without its blob store"; return 1; }
  # UNAVAILABLE from the builder, naming the failed step and the service that
  # went away (the CLI's 'is the service running?' hint is for services the
  # CLI itself cannot reach, not for this).
  grep -q '^Error: build failed: .*step 3.*the blob store at blobstore:50053 \(cannot be reached\|is unavailable\)' <<<"$out" || { echo "not the error wanted"; return 1; }
  "$strata" inspect killed:1 >/dev/null 2>&1 && { echo "killed:1 was recorded"; return 1; }
  [ "$("$strata" images -a --no-trunc -q | sort)" = "$images_before" ] || { echo "the image list changed"; return 1; }
}

# run_isolated builds a RUN that tries metadata, the blob store, S3 (and
# PostgreSQL) from inside the build: each must be unreachable, while names
# still resolve (through the builder's forwarder to Docker's DNS on
# 127.0.0.11) and an outside server answers.
run_isolated() {
  local dir out
  dir=$(mktemp -d)
  cat >"$dir/Dockerfile" <<'DOCKERFILE'
FROM busybox
RUN for t in metadata:50052 blobstore:50053 s3:7070 postgres:5432; do \
      nc -w 3 "${t%:*}" "${t#*:}" </dev/null >/dev/null 2>&1 && echo "REACH""ED $t" || echo "block""ed $t"; \
    done; \
    ip=$(nslookup deb.debian.org | awk '/^Address: / { a = $2 } END { print a }'); echo "resolved $ip"; \
    nc -w 5 "$ip" 80 </dev/null && echo "outbound ok"
DOCKERFILE
  out=$("$strata" build --no-cache "$dir" 2>&1)
  rm -rf "$dir"
  echo "$out"
  ! grep -q '^REACHED' <<<"$out" || return 1
  for t in metadata:50052 blobstore:50053 s3:7070; do grep -q "^blocked $t" <<<"$out" || return 1; done
  grep -q '^resolved [0-9]' <<<"$out" && grep -q '^outbound ok' <<<"$out"
}

# nothing_left fails if a container, volume or network of the project is left.
nothing_left() {
  local label=com.docker.compose.project=$COMPOSE_PROJECT_NAME left
  left=$(docker ps -aq --filter "label=$label"; docker volume ls -q --filter "label=$label"; docker network ls -q --filter "label=$label")
  [ -z "$left" ] || { echo "left behind: $left"; return 1; }
}

run_stack() {
  local store=$1 containers=5
  [ "$store" = postgres ] && containers=6
  export STRATA_METADATA_STORE=$store
  export COMPOSE_PROJECT_NAME=strata-test-$store-$$
  # Ephemeral host ports: a developer's stack may hold 50051-50053.
  export STRATA_BUILDER_PORT='' STRATA_METADATA_PORT='' STRATA_BLOBSTORE_PORT='' STRATA_REGISTRY_PORT=''
  echo "--- the stack with metadata on $store (project $COMPOSE_PROJECT_NAME)"
  trap 'stack down >/dev/null 2>&1' EXIT
  # The CLI configuration file `up` writes: the test's own, never the user's.
  export STRATA_CONFIG=$(mktemp -d)/config.json
  STRATA_SECRETS_DIR=$root/deploy/.state/$COMPOSE_PROJECT_NAME/secrets

  check "$store: nothing of the project exists before" nothing_left
  local log
  log=$(mktemp)
  if stack up >"$log" 2>&1; then ok "$store: up, every service healthy"; else
    fail "$store: up, every service healthy"; tail -40 "$log" | sed 's/^/     /'
  fi
  rm -f "$log"
  use_stack
  check "$store: $containers containers running and healthy" all_healthy $containers
  check "$store: the CLI reaches all three services" serving
  check "$store: the CLI reaches them with make up's configuration file alone" through_config serving
  check "$store: ports published on 127.0.0.1 only" published_on_loopback
  check "$store: a client without TLS is refused" no_plaintext
  check "$store: a client without a token is refused" no_token
  check "$store: blobstore runs unprivileged" runs_as blobstore 65532
  check "$store: metadata runs unprivileged" runs_as metadata 65532
  check "$store: the S3 server runs unprivileged" runs_as s3 65532
  check "$store: the registry runs unprivileged" runs_as registry 65532

  local work
  work=$(mktemp -d)
  make_rootfs "$work/rootfs.tar"
  check "$store: strata import of a busybox rootfs" "$strata" import "$work/rootfs.tar" busybox:latest
  check "$store: strata build of the seed-like Dockerfile" build_seed
  check "$store: RUN reaches no service of the stack, and the outside" run_isolated
  check "$store: strata tag" "$strata" tag my-nginx davidainslie/nginx:1.17
  check "$store: a read token may list images" "$strata" --token-file "$STRATA_SECRETS_DIR/read.token" images
  check "$store: a read token may not tag" refused read "TagImage needs the write role" tag my-nginx other:1
  check "$store: a write token may tag" "$strata" --token-file "$STRATA_SECRETS_DIR/write.token" tag my-nginx other:1
  check "$store: a write token may not prune (admin)" refused write "PruneImages needs the admin role; write-user has the write role" image prune -f -a
  check "$store: a write token may not delete blobs (admin)" refused write "BlobService/Delete needs the admin role" blob rm "$("$strata" inspect -f '{{.Id}}' my-nginx)"
  check "$store: untag other:1" "$strata" rmi other:1
  check "$store: strata history shows the 10 steps" history_rows 10
  check "$store: the image's config is in the S3 volume" in_s3 "$("$strata" inspect -f '{{.Id}}' my-nginx)"
  if [ "$store" = sqlite ]; then
    check "$store: metadata.db is in metadata's volume" metadata_file_is PRESENT
  else
    check "$store: metadata keeps no SQLite file" metadata_file_is ABSENT
  fi
  record >"$work/record" 2>&1

  check "$store: every service restarted, healthy again" restart_all
  use_stack
  check "$store: $containers containers healthy after the restart" all_healthy $containers
  check "$store: the CLI reaches all three services after the restart" serving
  check "$store: images, tags, ID, layers and history unchanged after the restart" same_record "$work/record"
  check "$store: the layers read back (strata save, docker load, docker run)" layers_read_back
  check "$store: docker pulls the built image from the registry and runs it" registry_pull
  check "$store: the seed rebuilt after the restart, every step cached" rebuild_cached

  # A restart keeps each container's own filesystem; new containers keep
  # only what the named volumes hold.
  check "$store: every container recreated, healthy again" recreate_all
  use_stack
  check "$store: images, tags, ID, layers and history unchanged in new containers" same_record "$work/record"

  check "$store: blob store killed during a build: the build fails, no image recorded" build_with_blobstore_killed
  check "$store: the blob store restarted, healthy" compose start blobstore
  check "$store: every service healthy again" stack wait
  use_stack
  check "$store: the next build succeeds" "$strata" build -t killed:1 "$root/deploy/testdata/blobstore-killed"
  check "$store: and is recorded" "$strata" inspect -f '{{.Id}}' killed:1
  rm -rf "$work"

  check "$store: compose down -v" stack down
  check "$store: nothing of the project is left" nothing_left
  check "$store: its secrets and CLI configuration are gone" test ! -e "$STRATA_SECRETS_DIR" -a ! -e "$STRATA_CONFIG"
  trap - EXIT
}

stores=("$@")
[ ${#stores[@]} -gt 0 ] || stores=(sqlite postgres)
for s in "${stores[@]}"; do
  case "$s" in
    sqlite | postgres) run_stack "$s" ;;
    *) echo "unknown store $s: want sqlite or postgres" >&2; exit 2 ;;
  esac
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
