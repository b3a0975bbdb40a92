package stepnet

import (
	"fmt"
	"net"
	"net/netip"
)

// What a bridge network holds on the host, for the tests of its users that
// check what a step reaches and that Close left nothing behind.

// Gateway is the bridge's address: the steps' default route and DNS server.
func (n *Bridge) Gateway() netip.Addr { return n.gateway }

// Name is the bridge's interface name.
func (n *Bridge) Name() string { return n.bridge }

// Chain is the name of the firewall chain of the network.
func (n *Bridge) Chain() string { return n.chain }

// Dir holds the network namespaces' files.
func (n *Bridge) Dir() string { return n.dir }

// Abandon leaves the network as a runner that died would: its namespaces
// and rules stay, its DNS forwarder's sockets go. Once the pool's filler is
// done, so that no namespace is added after a new runner's cleanup.
func (n *Bridge) Abandon() {
	n.fills.Wait()
	n.dns.close()
}

// Port is what CNI gave the namespace ns: the bridge port of its veth, the
// address and the MAC address of its eth0.
func (n *Bridge) Port(ns string) (veth string, ip net.IP, mac net.HardwareAddr, err error) {
	r, err := n.cni.GetNetworkListCachedResult(n.conf, n.runtimeConf(ns))
	if err != nil {
		return "", nil, nil, err
	}
	if r == nil {
		return "", nil, nil, fmt.Errorf("no CNI result for %s", ns)
	}
	p, err := portOf(r)
	return p.veth, p.ip, p.mac, err
}
