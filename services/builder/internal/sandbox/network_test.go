package sandbox

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/strata-build/strata/lib/errdefs"
	"github.com/strata-build/strata/services/builder/internal/stepnet"
)

// assertNothingLeft checks that a closed runner left nothing on the host:
// no bridge, veth, firewall chain, network namespace or mount.
func assertNothingLeft(t testing.TB, r *Runner) {
	t.Helper()
	if _, err := netlink.LinkByName(r.net.Name()); err == nil {
		t.Errorf("bridge %s left on the host", r.net.Name())
	}
	links, _ := netlink.LinkList()
	for _, l := range links {
		if l.Type() == "veth" && l.Attrs().MasterIndex != 0 {
			if m, err := netlink.LinkByIndex(l.Attrs().MasterIndex); err == nil && m.Attrs().Name == r.net.Name() {
				t.Errorf("veth %s left on bridge %s", l.Attrs().Name, r.net.Name())
			}
		}
	}
	for _, cmd := range []string{"iptables-save", "ip6tables-save"} {
		out, err := exec.Command(cmd).Output()
		if err != nil {
			t.Errorf("%s: %v", cmd, err)
		}
		if strings.Contains(string(out), r.net.Chain()) || strings.Contains(string(out), r.net.Name()) {
			t.Errorf("%s still names %s", cmd, r.net.Name())
		}
	}
	if entries, _ := os.ReadDir(r.net.Dir()); len(entries) != 0 {
		t.Errorf("%d network namespaces left in %s", len(entries), r.net.Dir())
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mounts), r.dir) {
		t.Errorf("mounts left under %s", r.dir)
	}
}

// peerNet is a network namespace on the machine standing for the world
// outside: reached from the host through a veth pair, holding addresses
// that are not the host's own.
type peerNet struct {
	path                        string
	reachable, denied, metadata netip.Addr
}

func newPeerNet(t *testing.T) *peerNet {
	t.Helper()
	name := fmt.Sprintf("strata-peer-%d", time.Now().UnixNano()%1e6)
	hostIf, peerIf := name[len(name)-6:]+"h", name[len(name)-6:]+"p"
	// A /29 of 10.123.0.0/16 no interface holds.
	k := time.Now().UnixNano() % 8000
	base := netip.AddrFrom4([4]byte{10, 123, byte(k / 32), byte(k % 32 * 8)})
	hostAddr := base.Next()
	p := &peerNet{path: "/run/netns/" + name, reachable: hostAddr.Next(), denied: hostAddr.Next().Next(), metadata: netip.MustParseAddr("169.254.169.254")}
	sh := func(cmd string) {
		t.Helper()
		if out, err := exec.Command("sh", "-ec", cmd).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", cmd, err, out)
		}
	}
	t.Cleanup(func() {
		exec.Command("ip", "route", "del", "169.254.169.254/32", "dev", hostIf).Run()
		exec.Command("ip", "link", "del", hostIf).Run()
		exec.Command("ip", "netns", "del", name).Run()
	})
	sh(fmt.Sprintf(`ip netns add %[1]s
		ip link add %[2]s type veth peer name %[3]s netns %[1]s
		ip addr add %[4]s/29 dev %[2]s && ip link set %[2]s up
		ip -n %[1]s addr add %[5]s/29 dev %[3]s && ip -n %[1]s addr add %[6]s/29 dev %[3]s
		ip -n %[1]s addr add 169.254.169.254/32 dev %[3]s
		ip -n %[1]s link set %[3]s up && ip -n %[1]s link set lo up
		ip -n %[1]s route add default via %[4]s
		ip route add 169.254.169.254/32 dev %[2]s`, name, hostIf, peerIf, hostAddr, p.reachable, p.denied))
	return p
}

// listen opens a TCP listener in the network namespace at path, or the
// test's own when path is empty.
func listen(t *testing.T, nsPath, addr string) net.Listener {
	t.Helper()
	if nsPath == "" {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		return ln
	}
	type result struct {
		ln  net.Listener
		err error
	}
	res := make(chan result, 1)
	go func() {
		// The thread joins the namespace and, locked, ends with the
		// goroutine; the listener's socket stays in the namespace.
		runtime.LockOSThread()
		f, err := os.Open(nsPath)
		if err == nil {
			err = unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
			f.Close()
		}
		if err != nil {
			res <- result{err: err}
			return
		}
		ln, err := net.Listen("tcp", addr)
		res <- result{ln, err}
	}()
	r := <-res
	if r.err != nil {
		t.Fatalf("listening on %s in %s: %v", addr, nsPath, r.err)
	}
	t.Cleanup(func() { r.ln.Close() })
	return r.ln
}

