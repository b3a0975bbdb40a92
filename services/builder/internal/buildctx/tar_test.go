package buildctx

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"path"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
	"github.com/strata-build/strata/lib/compression"
	"github.com/strata-build/strata/lib/errdefs"
)

// tarOf writes a tar of the headers, each regular file or link with body.
func tarOf(t testing.TB, entries ...tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: 0o644, Typeflag: e.typ, Linkname: e.link, Size: int64(len(e.body))}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Typeflag != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(e.body))
	}
	tw.Close()
	return buf.Bytes()
}

type tarEntry struct {
	name, body, link string
	typ              byte
}

// tarClient sends a tar in chunks after the options, then closes its side.
type tarClient struct {
	in   []*builderv1.BuildRequest
	sent []*builderv1.BuildResponse
}

func newTarClient(tarBytes []byte, chunk int, endEmpty bool) *tarClient {
	c := &tarClient{}
	for off := 0; off < len(tarBytes); off += chunk {
		c.in = append(c.in, &builderv1.BuildRequest{Request: &builderv1.BuildRequest_ContextTar{ContextTar: tarBytes[off:min(off+chunk, len(tarBytes))]}})
	}
	if endEmpty {
		c.in = append(c.in, &builderv1.BuildRequest{Request: &builderv1.BuildRequest_ContextTar{}})
	}
	return c
}

func (c *tarClient) Recv() (*builderv1.BuildRequest, error) {
	if len(c.in) == 0 {
		return nil, io.EOF
	}
	m := c.in[0]
	c.in = c.in[1:]
	return m, nil
}

func (c *tarClient) Send(m *builderv1.BuildResponse) error { c.sent = append(c.sent, m); return nil }

func TestReceiveTarContext(t *testing.T) {
	df := "FROM scratch\nCOPY . /\n"
	plain := tarOf(t,
		tarEntry{name: "./", typ: tar.TypeDir},
		tarEntry{name: "./build/", typ: tar.TypeDir},
		tarEntry{name: "./build/Dockerfile.app", body: df},
		tarEntry{name: "./.dockerignore", body: "secret\n"},
		tarEntry{name: "./a.txt", body: "a"},
		tarEntry{name: "./b.txt", typ: tar.TypeLink, link: "./a.txt"},
		tarEntry{name: "./l", typ: tar.TypeSymlink, link: "/etc/passwd"},
		tarEntry{name: "./secret", body: "s"},
	)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(plain)
	zw.Close()
	for name, body := range map[string][]byte{"plain": plain, "gzip": gz.Bytes()} {
		for _, endEmpty := range []bool{false, true} {
			r := newReceiver(t)
			c := newTarClient(body, 100, endEmpty)
			s, err := r.Receive(context.Background(), c, &builderv1.BuildOptions{ContextTar: true, Dockerfile: "build/Dockerfile.app"}, func() {})
			if err != nil {
				t.Fatalf("%s: Receive: %v", name, err)
			}
			if string(s.Dockerfile) != df {
				t.Errorf("%s: Dockerfile = %q, want %q", name, s.Dockerfile, df)
			}
			if _, ok := s.Context.Lookup("secret"); ok {
				t.Errorf("%s: the builder kept a file .dockerignore excludes", name)
			}
			b, ok := s.Context.Lookup("b.txt")
			if !ok || b.Digest != digest.FromString("a") || !b.Mode.IsRegular() {
				t.Errorf("%s: the hard link b.txt = %+v, want a.txt's content", name, b)
			}
			if l, ok := s.Context.Lookup("l"); !ok || l.LinkTarget != "/etc/passwd" {
				t.Errorf("%s: the symlink = %+v", name, l)
			}
			rc, err := r.store.Open(b.Digest)
			if err != nil {
				t.Fatalf("%s: the store lacks a.txt's content: %v", name, err)
			}
			got, _ := io.ReadAll(rc)
			rc.Close()
			if string(got) != "a" {
				t.Errorf("%s: stored %q, want %q", name, got, "a")
			}
			if err := s.Contents(context.Background()); err != nil {
				t.Errorf("%s: Contents = %v", name, err)
			}
			for _, m := range c.sent {
				if m.GetContextRequest() != nil {
					t.Errorf("%s: the builder asked for context (%v) of a tar", name, m)
				}
			}
			s.Close()
		}
	}
}

