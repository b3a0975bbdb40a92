#!/usr/bin/env bash
# Stages, under deploy/.build/, what the service images copy besides the
# binaries of `make build`. No image registry is reachable here, so every
# image starts FROM scratch and gets its files from this folder:
#   bin/grpc-health-probe, bin/versitygw  static builds (CGO_ENABLED=0) from the
#                                         Go module proxy, pinned below
#   bin/busybox                           Debian's busybox-static: wget for the
#                                         S3 server's HTTP health check
#   runc/                                 Debian's runc and the shared libraries
#                                         it loads (libseccomp, libc, the loader)
#   net/                                  the RUN steps' network: Debian's CNI
#                                         plugins (bridge, host-local, loopback,
#                                         firewall), iptables (nf_tables) with its
#                                         extension modules and libraries, and
#                                         /etc/protocols, which iptables reads
#   base.tar                              /etc/passwd and group with the
#                                         unprivileged user strata (65532), /tmp,
#                                         CA certificates, /var/lib/strata owned
#                                         by strata (named volumes copy its owner)
# Idempotent: a pinned tool is built once.
set -euo pipefail
cd "$(dirname "$0")/.."
out=deploy/.build
mkdir -p "$out/bin"

static=(
  github.com/grpc-ecosystem/grpc-health-probe@v0.4.62
  github.com/versity/versitygw/cmd/versitygw@v1.8.0
)
gobin=$PWD/.tools/static
mkdir -p "$gobin"
for t in "${static[@]}"; do
  name=$(basename "${t%@*}")
  stamp="$gobin/.$name@${t#*@}"
  if ! [ -x "$gobin/$name" ] || ! [ -f "$stamp" ]; then
    echo "building $t (static)"
    (cd /tmp && GOWORK=off GOFLAGS= CGO_ENABLED=0 GOBIN="$gobin" go install -trimpath -ldflags='-s -w' "$t")
    rm -f "$gobin/.$name@"*
    touch "$stamp"
  fi
  cp -p "$gobin/$name" "$out/bin/$name"
done

need() { command -v "$1" >/dev/null || { echo "$1 not found: run 'make deps' (Debian's $2 package)" >&2; exit 1; }; }
need busybox busybox-static
need runc runc
cp -pL "$(command -v busybox)" "$out/bin/busybox"

# runc is linked dynamically (libseccomp, libc): copy it with what ldd says it
# loads, at the same paths, so the dynamic loader finds them in the image.
rm -rf "$out/runc"
runc=$(command -v runc)
for f in "$runc" $(ldd "$runc" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'); do
  install -D -m 0755 "$(readlink -f "$f")" "$out/runc$f"
done

# The builder's RUN network: CNI plugins and iptables (which the bridge and
# firewall plugins and the builder run) at their Debian paths.
need iptables iptables
[ -x /usr/lib/cni/bridge ] || { echo "/usr/lib/cni/bridge not found: run 'make deps' (Debian's containernetworking-plugins package)" >&2; exit 1; }
rm -rf "$out/net"
xtables=$(readlink -f "$(command -v iptables)")
libdir=$(dirname "$(ldd "$xtables" | awk '$1 ~ /^libxtables/ { print $3 }')")
for f in /usr/lib/cni/bridge /usr/lib/cni/host-local /usr/lib/cni/loopback /usr/lib/cni/firewall "$xtables" \
  $(ldd "$xtables" "$libdir"/xtables/*.so | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// && $1 !~ /:$/ { print $1 }' | sort -u); do
  install -D -m 0755 "$(readlink -f "$f")" "$out/net$f"
done
# Where libxtables looks for its extensions: the real path (/lib is a
# symlink to /usr/lib on Debian, and the image has no such link).
extdir=$(readlink -f "$libdir/xtables")
install -d "$out/net$(dirname "$extdir")"
cp -a "$extdir" "$out/net$(dirname "$extdir")/"
for t in iptables ip6tables iptables-save ip6tables-save iptables-restore ip6tables-restore; do
  ln -sf "$xtables" "$out/net/usr/sbin/$t"
done
install -D -m 0644 /etc/protocols "$out/net/etc/protocols"

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
chmod 0755 "$root"
mkdir -p "$root/etc/ssl/certs" "$root/tmp" "$root/run" "$root/var/lib/strata"
chmod 1777 "$root/tmp"
chmod 0750 "$root/var/lib/strata"
printf 'root:x:0:0:root:/root:/sbin/nologin\nstrata:x:65532:65532:strata:/var/lib/strata:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nstrata:x:65532:\nnogroup:x:65534:\n' >"$root/etc/group"
[ -f /etc/ssl/certs/ca-certificates.crt ] || { echo "/etc/ssl/certs/ca-certificates.crt missing: apt-get install ca-certificates" >&2; exit 1; }
cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
tar --numeric-owner --owner=0 --group=0 --mtime=@0 --sort=name -C "$root" -cf "$out/base.tar.new" \
  --exclude=./var/lib/strata .
tar --numeric-owner --owner=65532 --group=65532 --mtime=@0 -C "$root" -rf "$out/base.tar.new" ./var/lib/strata
mv "$out/base.tar.new" "$out/base.tar"
