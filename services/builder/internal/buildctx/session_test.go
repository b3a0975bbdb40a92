package buildctx

import (
	"context"
	"errors"
	"io"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/opencontainers/go-digest"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
	"github.com/strata-build/strata/lib/errdefs"
)

// client plays the client's side of the protocol over a stream: it answers
// the builder's requests from the files it holds.
type client struct {
	files map[string]string // path → content
	list  []*builderv1.FileEntry
	in    chan *builderv1.BuildRequest

	mu   sync.Mutex
	sent []*builderv1.BuildResponse // what the builder sent
}

func newClient(files map[string]string) *client {
	c := &client{files: files, in: make(chan *builderv1.BuildRequest, 64)}
	for _, p := range sortedKeys(files) {
		c.list = append(c.list, file(p, files[p]))
	}
	return c
}

func sortedKeys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func (c *client) Recv() (*builderv1.BuildRequest, error) {
	m, ok := <-c.in
	if !ok {
		return nil, io.EOF
	}
	return m, nil
}

// Send answers a context request as the client does: the list when asked,
// then the contents asked for, then the end of its side.
func (c *client) Send(m *builderv1.BuildResponse) error {
	c.mu.Lock()
	c.sent = append(c.sent, m)
	c.mu.Unlock()
	req := m.GetContextRequest()
	switch {
	case req == nil:
	case req.GetSendEntries():
		c.in <- &builderv1.BuildRequest{Request: &builderv1.BuildRequest_Entries{Entries: &builderv1.ContextEntries{Entries: c.list, Last: true}}}
	default:
		for _, d := range req.GetDigests() {
			for _, body := range c.files {
				if string(digest.FromString(body)) == d {
					c.in <- &builderv1.BuildRequest{Request: &builderv1.BuildRequest_FileData{FileData: &builderv1.FileData{Digest: d, Data: []byte(body), Eof: true}}}
					break
				}
			}
		}
		close(c.in)
	}
	return nil
}

// requests returns the context requests the builder sent.
func (c *client) requests() []*builderv1.ContextRequest {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*builderv1.ContextRequest
	for _, m := range c.sent {
		if r := m.GetContextRequest(); r != nil {
			out = append(out, r)
		}
	}
	return out
}

