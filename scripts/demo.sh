#!/usr/bin/env bash
# make demo: the three services with their embedded defaults (blobs in a
# directory, metadata in SQLite), the busybox-static base imported offline,
# the seed's nginx-shaped example built twice (the second time from the
# cache), its history, a second tag and the image list. The services stop at
# the end unless STRATA_DEMO_KEEP=1.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
dir=${STRATA_DEMO_DIR:-$root/.run/demo}
rm -rf "$dir"; mkdir -p "$dir"
strata=$root/bin/strata
say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
eval "$(scripts/stack.sh "$dir")"
[ "${STRATA_DEMO_KEEP:-}" = 1 ] || trap '"$root/scripts/stack.sh" stop "$dir"' EXIT
bb=$(command -v busybox) || { echo "busybox not found: apt-get install busybox-static" >&2; exit 1; }
rootfs=$dir/rootfs; mkdir -p "$rootfs"/{bin,etc,tmp,root,proc,sys,dev}; chmod 1777 "$rootfs/tmp"
cp "$bb" "$rootfs/bin/busybox"
for a in $("$bb" --list); do [ "$a" = busybox ] || ln -sf busybox "$rootfs/bin/$a"; done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"
tar --numeric-owner --owner=0 --group=0 --mtime=@0 --sort=name -C "$rootfs" -cf "$dir/rootfs.tar" .
say strata import rootfs.tar busybox:latest
"$strata" import "$dir/rootfs.tar" busybox:latest
cd examples/nginx
say strata build -t my-nginx -f Dockerfile .
"$strata" build -t my-nginx -f Dockerfile .
say strata build -t my-nginx -f Dockerfile .   "# again: every step from the cache"
"$strata" build -t my-nginx -f Dockerfile .
say strata history my-nginx
"$strata" history my-nginx
say strata tag my-nginx davidainslie/nginx
"$strata" tag my-nginx davidainslie/nginx
say strata images
"$strata" images
if [ "${STRATA_DEMO_KEEP:-}" = 1 ]; then
  echo; echo "The services keep running; point the CLI at them with:"
  env | grep '^STRATA_.*_ADDR=' | sed 's/^/  export /'
  echo "and stop them with: scripts/stack.sh stop $dir"
fi
