package egress

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/strata-build/strata/lib/errdefs"
)

func TestCheck(t *testing.T) {
	refused := []string{
		"127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1", // loopback
		"169.254.169.254", "fe80::1", // link-local, cloud metadata
		"10.0.0.1", "172.16.0.1", "192.168.1.1", "fc00::1", "fd12::1", // private
		"100.64.0.1", "100.127.255.254", // shared address space (carrier-grade NAT)
		"64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "64:ff9b:1::1", // NAT64, which can reach 127.0.0.1 and 169.254.169.254
		"0.0.0.0", "::", "224.0.0.1", "ff02::1", "255.255.255.255", "198.18.0.1",
	}
	allowed := []string{"8.8.8.8", "151.101.1.69", "2001:4860:4860::8888", "2a00:1450::1", "100.128.0.1"}
	var p Policy
	for _, a := range refused {
		if err := p.Check(netip.MustParseAddr(a)); !errors.Is(err, errdefs.ErrPermissionDenied) || !strings.Contains(err.Error(), netip.MustParseAddr(a).Unmap().String()) {
			t.Errorf("Check(%s) = %v, want PERMISSION_DENIED naming the address", a, err)
		}
		if err := (Policy{AllowPrivate: true}).Check(netip.MustParseAddr(a)); err != nil {
			t.Errorf("Check(%s) with AllowPrivate = %v", a, err)
		}
	}
	for _, a := range allowed {
		if err := p.Check(netip.MustParseAddr(a)); err != nil {
			t.Errorf("Check(%s) = %v, want nil", a, err)
		}
	}
	var loop Policy
	if err := loop.ParseAllowList("127.0.0.0/8, ::1, registry.internal:5000"); err != nil {
		t.Fatal(err)
	}
	for a, want := range map[string]bool{"127.0.0.1": true, "127.5.5.5": true, "::1": true, "10.0.0.1": false, "169.254.169.254": false} {
		if err := loop.Check(netip.MustParseAddr(a)); (err == nil) != want {
			t.Errorf("Check(%s) with 127.0.0.0/8 and ::1 allowed = %v, want allowed %v", a, err, want)
		}
	}
	for _, bad := range []string{"10.0.0.0/33", "a:b:c"} {
		if err := new(Policy).ParseAllowList(bad); err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("ParseAllowList(%q) = %v, want an error naming it", bad, err)
		}
	}
}

// The check is made on the address connected to, after DNS: a name that
// resolves to loopback is refused like the address itself, unless the
// name, or the address's range, is allowed.
func TestDialChecksTheResolvedAddress(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	tests := []struct {
		name   string
		policy Policy
		addr   string
		ok     bool
	}{
		{"loopback address", Policy{Allow: "--allow-x"}, "127.0.0.1:" + port, false},
		{"a name of loopback", Policy{Allow: "--allow-x"}, "localhost:" + port, false},
		{"all private allowed", Policy{AllowPrivate: true}, "localhost:" + port, true},
		{"the loopback range allowed", Policy{Prefixes: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}, "127.0.0.1:" + port, true},
		{"the name allowed", Policy{Hosts: []string{"localhost"}}, "localhost:" + port, true},
		{"the name on another port allowed", Policy{Hosts: []string{"localhost:1"}, Allow: "--allow-x"}, "localhost:" + port, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := tt.policy.DialContext(context.Background(), "tcp", tt.addr)
			if c != nil {
				c.Close()
			}
			if (err == nil) != tt.ok {
				t.Fatalf("DialContext(%s) = %v, want success %v", tt.addr, err, tt.ok)
			}
			if err != nil && (!errors.Is(err, errdefs.ErrPermissionDenied) || !strings.Contains(err.Error(), tt.addr) || !strings.Contains(err.Error(), "--allow-x")) {
				t.Errorf("DialContext(%s) = %v, want PERMISSION_DENIED naming the address and the flag", tt.addr, err)
			}
		})
	}
}

// A server that accepts and never answers, or answers and then stops
// sending, fails a download in about the timeouts instead of holding it
// (and the build's slot) for ever.
func TestTransportTimesOutAStalledServer(t *testing.T) {
	defer func(h, i time.Duration) { ResponseHeaderTimeout, IdleTimeout = h, i }(ResponseHeaderTimeout, IdleTimeout)
	ResponseHeaderTimeout, IdleTimeout = 300*time.Millisecond, 300*time.Millisecond

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 4096)
				n, _ := c.Read(buf)
				if strings.Contains(string(buf[:n]), "/drip") {
					// Headers and one byte of a large body, then nothing.
					c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\nx"))
				}
				<-stop
			}()
		}
	}()
	var p Policy
	if err := p.ParseAllowList("127.0.0.0/8"); err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: p.Transport()}
	for _, path := range []string{"/silent", "/drip"} {
		start := time.Now()
		done := make(chan error, 1)
		go func() {
			resp, err := client.Get("http://" + ln.Addr().String() + path)
			if err == nil {
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			done <- err
		}()
		select {
		case err := <-done:
			if err == nil {
				t.Errorf("GET %s from a stalled server succeeded", path)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("GET %s failed only after %v", path, d)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("GET %s from a stalled server still waits after 10s", path)
		}
	}
}
