#!/usr/bin/env bash
# Installs the pinned code generators and test peers into .tools/bin, once per
# version: a re-run costs nothing when they are already there.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$PWD/.tools/bin
mkdir -p "$bin"
tools=(
  github.com/bufbuild/buf/cmd/buf@v1.75.0
  google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
  google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
  github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.4
  github.com/versity/versitygw/cmd/versitygw@v1.8.0
  github.com/distribution/distribution/v3/cmd/registry@v3.1.2
  github.com/google/go-containerregistry/cmd/crane@v0.22.1
  # The fault-injecting proxy the blob store's fault tests put before S3;
  # its command is named "server", installed as toxiproxy-server.
  github.com/Shopify/toxiproxy/v2/cmd/server@v2.5.0=toxiproxy-server
  # make lint's static checks: staticcheck, and deadcode for functions that
  # no main package reaches.
  honnef.co/go/tools/cmd/staticcheck@v0.8.2
  golang.org/x/tools/cmd/deadcode@v0.52.0
)
for entry in "${tools[@]}"; do
  t=${entry%%=*}
  pkg=${t%@*}
  name=$(basename "$pkg")
  [ "$entry" != "$t" ] && name=${entry#*=}
  stamp="$bin/.$name@${t#*@}"
  [ -x "$bin/$name" ] && [ -f "$stamp" ] && continue
  echo "installing $t"
  # Outside the workspace, so that the tools' dependencies do not mix with ours.
  tmp=$(mktemp -d)
  (cd /tmp && GOWORK=off GOFLAGS= GOBIN="$tmp" go install "$t")
  mv "$tmp/$(basename "$pkg")" "$bin/$name"
  rmdir "$tmp"
  rm -f "$bin/.$name@"*
  touch "$stamp"
done

# BuildKit, a peer of the build benchmark: `go install` refuses its module
# (it has exclude directives), so it is built inside the downloaded module.
buildkit=v0.34.2
stamp="$bin/.buildkit@$buildkit"
if ! { [ -x "$bin/buildkitd" ] && [ -x "$bin/buildctl" ] && [ -f "$stamp" ]; }; then
  echo "installing github.com/moby/buildkit@$buildkit (buildkitd, buildctl)"
  src=$(cd /tmp && GOWORK=off GOFLAGS= go mod download -json "github.com/moby/buildkit@$buildkit" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  (cd "$src" && GOWORK=off GOFLAGS=-mod=mod go build -trimpath -o "$bin/" ./cmd/buildkitd ./cmd/buildctl)
  rm -f "$bin/.buildkit@"*
  touch "$stamp"
fi
