module github.com/strata-build/strata/bench

go 1.26.0
