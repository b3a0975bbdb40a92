package server

import (
	"google.golang.org/grpc"

	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
	"github.com/strata-build/strata/lib/errdefs"
)

// Bounds of a build's secrets: BuildKit's size of one, and a count that
// keeps what a build holds in memory within 50 MiB.
const (
	maxSecrets    = 100
	maxSecretSize = 500 << 10
	maxSecretID   = 256
)

// receiveSecrets reads the build's secrets, which the client sends right
// after the options, one BuildSecret message for each of ids in order.
// Their values are kept in memory only, and never put in an error.
func receiveSecrets(stream grpc.BidiStreamingServer[builderv1.BuildRequest, builderv1.BuildResponse], ids []string) (map[string][]byte, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	if len(ids) > maxSecrets {
		return nil, secretError("build: %d secrets, more than the builder's limit of %d", len(ids), maxSecrets)
	}
	secrets := make(map[string][]byte, len(ids))
	for _, id := range ids {
		if id == "" || len(id) > maxSecretID {
			return nil, secretError("build: a secret's ID must have 1 to %d bytes", maxSecretID)
		}
		if _, dup := secrets[id]; dup {
			return nil, secretError("build: secret %q is given twice", id)
		}
		secrets[id] = nil
	}
	for _, id := range ids {
		m, err := stream.Recv()
		if err != nil {
			wipe(secrets)
			return nil, err
		}
		sec := m.GetSecret()
		if sec == nil || sec.GetId() != id {
			wipe(secrets)
			return nil, secretError("build: expected secret %q (BuildOptions.secret_ids) after the options, before the context", id)
		}
		if n := len(sec.GetValue()); n > maxSecretSize {
			wipe(secrets)
			return nil, secretError("build: secret %q has %d bytes, more than the limit of %d (500 KiB)", id, n, maxSecretSize)
		}
		secrets[id] = sec.GetValue()
	}
	return secrets, nil
}

func secretError(format string, args ...any) error {
	return errdefs.InvalidArgument(format, args...).WithReason("SECRET_INVALID")
}

// wipe overwrites the secrets' values once the build is over: nothing of
// them lingers in the builder's memory until it is reused.
func wipe(secrets map[string][]byte) {
	for _, v := range secrets {
		clear(v)
	}
}