func TestReceiveTarRefusesUnsafeEntries(t *testing.T) {
	tests := []struct {
		entry tarEntry
		want  string
	}{
		{tarEntry{name: "../escape", body: "x"}, `"../escape"`},
		{tarEntry{name: "a/../../escape", body: "x"}, `"a/../../escape"`},
		{tarEntry{name: "/etc/passwd", body: "x"}, `"/etc/passwd"`},
		{tarEntry{name: "link", typ: tar.TypeLink, link: "/etc/shadow"}, `"link"`},
		{tarEntry{name: "link", typ: tar.TypeLink, link: "../../x"}, `"link"`},
		{tarEntry{name: "dev", typ: tar.TypeChar}, `"dev"`},
	}
	for _, tt := range tests {
		r := newReceiver(t)
		body := tarOf(t, tarEntry{name: "Dockerfile", body: "FROM scratch\n"}, tt.entry)
		_, err := r.Receive(context.Background(), newTarClient(body, 1<<20, false), &builderv1.BuildOptions{ContextTar: true}, func() {})
		var e *errdefs.Error
		if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), tt.want) || !errorsAs(err, &e) || e.Reason() != "UNSAFE_TAR_ENTRY" {
			t.Errorf("entry %+v: Receive = %v, want INVALID_ARGUMENT (UNSAFE_TAR_ENTRY) naming %s", tt.entry, err, tt.want)
		}
	}
}

func TestReceiveTarFromABlob(t *testing.T) {
	body := tarOf(t, tarEntry{name: "Dockerfile", body: "FROM scratch\n"})
	r := newReceiver(t)
	d := digest.FromBytes(body)
	r.SetTarSources(func(_ context.Context, got digest.Digest) (io.ReadCloser, error) {
		if got != d {
			return nil, errdefs.NotFound("blob %s", got)
		}
		return io.NopCloser(bytes.NewReader(body)), nil
	}, defaultLimits)
	s, err := r.Receive(context.Background(), newTarClient(nil, 1, false), &builderv1.BuildOptions{ContextBlob: string(d)}, func() {})
	if err != nil {
		t.Fatalf("Receive: %v", err)
	}
	if string(s.Dockerfile) != "FROM scratch\n" {
		t.Errorf("Dockerfile = %q", s.Dockerfile)
	}
	s.Close()
	if _, err := r.Receive(context.Background(), newTarClient(nil, 1, false), &builderv1.BuildOptions{ContextBlob: string(digest.FromString("other"))}, func() {}); !errdefs.IsNotFound(err) {
		t.Errorf("Receive(unknown blob) = %v, want NOT_FOUND", err)
	}
}

var defaultLimits = compression.Limits{}

func errorsAs(err error, target **errdefs.Error) bool { return errors.As(err, target) }

// FuzzTarContext reads any bytes a client can send as a tar context. A
// tar is refused with INVALID_ARGUMENT or RESOURCE_EXHAUSTED, or makes a
// context whose every entry has a clean relative path, never ".." or
// absolute, and whose every regular file's content is in the store.
func FuzzTarContext(f *testing.F) {
	f.Add(tarOf(f, tarEntry{name: "Dockerfile", body: "FROM scratch\n"}, tarEntry{name: "./a/b", body: "b"},
		tarEntry{name: "./a/c", typ: tar.TypeLink, link: "a/b"}, tarEntry{name: "l", typ: tar.TypeSymlink, link: "../../x"}))
	f.Add(tarOf(f, tarEntry{name: "../x", body: "x"}))
	f.Add([]byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		r := newReceiver(t)
		s := &Session{}
		list, _, err := r.fromTar(bytes.NewReader(b), s, "context tar")
		defer func() {
			for _, rel := range s.release {
				rel()
			}
		}()
		if err != nil {
			if !errdefs.IsInvalidArgument(err) && !errdefs.IsResourceExhausted(err) {
				t.Fatalf("fromTar = %v, want INVALID_ARGUMENT or RESOURCE_EXHAUSTED", err)
			}
			return
		}
		c, err := New(list)
		if err != nil {
			if !errdefs.IsInvalidArgument(err) && !errdefs.IsResourceExhausted(err) {
				t.Fatalf("New = %v", err)
			}
			return
		}
		c.Walk(".", func(e *Entry) error {
			if e.Path != "." && (path.Clean(e.Path) != e.Path || path.IsAbs(e.Path) || e.Path == ".." || strings.HasPrefix(e.Path, "../")) {
				t.Errorf("entry %q is not a clean path inside the context", e.Path)
			}
			if e.Mode.IsRegular() {
				if _, err := r.store.Size(e.Digest); err != nil {
					t.Errorf("entry %q: its content %s is not in the store: %v", e.Path, e.Digest, err)
				}
			}
			return nil
		})
	})
}
