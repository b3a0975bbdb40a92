package grpcclient_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/opencontainers/go-digest"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"

	blobv1 "github.com/strata-build/strata/gen/strata/blob/v1"
	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/lib/grpcclient"
	"github.com/strata-build/strata/lib/harness"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }

// replicas are blob store processes on one port of several loopback
// addresses, the way a scaled compose service or a headless Service puts
// replicas on one port of several IPs.
type replicas struct {
	port  int
	hosts []string
	procs []*harness.Process
}

// startReplicas starts a blob store on each host: those listed healthy on
// a directory of their own, the others on an S3 endpoint where nothing
// listens, so that their health is NOT_SERVING.
func startReplicas(t *testing.T, healthy, sick []string) *replicas {
	t.Helper()
	r := &replicas{port: harness.FreePort(t)}
	bin := harness.Binary(t, "strata-blobstore")
	for _, h := range append(append([]string{}, healthy...), sick...) {
		addr := net.JoinHostPort(h, fmt.Sprint(r.port))
		env := []string{"STRATA_LISTEN=" + addr, "STRATA_LOG_LEVEL=warn", "STRATA_HEALTH_PROBE_INTERVAL=100ms"}
		if contains(sick, h) {
			env = append(env, "STRATA_BACKEND=s3", fmt.Sprintf("STRATA_S3_ENDPOINT=127.0.0.1:%d", harness.FreePort(t)), "STRATA_S3_REGION=us-east-1",
				"STRATA_S3_ACCESS_KEY=k", "STRATA_S3_SECRET_KEY=s", "STRATA_S3_MAX_RETRIES=1")
		} else {
			env = append(env, "STRATA_FS_ROOT="+filepath.Join(t.TempDir(), "blobs"))
		}
		r.procs = append(r.procs, harness.Start(t, env, bin))
		r.hosts = append(r.hosts, h)
	}
	for _, h := range r.hosts {
		want := healthpb.HealthCheckResponse_SERVING
		if contains(sick, h) {
			want = healthpb.HealthCheckResponse_NOT_SERVING
		}
		waitHealth(t, net.JoinHostPort(h, fmt.Sprint(r.port)), want)
	}
	return r
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

func waitHealth(t *testing.T, addr string, want healthpb.HealthCheckResponse_ServingStatus) {
	t.Helper()
	conn, err := grpcclient.Dial(addr, grpcclient.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	harness.WaitFor(t, addr+" "+want.String(), time.Minute, func(ctx context.Context) error {
		r, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			return err
		}
		if r.GetStatus() != want {
			return fmt.Errorf("health %v", r.GetStatus())
		}
		return nil
	})
}

// spread makes n calls through target and counts the replica (its host)
// that served each. A call that fails UNAVAILABLE is tried once more, as
// the services' clients do.
func spread(t *testing.T, target string, n int) map[string]int {
	t.Helper()
	conn, err := grpcclient.Dial(target, grpcclient.Config{})
	if err != nil {
		t.Fatalf("Dial(%s) = %v", target, err)
	}
	defer conn.Close()
	blobs := blobv1.NewBlobServiceClient(conn)
	served := map[string]int{}
	for i := range n {
		d := digest.FromString(fmt.Sprint("no such blob ", i))
		var p peer.Peer
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := blobs.Stat(ctx, &blobv1.StatRequest{Digest: d.String()}, grpc.Peer(&p))
		if errdefs.IsUnavailable(err) {
			_, err = blobs.Stat(ctx, &blobv1.StatRequest{Digest: d.String()}, grpc.Peer(&p))
		}
		cancel()
		if !errdefs.IsNotFound(err) {
			t.Fatalf("Stat(%s) through %s = %v, want NOT_FOUND from a replica", d, target, err)
		}
		host, _, _ := net.SplitHostPort(p.Addr.String())
		served[host]++
	}
	return served
}

// checkSpread fails unless every host of want served about its share of n
// calls and no other host served any.
func checkSpread(t *testing.T, what string, served map[string]int, want []string, n int) {
	t.Helper()
	for h, c := range served {
		if !contains(want, h) {
			t.Errorf("%s: %s served %d calls, want none (%v)", what, h, c, served)
		}
	}
	for _, h := range want {
		if served[h] < n/len(want)/2 {
			t.Errorf("%s: %s served %d of %d calls, want about %d (%v)", what, h, served[h], n, n/len(want), served)
		}
	}
}

// dnsServer answers A queries for name with addrs, on a free loopback port.
func dnsServer(t *testing.T, name string, addrs []string) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		for _, question := range q.Question {
			if question.Qtype != dns.TypeA || !strings.EqualFold(question.Name, name) {
				continue
			}
			for _, a := range addrs {
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: question.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 1}, A: net.ParseIP(a)})
			}
		}
		_ = w.WriteMsg(m)
	})}
	go func() { _ = srv.ActivateAndServe() }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	return pc.LocalAddr().String()
}

