package reference

import (
	"errors"
	"strings"
	"testing"

	"github.com/strata-build/strata/lib/errdefs"
)

const (
	hexA = "cd84152b746847af5c75f3e53d0e19ccdcb17d9e9976961d74ab21c37c5ff89e"
	dgst = "sha256:" + hexA
)

func TestParseDefaultTag(t *testing.T) {
	tests := []struct {
		in       string
		full     string // String()
		familiar string // Familiar()
		name     string // FamiliarName()
		domain   string
		tag      string
		digest   string
	}{
		{"nginx", "docker.io/library/nginx:latest", "nginx:latest", "nginx", "docker.io", "latest", ""},
		{"nginx:latest", "docker.io/library/nginx:latest", "nginx:latest", "nginx", "docker.io", "latest", ""},
		{"nginx:1.17.4", "docker.io/library/nginx:1.17.4", "nginx:1.17.4", "nginx", "docker.io", "1.17.4", ""},
		{"library/nginx", "docker.io/library/nginx:latest", "nginx:latest", "nginx", "docker.io", "latest", ""},
		{"docker.io/library/nginx", "docker.io/library/nginx:latest", "nginx:latest", "nginx", "docker.io", "latest", ""},
		{"index.docker.io/library/nginx", "docker.io/library/nginx:latest", "nginx:latest", "nginx", "docker.io", "latest", ""},
		{"davidainslie/nginx", "docker.io/davidainslie/nginx:latest", "davidainslie/nginx:latest", "davidainslie/nginx", "docker.io", "latest", ""},
		{"my-nginx", "docker.io/library/my-nginx:latest", "my-nginx:latest", "my-nginx", "docker.io", "latest", ""},
		{"localhost:5000/team/app:1.2", "localhost:5000/team/app:1.2", "localhost:5000/team/app:1.2", "localhost:5000/team/app", "localhost:5000", "1.2", ""},
		{"localhost/app", "localhost/app:latest", "localhost/app:latest", "localhost/app", "localhost", "latest", ""},
		{"127.0.0.1:5000/app:v1", "127.0.0.1:5000/app:v1", "127.0.0.1:5000/app:v1", "127.0.0.1:5000/app", "127.0.0.1:5000", "v1", ""},
		{"[::1]:5000/app", "[::1]:5000/app:latest", "[::1]:5000/app:latest", "[::1]:5000/app", "[::1]:5000", "latest", ""},
		{"registry.example.com/a/b/c:Tag_1.x-y", "registry.example.com/a/b/c:Tag_1.x-y", "registry.example.com/a/b/c:Tag_1.x-y", "registry.example.com/a/b/c", "registry.example.com", "Tag_1.x-y", ""},
		{"foo_bar/baz__qux.x-y", "docker.io/foo_bar/baz__qux.x-y:latest", "foo_bar/baz__qux.x-y:latest", "foo_bar/baz__qux.x-y", "docker.io", "latest", ""},
		{"nginx@" + dgst, "docker.io/library/nginx@" + dgst, "nginx@" + dgst, "nginx", "docker.io", "", dgst},
		// A tag next to a digest is dropped, as Docker does.
		{"nginx:1.2@" + dgst, "docker.io/library/nginx@" + dgst, "nginx@" + dgst, "nginx", "docker.io", "", dgst},
		{"localhost:5000/team/app@" + dgst, "localhost:5000/team/app@" + dgst, "localhost:5000/team/app@" + dgst, "localhost:5000/team/app", "localhost:5000", "", dgst},
		// A Docker Hub repository that would read as one on another host
		// keeps its full name.
		{"docker.io/foo.com/app", "docker.io/foo.com/app:latest", "docker.io/foo.com/app:latest", "docker.io/foo.com/app", "docker.io", "latest", ""},
		{"nginx:" + strings.Repeat("t", 128), "docker.io/library/nginx:" + strings.Repeat("t", 128), "nginx:" + strings.Repeat("t", 128), "nginx", "docker.io", strings.Repeat("t", 128), ""},
	}
	for _, tt := range tests {
		r, err := ParseDefaultTag(tt.in)
		if err != nil {
			t.Errorf("ParseDefaultTag(%q) = %v, want no error", tt.in, err)
			continue
		}
		got := []string{r.String(), r.Familiar(), r.FamiliarName(), r.Domain(), r.Tag(), r.Digest().String()}
		want := []string{tt.full, tt.familiar, tt.name, tt.domain, tt.tag, tt.digest}
		for i := range got {
			if got[i] != want[i] {
				t.Errorf("ParseDefaultTag(%q): [String Familiar FamiliarName Domain Tag Digest] = %q, want %q", tt.in, got, want)
				break
			}
		}
	}
}

