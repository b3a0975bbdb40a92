// Package egress decides which addresses the builder may connect to on a
// build's or a transfer's behalf (ADD URLs, FROM, pull, push). A Dockerfile
// or a reference is hostile input: left alone it could make the builder
// read its cloud's metadata endpoint, its own control plane, or anything
// else on its networks. So connections to loopback, link-local, private
// and other special-purpose addresses (IANA's registries, through
// code.dny.dev/ssrf: 100.64.0.0/10, the NAT64 prefixes 64:ff9b::/96 and
// 64:ff9b:1::/48 among them) are refused unless allowed. The check runs on
// the address actually connected to, after DNS, so a name that resolves
// (or is rebound) to such an address is refused too.
package egress

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"time"

	"code.dny.dev/ssrf"

	"github.com/strata-build/strata/lib/errdefs"
)

// Policy says what may be reached besides public addresses. The zero
// value allows public addresses only.
type Policy struct {
	// AllowPrivate allows every address.
	AllowPrivate bool
	// Hosts are reachable whatever they resolve to: "name" (any port) or
	// "name:port", matched against the host a URL or reference names.
	Hosts []string
	// Prefixes are address ranges reachable though special-purpose
	// (127.0.0.0/8 for registries on loopback).
	Prefixes []netip.Prefix
	// Allow names the settings that allow more, for errors:
	// "--allow-private-urls".
	Allow string
}

// ParseAllowList parses a comma-separated list of host names, host:port
// pairs and address prefixes (CIDR) into p's Hosts and Prefixes.
func (p *Policy) ParseAllowList(list string) error {
	for _, e := range strings.Split(list, ",") {
		e = strings.ToLower(strings.TrimSpace(e))
		switch {
		case e == "":
		case strings.Contains(e, "/"):
			pfx, err := netip.ParsePrefix(e)
			if err != nil {
				return fmt.Errorf("%q is not an address prefix: %v", e, err)
			}
			p.Prefixes = append(p.Prefixes, pfx.Masked())
		default:
			if a, err := netip.ParseAddr(strings.Trim(e, "[]")); err == nil {
				p.Prefixes = append(p.Prefixes, netip.PrefixFrom(a, a.BitLen()))
				continue
			}
			if _, _, err := net.SplitHostPort(e); err != nil && strings.Contains(e, ":") {
				return fmt.Errorf("%q is not a host, host:port or address prefix", e)
			}
			p.Hosts = append(p.Hosts, e)
		}
	}
	return nil
}

// hostAllowed reports whether addr ("host:port") is one of Hosts.
func (p Policy) hostAllowed(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	addr, host = strings.ToLower(addr), strings.ToLower(host)
	return slices.Contains(p.Hosts, addr) || slices.Contains(p.Hosts, host)
}

// Check returns an ErrPermissionDenied error unless a connection to ip may
// be made.
func (p Policy) Check(ip netip.Addr) error {
	if p.AllowPrivate {
		return nil
	}
	if err := p.guardian().SafeAddr(ip.Unmap()); err != nil {
		return p.refuse(ip.String(), ip.Unmap())
	}
	return nil
}

func (p Policy) guardian() *ssrf.Guardian {
	var v4, v6 []netip.Prefix
	for _, pfx := range p.Prefixes {
		if pfx.Addr().Is4() {
			v4 = append(v4, pfx)
		} else {
			v6 = append(v6, pfx)
		}
	}
	return ssrf.New(ssrf.WithAnyPort(), ssrf.WithAllowedV4Prefixes(v4...), ssrf.WithAllowedV6Prefixes(v6...))
}

func (p Policy) refuse(target string, ip netip.Addr) error {
	allow := p.Allow
	if allow == "" {
		allow = "the builder's allow settings"
	}
	what := target
	if target != ip.String() {
		what = fmt.Sprintf("%s (%s)", target, ip)
	}
	return errdefs.New(errdefs.ErrPermissionDenied,
		"connecting to %s is refused: loopback, link-local, private and other special-purpose addresses are reachable only with %s", what, allow).
		WithReason("EGRESS_REFUSED").WithDetail("address", ip.String())
}

// DialContext connects as net.Dialer does, refusing addresses the policy
// does not allow once the name is resolved, for each address tried.
func (p Policy) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	d := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	if !p.AllowPrivate && !p.hostAllowed(addr) {
		g := p.guardian()
		d.Control = func(network, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return errdefs.New(errdefs.ErrPermissionDenied, "connecting to %s (%s) is refused: not an address and port", addr, address)
			}
			if err := g.Safe(network, ap.String(), nil); err != nil {
				return p.refuse(addr, ap.Addr())
			}
			return nil
		}
	}
	return d.DialContext(ctx, network, addr)
}

// A server the builder downloads from (a registry for FROM and pull, an
// ADD URL) or pushes to is as hostile as a Dockerfile: left alone, one that
// accepts a connection and never answers, or stops sending (or reading)
// halfway, holds the build, and the build's slot, for ever. So a response
// must start within ResponseHeaderTimeout, and a connection that moves no
// byte either way for IdleTimeout fails. Both are variables for tests.
var (
	ResponseHeaderTimeout = time.Minute
	IdleTimeout           = 2 * time.Minute
)

// idleConn fails a read or a write that waits longer than idle for a byte.
type idleConn struct {
	net.Conn
	idle time.Duration
}

func (c idleConn) Read(b []byte) (int, error) {
	c.Conn.SetReadDeadline(time.Now().Add(c.idle))
	return c.Conn.Read(b)
}

func (c idleConn) Write(b []byte) (int, error) {
	c.Conn.SetWriteDeadline(time.Now().Add(c.idle))
	return c.Conn.Write(b)
}

// Transport returns an HTTP transport (http.DefaultTransport's settings,
// without a proxy, which would connect for it) that dials through the
// policy, with ResponseHeaderTimeout and IdleTimeout.
func (p Policy) Transport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = nil
	idle := IdleTimeout
	t.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := p.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return idleConn{Conn: c, idle: idle}, nil
	}
	t.ResponseHeaderTimeout = ResponseHeaderTimeout
	return t
}
