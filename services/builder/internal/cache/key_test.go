package cache

import (
	"fmt"
	"testing"

	"github.com/opencontainers/go-digest"
)

func TestEveryInputChangesTheStepKey(t *testing.T) {
	base := Step{
		Parent:   FromImage("sha256:aa"),
		Config:   []byte(`{"Cmd":["/bin/sh","-c","echo"]}`),
		Author:   "me",
		Args:     []string{"A=1", "B=2"},
		Sources:  Sources([]File{{Path: "/app/f", Mode: 0o644, Digest: digest.FromString("x")}}),
		Platform: "linux/amd64",
	}
	changes := map[string]func(s *Step){
		"parent":   func(s *Step) { s.Parent = FromImage("scratch") },
		"config":   func(s *Step) { s.Config = []byte(`{"Cmd":["/bin/sh","-c","echo 2"]}`) },
		"author":   func(s *Step) { s.Author = "you" },
		"an arg":   func(s *Step) { s.Args = []string{"A=1", "B=3"} },
		"no args":  func(s *Step) { s.Args = nil },
		"sources":  func(s *Step) { s.Sources = "" },
		"platform": func(s *Step) { s.Platform = "linux/arm64" },
		"mounts":   func(s *Step) { s.Mounts = []string{"secret,id=x"} },
		// Fields are length-prefixed, so moving bytes between them changes the key.
		"split": func(s *Step) { s.Args = []string{"A=1B=2"} },
	}
	want := base.Key()
	for name, change := range changes {
		s := base
		change(&s)
		if s.Key() == want {
			t.Errorf("changing %s kept the key %s", name, want)
		}
	}
	if base.Key() != want {
		t.Error("the key is not deterministic")
	}
}

func TestEverySourceAttributeChangesTheSourcesDigest(t *testing.T) {
	f := File{Path: "/a", Mode: 0o644, UID: 0, GID: 0, Digest: digest.FromString("x")}
	want := Sources([]File{f})
	for name, change := range map[string]func(f *File){
		"path":    func(f *File) { f.Path = "/b" },
		"mode":    func(f *File) { f.Mode = 0o600 },
		"uid":     func(f *File) { f.UID = 1 },
		"gid":     func(f *File) { f.GID = 1 },
		"content": func(f *File) { f.Digest = digest.FromString("y") },
		"link":    func(f *File) { f.LinkTarget = "x" },
	} {
		g := f
		change(&g)
		if Sources([]File{g}) == want {
			t.Errorf("changing the %s kept the sources digest", name)
		}
	}
}

// A COPY of a context of thousands of files hashes each file's fields.
func BenchmarkSources(b *testing.B) {
	var files []File
	for i := range 5000 {
		files = append(files, File{Path: fmt.Sprintf("src\x00m%d/f%d.c", i/100, i), Mode: 0o644, Digest: digest.FromString(fmt.Sprint(i))})
	}
	for b.Loop() {
		Sources(files)
	}
}
