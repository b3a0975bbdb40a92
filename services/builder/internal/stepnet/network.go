// Package stepnet is the bridge network of RUN steps: a pool of network
// namespaces attached by CNI to a bridge of the builder, the firewall rules
// that keep steps from the builder's host and peers, and the DNS forwarder
// on the bridge's gateway. The sandbox's runner takes a namespace for each
// step on the bridge and gives it back when the step's processes are gone.
package stepnet

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/containernetworking/cni/libcni"
	cnitypes "github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/coreos/go-iptables/iptables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/strata-build/strata/lib/errdefs"
)

// Why CNI: RUN steps get what BuildKit's bridge network gives them, from
// the same well-kept parts: a network namespace of their own, a veth on a
// bridge of the builder, an address from host-local IPAM, masquerading out
// of the host's default route, and the firewall plugin's accept rules (so
// that a FORWARD policy of DROP, as Docker sets it, lets them out). These
// are Debian's containernetworking-plugins, driven through libcni. Traffic
// stays in the kernel, at the host's speed, unlike a user-mode stack
// (slirp4netns, pasta) whose packets the builder itself would send, where
// rules could not tell a step's connection from the builder's own.
//
// What CNI does not do is keep steps away from the builder's host and its
// peers. The runner adds one chain of its own in the raw table's
// PREROUTING, which sees a step's packet before connection tracking, NAT
// (a DNAT of a port published on a host address included) and any other
// rule: it drops every packet from the bridge to an address of the host
// (addrtype LOCAL: the bridge's gateway, the host's interfaces, whatever
// they are now), to broadcast and multicast addresses, to link-local
// addresses (169.254.0.0/16: cloud metadata services), and to the addresses
// of the builder's service peers (metadata, blob store, S3, and the
// operator's --step-deny list), but DNS to the runner's forwarder on the
// gateway. Loopback is the step's own. IPv6 from the bridge is dropped
// whole: steps get IPv4 only, so fd00:ec2::254 and the host's link-local
// addresses are out of reach too.

// Options configure the network of RUN steps.
type Options struct {
	// Bridge names the bridge the steps' namespaces attach to; derived
	// from the runner's directory when empty, so that builders with their
	// own state directories never share one.
	Bridge string
	// Subnet is the bridge's IPv4 subnet; when invalid (zero), the first
	// /24 of 10.88.0.0/14 that no interface of the host is on, starting
	// from one derived from the runner's directory.
	Subnet netip.Prefix
	// Deny lists what steps must not reach besides the builder host and
	// link-local addresses: host names, addresses (with or without a
	// port, as in --metadata-addr) and CIDR prefixes. Names are resolved
	// again before every step, and every address a name ever had stays
	// denied.
	Deny []string
	// CNIPath lists the directories of the CNI plugins; Debian's
	// /usr/lib/cni and the usual /opt/cni/bin when empty.
	CNIPath []string
	// PoolSize is how many namespaces are kept ready, so that a step does
	// not wait for one to be set up; 4 when 0.
	PoolSize int
	// AllowHost lets a build ask for the builder's own network namespace
	// (the network.host entitlement).
	AllowHost bool
}

// Bridge is the runner's bridge network: a pool of namespaces set up by
// CNI, the firewall chain and the DNS forwarder.
type Bridge struct {
	dir     string // the namespaces' files
	cni     *libcni.CNIConfig
	conf    *libcni.NetworkConfigList
	bridge  string
	subnet  netip.Prefix
	gateway netip.Addr
	chain   string
	deny    []string
	dns     *dnsForwarder
	size    int

	mu     sync.Mutex
	free   []string // namespace files ready for a step
	total  int      // namespaces made: free and in use
	denied map[netip.Prefix]bool
	closed bool
	fills  sync.WaitGroup
}

