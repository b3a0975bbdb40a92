module github.com/strata-build/strata/examples

go 1.26.0

require (
	github.com/strata-build/strata/client v0.1.0
	github.com/strata-build/strata/lib v0.1.0
	golang.org/x/mod v0.43.0
)
