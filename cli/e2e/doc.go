// Package e2e runs the strata binary against the three real services, built
// from this checkout and started on free loopback ports, and holds its output
// to the machine's Docker Engine where Docker can print the same thing.
package e2e
