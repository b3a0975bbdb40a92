package registry

import (
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/strata-build/strata/lib/auth"
)

// This file is all the registry's access control: which role each request
// needs, and whether the credentials it carries grant it.
//
// A request carries a token as "Authorization: Bearer TOKEN", or as the
// password of Basic auth with any user name (so `docker login` works), and
// Docker's token flow is served: a 401 names /token as the realm, where
// Basic credentials are exchanged for a bearer token (the same token, since
// Strata's tokens are opaque secrets).
//
// Tokens and client certificates are those of lib/auth, shared with the
// gRPC services, and carry the same roles. requiredRole is the route → role
// table.

// requiredRole is the role a request needs: read to pull, write to push,
// admin to delete manifests, tags and blobs (cancelling one's own upload is
// part of pushing).
func requiredRole(method string, kind routeKind) auth.Role {
	switch {
	case method == http.MethodGet || method == http.MethodHead:
		return auth.RoleRead
	case method == http.MethodDelete && kind != routeUpload:
		return auth.RoleAdmin
	default:
		return auth.RoleWrite
	}
}

// Auth checks requests with the server's checker.
type Auth struct {
	checker *auth.Checker
	// anonymousPull lets requests without credentials pull.
	anonymousPull bool
}

// NewAuth returns the access control of checker (lib/grpcserver's, so the
// same tokens and certificates work for gRPC and HTTP).
func NewAuth(checker *auth.Checker, anonymousPull bool) *Auth {
	return &Auth{checker: checker, anonymousPull: anonymousPull}
}

// credential returns the token a request carries, "" when none.
func credential(r *http.Request) string {
	h := r.Header.Get("Authorization")
	scheme, rest, _ := strings.Cut(h, " ")
	switch {
	case strings.EqualFold(scheme, "bearer"):
		return strings.TrimSpace(rest)
	case strings.EqualFold(scheme, "basic"):
		if _, password, ok := r.BasicAuth(); ok {
			return password
		}
	}
	return ""
}

// identify returns who makes a request.
func (a *Auth) identify(r *http.Request) (auth.Identity, error) {
	var cert *x509.Certificate
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.VerifiedChains[0]) > 0 {
		cert = r.TLS.VerifiedChains[0][0]
	}
	return a.checker.IdentifyRequest(credential(r), cert)
}

// allow checks a request of the given kind and returns who makes it. It
// answers with 401 (and the challenge) or 403 itself and returns false when
// the request may not go on.
func (a *Auth) allow(w http.ResponseWriter, r *http.Request, kind routeKind, repo string) (auth.Identity, bool) {
	need := requiredRole(r.Method, kind)
	if a.anonymousPull && need == auth.RoleRead && credential(r) == "" {
		return auth.Identity{Name: "anonymous", Role: auth.RoleRead}, true
	}
	id, err := a.identify(r)
	if err != nil {
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		challenge := `Bearer realm="` + scheme + `://` + r.Host + `/token",service="strata-registry"`
		if repo != "" {
			action := map[auth.Role]string{auth.RoleRead: "pull", auth.RoleWrite: "pull,push", auth.RoleAdmin: "delete"}[need]
			challenge += `,scope="repository:` + repo + `:` + action + `"`
		}
		w.Header().Set("WWW-Authenticate", challenge)
		writeError(w, newError(http.StatusUnauthorized, codeUnauthorized,
			"authentication required: send a Strata token as a bearer token, or as the password of basic auth ("+err.Error()+")"))
		return id, false
	}
	if !id.Role.Includes(need) {
		writeError(w, newError(http.StatusForbidden, codeDenied, fmt.Sprintf("%s %s needs the %s role; %s has the %s role", r.Method, kind, need, id, id.Role)))
		return id, false
	}
	return id, true
}

// serveToken is Docker's token endpoint: valid Basic (or Bearer)
// credentials are answered with the bearer token to use.
func (a *Auth) serveToken(w http.ResponseWriter, r *http.Request) {
	if _, err := a.identify(r); err != nil {
		w.Header().Set("WWW-Authenticate", `Basic realm="strata-registry"`)
		writeError(w, newError(http.StatusUnauthorized, codeUnauthorized, "log in with a Strata token as the password: "+err.Error()))
		return
	}
	token := credential(r)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"token": token, "access_token": token, "expires_in": 3600, "issued_at": time.Now().UTC().Format(time.RFC3339),
	})
}
