package cache

import (
	"fmt"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

// The keys are those every builder before computed: records written by
// them stay hits. Buffering the fields (a Hasher's flushes fall inside
// some of these) must not change a single key.
func TestKeysAreThoseOfEarlierBuilders(t *testing.T) {
	var files []File
	for i := range 3000 {
		files = append(files, File{Path: fmt.Sprintf("src\x00m%d/f%d.c", i/100, i), Mode: 0o644, UID: uint32(i % 3), Digest: digest.FromString(fmt.Sprint(i))})
	}
	files = append(files, File{Path: "link", Mode: 0o777, LinkTarget: strings.Repeat("long/", 8000)})
	for _, c := range []struct {
		name string
		got  digest.Digest
		want digest.Digest
	}{
		{"FromImage(scratch)", FromImage("scratch"), "sha256:1413fb23ed51cfd9904ddbe890858579107edad7de0ae231cbd789b4b2a0b3b7"},
		{"Sources of one file", Sources(files[:1]), "sha256:b0ca9b83175a56f63de9f24b92bcf220777f31b732974f0f7473f61646fafe44"},
		{"Sources of 3,001 files", Sources(files), "sha256:299c44f30219890650282bd9b5f8e32d155411fdd83b816fa7fc6eeefb2ffebb"},
		{"Step", Step{Parent: FromImage("sha256:aa"), Config: []byte(`{"Cmd":["/bin/sh","-c","echo"]}`), Author: "me", Args: []string{"A=1", "B=2"},
			Sources: Sources(files), Platform: "linux/amd64", Network: "none", Mounts: []string{"type=cache,target=/c"}}.Key(), "sha256:d47232de60ba2e770e9b79c833d51007799f695420c1a5617b37cd3b7ccc6287"},
	} {
		if c.got != c.want {
			t.Errorf("%s = %s, want %s", c.name, c.got, c.want)
		}
	}
}
