#!/usr/bin/env bash
# Runs Strata's compose stack: `make up` and `make down` call it.
#   deploy/stack.sh up      stage files, build the images, start, wait until healthy
#   deploy/stack.sh down    remove the containers, network and volumes (extra
#                           arguments go to `compose down`, e.g. --rmi all)
#   deploy/stack.sh env [ROLE]   how the CLI reaches the stack, as export
#                           lines (addresses, CA, the ROLE's token file; admin
#                           by default): eval "$(deploy/stack.sh env)"
#   deploy/stack.sh compose ARGS...   any compose command on the same files
# Environment:
#   STRATA_METADATA_STORE=postgres   metadata on PostgreSQL (docker-compose.postgres.yml)
#   STRATA_SCALE=1   replicas on PostgreSQL and S3 (docker-compose.scale.yml, `make
#   up-scale`): STRATA_SCALE_BLOBSTORE (2), STRATA_SCALE_METADATA (2),
#   STRATA_SCALE_BUILDER (3) and STRATA_SCALE_REGISTRY (2) of each, every one
#   on a free host port
#   COMPOSE_PROJECT_NAME (strata), STRATA_IMAGE_TAG (dev), STRATA_PUBLISH_ADDR
#   (127.0.0.1), STRATA_{BUILDER,METADATA,BLOBSTORE}_PORT (50051-50053),
#   STRATA_REGISTRY_PORT (5000)
#   STRATA_TLS_SANS: more names and addresses for the services' certificates,
#   comma-separated (DNS:strata.example,IP:10.0.0.7)
#   STRATA_CONFIG: the CLI configuration file `up` writes (and `down`
#   removes) when it has none or one of this stack's; default
#   ~/.config/strata/config.json
#   COMPOSE: the compose command; default `docker compose` (v2) when it is
#   installed, else `docker-compose` (v1)
#
# Secrets: `up` makes, once per stack, into deploy/.state/PROJECT/secrets/
# (the directory above it is 0700): a token per role and one for the
# services (tokens, the servers' file; read.token, write.token, admin.token,
# service.token, one each), a CA (ca.crt; its key stays in the 0700 directory
# above) and a certificate per service for its compose name, localhost and
# 127.0.0.1 (blobstore.crt/.key, …). Files already there are kept: put your
# own there before `up` to bring your own. `down` removes them with the
# volumes.
set -euo pipefail
cd "$(dirname "$0")"
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-strata}
state=$PWD/.state/$COMPOSE_PROJECT_NAME
export STRATA_SECRETS=$state/secrets

if [ -z "${COMPOSE:-}" ]; then
  if docker compose version >/dev/null 2>&1; then COMPOSE="docker compose"; else COMPOSE=docker-compose; fi
fi
files=(-f docker-compose.yml)
scale=()
if [ -n "${STRATA_SCALE:-}" ]; then
  STRATA_METADATA_STORE=postgres
  scale=(--scale "blobstore=${STRATA_SCALE_BLOBSTORE:-2}" --scale "metadata=${STRATA_SCALE_METADATA:-2}"
    --scale "builder=${STRATA_SCALE_BUILDER:-3}" --scale "registry=${STRATA_SCALE_REGISTRY:-2}")
  # Replicas cannot share a host port: each gets a free one.
  export STRATA_BUILDER_PORT=${STRATA_BUILDER_PORT-} STRATA_METADATA_PORT=${STRATA_METADATA_PORT-} STRATA_BLOBSTORE_PORT=${STRATA_BLOBSTORE_PORT-}
  export STRATA_REGISTRY_PORT=${STRATA_REGISTRY_PORT-}
fi
case "${STRATA_METADATA_STORE:-sqlite}" in
  sqlite) ;;
  postgres) files+=(-f docker-compose.postgres.yml) ;;
  *) echo "STRATA_METADATA_STORE=${STRATA_METADATA_STORE}: want sqlite or postgres" >&2; exit 2 ;;