func TestParseInvalid(t *testing.T) {
	tests := []struct {
		in     string
		reason string // a fragment of the message
	}{
		{"", "invalid reference format"},
		{"Nginx", "must be lowercase"},
		{"team/App:1", "must be lowercase"},
		{"nginx:", "invalid reference format"},
		{":latest", "invalid reference format"},
		{"nginx:bad tag", "invalid reference format"},
		{"nginx::1", "invalid reference format"},
		{"nginx:" + strings.Repeat("t", 129), "invalid reference format"},
		{"-nginx", "invalid reference format"},
		{"nginx/", "invalid reference format"},
		{"a//b", "invalid reference format"},
		{"nginx@sha256:abc", "invalid reference format"},
		{"nginx@md5:" + hexA, "unsupported digest algorithm"},
		{hexA, "cannot specify 64-byte hexadecimal strings"},
		{"localhost:port/app", "invalid reference format"},
		{"a_b.c/app", "not a valid one"},
		{strings.Repeat("a", 256), "must not be more than 255 characters"},
	}
	for _, tt := range tests {
		_, err := ParseDefaultTag(tt.in)
		if err == nil {
			t.Errorf("ParseDefaultTag(%q) = no error, want one mentioning %q", tt.in, tt.reason)
			continue
		}
		if !errdefs.IsInvalidArgument(err) {
			t.Errorf("ParseDefaultTag(%q) = %v, want an INVALID_ARGUMENT error", tt.in, err)
		}
		msg := err.Error()
		if !strings.Contains(msg, tt.reason) || !strings.Contains(msg, `"`+tt.in+`"`) {
			t.Errorf("ParseDefaultTag(%q) error = %q, want it to name the input and say %q", tt.in, msg, tt.reason)
		}
		var e *errdefs.Error
		if !errors.As(err, &e) || e.Reason() != ReasonInvalidReference || e.Details()["reference"] != tt.in {
			t.Errorf("ParseDefaultTag(%q) error reason/details = %v, want %s with the reference", tt.in, err, ReasonInvalidReference)
		}
	}
}

func TestParseKeepsWhatWasGiven(t *testing.T) {
	r, err := Parse("nginx")
	if err != nil {
		t.Fatal(err)
	}
	if !r.IsNameOnly() || r.Tag() != "" || r.Familiar() != "nginx" || r.String() != "docker.io/library/nginx" {
		t.Errorf("Parse(nginx) = %q (familiar %q, tag %q), want a bare name", r.String(), r.Familiar(), r.Tag())
	}
	if got := r.DefaultTagged().Familiar(); got != "nginx:latest" {
		t.Errorf("DefaultTagged() = %q, want nginx:latest", got)
	}
	both, err := Parse("nginx:1@" + dgst)
	if err != nil {
		t.Fatal(err)
	}
	if both.Tag() != "1" || both.Digest() != dgst {
		t.Errorf("Parse(nginx:1@…) tag, digest = %q, %q; want both kept", both.Tag(), both.Digest())
	}
}

func TestParseTag(t *testing.T) {
	for in, want := range map[string]string{
		"nginx":                       "nginx:latest",
		"my-nginx:v2":                 "my-nginx:v2",
		"localhost:5000/team/app:1.2": "localhost:5000/team/app:1.2",
		"davidainslie/nginx":          "davidainslie/nginx:latest",
	} {
		r, err := ParseTag(in)
		if err != nil || r.Familiar() != want {
			t.Errorf("ParseTag(%q) = %q, %v; want %q", in, r.Familiar(), err, want)
		}
	}
	for _, in := range []string{"nginx@" + dgst, "nginx:1@" + dgst, "Bad", ""} {
		if _, err := ParseTag(in); !errdefs.IsInvalidArgument(err) {
			t.Errorf("ParseTag(%q) = %v, want INVALID_ARGUMENT", in, err)
		}
	}
}

