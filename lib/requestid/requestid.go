// Package requestid carries one request ID per user action through every
// service hop: the CLI makes one, each client interceptor sends it in the
// x-request-id header, each server interceptor puts it in the call's context
// (making one when none came), and every log line written with that context
// names it.
package requestid

import (
	"context"
	"crypto/rand"
	"encoding/hex"
)

// Header is the gRPC metadata key that carries the request ID.
const Header = "x-request-id"

// MaxLen bounds IDs taken from callers, so a header cannot flood the logs.
const MaxLen = 128

type key struct{}

// New returns a new random request ID of 16 hex digits.
func New() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on Linux.
	return hex.EncodeToString(b[:])
}

// With returns a context that carries id.
func With(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, key{}, id)
}

// From returns the request ID ctx carries, or "".
func From(ctx context.Context) string {
	id, _ := ctx.Value(key{}).(string)
	return id
}

// Valid reports whether id, taken from a caller, may be used as is: not
// empty, at most MaxLen characters, printable ASCII without spaces.
func Valid(id string) bool {
	if id == "" || len(id) > MaxLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] <= ' ' || id[i] > '~' {
			return false
		}
	}
	return true
}
