package stepnet

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Why a forwarder: the builder's resolv.conf often names a resolver on
// loopback (Docker's embedded DNS at 127.0.0.11 inside docker-compose,
// systemd-resolved's 127.0.0.53) or on an address of the host, which a
// step cannot reach, by design. BuildKit then falls back to Google's public
// resolvers, which a builder behind a firewall may not reach and which do
// not know the operator's private names. Instead the runner answers DNS on
// the bridge's gateway and forwards every query to the builder's own
// resolvers, as Docker's embedded DNS server does for containers on
// user-defined networks: a step resolves exactly what the builder resolves.
// github.com/miekg/dns (the library of CoreDNS) reads and writes the
// messages, UDP and TCP alike.

// dnsForwarder serves DNS on the gateway, forwarding to upstreams.
type dnsForwarder struct {
	upstreams []string
	servers   []*dns.Server
}

// startDNS listens on addr:53 (UDP and TCP) and forwards to upstreams
// ("host:port"), tried in order.
func startDNS(addr netip.Addr, upstreams []string) (*dnsForwarder, error) {
	f := &dnsForwarder{upstreams: upstreams}
	listen := netip.AddrPortFrom(addr, 53).String()
	pc, err := net.ListenPacket("udp", listen)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		pc.Close()
		return nil, err
	}
	ln = newLimitListener(ln, maxDNSConns)
	// Shutdown refuses a server that has not started yet and leaves its
	// socket open, so startDNS returns only once both serve.
	var started sync.WaitGroup
	started.Add(2)
	f.servers = []*dns.Server{
		{PacketConn: pc, Handler: f, NotifyStartedFunc: started.Done},
		{Listener: ln, Handler: f, NotifyStartedFunc: started.Done},
	}
	for _, s := range f.servers {
		go s.ActivateAndServe()
	}
	started.Wait()
	return f, nil
}

// ServeDNS answers one query with the first upstream's answer, over the
// transport the query came on; SERVFAIL when none answers.
func (f *dnsForwarder) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	c := &dns.Client{Net: "udp", Timeout: 3 * time.Second}
	if _, ok := w.RemoteAddr().(*net.TCPAddr); ok {
		c.Net = "tcp"
	}
	for _, up := range f.upstreams {
		ctx, cancel := context.WithTimeout(context.Background(), c.Timeout)
		resp, _, err := c.ExchangeContext(ctx, req, up)
		cancel()
		if err == nil {
			w.WriteMsg(resp)
			return
		}
	}
	fail := new(dns.Msg)
	fail.SetRcode(req, dns.RcodeServerFailure)
	w.WriteMsg(fail)
}

// maxDNSConns bounds the TCP connections the forwarder holds at once. Every
// step reaches it, and without a bound one step could open connections
// faster than the server's read timeouts close them: against make run, two
// steps held 15,900 of the builder's 20,000 file descriptors. Connections
// past the bound wait in the kernel's backlog, holding none of the
// builder's; DNS over TCP is rare (answers over UDP's size), and UDP is
// unaffected.
const maxDNSConns = 256

// limitListener accepts at most cap connections that are open at once.
type limitListener struct {
	net.Listener
	sem  chan struct{}
	done chan struct{}
	once sync.Once
}

func newLimitListener(ln net.Listener, n int) *limitListener {
	return &limitListener{Listener: ln, sem: make(chan struct{}, n), done: make(chan struct{})}
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.sem <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.sem }}, nil
}

func (l *limitListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return l.Listener.Close()
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

func (f *dnsForwarder) close() {
	for _, s := range f.servers {
		s.Shutdown()
	}
}

// Resolvers reads the name servers of a resolv.conf ("host:port"); the
// resolver's default, 127.0.0.1:53, when it names none.
func Resolvers(resolvConf []byte) []string {
	cfg, err := dns.ClientConfigFromReader(bytes.NewReader(resolvConf))
	if err != nil || len(cfg.Servers) == 0 {
		return []string{"127.0.0.1:53"}
	}
	out := make([]string, len(cfg.Servers))
	for i, s := range cfg.Servers {
		out[i] = net.JoinHostPort(s, cfg.Port)
	}
	return out
}

// ResolvConf is the resolv.conf of a step on the bridge: host's, with the
// gateway's forwarder as its only name server.
func (n *Bridge) ResolvConf(host []byte) []byte {
	return stepResolvConf(host, n.gateway)
}

// stepResolvConf is the resolv.conf of a step on the bridge: the host's,
// with the gateway's forwarder as its only name server.
func stepResolvConf(host []byte, gateway netip.Addr) []byte {
	var b strings.Builder
	b.WriteString("nameserver " + gateway.String() + "\n")
	for line := range strings.SplitSeq(string(host), "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] != "nameserver" {
			b.WriteString(line + "\n")
		}
	}
	return []byte(b.String())
}
