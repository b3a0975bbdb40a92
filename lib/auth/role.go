package auth

import (
	"fmt"
	"slices"
	"strings"
)

// Role is a right a caller holds. Each RPC needs one role (see Policy).
// Roles nest: write includes read, admin includes write, and service, the
// services' own, includes admin and adds what only Strata's services do
// (recording images and cache records).
type Role string

// The roles, from least to most.
const (
	// RoleRead reads: get, list, inspect, history, blob read, save, events.
	RoleRead Role = "read"
	// RoleWrite changes images: build, import, load, pull, push, tag,
	// untag, delete, blob write.
	RoleWrite Role = "write"
	// RoleAdmin removes what others may need: garbage collection, prune,
	// blob delete, cache record prune.
	RoleAdmin Role = "admin"
	// RoleService is what the builder and metadata need of each other and
	// of the blob store: recording images and build cache records, above
	// everything admin may do.
	RoleService Role = "service"
)

// Roles lists every role, least first.
var Roles = []Role{RoleRead, RoleWrite, RoleAdmin, RoleService}

// ParseRole parses a role name.
func ParseRole(s string) (Role, error) {
	r := Role(strings.ToLower(strings.TrimSpace(s)))
	if !slices.Contains(Roles, r) {
		return "", fmt.Errorf("unknown role %q: want read, write, admin or service", s)
	}
	return r, nil
}

// Includes reports whether holding r gives the rights of other.
func (r Role) Includes(other Role) bool {
	i, j := slices.Index(Roles, r), slices.Index(Roles, other)
	return i >= 0 && j >= 0 && i >= j
}