// New removes what a previous runner on dir left (namespaces,
// their veths and addresses, its chains, its bridge), then sets the network
// up anew. upstreams are the host's DNS servers.
func New(ctx context.Context, dir string, o Options, upstreams []string) (*Bridge, error) {
	sum := sha256.Sum256([]byte(dir))
	if o.Bridge == "" {
		o.Bridge = "strata" + hex.EncodeToString(sum[:4])
	}
	if len(o.Bridge) > 15 {
		return nil, errdefs.InvalidArgument("bridge name %q is longer than 15 characters", o.Bridge)
	}
	if len(o.CNIPath) == 0 {
		o.CNIPath = []string{"/usr/lib/cni", "/opt/cni/bin"}
	}
	if o.PoolSize <= 0 {
		o.PoolSize = 4
	}
	for _, p := range []string{"bridge", "host-local", "loopback", "firewall"} {
		if !slices.ContainsFunc(o.CNIPath, func(d string) bool { _, err := os.Stat(filepath.Join(d, p)); return err == nil }) {
			return nil, errdefs.FailedPrecondition("CNI plugin %s not found in %v: install Debian's containernetworking-plugins package", p, o.CNIPath)
		}
	}
	ipt, err := iptables.New(iptables.IPFamily(iptables.ProtocolIPv4))
	if err != nil {
		return nil, errdefs.FailedPrecondition("iptables: %v (install Debian's iptables package)", err)
	}
	ip6t, err := iptables.New(iptables.IPFamily(iptables.ProtocolIPv6))
	if err != nil {
		return nil, errdefs.FailedPrecondition("ip6tables: %v (install Debian's iptables package)", err)
	}
	n := &Bridge{
		dir:    filepath.Join(dir, "netns"),
		cni:    libcni.NewCNIConfigWithCacheDir(o.CNIPath, filepath.Join(dir, "cni"), nil),
		bridge: o.Bridge,
		chain:  "STRATA-" + o.Bridge,
		deny:   o.Deny,
		size:   o.PoolSize,
		denied: map[netip.Prefix]bool{},
	}
	if err := os.MkdirAll(n.dir, 0o700); err != nil {
		return nil, err
	}
	// The previous runner's network goes first: its bridge holds the
	// subnet this one may choose again.
	conf, err := n.config(dir, netip.MustParsePrefix("10.88.0.0/24"))
	if err != nil {
		return nil, err
	}
	n.conf = conf
	n.teardown(ctx)
	subnet := o.Subnet
	if !subnet.IsValid() {
		if subnet, err = freeSubnet(binary.BigEndian.Uint16(sum[4:])); err != nil {
			return nil, err
		}
	}
	if !subnet.Addr().Is4() || subnet.Bits() > 28 {
		return nil, errdefs.InvalidArgument("step subnet %s: want an IPv4 prefix of /28 or larger", subnet)
	}
	subnet = subnet.Masked()
	n.subnet = subnet
	n.gateway = subnet.Addr().Next()
	if n.conf, err = n.config(dir, subnet); err != nil {
		return nil, err
	}

	// The first namespace makes the bridge and its gateway address, which
	// the rules and the forwarder need.
	first, err := n.create(ctx)
	if err != nil {
		n.teardown(ctx)
		return nil, err
	}
	n.free, n.total = append(n.free, first), 1
	if err := n.installRules(ipt, ip6t); err != nil {
		n.teardown(ctx)
		return nil, err
	}
	if n.dns, err = startDNS(n.gateway, upstreams); err != nil {
		n.teardown(ctx)
		return nil, err
	}
	n.fills.Go(n.fill)
	return n, nil
}

// config is the CNI network of the runner: BuildKit's bridge network.
func (n *Bridge) config(dir string, subnet netip.Prefix) (*libcni.NetworkConfigList, error) {
	b, err := json.Marshal(map[string]any{
		"cniVersion": "1.0.0",
		"name":       "strata-" + n.bridge,
		"plugins": []map[string]any{
			{"type": "loopback"},
			{
				"type": "bridge", "bridge": n.bridge, "isDefaultGateway": true, "ipMasq": true,
				"ipam": map[string]any{
					"type":    "host-local",
					"ranges":  [][]map[string]string{{{"subnet": subnet.String()}}},
					"dataDir": filepath.Join(dir, "ipam"),
				},
			},
			{"type": "firewall", "backend": "iptables"},
		},
	})
	if err != nil {
		return nil, err
	}
	return libcni.ConfListFromBytes(b)
}

// freeSubnet picks a /24 of 10.88.0.0/14 that no interface of the host is
// on, starting at the one seed names.
func freeSubnet(seed uint16) (netip.Prefix, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return netip.Prefix{}, err
	}
	for i := range 1024 {
		k := (int(seed) + i) % 1024
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(88 + k/256), byte(k % 256), 0}), 24)
		if !slices.ContainsFunc(addrs, func(a net.Addr) bool {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				return false
			}
			pa, _ := netip.AddrFromSlice(ipn.IP)
			ones, _ := ipn.Mask.Size()
			return netip.PrefixFrom(pa.Unmap(), ones).Overlaps(p)
		}) {
			return p, nil
		}
	}
	return netip.Prefix{}, errdefs.FailedPrecondition("no free /24 in 10.88.0.0/14 for RUN steps: set the builder's --step-subnet")
}

