// Package parity holds the Docker parity suite: the classic builder's own
// integration tests (moby's integration-cli/docker_cli_build_test.go),
// ported as data under testdata/cases, with what Docker's classic builder
// made of each recorded under testdata/golden by `make parity-golden`.
//
// The suite drives Strata only from outside, through the strata CLI
// against the services started by lib/harness, so it does not depend on
// how the builder is organised inside.
package parity
