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
# ephemeral, and a restarted container may get new ones).
use_stack() { eval "$(stack env)"; }

# all_healthy fails unless every container of the project runs and is healthy.
all_healthy() {
  local id n=0 status
  for id in $(compose ps -q); do
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

# runs_as SERVICE UID: the service's process runs as that user.
runs_as() {
  local user
  user=$(docker inspect -f '{{.Config.User}}' "$(compose ps -q "$1")")
  [ "${user%%:*}" = "$2" ] || { echo "$1 runs as '$user', want $2"; return 1; }
}

# restart_all restarts every service (SIGTERM, start) and waits until healthy.
restart_all() {
  compose restart >/dev/null && stack wait
}

# nothing_left fails if a container, volume or network of the project is left.
nothing_left() {
  local label=com.docker.compose.project=$COMPOSE_PROJECT_NAME left
  left=$(docker ps -aq --filter "label=$label"; docker volume ls -q --filter "label=$label"; docker network ls -q --filter "label=$label")
  [ -z "$left" ] || { echo "left behind: $left"; return 1; }
}

run_stack() {
  local store=$1 containers=4
  [ "$store" = postgres ] && containers=5
  export STRATA_METADATA_STORE=$store
  export COMPOSE_PROJECT_NAME=strata-test-$store-$$
  # Ephemeral host ports: a developer's stack may hold 50051-50053.
  export STRATA_BUILDER_PORT='' STRATA_METADATA_PORT='' STRATA_BLOBSTORE_PORT=''
  echo "--- the stack with metadata on $store (project $COMPOSE_PROJECT_NAME)"
  trap 'stack down >/dev/null 2>&1' EXIT

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
  check "$store: ports published on 127.0.0.1 only" published_on_loopback
  check "$store: blobstore runs unprivileged" runs_as blobstore 65532
  check "$store: metadata runs unprivileged" runs_as metadata 65532
  check "$store: the S3 server runs unprivileged" runs_as s3 65532

  check "$store: every service restarted, healthy again" restart_all
  use_stack
  check "$store: $containers containers healthy after the restart" all_healthy $containers
  check "$store: the CLI reaches all three services after the restart" serving

  check "$store: compose down -v" stack down
  check "$store: nothing of the project is left" nothing_left
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
