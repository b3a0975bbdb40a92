// Package layertest holds the hostile archives that every way the builder
// writes files from an archive or a context into a root filesystem is tested
// against: layer unpack, import, load, ADD of a local archive and COPY from a
// context holding symlinks. A case is written once here, with what must hold
// on the host and what the root must contain afterwards, and each extraction
// path's test runs the whole table.
//
// The cases port the facts of containerd's TestBreakouts
// (pkg/archive/tar_test.go: the archives and the outcomes it expects) and of
// ../shared/reference/security-and-faults.md section 1. Where containerd's
// archives aim at the machine's /etc, these aim at a host directory the test
// owns (see Host), so that an escape is caught without harming the machine.
package layertest

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"path"
	"strings"
	"time"
)

// Entry is one member of a test archive. Names and targets may hold the
// placeholders Expand replaces.
type Entry struct {
	Name string
	// Type is tar.TypeDir, tar.TypeReg, tar.TypeSymlink or tar.TypeLink.
	Type byte
	Mode int64
	Body string
	// Target is a symlink's or a hard link's target.
	Target string
}

// Dir is a directory entry.
func Dir(name string, mode int64) Entry { return Entry{Name: name, Type: tar.TypeDir, Mode: mode} }

// File is a regular file entry.
func File(name, body string, mode int64) Entry {
	return Entry{Name: name, Type: tar.TypeReg, Mode: mode, Body: body}
}

// Symlink is the entry of a symlink name -> target.
func Symlink(name, target string) Entry {
	return Entry{Name: name, Type: tar.TypeSymlink, Mode: 0o777, Target: target}
}

// Link is the entry of a hard link name to the archive member target.
func Link(name, target string) Entry {
	return Entry{Name: name, Type: tar.TypeLink, Mode: 0o644, Target: target}
}

// Tar writes entries as a tar archive, in order, as they are (no name is
// cleaned).
func Tar(entries []Entry) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := Write(tw, entries); err != nil {
		panic("layertest: " + err.Error()) // the table is wrong, not the input
	}
	tw.Close()
	return buf.Bytes()
}

// Write adds entries to tw, owned by root and dated 2001.
func Write(tw *tar.Writer, entries []Entry) error {
	for _, e := range entries {
		h := &tar.Header{
			Name: e.Name, Typeflag: e.Type, Mode: e.Mode, Linkname: e.Target,
			ModTime: time.Unix(1e9, 0), Format: tar.FormatPAX,
		}
		if e.Type == tar.TypeReg {
			h.Size = int64(len(e.Body))
		}
		if err := tw.WriteHeader(h); err != nil {
			return fmt.Errorf("writing %q: %w", e.Name, err)
		}
		if _, err := io.WriteString(tw, e.Body); err != nil {
			return err
		}
	}
	return nil
}

// Reroot returns entries with every name and hard-link target taken as a
// path from "/" (a leading "/" dropped, ".." clamped at the top), which is
// what an extractor that resolves names inside its root makes of them. It is
// the archive `strata import` and `strata load` accept, since they refuse
// absolute and climbing names, with the same meaning once unpacked.
func Reroot(entries []Entry) []Entry {
	out := make([]Entry, len(entries))
	for i, e := range entries {
		e.Name = reroot(e.Name)
		if e.Type == tar.TypeLink {
			e.Target = reroot(e.Target)
		}
		out[i] = e
	}
	return out
}

func reroot(name string) string {
	dir := strings.HasSuffix(name, "/")
	p := strings.TrimPrefix(path.Clean("/"+name), "/")
	if p == "" {
		p = "."
	}
	if dir && p != "." {
		p += "/"
	}
	return p
}

// Unsafe reports whether an archive holds a name, or a hard link to a
// name, that is absolute or climbs out with "..": import and load refuse
// such an archive as it is.
func Unsafe(entries []Entry) bool {
	for _, e := range entries {
		if climbs(e.Name) || e.Type == tar.TypeLink && climbs(e.Target) {
			return true
		}
	}
	return false
}

func climbs(name string) bool {
	c := path.Clean(name)
	return strings.HasPrefix(name, "/") || c == ".." || strings.HasPrefix(c, "../")
}
