#!/usr/bin/env bash
# Installs the Debian packages the tests run for real: runc (RUN steps),
# containernetworking-plugins and iptables (the RUN steps' network),
# busybox-static (the offline base image), postgresql (the metadata store at
# scale), skopeo and umoci (OCI interoperability), debootstrap (a real Debian
# base), docker-compose (the compose test; the Docker Engine itself comes with
# the machine), openssl (make up's CA and certificates), jq (the build
# benchmark reads OCI indexes and writes its figures with it). Idempotent:
# installs only what is missing.
set -euo pipefail
need=()
have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
for p in runc containernetworking-plugins iptables busybox-static postgresql skopeo umoci debootstrap docker-compose openssl jq; do
  have "$p" || need+=("$p")
done
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "missing Debian packages: ${need[*]}; install them as root: apt-get install -y ${need[*]}" >&2
  exit 1
fi
echo "installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
