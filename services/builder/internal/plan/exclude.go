package plan

import (
	"path"
	"strings"

	"github.com/moby/patternmatcher"
)

// Excluder is what COPY and ADD --exclude leave out of a source, as
// BuildKit's copy (fsutil's copy.ExcludePatterns) does: the patterns, in
// .dockerignore's syntax, are matched against each entry's path relative
// to the top-level source it is under (each match of a wildcard source is a
// top-level source), never against the top-level source itself, which is
// always copied. An excluded directory goes with everything under it,
// unless a "!" pattern brings back something under it: the directory is
// then copied (with its own mode and owner) for what it holds, and only
// that. A nil Excluder excludes nothing.
type Excluder struct {
	pm *patternmatcher.PatternMatcher
}

// NewExcluder returns the Excluder of patterns, nil when there are none.
// An error says which pattern is malformed.
func NewExcluder(patterns []string) (*Excluder, error) {
	if len(patterns) == 0 {
		return nil, nil
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		return nil, err
	}
	return &Excluder{pm: pm}, nil
}

// Filter returns the entries the patterns keep. entries are everything
// under one top-level source, parents before their children, and rel gives
// an entry's path relative to that source ("" for the source itself) and
// whether it is a directory.
func Filter[T any](x *Excluder, entries []T, rel func(T) (string, bool)) []T {
	if x == nil {
		return entries
	}
	// keep is set on what is copied, and on an excluded directory that
	// holds something copied.
	keep := make([]bool, len(entries))
	index := map[string]int{}
	gone := map[string]bool{} // excluded directories not looked into
	exclusions := x.pm.Exclusions()
	for i, e := range entries {
		p, dir := rel(e)
		if p == "" || p == "." {
			keep[i] = true
			continue
		}
		p = strings.Trim(p, "/")
		if gone[path.Dir(p)] {
			if dir {
				gone[p] = true
			}
			continue
		}
		m, err := x.pm.MatchesOrParentMatches(p)
		excluded := err == nil && m
		if dir {
			index[p] = i
		}
		if !excluded {
			keep[i] = true
			// An excluded directory above it is copied for it.
			for d := path.Dir(p); d != "."; d = path.Dir(d) {
				j, ok := index[d]
				if !ok || keep[j] {
					break
				}
				keep[j] = true
			}
			continue
		}
		if dir && !exclusions {
			gone[p] = true
		}
	}
	var out []T
	for i, e := range entries {
		if keep[i] {
			out = append(out, e)
		}
	}
	return out
}
