package image

import (
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

func TestRepoName(t *testing.T) {
	for in, want := range map[string]string{
		"docker.io/library/nginx:latest":      "docker.io/library/nginx",
		"localhost:5000/team/app:1.2":         "localhost:5000/team/app",
		"localhost:5000/team/app@sha256:abcd": "localhost:5000/team/app",
		"localhost:5000/team/app":             "localhost:5000/team/app",
	} {
		if got := repoName(in); got != want {
			t.Errorf("repoName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestIsSingleReference(t *testing.T) {
	tag := func(n string) Ref { return Ref{Name: n, IsTag: true} }
	dig := func(n string) Ref { return Ref{Name: n} }
	tests := []struct {
		refs []Ref
		want bool
	}{
		{nil, false},
		{[]Ref{tag("docker.io/library/a:1")}, true},
		{[]Ref{tag("docker.io/library/a:1"), dig("docker.io/library/a@sha256:x")}, true},
		{[]Ref{tag("docker.io/library/a:1"), tag("docker.io/library/a:2")}, false},
		{[]Ref{tag("docker.io/library/a:1"), dig("docker.io/library/b@sha256:x")}, false},
		{[]Ref{dig("docker.io/library/a@sha256:x"), dig("docker.io/library/a@sha256:y")}, true},
	}
	for _, tt := range tests {
		if got := isSingleReference(tt.refs); got != tt.want {
			t.Errorf("isSingleReference(%v) = %v, want %v", tt.refs, got, tt.want)
		}
	}
}

func TestIsImageIDPrefix(t *testing.T) {
	id := "sha256:cd84152b746847af5c75f3e53d0e19ccdcb17d9e9976961d74ab21c37c5ff89e"
	for in, want := range map[string]bool{"cd84": true, "sha256:cd84": true, id: true, "cd85": false, "nginx": false} {
		if got := isImageIDPrefix(id, in); got != want {
			t.Errorf("isImageIDPrefix(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestParseTimestamp(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"24h":                       now.Add(-24 * time.Hour),
		"2026-01-02T03:04:05Z":      time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		"2026-01-02":                time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC),
		"1700000000":                time.Unix(1700000000, 0),
		"1700000000.5":              time.Unix(1700000000, 500000000),
		"2026-01-02T03:04:05.123Z":  time.Date(2026, 1, 2, 3, 4, 5, 123000000, time.UTC),
		"2026-01-02T03:04:05+02:00": time.Date(2026, 1, 2, 1, 4, 5, 0, time.UTC),
	} {
		got, err := parseTimestamp("until", in, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("parseTimestamp(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := parseTimestamp("until", "soon", now); err == nil {
		t.Error("parseTimestamp(soon) = no error")
	}
}

func TestChainIDs(t *testing.T) {
	// The chain IDs of busybox-like stacks, as the OCI image spec computes them.
	a := "sha256:a8ba2ac8552bfb5d40deeba25d7c57d977fc4bface0ed11ed772bbbfe0bb07fc"
	b := "sha256:b5afda7cbb10879f0e2692c1d4f49206a157633deb9add173fe9da377726d43a"
	got := ChainIDs([]string{a, b})
	want := []string{a, digest.FromString(a + " " + b).String()}
	if got[0] != want[0] || got[1] != want[1] {
		t.Errorf("ChainIDs = %q, want %q", got, want)
	}
}

func TestLiteralPrefix(t *testing.T) {
	for in, want := range map[string]string{"nginx": "nginx", "my-*": "my-", "*": "", "a?b": "a", "a[bc]": "a"} {
		if got := literalPrefix(in); got != want {
			t.Errorf("literalPrefix(%q) = %q, want %q", in, got, want)
		}
	}
	if got := commonPrefix([]string{"busybox", "bus", "busy"}); got != "bus" {
		t.Errorf("commonPrefix = %q", got)
	}
}