func TestParseRepositoryAndCanonical(t *testing.T) {
	if r, err := ParseRepository("team/app"); err != nil || r.String() != "docker.io/team/app" {
		t.Errorf("ParseRepository(team/app) = %q, %v", r.String(), err)
	}
	if _, err := ParseRepository("team/app:1"); !errdefs.IsInvalidArgument(err) {
		t.Errorf("ParseRepository(team/app:1) = %v, want INVALID_ARGUMENT", err)
	}
	if r, err := ParseCanonical("app@" + dgst); err != nil || r.Familiar() != "app@"+dgst {
		t.Errorf("ParseCanonical(app@…) = %q, %v", r.Familiar(), err)
	}
	if _, err := ParseCanonical("app:1"); !errdefs.IsInvalidArgument(err) {
		t.Errorf("ParseCanonical(app:1) = %v, want INVALID_ARGUMENT", err)
	}
}

func TestWithTagAndDigest(t *testing.T) {
	r, _ := ParseDefaultTag("localhost:5000/team/app:1.2")
	tagged, err := r.WithTag("2.0")
	if err != nil || tagged.Familiar() != "localhost:5000/team/app:2.0" {
		t.Errorf("WithTag(2.0) = %q, %v", tagged.Familiar(), err)
	}
	if _, err := r.WithTag("bad tag"); !errdefs.IsInvalidArgument(err) {
		t.Errorf("WithTag(bad tag) = %v, want INVALID_ARGUMENT", err)
	}
	digested, err := r.WithDigest(dgst)
	if err != nil || digested.Familiar() != "localhost:5000/team/app@"+dgst {
		t.Errorf("WithDigest = %q, %v", digested.Familiar(), err)
	}
	if got := r.Repository().Familiar(); got != "localhost:5000/team/app" {
		t.Errorf("Repository() = %q", got)
	}
}

func TestMatch(t *testing.T) {
	tests := []struct {
		pattern, ref string
		want         bool
	}{
		{"nginx", "nginx:latest", true},
		{"nginx:latest", "nginx:latest", true},
		{"nginx:1.*", "nginx:1.17", true},
		{"nginx:1.*", "nginx:latest", false},
		{"*nginx", "my-nginx:latest", true},
		{"*nginx", "davidainslie/nginx:latest", false}, // * does not cross "/"
		{"*/nginx", "davidainslie/nginx:latest", true},
		{"localhost:5000/team/*", "localhost:5000/team/app:1.2", true},
		{"docker.io/library/nginx", "nginx:latest", false}, // familiar forms only, as Docker
	}
	for _, tt := range tests {
		r, err := ParseDefaultTag(tt.ref)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Match(tt.pattern, r)
		if err != nil || got != tt.want {
			t.Errorf("Match(%q, %q) = %v, %v; want %v", tt.pattern, tt.ref, got, err, tt.want)
		}
	}
	r, _ := ParseDefaultTag("nginx")
	if _, err := Match("[", r); !errdefs.IsInvalidArgument(err) {
		t.Errorf("Match([) = %v, want INVALID_ARGUMENT", err)
	}
	if err := ValidPattern("a[b"); !errdefs.IsInvalidArgument(err) {
		t.Errorf("ValidPattern(a[b) = %v, want INVALID_ARGUMENT", err)
	}
}

func TestIDs(t *testing.T) {
	for _, in := range []string{dgst, hexA} {
		if id, ok := ParseID(in); !ok || id != dgst {
			t.Errorf("ParseID(%q) = %q, %v; want %q", in, id, ok, dgst)
		}
	}
	for _, in := range []string{"cd84", "sha256:cd84", "nginx", "sha256:" + strings.ToUpper(hexA), hexA + "0"} {
		if id, ok := ParseID(in); ok {
			t.Errorf("ParseID(%q) = %q, want not an ID", in, id)
		}
	}
	for in, want := range map[string]string{"cd84": "cd84", "sha256:cd8415": "cd8415", hexA: hexA} {
		if got, ok := ParseIDPrefix(in); !ok || got != want {
			t.Errorf("ParseIDPrefix(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
	for _, in := range []string{"nginx", "cd84:latest", "", "sha256:"} {
		if got, ok := ParseIDPrefix(in); ok {
			t.Errorf("ParseIDPrefix(%q) = %q, want not a prefix", in, got)
		}
	}
	if got := TruncateID(dgst); got != "cd84152b7468" {
		t.Errorf("TruncateID = %q, want cd84152b7468", got)
	}
}
