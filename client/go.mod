module github.com/strata-build/strata/client

go 1.26.0

require (
	github.com/google/go-cmp v0.7.0
	github.com/moby/patternmatcher v0.6.1
	github.com/opencontainers/go-digest v1.0.0
	github.com/strata-build/strata/gen v0.1.0
	github.com/strata-build/strata/lib v0.1.0
	golang.org/x/crypto v0.57.0
	golang.org/x/sys v0.50.0
	google.golang.org/grpc v1.85.0
	google.golang.org/protobuf v1.36.12
)

require (
	golang.org/x/net v0.60.0 // indirect
	golang.org/x/text v0.42.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20261110000943-09e21b237f2c // indirect
)