esac
[ -n "${STRATA_SCALE:-}" ] && files+=(-f docker-compose.scale.yml)
compose() { $COMPOSE "${files[@]}" "$@"; }

# wait_healthy polls every service's container until all report healthy, and
# fails early, with the container's log, when one exits. An unhealthy
# container is waited for like a starting one: after a restart Docker keeps
# the status the probes gave while the old process drained, until a probe
# of the new one passes.
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
        running/starting | running/unhealthy) pending+=("${name#/}") ;;
        *)
          echo "${name#/} is $state/$health:" >&2
          docker logs --tail 40 "$id" >&2 || true
          return 1 ;;
      esac
    done
    [ ${#pending[@]} -eq 0 ] && return 0
    if [ $SECONDS -ge $deadline ]; then
      echo "not healthy after ${STRATA_UP_TIMEOUT:-180}s: ${pending[*]}" >&2
      for name in "${pending[@]}"; do
        docker logs --tail 40 "$name" >&2 || true
        echo "$name's last health probes:" >&2
        docker inspect -f '{{range .State.Health.Log}}{{.Start}} exit {{.ExitCode}}: {{.Output}}{{"\n"}}{{end}}' "$name" >&2 || true
      done
      return 1
    fi
    sleep 1
  done
}

# secrets makes what the stack's services and clients need that is not
# there yet: tokens, a CA, a certificate per service.
secrets() {
  local s=$STRATA_SECRETS r svc sans
  mkdir -p "$s"
  chmod 0700 "$state"
  # The services (one runs as 65532) read through a bind mount; the 0700
  # directory above keeps other users of this machine out.
  chmod 0755 "$s"
  if [ ! -f "$s/tokens" ]; then
    : >"$s/tokens.new"
    for r in read write admin service; do
      local name=$r-user
      [ $r = service ] && name=strata-services
      printf '%s %s %s\n' $r "$(openssl rand -hex 32)" $name >>"$s/tokens.new"
      grep "^$r " "$s/tokens.new" >"$s/$r.token"
    done
    chmod 0644 "$s"/*.token "$s/tokens.new"
    mv "$s/tokens.new" "$s/tokens"
  fi
  if [ ! -f "$s/ca.crt" ]; then
    openssl ecparam -name prime256v1 -genkey -noout -out "$state/ca.key" 2>/dev/null
    openssl req -x509 -new -key "$state/ca.key" -sha256 -days 825 -subj "/CN=Strata stack $COMPOSE_PROJECT_NAME CA" \
      -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign -out "$s/ca.crt"
  fi
  for svc in blobstore metadata builder registry; do
    [ -f "$s/$svc.crt" ] && [ -f "$s/$svc.key" ] && continue
    sans="DNS:$svc,DNS:localhost,IP:127.0.0.1,IP:::1"
    case "${STRATA_PUBLISH_ADDR:-127.0.0.1}" in 127.0.0.1 | 0.0.0.0 | localhost) ;; *) sans+=",IP:$STRATA_PUBLISH_ADDR" ;; esac
    [ -n "${STRATA_TLS_SANS:-}" ] && sans+=",$STRATA_TLS_SANS"
    openssl ecparam -name prime256v1 -genkey -noout -out "$s/$svc.key" 2>/dev/null
    openssl req -new -key "$s/$svc.key" -subj "/CN=$svc" -out "$state/$svc.csr"
    openssl x509 -req -in "$state/$svc.csr" -CA "$s/ca.crt" -CAkey "$state/ca.key" -CAcreateserial -CAserial "$state/ca.srl" -sha256 -days 825 \
      -extfile <(printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n' "$sans") \
      -out "$s/$svc.crt" 2>/dev/null
    rm -f "$state/$svc.csr"
    chmod 0644 "$s/$svc.key" "$s/$svc.crt"
  done
}

# config_path is the CLI configuration file `up` writes.
config_path() { echo "${STRATA_CONFIG:-${XDG_CONFIG_HOME:-$HOME/.config}/strata/config.json}"; }

# ours says whether the CLI configuration file is absent or this stack's.
ours() {
  local f
  f=$(config_path)
  [ ! -e "$f" ] || grep -q "\"stack\": \"$COMPOSE_PROJECT_NAME\"" "$f"
}

# write_config points the CLI at the stack (addresses, CA, admin token),
# unless its configuration file belongs to something else.
write_config() {
  local f a
  f=$(config_path)
  if ! ours; then
    echo "strata: $f is not this stack's; left alone. Point the CLI at the stack with: eval \"\$(deploy/stack.sh env)\"" >&2
    return 0
  fi
  mkdir -p "$(dirname "$f")"
  a=$(addrs) || return 1
  cat >"$f.new" <<JSON
{
  "stack": "$COMPOSE_PROJECT_NAME",
  "builder": "$(sed -n 's/^STRATA_BUILDER_ADDR=//p' <<<"$a")",
  "metadata": "$(sed -n 's/^STRATA_METADATA_ADDR=//p' <<<"$a")",
  "blobstore": "$(sed -n 's/^STRATA_BLOBSTORE_ADDR=//p' <<<"$a")",
  "tlscacert": "$STRATA_SECRETS/ca.crt",
  "token_file": "$STRATA_SECRETS/admin.token"
}
JSON
  mv "$f.new" "$f"
  echo "strata: the CLI reaches the stack with the admin token ($f); other roles' tokens: $STRATA_SECRETS/{read,write}.token" >&2
}

# addrs prints where the services' published ports are, as the CLI's
# environment variables: a comma-separated list where a gRPC service has
# replicas, which the CLI spreads its calls over; the registry's first
# replica (HTTP clients take one address).
addrs() {
  local s id port list
  for s in builder:50051 metadata:50052 blobstore:50053 registry:5000; do
    list=
    for id in $(compose ps -q "${s%:*}"); do
      port=$(docker port "$id" "${s#*:}/tcp" | head -1)
      [ -n "$port" ] && list+="${list:+,}$port"
      [ "${s%:*}" = registry ] && [ -n "$list" ] && break
    done
    [ -n "$list" ] || { echo "${s%:*} publishes no port ${s#*:}" >&2; return 1; }
    echo "STRATA_$(echo "${s%:*}" | tr a-z A-Z)_ADDR=$list"
  done
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
  up)
    ./stage.sh
    if [ "${STRATA_METADATA_STORE:-sqlite}" = postgres ]; then ./debian-base.sh; fi
    secrets
    compose build
    compose up -d "${scale[@]}"
    wait_healthy
    echo "strata: healthy (project $COMPOSE_PROJECT_NAME):" $(addrs)
    write_config
    ;;
  wait) wait_healthy ;;
  env)
    role=${1:-admin}
    [ -f "$STRATA_SECRETS/$role.token" ] || { echo "no token for role $role in $STRATA_SECRETS: want read, write, admin or service" >&2; exit 2; }
    addrs | sed 's/^/export /'
    echo "export STRATA_CLIENT_TLS_CA=$STRATA_SECRETS/ca.crt STRATA_CLIENT_TOKEN_FILE=$STRATA_SECRETS/$role.token"
    ;;
  down)
    # A stack started with PostgreSQL goes with its container and volume.
    if docker volume inspect "${COMPOSE_PROJECT_NAME}_postgres-data" >/dev/null 2>&1; then
      files=(-f docker-compose.yml -f docker-compose.postgres.yml)
    fi
    compose down -v --remove-orphans "$@"
    # Its secrets go with its data, and the CLI's file if it is the stack's.
    if [ -e "$(config_path)" ] && ours; then rm -f "$(config_path)"; fi
    rm -rf "$state"
    ;;
  compose) compose "$@" ;;
  *) echo "usage: deploy/stack.sh up|down|wait|env|compose ARGS..." >&2; exit 2 ;;
esac