// countAccepts counts the connections a listener accepts.
func countAccepts(ln net.Listener) *atomic.Int64 {
	var n atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			c.Close()
		}
	}()
	return &n
}

// startDNSServer answers A queries for name with addr on a loopback
// address of the host, as a local resolver (127.0.0.53, Docker's
// 127.0.0.11) does, and returns the resolv.conf naming it.
func startDNSServer(t *testing.T, name string, addr netip.Addr) []byte {
	t.Helper()
	lo := fmt.Sprintf("127.%d.%d.53", time.Now().UnixNano()%200+20, os.Getpid()%250)
	pc, err := net.ListenPacket("udp", lo+":53")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(req)
		if q := req.Question[0]; q.Name == dns.Fqdn(name) && q.Qtype == dns.TypeA {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: addr.AsSlice()})
		} else {
			m.SetRcode(req, dns.RcodeNameError)
		}
		w.WriteMsg(m)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	return []byte("nameserver " + lo + "\nsearch strata.test\noptions ndots:1\n")
}

// hostAddr is an address of the host on an interface other than loopback
// and the runners' bridges: where a service listening on all addresses is
// reached from outside.
func hostAddr(t *testing.T) netip.Addr {
	t.Helper()
	ifaces, _ := net.Interfaces()
	for _, i := range ifaces {
		if i.Flags&net.FlagLoopback != 0 || strings.HasPrefix(i.Name, "strata") || i.Flags&net.FlagUp == 0 {
			continue
		}
		addrs, _ := i.Addrs()
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok {
				if ip, _ := netip.AddrFromSlice(ipn.IP); ip.Unmap().Is4() {
					return ip.Unmap()
				}
			}
		}
	}
	t.Skip("the host has no IPv4 address besides loopback")
	return netip.Addr{}
}

// A step resolves names through the builder's resolver (on loopback here)
// and reaches a server elsewhere; it reaches nothing of the builder's host
// (loopback, its own addresses, the bridge's gateway), none of the
// builder's peers, and no link-local address. Every listener that must stay
// unreached counts the connections it gets.
func TestRunNetworkIsolation(t *testing.T) {
	peer := newPeerNet(t)
	web := listen(t, peer.path, netip.AddrPortFrom(peer.reachable, 80).String())
	go http.Serve(web, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "hello from outside") }))
	resolv := startDNSServer(t, "web.strata.test", peer.reachable)

	self := ""
	loopback := listen(t, self, "127.0.0.1:0")
	public := listen(t, self, netip.AddrPortFrom(hostAddr(t), 0).String())
	all := listen(t, self, ":0") // a service on every address, the gateway's too
	peerDenied := listen(t, peer.path, netip.AddrPortFrom(peer.denied, 80).String())
	metadata := listen(t, peer.path, netip.AddrPortFrom(peer.metadata, 80).String())
	e := newEnvWith(t, Options{ResolvConf: resolv, Network: stepnet.Options{
		// As the builder passes --metadata-addr and --blobstore-addr.
		Deny: []string{loopback.Addr().String(), peer.denied.String()},
	}})
	gateway := e.runner.net.Gateway()

	unreached := map[string]net.Listener{
		"host loopback":         loopback,
		"host address":          public,
		"bridge gateway":        all,
		"denied peer":           peerDenied,
		"cloud metadata server": metadata,
	}
	targets := map[string]string{
		"host loopback":         loopback.Addr().String(),
		"host address":          public.Addr().String(),
		"bridge gateway":        netip.AddrPortFrom(gateway, uint16(all.Addr().(*net.TCPAddr).Port)).String(),
		"denied peer":           peerDenied.Addr().String(),
		"cloud metadata server": metadata.Addr().String(),
	}
	counts := map[string]*atomic.Int64{}
	var script strings.Builder
	for name, ln := range unreached {
		counts[name] = countAccepts(ln)
		host, port, _ := net.SplitHostPort(targets[name])
		fmt.Fprintf(&script, "(nc -w 2 %s %s </dev/null >/dev/null 2>&1 && echo 'REACHED %s' || echo 'blocked %s') &\n", host, port, name, name)
	}
	script.WriteString(`ip=$(nslookup web.strata.test | awk '/^Address: / { a = $2 } END { print a }')
		echo "resolved $ip"
		printf 'GET / HTTP/1.0\r\nHost: web.strata.test\r\n\r\n' | nc -w 5 "$ip" 80 | tail -n 1; echo
		wait`)
	code, lines, _, err := e.run(t, Process{}, script.String())
	if err != nil || code != 0 {
		t.Fatalf("Run = %d, %v (%v)", code, err, lines)
	}
	out := stdout(lines)
	t.Logf("step output:\n%s", out)
	if !strings.Contains(out, "resolved "+peer.reachable.String()) {
		t.Errorf("web.strata.test did not resolve to %s through the builder's resolver", peer.reachable)
	}
	if !strings.Contains(out, "hello from outside") {
		t.Errorf("the step did not reach the HTTP server at %s", peer.reachable)
	}
	for name, n := range counts {
		if strings.Contains(out, "REACHED "+name) || n.Load() != 0 {
			t.Errorf("the step reached the %s (%s): %d connections arrived", name, targets[name], n.Load())
		}
	}
}

