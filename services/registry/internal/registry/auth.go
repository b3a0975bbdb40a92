package registry

import (
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"strings"
	"time"
)

// Auth is all the registry's access control: which role each request
// needs, and whether the credentials it carries grant it.
//
// A request carries a token as "Authorization: Bearer TOKEN", or as the
// password of Basic auth with any user name (so `docker login` works), and
// Docker's token flow is served: a 401 names /token as the realm, where
// Basic credentials are exchanged for a bearer token (the same token, since
// Strata's tokens are opaque secrets).
//
// Tokens are those of lib/auth, shared with the gRPC services. A token of
// today's lib/auth grants every role; when tokens carry roles, grants is the
// one place that looks the role up.

// role is what a request needs.
type role int

const (
	roleRead  role = iota + 1 // pull: GET and HEAD
	roleWrite                 // push: uploads, manifest PUT, mounts
	roleAdmin                 // delete manifests, tags and blobs
)

func (r role) String() string {
	return [...]string{"", "read", "write", "admin"}[r]
}

// requiredRole is the route → role table.
func requiredRole(method string, kind routeKind) role {
	switch {
	case method == http.MethodGet || method == http.MethodHead:
		return roleRead
	case method == http.MethodDelete && kind != routeUpload:
		return roleAdmin
	default:
		return roleWrite
	}
}

// Auth checks requests against tokens.
type Auth struct {
	tokens [][]byte
	// AnonymousPull lets requests without credentials pull.
	anonymousPull bool
}

// NewAuth returns the access control for tokens (none: auth is off).
func NewAuth(tokens []string, anonymousPull bool) *Auth {
	a := &Auth{anonymousPull: anonymousPull}
	for _, t := range tokens {
		a.tokens = append(a.tokens, []byte(t))
	}
	return a
}

func (a *Auth) off() bool { return len(a.tokens) == 0 }

// grants reports whether token holds role. Today every valid token holds
// every role.
func (a *Auth) grants(token string, _ role) bool {
	for _, t := range a.tokens {
		if subtle.ConstantTimeCompare(t, []byte(token)) == 1 {
			return true
		}
	}
	return false
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

// allow checks a request of the given kind. It answers with 401 (and the
// challenge) or 403 itself and returns false when the request may not go on.
func (a *Auth) allow(w http.ResponseWriter, r *http.Request, kind routeKind, repo string) bool {
	if a.off() {
		return true
	}
	need := requiredRole(r.Method, kind)
	token := credential(r)
	if token == "" && need == roleRead && a.anonymousPull {
		return true
	}
	if token == "" || !a.grants(token, need) {
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		challenge := `Bearer realm="` + scheme + `://` + r.Host + `/token",service="strata-registry"`
		if repo != "" {
			action := "pull"
			if need != roleRead {
				action = "pull,push"
			}
			if need == roleAdmin {
				action = "delete"
			}
			challenge += `,scope="repository:` + repo + `:` + action + `"`
		}
		w.Header().Set("WWW-Authenticate", challenge)
		msg := "authentication required: send a Strata token as a bearer token, or as the password of basic auth"
		if token != "" {
			msg = "the token is not valid for " + need.String() + " access"
		}
		writeError(w, newError(http.StatusUnauthorized, codeUnauthorized, msg))
		return false
	}
	return true
}

// serveToken is Docker's token endpoint: valid Basic (or Bearer)
// credentials are answered with the bearer token to use.
func (a *Auth) serveToken(w http.ResponseWriter, r *http.Request) {
	token := credential(r)
	if !a.off() && (token == "" || !a.grants(token, roleRead)) {
		w.Header().Set("WWW-Authenticate", `Basic realm="strata-registry"`)
		writeError(w, newError(http.StatusUnauthorized, codeUnauthorized, "log in with a Strata token as the password"))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"token": token, "access_token": token, "expires_in": 3600, "issued_at": time.Now().UTC().Format(time.RFC3339),
	})
}
