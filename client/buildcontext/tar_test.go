package buildcontext

import (
	"archive/tar"
	"bufio"
	"bytes"
	"io"
	"testing"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
)

// sentStream records what a client sends.
type sentStream struct {
	sent   []*builderv1.BuildRequest
	closed bool
}

func (s *sentStream) Send(m *builderv1.BuildRequest) error    { s.sent = append(s.sent, m); return nil }
func (s *sentStream) Recv() (*builderv1.BuildResponse, error) { return nil, io.EOF }
func (s *sentStream) CloseSend() error                        { s.closed = true; return nil }

func TestSendTarSendsTheOptionsThenTheBytesThenTheEnd(t *testing.T) {
	body := bytes.Repeat([]byte("x"), tarChunk+10)
	s := &sentStream{}
	if err := SendTar(s, &builderv1.BuildOptions{Dockerfile: "sub/Dockerfile"}, bytes.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	if len(s.sent) != 4 || !s.sent[0].GetOptions().GetContextTar() || !s.closed {
		t.Fatalf("sent %d messages (closed %v), want options with context_tar, two chunks, an empty end", len(s.sent), s.closed)
	}
	var got []byte
	for _, m := range s.sent[1:] {
		got = append(got, m.GetContextTar()...)
	}
	if !bytes.Equal(got, body) || len(s.sent[3].GetContextTar()) != 0 {
		t.Errorf("the chunks do not make the tar, or the last is not empty")
	}
}

func TestIsTar(t *testing.T) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "Dockerfile", Mode: 0o644, Typeflag: tar.TypeReg})
	tw.Close()
	for name, tt := range map[string]struct {
		in   []byte
		want bool
	}{
		"a tar":        {buf.Bytes(), true},
		"gzip":         {[]byte{0x1f, 0x8b, 8, 0}, true},
		"a Dockerfile": {[]byte("FROM busybox\nRUN echo hi\n"), false},
		"empty":        {nil, false},
	} {
		if got := IsTar(bufio.NewReader(bytes.NewReader(tt.in))); got != tt.want {
			t.Errorf("IsTar(%s) = %v, want %v", name, got, tt.want)
		}
	}
}
