package reference

import (
	"errors"
	"testing"

	"github.com/strata-build/strata/lib/errdefs"
)

// FuzzParse runs every reference parser over any string and pattern. A
// parse error is INVALID_ARGUMENT; a parsed reference prints (String,
// Familiar, FamiliarName) as text that parses back to the same reference
// and keeps what its parser promises; a pattern ValidPattern accepts never fails Match
// (the image list validates filters up front and then matches).
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"nginx", "nginx:1.17.4", "library/nginx", "docker.io/library/nginx", "index.docker.io/library/nginx",
		"davidainslie/nginx", "localhost:5000/team/app:1.2", "127.0.0.1:5000/app:v1", "[::1]:5000/app",
		"registry.example.com/a/b/c:Tag_1.x-y", "foo_bar/baz__qux.x-y",
		"nginx@" + dgst, "nginx:1.2@" + dgst, "localhost:5000/team/app@" + dgst,
		hexA, "sha256:" + hexA, "cd84152b", "Nginx", "nginx:", "a//b", "nginx@md5:" + hexA, "localhost:port/app",
	} {
		f.Add(s, "nginx*")
	}
	f.Add("localhost:5000/team/app:1.2", "localhost:5000/*/app:1.?")
	f.Add("busybox", "[")
	f.Fuzz(func(t *testing.T, s, pattern string) {
		parsers := []struct {
			name    string
			parse   func(string) (Reference, error)
			promise func(Reference) bool
		}{
			{"Parse", Parse, func(Reference) bool { return true }},
			{"ParseDefaultTag", ParseDefaultTag, func(r Reference) bool { return (r.Tag() == "") != (r.Digest() == "") }},
			{"ParseTag", ParseTag, func(r Reference) bool { return r.Tag() != "" && r.Digest() == "" }},
			{"ParseRepository", ParseRepository, Reference.IsNameOnly},
			{"ParseCanonical", ParseCanonical, func(r Reference) bool { return r.Digest() != "" && r.Tag() == "" }},
		}
		for _, p := range parsers {
			r, err := p.parse(s)
			if err != nil {
				var e *errdefs.Error
				if !errdefs.IsInvalidArgument(err) || !errors.As(err, &e) || e.Details()["reference"] != s {
					t.Fatalf("%s(%q) = %v, want INVALID_ARGUMENT naming the input", p.name, s, err)
				}
				continue
			}
			if r.IsZero() || !p.promise(r) {
				t.Fatalf("%s(%q) = %q (tag %q, digest %q): not what %s promises", p.name, s, r, r.Tag(), r.Digest(), p.name)
			}
			for _, printed := range []string{r.String(), r.Familiar()} {
				back, err := Parse(printed)
				if err != nil || back.String() != r.String() {
					t.Fatalf("%s(%q) prints %q, which parses as %q, %v", p.name, s, printed, back, err)
				}
			}
			if back, err := ParseRepository(r.FamiliarName()); err != nil || back.Name() != r.Name() {
				t.Fatalf("%s(%q) has the familiar name %q, which parses as %q, %v", p.name, s, r.FamiliarName(), back, err)
			}
			if r.Domain()+"/"+r.Path() != r.Name() || r.Repository().String() != r.Name() {
				t.Fatalf("%s(%q): domain %q, path %q, repository %q do not make the name %q", p.name, s, r.Domain(), r.Path(), r.Repository(), r.Name())
			}
			if ValidPattern(pattern) == nil {
				if _, err := Match(pattern, r); err != nil {
					t.Fatalf("Match(%q, %q) = %v after ValidPattern accepted the pattern", pattern, r, err)
				}
			}
		}
		if id, ok := ParseID(s); ok {
			hex, isPrefix := ParseIDPrefix(s)
			if id.Validate() != nil || !isPrefix || hex != id.Encoded() {
				t.Fatalf("ParseID(%q) = %q, ParseIDPrefix = %q, %v", s, id, hex, isPrefix)
			}
		}
	})
}
