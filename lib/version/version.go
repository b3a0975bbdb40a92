// Package version holds the version of Strata's binaries, set at link time:
// go build -ldflags "-X github.com/strata-build/strata/lib/version.Version=v0.1.0".
package version

import "runtime/debug"

// Version is the release version, or "dev" for builds without one.
var Version = "dev"

// Header is the gRPC response header in which every service reports its
// version; `strata version` reads it from a health check.
const Header = "strata-version"

// String returns the version, with the VCS revision when the build has one.
func String() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return Version
	}
	for _, s := range info.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			return Version + " (" + s.Value[:12] + ")"
		}
	}
	return Version
}
