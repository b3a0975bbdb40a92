#!/usr/bin/env bash
# Starts the three services on free loopback ports under DIR, in the
# background, and prints the environment that points the CLI at them:
#   eval "$(scripts/stack.sh DIR [s3])"
# With "s3", blobs live in versitygw (started too); otherwise in DIR/blobs.
# metadata uses SQLite. `scripts/stack.sh stop DIR` stops what it started.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$root/bin
if [ "${1:-}" = stop ]; then
  dir=${2:?usage: stack.sh stop DIR}
  for f in "$dir"/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
  for f in "$dir"/*.pid; do [ -f "$f" ] && while kill -0 "$(cat "$f")" 2>/dev/null; do sleep 0.05; done; rm -f "$f"; done
  exit 0
fi
dir=${1:?usage: stack.sh DIR [s3]}
backend=${2:-fs}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
# ports N: N free loopback ports, all bound at once while they are picked,
# so that no two are the same: a port picked and closed can come back at
# the next pick, and a service then found versitygw on its port (a bench
# run failed with "frame too large … looked like an HTTP/1.1 header").
ports() { python3 -c 'import socket,sys; ss=[socket.socket() for _ in range(int(sys.argv[1]))]; [s.bind(("127.0.0.1",0)) for s in ss]; print(" ".join(str(s.getsockname()[1]) for s in ss))' "$1"; }
start() { # name, then the command
  local name=$1; shift
  "$@" >"$dir/$name.log" 2>&1 &
  echo $! >"$dir/$name.pid"
}
wait_port() { # host:port
  for _ in $(seq 1 600); do
    if (exec 3<>"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "stack: nothing listens on $1; see $dir/*.log" >&2; exit 1
}
read -r p_blobs p_meta p_builder p_s3 <<<"$(ports 4)"
blobs=127.0.0.1:$p_blobs; meta=127.0.0.1:$p_meta; builder=127.0.0.1:$p_builder
if [ "$backend" = s3 ]; then
  s3=127.0.0.1:$p_s3
  gw=$(command -v versitygw || echo "$root/.tools/bin/versitygw")
  mkdir -p "$dir/s3"
  ROOT_ACCESS_KEY=strata ROOT_SECRET_KEY=strata-secret start versitygw "$gw" --port "$s3" posix "$dir/s3"
  wait_port "$s3"
  STRATA_LISTEN=$blobs STRATA_BACKEND=s3 STRATA_S3_ENDPOINT=$s3 STRATA_S3_PATH_STYLE=true STRATA_S3_REGION=us-east-1 \
    STRATA_S3_ACCESS_KEY=strata STRATA_S3_SECRET_KEY=strata-secret STRATA_S3_CREATE_BUCKET=true \
    start blobstore "$bin/strata-blobstore"
else
  STRATA_LISTEN=$blobs STRATA_FS_ROOT="$dir/blobs" start blobstore "$bin/strata-blobstore"
fi
export STRATA_BLOBSTORE_ADDR=$blobs STRATA_METADATA_ADDR=$meta STRATA_BUILDER_ADDR=$builder
STRATA_LISTEN=$meta STRATA_SQLITE_PATH="$dir/metadata.db" start metadata "$bin/strata-metadata"
STRATA_LISTEN=$builder STRATA_STATE_DIR="$dir/builder" STRATA_ALLOW_REGISTRIES=127.0.0.0/8,::1 start builder "$bin/strata-builder"
wait_port "$blobs"; wait_port "$meta"; wait_port "$builder"
echo "export STRATA_BLOBSTORE_ADDR=$blobs STRATA_METADATA_ADDR=$meta STRATA_BUILDER_ADDR=$builder"