func TestRunNetworkNoneHasOnlyLoopback(t *testing.T) {
	e := newEnv(t)
	code, lines, _, err := e.run(t, Process{Network: NetworkNone}, `tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort | tr '\n' ' '`)
	if err != nil || code != 0 {
		t.Fatalf("Run = %d, %v", code, err)
	}
	if got := strings.TrimSpace(stdout(lines)); got != "lo" {
		t.Errorf("network none sees interfaces %q, want only lo", got)
	}
}

func TestRunNetworkHostNeedsTheEntitlement(t *testing.T) {
	e := newEnv(t)
	_, _, _, err := e.run(t, Process{Network: NetworkHost}, `true`)
	if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "network.host") || !strings.Contains(err.Error(), "--allow-insecure-entitlement") {
		t.Errorf("--network host without the entitlement: %v, want FAILED_PRECONDITION naming network.host and the flag", err)
	}
	if err := e.runner.Admit(NetworkHost, Limits{}); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("Admit(host) = %v, want FAILED_PRECONDITION", err)
	}

	allowed := newEnvWith(t, Options{Network: stepnet.Options{AllowHost: true}})
	code, lines, _, err := allowed.run(t, Process{Network: NetworkHost}, `cat /proc/net/dev`)
	if err != nil || code != 0 {
		t.Fatalf("--network host with the entitlement: Run = %d, %v", code, err)
	}
	if !strings.Contains(stdout(lines), allowed.runner.net.Name()+":") {
		t.Errorf("--network host does not see the host's interfaces (its bridge %s): %q", allowed.runner.net.Name(), stdout(lines))
	}
}

// BenchmarkRunNetwork is the cost of a RUN's network: /bin/true on the
// bridge (a namespace from the pool) and with none (runc makes one).
func BenchmarkRunNetwork(b *testing.B) {
	e := newEnv(b)
	a := e.rootfs(b)
	for _, n := range []Network{NetworkNone, NetworkBridge} {
		b.Run(string(n), func(b *testing.B) {
			for b.Loop() {
				if code, err := e.runner.Run(context.Background(), Process{RootFS: a.RootFS(), Args: []string{"/bin/true"}, Network: n}); err != nil || code != 0 {
					b.Fatalf("Run = %d, %v", code, err)
				}
			}
		})
	}
}

// A runner on the directory of one that died (its namespaces, chains and
// bridge still there) removes all of it before it sets up its own.
func TestNewRemovesALeftoverNetwork(t *testing.T) {
	e := newEnv(t)
	old := e.runner.net
	// The dead runner's pool is full of namespaces; its forwarder's socket
	// went with its process. (Its filler must be done: one still adding a
	// namespace would plant rules after the second runner's cleanup.)
	old.Abandon()
	before, _ := os.ReadDir(old.Dir())
	if len(before) == 0 {
		t.Fatal("the first runner holds no namespace")
	}
	r2, err := New(context.Background(), e.runner.dir, Options{Runc: "/usr/sbin/runc"})
	if err != nil {
		t.Fatal(err)
	}
	for _, ent := range before {
		if _, err := os.Stat(filepath.Join(old.Dir(), ent.Name())); err == nil {
			t.Errorf("namespace %s of the dead runner is still there", ent.Name())
		}
	}
	r2.Close(context.Background())
	assertNothingLeft(t, r2)
}

// inNetNS runs f on a thread in the network namespace at path.
func inNetNS(t *testing.T, path string, f func() error) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		// The thread, locked and never unlocked, ends with the goroutine.
		runtime.LockOSThread()
		ns, err := os.Open(path)
		if err == nil {
			err = unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET)
			ns.Close()
		}
		if err == nil {
			err = f()
		}
		errc <- err
	}()
	if err := <-errc; err != nil {
		t.Fatalf("in %s: %v", path, err)
	}
}

// sendFrame sends one Ethernet frame out of eth0 of the current network
// namespace, as a step may with CAP_NET_RAW (Docker's default set).
func sendFrame(frame []byte) error {
	ifc, err := net.InterfaceByName("eth0")
	if err != nil {
		return err
	}
	var be [2]byte
	binary.BigEndian.PutUint16(be[:], unix.ETH_P_ARP)
	proto := binary.NativeEndian.Uint16(be[:]) // htons
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(proto))
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	sa := &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifc.Index, Halen: 6}
	copy(sa.Addr[:], frame[:6])
	return unix.Sendto(fd, frame, 0, sa)
}