// installRules adds the runner's chains (see the top of this file).
func (n *Bridge) installRules(ipt, ip6t *iptables.IPTables) error {
	gw := n.gateway.String() + "/32"
	rules := [][]string{
		{"-d", gw, "-p", "udp", "--dport", "53", "-j", "RETURN"},
		{"-d", gw, "-p", "tcp", "--dport", "53", "-j", "RETURN"},
		// Other steps (other builds, other users) on the bridge: routed
		// through the gateway, or bridged where br_netfilter passes
		// bridged packets through iptables.
		{"-d", n.subnet.String(), "-j", "DROP"},
		{"-m", "addrtype", "--dst-type", "LOCAL", "-j", "DROP"},
		{"-m", "addrtype", "--dst-type", "BROADCAST", "-j", "DROP"},
		{"-m", "addrtype", "--dst-type", "MULTICAST", "-j", "DROP"},
		{"-d", "169.254.0.0/16", "-j", "DROP"},
		{"-d", "127.0.0.0/8", "-j", "DROP"},
	}
	if err := ipt.NewChain("raw", n.chain); err != nil {
		return fmt.Errorf("iptables: %w", err)
	}
	for _, r := range rules {
		if err := ipt.Append("raw", n.chain, r...); err != nil {
			return fmt.Errorf("iptables: %w", err)
		}
	}
	if err := ipt.Insert("raw", "PREROUTING", 1, "-i", n.bridge, "-j", n.chain); err != nil {
		return fmt.Errorf("iptables: %w", err)
	}
	if err := ip6t.NewChain("raw", n.chain); err != nil {
		return fmt.Errorf("ip6tables: %w", err)
	}
	if err := ip6t.Append("raw", n.chain, "-j", "DROP"); err != nil {
		return fmt.Errorf("ip6tables: %w", err)
	}
	if err := ip6t.Insert("raw", "PREROUTING", 1, "-i", n.bridge, "-j", n.chain); err != nil {
		return fmt.Errorf("ip6tables: %w", err)
	}
	return n.refreshDeny(context.Background())
}

