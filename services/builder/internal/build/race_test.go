//go:build race

package build

// raceEnabled is true when the tests run with the race detector, which
// makes code many times slower and sync.Pool drop what it is given back
// (parsing a 1 MiB Dockerfile allocates 1.5 GiB instead of 83 MiB, in 6 s
// instead of 0.25 s): bounds on time and allocation hold without it only.
const raceEnabled = true
