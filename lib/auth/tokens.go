// Package auth decides who may call Strata's services and what they may
// do: bearer tokens and client certificates identify callers, roles say what
// each may call (Policy, one table for every RPC), server interceptors check
// both, client credentials send tokens, and the TLS configurations serve TLS
// and mutual TLS on both sides.
package auth

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Token is a bearer token and who holds it.
type Token struct {
	// Value is the secret itself. It is never logged.
	Value string
	// Role is what the holder may do.
	Role Role
	// Name says who holds it, in logs and events.
	Name string
}

// ParseTokens reads a token file. Each line is one of
//
//	ROLE TOKEN NAME   a token with a role, and a name for logs and events
//	ROLE TOKEN        the same, named FILE:LINE
//	TOKEN             the older form: a token with every role (service)
//
// Blank lines and lines starting with # are skipped; fields are separated
// by spaces or tabs. Errors name the file and the line, never the token.
func ParseTokens(file string, data []byte) ([]Token, error) {
	var tokens []Token
	seen := map[string]int{}
	for i, line := range strings.Split(string(data), "\n") {
		n := i + 1
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		t := Token{Name: fmt.Sprintf("%s:%d", filepath.Base(file), n)}
		switch len(f) {
		case 1:
			if _, err := ParseRole(f[0]); err == nil {
				return nil, fmt.Errorf("%s:%d: role %s without a token: want ROLE TOKEN [NAME]", file, n, f[0])
			}
			t.Value, t.Role = f[0], RoleService
		case 2, 3:
			r, err := ParseRole(f[0])
			if err != nil {
				return nil, fmt.Errorf("%s:%d: %v (lines are ROLE TOKEN [NAME], or a lone TOKEN with every role)", file, n, err)
			}
			t.Value, t.Role = f[1], r
			if len(f) == 3 {
				t.Name = f[2]
			}
		default:
			return nil, fmt.Errorf("%s:%d: %d fields: want ROLE TOKEN [NAME], or a lone TOKEN", file, n, len(f))
		}
		if first, ok := seen[t.Value]; ok {
			return nil, fmt.Errorf("%s:%d: the token of line %d again: give each token one line", file, n, first)
		}
		seen[t.Value] = n
		tokens = append(tokens, t)
	}
	if len(tokens) == 0 {
		return nil, fmt.Errorf("%s holds no token", file)
	}
	return tokens, nil
}

// ReadTokens reads bearer tokens: value itself (with every role, named
// "--auth-token") when file is empty, otherwise the tokens of file (see
// ParseTokens). Empty input gives no tokens.
func ReadTokens(value, file string) ([]Token, error) {
	if file == "" {
		if value == "" {
			return nil, nil
		}
		return []Token{{Value: value, Role: RoleService, Name: "--auth-token"}}, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	return ParseTokens(file, bytes.TrimPrefix(b, []byte("\xef\xbb\xbf")))
}

// TokenCredentials sends a bearer token with every call.
type TokenCredentials struct {
	Token string
	// Secure makes gRPC refuse to send the token over a connection without TLS.
	Secure bool
}

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (t TokenCredentials) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + t.Token}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials.
func (t TokenCredentials) RequireTransportSecurity() bool { return t.Secure }