func newReceiver(t *testing.T) *Receiver {
	t.Helper()
	store, err := NewStore(filepath.Join(t.TempDir(), "context"), 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	return NewReceiver(store, 1, nil)
}

func receive(t *testing.T, r *Receiver, c *client, opts *builderv1.BuildOptions) *Session {
	t.Helper()
	s, err := r.Receive(context.Background(), c, opts, func() {})
	if err != nil {
		t.Fatalf("Receive: %v", err)
	}
	if err := s.Contents(context.Background()); err != nil {
		t.Fatalf("Contents: %v", err)
	}
	return s
}

func TestReceiveFreshThenRemembered(t *testing.T) {
	files := map[string]string{
		"Dockerfile":    "FROM scratch\nCOPY . /\n",
		".dockerignore": "secret\n",
		"a.txt":         "a",
		"secret":        "s",
	}
	r := newReceiver(t)
	c := newClient(files)
	opts := &builderv1.BuildOptions{ContextDigest: ListDigest(c.list)}
	s := receive(t, r, c, opts)
	if string(s.Dockerfile) != files["Dockerfile"] {
		t.Errorf("Dockerfile = %q, want %q", s.Dockerfile, files["Dockerfile"])
	}
	if _, ok := s.Context.Lookup("secret"); ok {
		t.Error("the builder kept a file .dockerignore excludes")
	}
	if got, want := s.Received(), int64(len("FROM scratch\nCOPY . /\n")+len("secret\n")+2); got != want {
		t.Errorf("Received = %d, want %d", got, want)
	}
	reqs := c.requests()
	if len(reqs) != 2 || !reqs[0].GetSendEntries() {
		t.Fatalf("requests = %v, want the list, then the contents", reqs)
	}
	// The Dockerfile and .dockerignore are asked for first: the build
	// starts on them.
	first := []string{reqs[1].GetDigests()[0], reqs[1].GetDigests()[1]}
	slices.Sort(first)
	want := []string{string(digest.FromString(files["Dockerfile"])), string(digest.FromString(files[".dockerignore"]))}
	slices.Sort(want)
	if diff := cmp.Diff(want, first); diff != "" {
		t.Errorf("first digests asked for (-want +got):\n%s", diff)
	}
	s.Close()

	// The same list again: neither the list nor any content travels.
	c2 := newClient(files)
	s2 := receive(t, r, c2, opts)
	defer s2.Close()
	reqs = c2.requests()
	if len(reqs) != 1 || reqs[0].GetSendEntries() || len(reqs[0].GetDigests()) != 0 {
		t.Errorf("requests of a remembered context = %v, want one asking for nothing", reqs)
	}
	if s2.Context != s.Context {
		t.Error("a remembered context was made again")
	}
}

// A .dockerignore that names the Dockerfile and itself: Docker reads both
// and then leaves them out of the context, so COPY . does not copy them and
// editing them misses no cache. A remembered context still has its
// Dockerfile.
func TestReceiveReadsIgnoredBuildFilesButLeavesThemOut(t *testing.T) {
	files := map[string]string{
		"Dockerfile":    "FROM scratch\nCOPY . /\n",
		".dockerignore": "./Dockerfile\n.dockerignore\n",
		"a.txt":         "a",
	}
	r := newReceiver(t)
	opts := &builderv1.BuildOptions{ContextDigest: ListDigest(newClient(files).list)}
	for _, round := range []string{"fresh", "remembered"} {
		s := receive(t, r, newClient(files), opts)
		if string(s.Dockerfile) != files["Dockerfile"] {
			t.Errorf("%s: Dockerfile = %q, want %q", round, s.Dockerfile, files["Dockerfile"])
		}
		var walked []string
		s.Context.Walk(".", func(e *Entry) error { walked = append(walked, e.Path); return nil })
		if want := []string{".", "a.txt"}; !slices.Equal(walked, want) {
			t.Errorf("%s: the context holds %q, want %q", round, walked, want)
		}
		s.Close()
	}
}

// With no Dockerfile, Docker's daemon takes a lowercase dockerfile.
func TestReceiveFallsBackToALowercaseDockerfile(t *testing.T) {
	files := map[string]string{"dockerfile": "FROM scratch\n", ".dockerignore": "dockerfile\n"}
	for _, name := range []string{"", "Dockerfile"} {
		c := newClient(files)
		s := receive(t, newReceiver(t), c, &builderv1.BuildOptions{Dockerfile: name, ContextDigest: ListDigest(c.list)})
		if string(s.Dockerfile) != files["dockerfile"] {
			t.Errorf("Dockerfile %q: read %q, want the lowercase one's %q", name, s.Dockerfile, files["dockerfile"])
		}
		if _, ok := s.Context.Lookup("dockerfile"); ok {
			t.Errorf("Dockerfile %q: .dockerignore names dockerfile, yet the context holds it", name)
		}
		s.Close()
	}
}

func TestReceiveRefusesBadInput(t *testing.T) {
	files := map[string]string{"Dockerfile": "FROM scratch\n"}
	tests := []struct {
		name string
		opts func(c *client) *builderv1.BuildOptions
		kind error
	}{
		{"list digest mismatch", func(c *client) *builderv1.BuildOptions {
			return &builderv1.BuildOptions{ContextDigest: string(digest.FromString("other"))}
		}, errdefs.ErrInvalidArgument},
		{"no Dockerfile", func(c *client) *builderv1.BuildOptions {
			return &builderv1.BuildOptions{Dockerfile: "nope"}
		}, errdefs.ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClient(files)
			if tt.opts(c).GetContextDigest() == "" {
				// Without a list digest the client sends its list unasked.
				c.in <- &builderv1.BuildRequest{Request: &builderv1.BuildRequest_Entries{Entries: &builderv1.ContextEntries{Entries: c.list, Last: true}}}
			}
			s, err := newReceiver(t).Receive(context.Background(), c, tt.opts(c), func() {})
			if err == nil {
				s.Close()
			}
			if !errors.Is(err, tt.kind) {
				t.Errorf("Receive err = %v, want %v", err, tt.kind)
			}
		})
	}
}

func TestReceiveRefusesContentNotAskedFor(t *testing.T) {
	r := newReceiver(t)
	body := "FROM scratch\n"
	stream := &scripted{in: []*builderv1.BuildRequest{
		{Request: &builderv1.BuildRequest_Entries{Entries: &builderv1.ContextEntries{Entries: []*builderv1.FileEntry{file("Dockerfile", body)}, Last: true}}},
		{Request: &builderv1.BuildRequest_FileData{FileData: &builderv1.FileData{Digest: string(digest.FromString("other")), Data: []byte("other"), Eof: true}}},
	}}
	canceled := make(chan struct{})
	_, err := r.Receive(context.Background(), stream, &builderv1.BuildOptions{}, func() { close(canceled) })
	if !errdefs.IsInvalidArgument(err) {
		t.Errorf("Receive err = %v, want INVALID_ARGUMENT", err)
	}
	<-canceled // a failed transfer cancels its build
}

// scripted is a stream whose client sends the messages it holds.
type scripted struct {
	in []*builderv1.BuildRequest
}

func (s *scripted) Send(*builderv1.BuildResponse) error { return nil }

func (s *scripted) Recv() (*builderv1.BuildRequest, error) {
	if len(s.in) == 0 {
		return nil, io.EOF
	}
	m := s.in[0]
	s.in = s.in[1:]
	return m, nil
}
