// Package parity holds the Docker parity suite: the classic builder's own
// integration tests (moby's integration-cli/docker_cli_build_test.go),
// ported as data, and what Docker's classic builder made of each.
//
//	testdata/cases/NAME.txtar   a case: Dockerfile, context and the original
//	                            test's checks (the format is on Case)
//	testdata/golden/NAME.json   what the Docker Engine built: history, config,
//	                            root filesystem, or the error; written by
//	                            `make parity-golden`, never by hand
//	testdata/known.txt          where Strata differs today, class and case
//	testdata/not-ported.txt     the tests of that file that are no case, and why
//	testdata/buildkit/NAME.txtar a case of a feature taken from BuildKit's
//	                            Dockerfile frontend (docker/dockerfile:1), in
//	                            the same format, with BuildKit as the oracle
//
// TestParity builds every case with Strata and compares it with its golden;
// TestDrift rebuilds a few cases, chosen by the date, on the live Engine;
// TestEveryCaseHasAGolden keeps cases and goldens in step. To add a case,
// write its txtar and run `make parity-golden`; when Strata stops differing,
// take the line out of known.txt (or run TestParity with -update-known).
//
// TestBuildKit builds the testdata/buildkit cases with buildkitd v0.34.2
// (OCI worker, the base image as an OCI layout named context, nothing from
// a registry) and with Strata: both must pass the case's checks and make
// the same root filesystem. History and config are not compared there:
// Strata writes the classic builder's.
//
// The suite drives Strata only from outside, through the strata CLI against
// the services lib/harness starts, so it does not depend on how the builder
// is organised inside.
package parity
