package client

import (
	"encoding/csv"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/strata-build/strata/client/buildcontext"
	builderv1 "github.com/strata-build/strata/gen/strata/builder/v1"
)

// The builder's bounds on a build's secrets, checked here too so that a
// build that would exceed them does not start.
const (
	MaxSecrets    = 100
	MaxSecretSize = 500 << 10
)

// ReadSecret reads a secret as `docker buildx build --secret` does, from
// a spec of comma-separated key=value fields:
//
//	id=npmrc,src=$HOME/.npmrc     the file's content (source= too)
//	id=TOKEN,env=TOKEN            the variable's value
//	type=env,id=TOKEN,src=TOKEN   the same (type=file is the default)
//	id=TOKEN                      the variable TOKEN when it is set, the file TOKEN otherwise
//
// It returns the ID and the value; a file or variable that is missing is
// an error, as is a value of more than MaxSecretSize bytes.
func ReadSecret(spec string) (string, []byte, error) {
	fields, err := csv.NewReader(strings.NewReader(spec)).Read()
	if err != nil {
		return "", nil, fmt.Errorf("secret %q: %w", spec, err)
	}
	var id, src, env, typ string
	for _, f := range fields {
		key, value, ok := strings.Cut(f, "=")
		if !ok {
			return "", nil, fmt.Errorf("secret %q: field %q must be a key=value pair", spec, f)
		}
		switch strings.ToLower(key) {
		case "type":
			if value != "file" && value != "env" {
				return "", nil, fmt.Errorf("secret %q: type %q: want file or env", spec, value)
			}
			typ = value
		case "id":
			id = value
		case "src", "source":
			src = value
		case "env":
			env = value
		default:
			return "", nil, fmt.Errorf("secret %q: unexpected key %q: want id, src, source, env or type", spec, key)
		}
	}
	if id == "" {
		return "", nil, fmt.Errorf("secret %q: the id is missing", spec)
	}
	if typ == "env" && env == "" {
		env, src = src, ""
	}
	if src == "" && env == "" {
		if _, ok := os.LookupEnv(id); ok {
			env = id
		} else {
			src = id
		}
	}
	if env != "" {
		v, ok := os.LookupEnv(env)
		if !ok {
			return "", nil, fmt.Errorf("secret %s: the variable %s is not set", id, env)
		}
		if len(v) > MaxSecretSize {
			return "", nil, fmt.Errorf("secret %s: more than %d bytes (500 KiB)", id, MaxSecretSize)
		}
		return id, []byte(v), nil
	}
	fi, err := os.Stat(src)
	if err != nil {
		return "", nil, fmt.Errorf("secret %s: %w", id, err)
	}
	if fi.Size() > MaxSecretSize {
		return "", nil, fmt.Errorf("secret %s: %s has more than %d bytes (500 KiB)", id, src, MaxSecretSize)
	}
	v, err := os.ReadFile(src)
	if err != nil {
		return "", nil, fmt.Errorf("secret %s: %w", id, err)
	}
	return id, v, nil
}

// checkSecrets refuses what the builder would.
func checkSecrets(secrets map[string][]byte) error {
	if len(secrets) > MaxSecrets {
		return fmt.Errorf("build: %d secrets, more than %d", len(secrets), MaxSecrets)
	}
	for id, v := range secrets {
		if id == "" {
			return fmt.Errorf("build: a secret has no ID")
		}
		if len(v) > MaxSecretSize {
			return fmt.Errorf("build: secret %s has more than %d bytes (500 KiB)", id, MaxSecretSize)
		}
	}
	return nil
}

// secretIDs lists the secrets' IDs, sorted: the order they are sent in.
func secretIDs(secrets map[string][]byte) []string { return sortedIDs(secrets) }

// sortedIDs lists m's keys, sorted; nil when there are none.
func sortedIDs[V any](m map[string]V) []string {
	if len(m) == 0 {
		return nil
	}
	return slices.Sorted(maps.Keys(m))
}

// secretsStream sends the secrets, as BuildOptions.secret_ids lists them,
// right after the options, whichever way the context then travels.
type secretsStream struct {
	buildcontext.Stream
	secrets map[string][]byte
}

func (s secretsStream) Send(m *builderv1.BuildRequest) error {
	if err := s.Stream.Send(m); err != nil {
		return err
	}
	opts := m.GetOptions()
	if opts == nil {
		return nil
	}
	for _, id := range opts.GetSecretIds() {
		sec := &builderv1.BuildSecret{Id: id, Value: s.secrets[id]}
		if err := s.Stream.Send(&builderv1.BuildRequest{Request: &builderv1.BuildRequest_Secret{Secret: sec}}); err != nil {
			return err
		}
	}
	return nil
}