// refreshDeny resolves the deny list and drops what it newly names. It
// only adds: an address once denied stays so (a peer that moved may come
// back), and a name that does not resolve now keeps what it had.
func (n *Bridge) refreshDeny(ctx context.Context) error {
	var found []netip.Prefix
	for _, d := range n.deny {
		if p, err := netip.ParsePrefix(d); err == nil {
			found = append(found, p.Masked())
			continue
		}
		host := d
		if h, _, err := net.SplitHostPort(d); err == nil {
			host = h
		}
		if a, err := netip.ParseAddr(host); err == nil {
			found = append(found, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		addrs, _ := net.DefaultResolver.LookupNetIP(rctx, "ip4", host)
		cancel()
		for _, a := range addrs {
			found = append(found, netip.PrefixFrom(a.Unmap(), 32))
		}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	var ipt *iptables.IPTables
	for _, p := range found {
		// IPv6 is dropped whole; loopback and the host's own addresses
		// are dropped already.
		if !p.Addr().Is4() || n.denied[p] {
			continue
		}
		if ipt == nil {
			var err error
			if ipt, err = iptables.New(iptables.IPFamily(iptables.ProtocolIPv4)); err != nil {
				return err
			}
		}
		if err := ipt.AppendUnique("raw", n.chain, "-d", p.String(), "-j", "DROP"); err != nil {
			return fmt.Errorf("denying %s to RUN steps: %w", p, err)
		}
		n.denied[p] = true
	}
	return nil
}

// Get returns a namespace for a step: a ready one, or a new one when
// more steps run at once than the pool holds.
func (n *Bridge) Get(ctx context.Context) (string, error) {
	if err := n.refreshDeny(ctx); err != nil {
		return "", err
	}
	n.mu.Lock()
	if len(n.free) > 0 {
		ns := n.free[len(n.free)-1]
		n.free = n.free[:len(n.free)-1]
		n.mu.Unlock()
		return ns, nil
	}
	n.total++
	n.mu.Unlock()
	ns, err := n.create(ctx)
	if err != nil {
		n.mu.Lock()
		n.total--
		n.mu.Unlock()
	}
	return ns, err
}

// Put takes back a namespace whose step ended (all its processes are gone,
// and it holds no socket); it serves the next step, as in BuildKit, since
// a step cannot change its network (it has no CAP_NET_ADMIN). The pool
// keeps every namespace it made, at most as many as steps ran at once.
func (n *Bridge) Put(ns string) {
	n.mu.Lock()
	if !n.closed {
		n.free = append(n.free, ns)
		n.mu.Unlock()
		return
	}
	n.mu.Unlock()
	n.release(context.Background(), ns)
}

// fill prepares namespaces until the pool holds its size.
func (n *Bridge) fill() {
	for {
		n.mu.Lock()
		if n.closed || n.total >= n.size {
			n.mu.Unlock()
			return
		}
		n.total++
		n.mu.Unlock()
		ns, err := n.create(context.Background())
		if err != nil {
			n.mu.Lock()
			n.total--
			n.mu.Unlock()
			return
		}
		n.Put(ns)
	}
}

// create makes a namespace and attaches it to the bridge.
func (n *Bridge) create(ctx context.Context) (string, error) {
	var id [8]byte
	if _, err := rand.Read(id[:]); err != nil {
		return "", err
	}
	file := filepath.Join(n.dir, hex.EncodeToString(id[:]))
	if err := newNetNS(file); err != nil {
		return "", fmt.Errorf("creating a network namespace: %w", err)
	}
	res, err := n.cni.AddNetworkList(ctx, n.conf, n.runtimeConf(file))
	if err != nil {
		n.release(context.Background(), file)
		return "", errdefs.FailedPrecondition("setting up the network of RUN steps (CNI %s): %v", n.conf.Name, err)
	}
	if err := n.pin(res); err != nil {
		n.release(context.Background(), file)
		return "", errdefs.FailedPrecondition("isolating the network of RUN steps (CNI %s): %v", n.conf.Name, err)
	}
	return file, nil
}

// stepPort is what CNI gave a namespace: the bridge port of its veth, and
// the address and MAC address of its eth0.
type stepPort struct {
	veth string
	ip   net.IP
	mac  net.HardwareAddr
}

func portOf(r cnitypes.Result) (stepPort, error) {
	var p stepPort
	res, err := types100.NewResultFromResult(r)
	if err != nil {
		return p, err
	}
	for i, ifc := range res.Interfaces {
		switch {
		case ifc.Sandbox != "" && ifc.Name == "eth0":
			if p.mac, err = net.ParseMAC(ifc.Mac); err != nil {
				return p, fmt.Errorf("eth0's MAC address %q: %w", ifc.Mac, err)
			}
			for _, ip := range res.IPs {
				if ip.Interface != nil && *ip.Interface == i && ip.Address.IP.To4() != nil {
					p.ip = ip.Address.IP.To4()
				}
			}
		case ifc.Sandbox == "" && ifc.Name != "" && ifc.Name != "lo":
			if l, err := netlink.LinkByName(ifc.Name); err == nil && l.Type() == "veth" {
				p.veth = ifc.Name
			}
		}
	}
	if p.veth == "" || p.ip == nil || p.mac == nil {
		return p, fmt.Errorf("CNI's result names no veth, address and MAC address for eth0: %s", res)
	}
	return p, nil
}

// pin keeps the step on its own bridge port, as a switch with port
// security would. A step has CAP_NET_RAW (Docker's default set), so it can
// send any frame: left alone it could talk to other steps on the bridge
// (other builds, other users), and claim another step's address by ARP or
// its MAC address by the bridge's learning, and so receive what the host
// sends that step (its downloads, its DNS answers) and answer in its place,
// poisoning the image that step records for everyone. So the port is
// isolated (its frames reach the bridge's own interface only, never another
// step's port), does not learn (the step's MAC address is a static entry
// of the port) and gets no unicast flood, and the bridge knows the step's
// address by a permanent neighbour entry, which no ARP packet changes.
func (n *Bridge) pin(r cnitypes.Result) error {
	p, err := portOf(r)
	if err != nil {
		return err
	}
	veth, err := netlink.LinkByName(p.veth)
	if err != nil {
		return err
	}
	br, err := netlink.LinkByName(n.bridge)
	if err != nil {
		return err
	}
	if err := netlink.NeighSet(&netlink.Neigh{
		LinkIndex: veth.Attrs().Index, Family: unix.AF_BRIDGE, Flags: netlink.NTF_MASTER,
		State: netlink.NUD_NOARP, HardwareAddr: p.mac,
	}); err != nil {
		return fmt.Errorf("static bridge entry for %s on %s: %w", p.mac, p.veth, err)
	}
	for _, set := range []struct {
		what string
		f    func(netlink.Link, bool) error
		on   bool
	}{{"isolated", netlink.LinkSetIsolated, true}, {"learning", netlink.LinkSetLearning, false}, {"flood", netlink.LinkSetFlood, false}} {
		if err := set.f(veth, set.on); err != nil {
			return fmt.Errorf("setting %s %v on bridge port %s: %w", set.what, set.on, p.veth, err)
		}
	}
	if err := netlink.NeighSet(&netlink.Neigh{
		LinkIndex: br.Attrs().Index, Family: unix.AF_INET, State: netlink.NUD_PERMANENT,
		IP: p.ip, HardwareAddr: p.mac,
	}); err != nil {
		return fmt.Errorf("permanent neighbour %s at %s on %s: %w", p.ip, p.mac, n.bridge, err)
	}
	return nil
}

// unpin removes the bridge's neighbour entry of a namespace about to be
// released (its veth, and the port's entries with it, go with CNI's DEL).
func (n *Bridge) unpin(ctx context.Context, file string) {
	r, err := n.cni.GetNetworkListCachedResult(n.conf, n.runtimeConf(file))
	if err != nil || r == nil {
		return
	}
	p, err := portOf(r)
	if err != nil && p.ip == nil {
		return
	}
	if br, err := netlink.LinkByName(n.bridge); err == nil {
		netlink.NeighDel(&netlink.Neigh{LinkIndex: br.Attrs().Index, Family: unix.AF_INET, IP: p.ip})
	}
}

func (n *Bridge) runtimeConf(file string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: filepath.Base(file), NetNS: file, IfName: "eth0"}
}

// release detaches a namespace (CNI removes its veth, address and rules)
// and removes it. A plugin that fails is tried again: the iptables they run
// can fail for a moment while other programs change the tables, and a
// rule left behind would outlive the builder.
func (n *Bridge) release(ctx context.Context, file string) error {
	n.unpin(ctx, file)
	var err error
	for wait := 50 * time.Millisecond; ; wait *= 2 {
		if err = n.cni.DelNetworkList(ctx, n.conf, n.runtimeConf(file)); err == nil || wait > time.Second {
			break
		}
		time.Sleep(wait)
	}
	if uerr := unix.Unmount(file, unix.MNT_DETACH); uerr != nil && !errors.Is(uerr, unix.EINVAL) && !errors.Is(uerr, unix.ENOENT) && err == nil {
		err = uerr
	}
	if rerr := os.Remove(file); rerr != nil && !errors.Is(rerr, os.ErrNotExist) && err == nil {
		err = rerr
	}
	return err
}

// Close releases every namespace and removes the rules and the bridge. The
// caller has ended every step.
func (n *Bridge) Close(ctx context.Context) {
	n.mu.Lock()
	n.closed = true
	n.mu.Unlock()
	n.fills.Wait()
	if n.dns != nil {
		n.dns.close()
	}
	n.teardown(ctx)
}

// teardown removes every namespace under the runner's directory (a
// previous runner's too, found by its file), the chains and the bridge.
func (n *Bridge) teardown(ctx context.Context) {
	n.mu.Lock()
	n.free, n.total = nil, 0
	n.mu.Unlock()
	entries, _ := os.ReadDir(n.dir)
	for _, e := range entries {
		n.release(ctx, filepath.Join(n.dir, e.Name()))
	}
	for _, proto := range []iptables.Protocol{iptables.ProtocolIPv4, iptables.ProtocolIPv6} {
		ipt, err := iptables.New(iptables.IPFamily(proto))
		if err != nil {
			continue
		}
		ipt.DeleteIfExists("raw", "PREROUTING", "-i", n.bridge, "-j", n.chain)
		if ok, _ := ipt.ChainExists("raw", n.chain); ok {
			ipt.ClearAndDeleteChain("raw", n.chain)
		}
	}
	if l, err := netlink.LinkByName(n.bridge); err == nil {
		netlink.LinkDel(l)
	}
}

// newNetNS makes a network namespace and pins it by a bind mount on file,
// as CNI's own test helpers and BuildKit do: a thread unshares its network
// namespace, and since it cannot go back, it is locked and ends with its
// goroutine.
func newNetNS(file string) error {
	f, err := os.OpenFile(file, os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	f.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		errc <- unix.Mount(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()), file, "", unix.MS_BIND, "")
	}()
	if err := <-errc; err != nil {
		os.Remove(file)
		return err
	}
	return nil
}
