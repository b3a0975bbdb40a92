package server

import (
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
	"github.com/strata-build/strata/lib/errdefs"
)

// secretMessages is a Build stream that delivers the given messages.
type secretMessages struct {
	grpc.BidiStreamingServer[builderv1.BuildRequest, builderv1.BuildResponse]
	msgs []*builderv1.BuildRequest
}

func (s *secretMessages) Recv() (*builderv1.BuildRequest, error) {
	if len(s.msgs) == 0 {
		return nil, io.EOF
	}
	m := s.msgs[0]
	s.msgs = s.msgs[1:]
	return m, nil
}

func secretMsg(id string, v []byte) *builderv1.BuildRequest {
	return &builderv1.BuildRequest{Request: &builderv1.BuildRequest_Secret{Secret: &builderv1.BuildSecret{Id: id, Value: v}}}
}

func TestReceiveSecrets(t *testing.T) {
	got, err := receiveSecrets(&secretMessages{msgs: []*builderv1.BuildRequest{secretMsg("a", []byte("1")), secretMsg("b", nil)}}, []string{"a", "b"})
	if err != nil || !cmp.Equal(got, map[string][]byte{"a": []byte("1"), "b": nil}) {
		t.Errorf("receiveSecrets = %q, %v; want a and b", got, err)
	}
	many := make([]string, maxSecrets+1)
	for i := range many {
		many[i] = strings.Repeat("x", i+1)
	}
	const value = "the-value-never-in-an-error"
	for name, tc := range map[string]struct {
		ids  []string
		msgs []*builderv1.BuildRequest
	}{
		"too many":     {ids: many},
		"duplicate":    {ids: []string{"a", "a"}},
		"empty ID":     {ids: []string{""}},
		"out of order": {ids: []string{"a", "b"}, msgs: []*builderv1.BuildRequest{secretMsg("b", []byte(value)), secretMsg("a", nil)}},
		"not a secret": {ids: []string{"a"}, msgs: []*builderv1.BuildRequest{{Request: &builderv1.BuildRequest_ContextTar{ContextTar: []byte(value)}}}},
		"too large":    {ids: []string{"a"}, msgs: []*builderv1.BuildRequest{secretMsg("a", []byte(value+strings.Repeat("x", maxSecretSize)))}},
	} {
		_, err := receiveSecrets(&secretMessages{msgs: tc.msgs}, tc.ids)
		var e *errdefs.Error
		if !errors.As(err, &e) || !errdefs.IsInvalidArgument(err) || e.Reason() != "SECRET_INVALID" {
			t.Errorf("%s: receiveSecrets = %v, want INVALID_ARGUMENT SECRET_INVALID", name, err)
		}
		if err != nil && strings.Contains(err.Error(), value) {
			t.Errorf("%s: the error holds the value: %v", name, err)
		}
	}
}
