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

// Filter returns the entries the patterns keep, and that include (a
// COPY --parents source's pattern; "" for everything) selects. entries
// are everything under one top-level source, parents before their
// children, and rel gives an entry's path relative to that source ("" for
// the source itself) and whether it is a directory. As in BuildKit's copy,
// a directory include does not select is copied only for what it holds
// that is selected, and the patterns of include select what they match and
// everything under it.
func Filter[T any](x *Excluder, include string, entries []T, rel func(T) (string, bool)) []T {
	var inc *patternmatcher.PatternMatcher
	if include != "" {
		inc, _ = patternmatcher.New([]string{include}) // checked by Make
	}
	if x == nil && inc == nil {
		return entries
	}
	// keep is set on what is copied, and on an excluded directory that
	// holds something copied.
	keep := make([]bool, len(entries))
	index := map[string]int{}
	gone := map[string]bool{} // excluded directories not looked into
	exclusions := x != nil && x.pm.Exclusions()
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
		excluded := false
		if x != nil {
			m, err := x.pm.MatchesOrParentMatches(p)
			excluded = err == nil && m
		}
		selected := true
		if inc != nil {
			m, err := inc.MatchesOrParentMatches(p)
			selected = err == nil && m
		}
		if dir {
			index[p] = i
		}
		if selected && !excluded {
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
		if excluded && dir && !exclusions {
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

// SplitParents splits a COPY --parents source as BuildKit does: at its
// first "/./" into the directory the copied paths are kept relative to and
// the pattern of what is copied; without one, the root and the whole
// source. The pattern is clean and relative ("" for everything).
func SplitParents(src string) (dir, pattern string) {
	dir, pattern, ok := strings.Cut(src, "/./")
	if !ok {
		dir, pattern = "/", src
	}
	pattern = strings.TrimPrefix(path.Clean("/"+pattern), "/")
	return path.Clean("/" + dir), pattern
}

// hasWildcards reports whether a path has pattern characters.
func hasWildcards(p string) bool { return strings.ContainsAny(p, "*?[") }