// TestBalancedTargets: three blob stores on one port of three loopback
// addresses, one of them NOT_SERVING (its S3 is unreachable), reached by a
// list of addresses and by a real dns:/// name that resolves to the three:
// calls go round robin to the two that serve and never to the third;
// after one is killed, to the last.
func TestBalancedTargets(t *testing.T) {
	healthy, sick := []string{"127.0.0.2", "127.0.0.3"}, []string{"127.0.0.4"}
	r := startReplicas(t, healthy, sick)
	var list []string
	for _, h := range r.hosts {
		list = append(list, net.JoinHostPort(h, fmt.Sprint(r.port)))
	}
	resolver := dnsServer(t, "blobstore.strata.test.", r.hosts)
	targets := map[string]string{
		"list": strings.Join(list, ","),
		"dns":  fmt.Sprintf("dns://%s/blobstore.strata.test:%d", resolver, r.port),
	}
	const calls = 30
	for name, target := range targets {
		checkSpread(t, name+" target "+target, spread(t, target, calls), healthy, calls)
	}
	r.procs[0].Stop() // SIGKILL
	for name, target := range targets {
		checkSpread(t, name+" target after "+healthy[0]+" was killed", spread(t, target, calls), healthy[1:], calls)
	}
}

// TestSingleAddressKeepsItsErrors: a lone address is not health checked,
// so a service that is NOT_SERVING still answers with its own error.
func TestSingleAddressKeepsItsErrors(t *testing.T) {
	r := startReplicas(t, nil, []string{"127.0.0.5"})
	conn, err := grpcclient.Dial(fmt.Sprintf("127.0.0.5:%d", r.port), grpcclient.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err = blobv1.NewBlobServiceClient(conn).Stat(ctx, &blobv1.StatRequest{Digest: digest.FromString("x").String()})
	if !errdefs.IsUnavailable(err) || !grpcclient.FromService(err) {
		t.Errorf("Stat on a blob store whose S3 is down = %v, want the service's own UNAVAILABLE", err)
	}
}

func TestValidateTarget(t *testing.T) {
	for _, tc := range []struct {
		target string
		ok     bool
	}{
		{"localhost:50052", true},
		{"dns:///metadata:50052", true},
		{"dns://10.0.0.2:53/metadata.strata.svc:50052", true},
		{"127.0.0.1:50151,127.0.0.1:50152", true},
		{"unix:///run/strata.sock", true},
		{"", false},
		{"metadata", false},
		{"dns:///metadata", false},
		{"dns://resolver", false},
		{"127.0.0.1:50151,", false},
		{"a:1,b:x", false},
	} {
		if err := grpcclient.ValidateTarget(tc.target); (err == nil) != tc.ok {
			t.Errorf("ValidateTarget(%q) = %v, want ok %v", tc.target, err, tc.ok)
		}
	}
}

func TestHosts(t *testing.T) {
	for target, want := range map[string][]string{
		"localhost:50052":                      {"localhost"},
		"dns:///metadata:50052":                {"metadata"},
		"dns://10.0.0.2:53/metadata.svc:50052": {"metadata.svc"},
		"127.0.0.1:50151,[::1]:50152":          {"127.0.0.1", "::1"},
	} {
		if got := grpcclient.Hosts(target); !slices.Equal(got, want) {
			t.Errorf("Hosts(%q) = %q, want %q", target, got, want)
		}
	}
}
