#!/usr/bin/env bash
# Makes strata/debian:bookworm, a minimal Debian image, with debootstrap and
# `docker import`: the base of the PostgreSQL image where no registry can give
# debian:bookworm (Debian's package mirror is reachable here, registries are
# not). Done once: nothing happens when the image exists, nor when
# STRATA_DEBIAN_IMAGE names another base (debian:bookworm where a registry is
# reachable), which the PostgreSQL image's build then uses as it is.
set -euo pipefail
[ -z "${STRATA_DEBIAN_IMAGE:-}" ] || exit 0
image=strata/debian:bookworm
mirror=${STRATA_DEBIAN_MIRROR:-http://deb.debian.org/debian}
docker image inspect "$image" >/dev/null 2>&1 && exit 0
[ "$(id -u)" = 0 ] || { echo "making $image needs root (debootstrap); or set STRATA_DEBIAN_IMAGE=debian:bookworm where a registry is reachable" >&2; exit 1; }
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
