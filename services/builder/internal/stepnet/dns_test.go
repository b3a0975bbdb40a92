package stepnet

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// A step that opens TCP connections to the DNS forwarder as fast as it can
// holds at most maxDNSConns of the builder's file descriptors, and DNS over
// TCP still answers once they close.
func TestDNSForwarderBoundsTCPConnections(t *testing.T) {
	gw := netip.MustParseAddr(fmt.Sprintf("127.%d.%d.1", time.Now().UnixNano()%200+20, os.Getpid()%250))
	f, err := startDNS(gw, []string{"127.0.0.1:9"}) // no upstream: SERVFAIL
	if err != nil {
		t.Fatal(err)
	}
	defer f.close()
	fds := func() int {
		entries, _ := os.ReadDir("/proc/self/fd")
		return len(entries)
	}
	before := fds()
	var conns []net.Conn
	for range 4 * maxDNSConns {
		c, err := net.DialTimeout("tcp", netip.AddrPortFrom(gw, 53).String(), 100*time.Millisecond)
		if err != nil {
			continue
		}
		conns = append(conns, c)
	}
	time.Sleep(300 * time.Millisecond) // the server accepts what it will
	if held := fds() - before - len(conns); held > maxDNSConns+16 {
		t.Errorf("%d client connections held %d of the server's descriptors, want at most %d", len(conns), held, maxDNSConns)
	}
	for _, c := range conns {
		c.Close()
	}
	c := &dns.Client{Net: "tcp", Timeout: 10 * time.Second}
	m := new(dns.Msg)
	m.SetQuestion("web.strata.test.", dns.TypeA)
	resp, _, err := c.Exchange(m, netip.AddrPortFrom(gw, 53).String())
	if err != nil || resp.Rcode != dns.RcodeServerFailure {
		t.Errorf("a TCP query once the connections closed: %v, %v; want SERVFAIL", resp, err)
	}
}
