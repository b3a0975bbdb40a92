package buildcontext

import (
	"io"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
)

// fakeStream answers with the responses it holds, in order, and keeps what
// the client sends.
type fakeStream struct {
	responses []*builderv1.BuildResponse
	sent      []*builderv1.BuildRequest
	closed    bool
}

func (s *fakeStream) Send(m *builderv1.BuildRequest) error {
	s.sent = append(s.sent, m)
	return nil
}

func (s *fakeStream) Recv() (*builderv1.BuildResponse, error) {
	if len(s.responses) == 0 {
		return nil, io.EOF
	}
	r := s.responses[0]
	s.responses = s.responses[1:]
	return r, nil
}

func (s *fakeStream) CloseSend() error { s.closed = true; return nil }

func queued(ahead int32) *builderv1.BuildResponse {
	return &builderv1.BuildResponse{Response: &builderv1.BuildResponse_Event{Event: &builderv1.BuildEvent{
		Event: &builderv1.BuildEvent_Queued{Queued: &builderv1.BuildQueued{Ahead: ahead}},
	}}}
}

func request(r *builderv1.ContextRequest) *builderv1.BuildResponse {
	return &builderv1.BuildResponse{Response: &builderv1.BuildResponse_ContextRequest{ContextRequest: r}}
}

func TestSyncSendsWhatTheBuilderAsksFor(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, map[string]string{"Dockerfile": "FROM scratch\n", "a.txt": "a"})
	c, err := Walk(Options{Dir: dir, Dockerfile: "Dockerfile"})
	if err != nil {
		t.Fatal(err)
	}
	var want string
	for _, e := range c.Entries {
		if e.GetPath() == "a.txt" {
			want = e.GetDigest()
		}
	}
	tests := []struct {
		name        string
		sendEntries bool
	}{
		{"list known", false},
		{"list asked for", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &fakeStream{}
			s.responses = append(s.responses, queued(2))
			if tt.sendEntries {
				s.responses = append(s.responses, request(&builderv1.ContextRequest{SendEntries: true}))
			}
			s.responses = append(s.responses, request(&builderv1.ContextRequest{Digests: []string{want}}))
			var events int
			var sending int64
			h := Handler{Event: func(*builderv1.BuildEvent) { events++ }, Sending: func(n, _, _ int64) { sending = n }}
			if err := c.Sync(s, &builderv1.BuildOptions{Dockerfile: "Dockerfile"}, h); err != nil {
				t.Fatalf("Sync: %v", err)
			}
			if !s.closed {
				t.Error("Sync did not close its side of the stream")
			}
			if events != 1 || sending != 1 {
				t.Errorf("Sync gave %d events and %d bytes to send, want 1 and 1", events, sending)
			}
			got := s.sent
			if opts := got[0].GetOptions(); opts.GetContextDigest() != c.ListDigest() {
				t.Errorf("options name the list %q, want %q", opts.GetContextDigest(), c.ListDigest())
			}
			got = got[1:]
			if tt.sendEntries {
				if diff := cmp.Diff(&builderv1.ContextEntries{Entries: c.Entries, Last: true}, got[0].GetEntries(), protocmp.Transform()); diff != "" {
					t.Errorf("file list (-want +got):\n%s", diff)
				}
				got = got[1:]
			}
			wantData := []*builderv1.BuildRequest{{Request: &builderv1.BuildRequest_FileData{FileData: &builderv1.FileData{Digest: want, Data: []byte("a"), Eof: true}}}}
			if diff := cmp.Diff(wantData, got, protocmp.Transform()); diff != "" {
				t.Errorf("contents (-want +got):\n%s", diff)
			}
		})
	}
}

func TestResult(t *testing.T) {
	res := &builderv1.BuildResult{ImageId: "sha256:1"}
	s := &fakeStream{responses: []*builderv1.BuildResponse{
		queued(0),
		{Response: &builderv1.BuildResponse_Result{Result: res}},
	}}
	got, err := Result(s, Handler{})
	if err != nil || got.GetImageId() != "sha256:1" {
		t.Errorf("Result = %v, %v, want %v", got, err, res)
	}
	if _, err := Result(&fakeStream{}, Handler{}); err == nil {
		t.Error("Result of a stream without a result succeeded")
	}
}
