package harness

import (
	"context"
	"strconv"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2/client"
)

// Toxiproxy is a running Toxiproxy server: the TCP proxy that fault tests
// put between a service and what it depends on (S3, PostgreSQL), to add
// latency, limit bandwidth, reset connections, stall them or cut them
// after so many bytes, through its Go client.
type Toxiproxy struct {
	Client *toxiproxy.Client
}

// StartToxiproxy starts toxiproxy-server (installed by `make tools`) on
// loopback.
func StartToxiproxy(t testing.TB) *Toxiproxy {
	t.Helper()
	port := FreePort(t)
	Start(t, nil, Tool(t, "toxiproxy-server"), "-host", "127.0.0.1", "-port", strconv.Itoa(port))
	tp := &Toxiproxy{Client: toxiproxy.NewClient(addr(port))}
	WaitFor(t, "toxiproxy", 30*time.Second, func(context.Context) error {
		_, err := tp.Client.Proxies()
		return err
	})
	return tp
}

// Proxy creates a proxy named name that forwards a free loopback port to
// upstream ("host:port"); dial the proxy's Listen address instead of
// upstream.
func (tp *Toxiproxy) Proxy(t testing.TB, name, upstream string) *toxiproxy.Proxy {
	t.Helper()
	p, err := tp.Client.CreateProxy(name, addr(FreePort(t)), upstream)
	if err != nil {
		t.Fatalf("creating proxy %s to %s: %v", name, upstream, err)
	}
	return p
}