// arpReply is a broadcast ARP reply from srcMAC saying that ip is at
// claimedMAC.
func arpReply(srcMAC, claimedMAC net.HardwareAddr, ip, target net.IP) []byte {
	bcast := []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	f := make([]byte, 0, 42)
	f = append(f, bcast...)
	f = append(f, srcMAC...)
	f = append(f, 0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 2)
	f = append(f, claimedMAC...)
	f = append(f, ip.To4()...)
	f = append(f, bcast...)
	return append(f, target.To4()...)
}

// One step (one build, one user) can neither connect to another on the
// bridge nor take its place: an ARP reply claiming the other's address, or
// a frame sent from the other's MAC address, changes neither where the
// host sends the other's packets nor the bridge's port for it.
func TestRunStepsCannotReachOrImpersonateEachOther(t *testing.T) {
	e := newEnv(t)
	n := e.runner.net
	ctx := context.Background()
	type stepPort struct {
		veth string
		ip   net.IP
		mac  net.HardwareAddr
	}
	port := func(ns string) stepPort {
		t.Helper()
		var p stepPort
		var err error
		if p.veth, p.ip, p.mac, err = n.Port(ns); err != nil {
			t.Fatalf("CNI result of %s: %v", ns, err)
		}
		return p
	}
	victimNS, err := n.Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Put(victimNS)
	attackerNS, err := n.Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Put(attackerNS)
	victim, attacker := port(victimNS), port(attackerNS)
	// The host has talked to the victim, so knows its MAC address.
	if c, err := net.DialTimeout("tcp", net.JoinHostPort(victim.ip.String(), "9"), time.Second); err == nil {
		c.Close()
	}

	inNetNS(t, attackerNS, func() error {
		for range 3 {
			// The victim's address is at the attacker's MAC address…
			if err := sendFrame(arpReply(attacker.mac, attacker.mac, victim.ip, n.Gateway().AsSlice())); err != nil {
				return err
			}
			// …and the victim's MAC address is behind the attacker's port.
			if err := sendFrame(arpReply(victim.mac, victim.mac, victim.ip, n.Gateway().AsSlice())); err != nil {
				return err
			}
		}
		return nil
	})
	time.Sleep(200 * time.Millisecond)
	br, err := netlink.LinkByName(n.Name())
	if err != nil {
		t.Fatal(err)
	}
	neighs, err := netlink.NeighList(br.Attrs().Index, unix.AF_INET)
	if err != nil {
		t.Fatal(err)
	}
	for _, nb := range neighs {
		if nb.IP.Equal(victim.ip) && nb.HardwareAddr.String() != victim.mac.String() {
			t.Errorf("after a step's ARP reply, the host sends %s's packets to %s (the attacker's %s), not %s", victim.ip, nb.HardwareAddr, attacker.mac, victim.mac)
		}
	}
	fdb, err := netlink.NeighList(0, unix.AF_BRIDGE)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fdb {
		if f.HardwareAddr.String() == victim.mac.String() && f.MasterIndex == br.Attrs().Index {
			if l, err := netlink.LinkByIndex(f.LinkIndex); err == nil && l.Attrs().Name != victim.veth {
				t.Errorf("after a frame from the victim's MAC address %s, the bridge sends it to port %s, not the victim's %s", victim.mac, l.Attrs().Name, victim.veth)
			}
		}
	}

	// A step connects to neither namespace's listener.
	lnVictim := listen(t, victimNS, net.JoinHostPort(victim.ip.String(), "0"))
	lnAttacker := listen(t, attackerNS, net.JoinHostPort(attacker.ip.String(), "0"))
	cv, ca := countAccepts(lnVictim), countAccepts(lnAttacker)
	script := fmt.Sprintf(`nc -w 2 %s </dev/null && echo REACHED victim; nc -w 2 %s </dev/null && echo REACHED attacker; true`,
		strings.Replace(lnVictim.Addr().String(), ":", " ", 1), strings.Replace(lnAttacker.Addr().String(), ":", " ", 1))
	code, lines, _, err := e.run(t, Process{}, script)
	if err != nil || code != 0 {
		t.Fatalf("Run = %d, %v (%v)", code, err, lines)
	}
	if out := stdout(lines); strings.Contains(out, "REACHED") || cv.Load()+ca.Load() != 0 {
		t.Errorf("a step reached another step's listener: %q, %d connections", out, cv.Load()+ca.Load())
	}
}
