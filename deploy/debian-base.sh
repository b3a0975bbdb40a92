#!/usr/bin/env bash
# Makes strata/debian:bookworm, a minimal Debian image, with debootstrap and
# `docker import`: the base of the PostgreSQL image where no registry can give
# debian:bookworm (Debian's package mirror is reachable here, registries are
# not). Done once: nothing happens when the image exists.
set -euo pipefail
image=${STRATA_DEBIAN_IMAGE:-strata/debian:bookworm}
mirror=${STRATA_DEBIAN_MIRROR:-http://deb.debian.org/debian}
docker image inspect "$image" >/dev/null 2>&1 && exit 0
command -v debootstrap >/dev/null || { echo "debootstrap not found: run 'make deps' (Debian's debootstrap package)" >&2; exit 1; }
root=$(mktemp -d /var/tmp/strata-debian.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "making $image with debootstrap (about a minute)"
debootstrap --variant=minbase bookworm "$root" "$mirror" >"$root.log" 2>&1 || { tail -20 "$root.log" >&2; rm -f "$root.log"; exit 1; }
rm -f "$root.log"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar --numeric-owner -C "$root" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["/bin/bash"]' \
  --message "debootstrap --variant=minbase bookworm $mirror" - "$image" >/dev/null
