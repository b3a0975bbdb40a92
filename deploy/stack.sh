#!/usr/bin/env bash
# Runs Strata's compose stack: `make up` and `make down` call it.
#   deploy/stack.sh up      stage files, build the images, start, wait until healthy
#   deploy/stack.sh down    remove the containers, network and volumes (extra
#                           arguments go to `compose down`, e.g. --rmi all)
#   deploy/stack.sh env     the CLI's STRATA_*_ADDR for the published ports,
#                           as export lines: eval "$(deploy/stack.sh env)"
#   deploy/stack.sh compose ARGS...   any compose command on the same files
# Environment:
#   STRATA_METADATA_STORE=postgres   metadata on PostgreSQL (docker-compose.postgres.yml)
#   COMPOSE_PROJECT_NAME (strata), STRATA_IMAGE_TAG (dev), STRATA_PUBLISH_ADDR
#   (127.0.0.1), STRATA_{BUILDER,METADATA,BLOBSTORE}_PORT (50051-50053),
#   STRATA_REGISTRY_PORT (5000)
#   COMPOSE: the compose command; default `docker compose` (v2) when it is
#   installed, else `docker-compose` (v1)
set -euo pipefail
cd "$(dirname "$0")"
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-strata}

if [ -z "${COMPOSE:-}" ]; then
  if docker compose version >/dev/null 2>&1; then COMPOSE="docker compose"; else COMPOSE=docker-compose; fi
fi
files=(-f docker-compose.yml)
case "${STRATA_METADATA_STORE:-sqlite}" in
  sqlite) ;;
  postgres) files+=(-f docker-compose.postgres.yml) ;;
  *) echo "STRATA_METADATA_STORE=${STRATA_METADATA_STORE}: want sqlite or postgres" >&2; exit 2 ;;
esac
compose() { $COMPOSE "${files[@]}" "$@"; }

# wait_healthy polls every service's container until all report healthy, and
# fails early, with the container's log, when one exits or turns unhealthy.
wait_healthy() {
  local deadline=$((SECONDS + ${STRATA_UP_TIMEOUT:-180}))
  local ids id state health name pending
  ids=$(compose ps -a -q)
  [ -n "$ids" ] || { echo "no containers in project $COMPOSE_PROJECT_NAME" >&2; return 1; }
  while :; do
    pending=()
    for id in $ids; do
      read -r state health name < <(docker inspect -f '{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}} {{.Name}}' "$id")
      case "$state/$health" in
        running/healthy | running/none) ;;
        running/starting) pending+=("${name#/}") ;;
        *)
          echo "${name#/} is $state/$health:" >&2
          docker logs --tail 40 "$id" >&2 || true
          return 1 ;;
      esac
    done
    [ ${#pending[@]} -eq 0 ] && return 0
    if [ $SECONDS -ge $deadline ]; then
      echo "not healthy after ${STRATA_UP_TIMEOUT:-180}s: ${pending[*]}" >&2
      return 1
    fi
    sleep 1
  done
}

# addrs prints where the services' published ports are, as the CLI's
# environment variables.
addrs() {
  local s port
  for s in builder:50051 metadata:50052 blobstore:50053 registry:5000; do
    port=$(compose port "${s%:*}" "${s#*:}")
    [ -n "$port" ] || { echo "${s%:*} publishes no port ${s#*:}" >&2; return 1; }
    echo "STRATA_$(echo "${s%:*}" | tr a-z A-Z)_ADDR=$port"
  done
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
  up)
    ./stage.sh
    if [ "${STRATA_METADATA_STORE:-sqlite}" = postgres ]; then ./debian-base.sh; fi
    compose build
    compose up -d
    wait_healthy
    echo "strata: healthy (project $COMPOSE_PROJECT_NAME):" $(addrs)
    ;;
  wait) wait_healthy ;;
  env) addrs | sed 's/^/export /' ;;
  down)
    # A stack started with PostgreSQL goes with its container and volume.
    if docker volume inspect "${COMPOSE_PROJECT_NAME}_postgres-data" >/dev/null 2>&1; then
      files=(-f docker-compose.yml -f docker-compose.postgres.yml)
    fi
    compose down -v --remove-orphans "$@"
    ;;
  compose) compose "$@" ;;
  *) echo "usage: deploy/stack.sh up|down|wait|env|compose ARGS..." >&2; exit 2 ;;
esac
