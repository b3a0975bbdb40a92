// Package examples holds small programs built on the Go client
// (github.com/strata-build/strata/client), each in its own directory, and
// the tests that run them against the real services; it also proves the
// client module builds outside this repository's workspace.
package examples
