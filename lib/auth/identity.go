package auth

import (
	"context"
	"crypto/x509"
	"net/netip"
	"strings"
)

// Identity is who makes a call and what they may do.
type Identity struct {
	// Name is the token's name or the client certificate's subject; for a
	// call a service makes for a user, that user's.
	Name string
	// Via is the service that called on Name's behalf, if any.
	Via string
	// Role is the highest role held; the lower ones come with it.
	Role Role
}

// String is "NAME" or "NAME via SERVICE", for messages.
func (id Identity) String() string {
	if id.Via != "" {
		return id.Name + " via " + id.Via
	}
	return id.Name
}

// OnBehalfOfHeader carries, on a call from one of Strata's services, the
// name of the caller it serves. A server believes it only from a caller
// holding the service role.
const OnBehalfOfHeader = "strata-on-behalf-of"

type identityKey struct{}

// WithIdentity returns ctx carrying id.
func WithIdentity(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

// IdentityFrom returns the identity of the call ctx serves; ok is false
// outside a call, or when it could not be established.
func IdentityFrom(ctx context.Context) (id Identity, ok bool) {
	id, ok = ctx.Value(identityKey{}).(Identity)
	return id, ok
}

// CertificateIdentity is the identity a verified client certificate gives,
// as Kubernetes reads one: the subject names the caller, and each
// organization (O) that is a role name grants it. A certificate whose
// organizations name no role gets no role, so may call only open methods.
func CertificateIdentity(cert *x509.Certificate) Identity {
	id := Identity{Name: cert.Subject.String()}
	for _, o := range cert.Subject.Organization {
		if r, err := ParseRole(o); err == nil && (id.Role == "" || r.Includes(id.Role)) {
			id.Role = r
		}
	}
	return id
}

// printable reports whether s can travel as a gRPC header value.
func printable(s string) bool {
	return s != "" && strings.IndexFunc(s, func(r rune) bool { return r < 0x20 || r > 0x7e }) < 0
}

// IsLoopback reports whether host (a name or an IP address, as in a
// "host:port") means this machine only: "localhost" or a loopback address.
// An empty host, which listens on every interface, is not. Nor is a name
// under .localhost: RFC 6761 wants it on loopback, but Go's resolver (and
// glibc's without nss-myhostname) asks DNS for it, and with a search domain
// "x.localhost" becomes "x.localhost.corp.example", which whoever runs that
// zone answers; a token would then go in clear text to their address.
func IsLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(strings.Trim(host, "[]"))
	return err == nil && ip.Unmap().IsLoopback()
}
