package network

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"sort"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// New returns a Manager for opts. It creates NetNSDir and touches nothing
// else: the host's rules come with the first network.
func New(opts Options) (*Manager, error) {
	if err := opts.fill(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(opts.NetNSDir, 0o755); err != nil {
		return nil, fmt.Errorf("netns dir: %w", err)
	}
	return &Manager{opts: opts, log: opts.Logger}, nil
}

// ensureHost turns on forwarding and (re)loads the host's table. Every
// EnsureNetwork does it, as it reloads the network's own table: a ruleset
// flushed by someone else comes back with the next reconcile.
func (m *Manager) ensureHost(ctx context.Context) error {
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0); err != nil {
		return fmt.Errorf("host ip_forward: %w", err)
	}
	if err := nft(ctx, "", replaceTable("inet", m.opts.Prefix, hostRules(m.opts.Prefix, m.opts.Transit))); err != nil {
		return fmt.Errorf("host rules: %w", err)
	}
	return nil
}

// EnsureNetwork creates (idempotently) the private network id with subnet:
// its namespace, bridge with the gateway address, transit veth, NAT and
// isolation rules. An id's subnet cannot change (ErrConflict). ids are the
// node's, like "12-net" (deployment 12, network "net"). Each call also
// repairs what is missing of a network created before.
func (m *Manager) EnsureNetwork(ctx context.Context, id string, subnet netip.Prefix) error {
	if err := checkID("network", id); err != nil {
		return err
	}
	if err := checkSubnet(subnet); err != nil {
		return fmt.Errorf("network %s: %w", id, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.ensureHost(ctx); err != nil {
		return err
	}
	path := m.nsPath(kindNet, id)
	created, err := ensureNS(path)
	if err != nil {
		return fmt.Errorf("network %s: namespace: %w", id, err)
	}
	if err := m.ensureNetwork(ctx, id, path, subnet); err != nil {
		if created {
			// Leave nothing half made behind a fresh id, even when ctx is done.
			m.removeNetwork(context.WithoutCancel(ctx), id)
		}
		return fmt.Errorf("network %s: %w", id, err)
	}
	if created {
		m.log.Info("network created", "network", id, "subnet", subnet)
	}
	return nil
}

func (m *Manager) ensureNetwork(ctx context.Context, id, path string, subnet netip.Prefix) error {
	h, err := handleAt(path)
	if err != nil {
		return err
	}
	defer h.Close()
	if err := upLo(h); err != nil {
		return err
	}

	// The bridge's address is the record of the subnet: check it first.
	br, err := h.LinkByName(bridgeName)
	if err != nil {
		sum := sha256.Sum256([]byte(id))
		attrs := netlink.NewLinkAttrs()
		attrs.Name = bridgeName
		// A fixed MAC: a bridge otherwise takes its ports' lowest one and the
		// gateway's MAC would change under the containers' ARP caches.
		attrs.HardwareAddr = net.HardwareAddr{0x02, sum[0], sum[1], sum[2], sum[3], sum[4]}
		if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: attrs}); err != nil {
			return fmt.Errorf("bridge: %w", err)
		}
		if br, err = h.LinkByName(bridgeName); err != nil {
			return fmt.Errorf("bridge: %w", err)
		}
	}
	have, err := bridgeSubnet(h, br)
	if err != nil {
		return err
	}
	switch {
	case !have.IsValid():
		addr := &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(gatewayOf(subnet), subnet.Bits()))}
		if err := h.AddrAdd(br, addr); err != nil {
			return fmt.Errorf("gateway address: %w", err)
		}
	case have != subnet:
		return fmt.Errorf("has subnet %s, not %s: %w", have, subnet, ErrConflict)
	}
	if err := h.LinkSetUp(br); err != nil {
		return fmt.Errorf("bridge up: %w", err)
	}

	if err := m.ensureTransit(id, path, h); err != nil {
		return fmt.Errorf("transit: %w", err)
	}
	if err := sysctl(path, "net/ipv4/ip_forward", "1"); err != nil {
		return fmt.Errorf("ip_forward: %w", err)
	}
	// Traffic between containers of the network is not filtered: keep it
	// out of the IP hooks when br_netfilter is loaded (keys absent if not).
	for _, key := range []string{"bridge-nf-call-iptables", "bridge-nf-call-ip6tables", "bridge-nf-call-arptables"} {
		if err := sysctl(path, "net/bridge/"+key, "0"); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%s: %w", key, err)
		}
	}
	if err := nft(ctx, path, replaceTable("inet", m.opts.Prefix, netRules(subnet))); err != nil {
		return fmt.Errorf("rules: %w", err)
	}
	return nil
}

// ensureTransit makes the veth between the host and the network namespace,
// with the addresses of the network's /30 of the transit range and the
// namespace's default route through the host. An existing link keeps its
// addresses, so a network keeps its slot across restarts.
func (m *Manager) ensureTransit(id, path string, h *netlink.Handle) error {
	name := m.transitLink(id)
	host, herr := netlink.LinkByName(name)
	if herr == nil && host.Attrs().Alias != "" && host.Attrs().Alias != aliasNet+id {
		return fmt.Errorf("host link %s belongs to %q (hash collision): %w", name, host.Attrs().Alias, ErrConflict)
	}
	inner, ierr := h.LinkByName(transitName)
	paired := herr == nil && ierr == nil
	if !paired {
		// One end without the other is the remains of another namespace or
		// of a crash: start over.
		if herr == nil {
			netlink.LinkDel(host)
		}
		if ierr == nil {
			h.LinkDel(inner)
		}
	}
	var slot netip.Prefix
	if paired {
		var err error
		if slot, err = m.transitSlot(host); err != nil {
			return err
		}
	}
	if !slot.IsValid() {
		var err error
		if slot, err = m.allocSlot(id); err != nil {
			return err
		}
	}
	if !paired {
		ns, err := netns.GetFromPath(path)
		if err != nil {
			return err
		}
		attrs := netlink.NewLinkAttrs()
		attrs.Name = name
		err = netlink.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: transitName, PeerNamespace: netlink.NsFd(ns)})
		ns.Close()
		if err != nil {
			return fmt.Errorf("veth %s: %w", name, err)
		}
		if host, err = netlink.LinkByName(name); err != nil {
			return err
		}
		if inner, err = h.LinkByName(transitName); err != nil {
			return err
		}
	}
	if host.Attrs().Alias != aliasNet+id {
		if err := netlink.LinkSetAlias(host, aliasNet+id); err != nil {
			return err
		}
	}
	hostAddr := slot.Addr().Next()
	innerAddr := hostAddr.Next()
	if err := ensureAddr(nil, host, netip.PrefixFrom(hostAddr, 30)); err != nil {
		return err
	}
	if err := ensureAddr(h, inner, netip.PrefixFrom(innerAddr, 30)); err != nil {
		return err
	}
	if err := netlink.LinkSetUp(host); err != nil {
		return err
	}
	if err := h.LinkSetUp(inner); err != nil {
		return err
	}
	route := &netlink.Route{LinkIndex: inner.Attrs().Index, Dst: ipNet(netip.MustParsePrefix("0.0.0.0/0")), Gw: hostAddr.AsSlice()}
	if err := h.RouteReplace(route); err != nil {
		return fmt.Errorf("default route: %w", err)
	}
	return nil
}

// transitSlot is the /30 of the transit range the host link has an address
// in, or the zero Prefix.
func (m *Manager) transitSlot(link netlink.Link) (netip.Prefix, error) {
	addrs, err := netlink.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return netip.Prefix{}, err
	}
	for _, a := range addrs {
		if p, ok := prefixOf(a.IPNet); ok && m.opts.Transit.Contains(p.Addr()) {
			return netip.PrefixFrom(p.Addr(), 30).Masked(), nil
		}
	}
	return netip.Prefix{}, nil
}

// allocSlot picks the /30 for network id: the one its hash names, or the next
// free one after it. A slot is taken when any host address is in it, whoever
// set it, so two managers sharing a range do not collide.
func (m *Manager) allocSlot(id string) (netip.Prefix, error) {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return netip.Prefix{}, err
	}
	base := m.opts.Transit.Addr().As4()
	start := binary.BigEndian.Uint32(base[:])
	n := uint32(1) << (30 - m.opts.Transit.Bits())
	used := make(map[uint32]bool)
	for _, a := range addrs {
		if p, ok := prefixOf(a.IPNet); ok && m.opts.Transit.Contains(p.Addr()) {
			b := p.Addr().As4()
			used[(binary.BigEndian.Uint32(b[:])-start)/4] = true
		}
	}
	sum := sha256.Sum256([]byte(id))
	first := binary.BigEndian.Uint32(sum[:]) % n
	for i := range n {
		s := (first + i) % n
		if !used[s] {
			var b [4]byte
			binary.BigEndian.PutUint32(b[:], start+4*s)
			return netip.PrefixFrom(netip.AddrFrom4(b), 30), nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("transit range %s is full", m.opts.Transit)
}

// RemoveNetwork removes everything of network id: its transit link, the
// veths of the sandboxes attached to it (their sandboxes stay), its namespace
// with its rules. Idempotent. The host's table goes with the last network.
func (m *Manager) RemoveNetwork(ctx context.Context, id string) error {
	if err := checkID("network", id); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.removeNetwork(ctx, id); err != nil {
		return fmt.Errorf("network %s: %w", id, err)
	}
	m.log.Info("network removed", "network", id)
	return nil
}

func (m *Manager) removeNetwork(ctx context.Context, id string) error {
	if l, err := netlink.LinkByName(m.transitLink(id)); err == nil && (l.Attrs().Alias == aliasNet+id || l.Attrs().Alias == "") {
		if err := netlink.LinkDel(l); err != nil {
			return fmt.Errorf("transit link: %w", err)
		}
	}
	path := m.nsPath(kindNet, id)
	if isNS(path) {
		// Deleting the ports here takes the sandboxes' ends at once, rather
		// than whenever the kernel gets round to freeing the namespace.
		if err := delVeths(path); err != nil {
			return err
		}
	}
	if err := removeNS(path); err != nil {
		return err
	}
	left, err := m.networks()
	if err != nil {
		return err
	}
	if len(left) == 0 {
		if err := nft(ctx, "", deleteTable("inet", m.opts.Prefix)); err != nil {
			return fmt.Errorf("host rules: %w", err)
		}
	}
	return nil
}

// Networks lists the ids of the networks present on the machine: the
// namespace files and host transit links of this Manager's prefix, whole or
// not, so that orphans can be removed.
func (m *Manager) Networks(ctx context.Context) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.networks()
}

func (m *Manager) networks() ([]string, error) {
	ids, err := m.listNS(kindNet)
	if err != nil {
		return nil, err
	}
	links, err := netlink.LinkList()
	if err != nil {
		return nil, err
	}
	for _, l := range links {
		a := l.Attrs()
		if id, ok := strings.CutPrefix(a.Alias, aliasNet); ok && a.Name == m.transitLink(id) {
			ids = append(ids, id)
		}
	}
	return uniq(ids), nil
}

func (m *Manager) listNS(kind string) ([]string, error) {
	entries, err := os.ReadDir(m.opts.NetNSDir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	var ids []string
	for _, e := range entries {
		if id, ok := strings.CutPrefix(e.Name(), m.nsPrefix(kind)); ok && checkID(kind, id) == nil {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// Sandbox creates (idempotently) the network namespace of a container and
// returns its path, to pass to the container runtime. It has only lo, up,
// until Attach.
func (m *Manager) Sandbox(ctx context.Context, id string) (nsPath string, err error) {
	if err := checkID("sandbox", id); err != nil {
		return "", err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	path := m.nsPath(kindSbx, id)
	created, err := ensureNS(path)
	if err != nil {
		return "", fmt.Errorf("sandbox %s: namespace: %w", id, err)
	}
	h, err := handleAt(path)
	if err != nil {
		return "", fmt.Errorf("sandbox %s: %w", id, err)
	}
	defer h.Close()
	if err := upLo(h); err != nil {
		return "", fmt.Errorf("sandbox %s: %w", id, err)
	}
	// A new namespace copies the host's ip_forward, which networks turn on:
	// a container does not route between the networks it is attached to.
	if err := sysctl(path, "net/ipv4/ip_forward", "0"); err != nil {
		return "", fmt.Errorf("sandbox %s: ip_forward: %w", id, err)
	}
	if created {
		m.log.Info("sandbox created", "sandbox", id)
	}
	return path, nil
}

// Attach connects sandbox to network with ip (inside the network's subnet,
// not its network, gateway or broadcast address, not held by another
// sandbox). The sandbox gets the next free ethN, and its default route via
// the network's gateway if it has none. Idempotent for the same (sandbox,
// network, ip); another ip for an attached pair is ErrConflict.
func (m *Manager) Attach(ctx context.Context, sandbox, network string, ip netip.Addr) error {
	if err := checkID("sandbox", sandbox); err != nil {
		return err
	}
	if err := checkID("network", network); err != nil {
		return err
	}
	ip = ip.Unmap()
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.attach(sandbox, network, ip); err != nil {
		return fmt.Errorf("attach sandbox %s to network %s: %w", sandbox, network, err)
	}
	return nil
}

func (m *Manager) attach(sandbox, network string, ip netip.Addr) error {
	npath, spath := m.nsPath(kindNet, network), m.nsPath(kindSbx, sandbox)
	if !isNS(npath) {
		return fmt.Errorf("no such network: %w", ErrNotFound)
	}
	if !isNS(spath) {
		return fmt.Errorf("no such sandbox: %w", ErrNotFound)
	}
	nh, err := handleAt(npath)
	if err != nil {
		return err
	}
	defer nh.Close()
	sh, err := handleAt(spath)
	if err != nil {
		return err
	}
	defer sh.Close()
	br, err := nh.LinkByName(bridgeName)
	if err != nil {
		return fmt.Errorf("bridge: %w", err)
	}
	subnet, err := bridgeSubnet(nh, br)
	if err != nil {
		return err
	}
	if !subnet.IsValid() {
		return fmt.Errorf("bridge has no address: %w", ErrNotFound)
	}
	if err := checkHost(subnet, ip); err != nil {
		return err
	}

	// The existing attachment, if any: the port in the network and the
	// sandbox's end, found by their names and aliases.
	portName := m.portLink(sandbox)
	port, perr := nh.LinkByName(portName)
	slinks, err := sh.LinkList()
	if err != nil {
		return err
	}
	var end netlink.Link
	for _, l := range slinks {
		if l.Attrs().Alias == aliasNet+network {
			end = l
		}
	}
	if perr == nil && end != nil {
		if s, have, ok := parsePortAlias(port.Attrs().Alias); ok && s == sandbox {
			if have == ip {
				// Attached: repair what a crash between steps may have left.
				if err := nh.LinkSetUp(port); err != nil {
					return err
				}
				return ensureEnd(sh, end, subnet, ip)
			}
			return fmt.Errorf("attached with %s, not %s: %w", have, ip, ErrConflict)
		}
		if s, _, ok := parsePortAlias(port.Attrs().Alias); ok && s != sandbox {
			return fmt.Errorf("port %s belongs to sandbox %s (hash collision): %w", portName, s, ErrConflict)
		}
	}
	// Half an attachment (a crash between steps): remove it and start over.
	if perr == nil {
		if err := nh.LinkDel(port); err != nil {
			return err
		}
	}
	if end != nil {
		sh.LinkDel(end) // gone already if it was port's peer
	}

	nlinks, err := nh.LinkList()
	if err != nil {
		return err
	}
	for _, l := range nlinks {
		if s, have, ok := parsePortAlias(l.Attrs().Alias); ok && have == ip && s != sandbox {
			return fmt.Errorf("address %s is sandbox %s's: %w", ip, s, ErrConflict)
		}
	}

	eth := nextEth(slinks)
	sfd, err := netns.GetFromPath(spath)
	if err != nil {
		return err
	}
	attrs := netlink.NewLinkAttrs()
	attrs.Name = portName
	attrs.MasterIndex = br.Attrs().Index
	err = nh.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: eth, PeerNamespace: netlink.NsFd(sfd)})
	sfd.Close()
	if err != nil {
		return fmt.Errorf("veth: %w", err)
	}
	if err := m.configureAttachment(nh, sh, portName, eth, network, sandbox, subnet, ip); err != nil {
		if l, lerr := nh.LinkByName(portName); lerr == nil {
			nh.LinkDel(l)
		}
		return err
	}
	m.log.Info("sandbox attached", "sandbox", sandbox, "network", network, "ip", ip, "link", eth)
	return nil
}

func (m *Manager) configureAttachment(nh, sh *netlink.Handle, portName, eth, network, sandbox string, subnet netip.Prefix, ip netip.Addr) error {
	port, err := nh.LinkByName(portName)
	if err != nil {
		return err
	}
	if err := nh.LinkSetAlias(port, portAlias(sandbox, ip)); err != nil {
		return err
	}
	if err := nh.LinkSetUp(port); err != nil {
		return err
	}
	end, err := sh.LinkByName(eth)
	if err != nil {
		return err
	}
	if err := sh.LinkSetAlias(end, aliasNet+network); err != nil {
		return err
	}
	return ensureEnd(sh, end, subnet, ip)
}

// ensureEnd gives a sandbox's end of an attachment its address, sets it up
// and, if the sandbox has no default route (none yet, or the network that
// had it is gone), routes through this network's gateway.
func ensureEnd(sh *netlink.Handle, end netlink.Link, subnet netip.Prefix, ip netip.Addr) error {
	if err := ensureAddr(sh, end, netip.PrefixFrom(ip, subnet.Bits())); err != nil {
		return err
	}
	if err := sh.LinkSetUp(end); err != nil {
		return err
	}
	routes, err := sh.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return err
	}
	for _, r := range routes {
		if r.Dst == nil || r.Dst.IP.IsUnspecified() && prefixLen(r.Dst) == 0 {
			return nil // the sandbox has its default route already
		}
	}
	route := &netlink.Route{LinkIndex: end.Attrs().Index, Gw: gatewayOf(subnet).AsSlice()}
	if err := sh.RouteAdd(route); err != nil {
		return fmt.Errorf("default route: %w", err)
	}
	return nil
}

// RemoveSandbox removes sandbox id's veths (and with them their ports in the
// networks) and its namespace file. Idempotent. A process still inside keeps
// the namespace alive, without links.
func (m *Manager) RemoveSandbox(ctx context.Context, id string) error {
	if err := checkID("sandbox", id); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	path := m.nsPath(kindSbx, id)
	if isNS(path) {
		if err := delVeths(path); err != nil {
			return fmt.Errorf("sandbox %s: %w", id, err)
		}
	}
	if err := removeNS(path); err != nil {
		return fmt.Errorf("sandbox %s: %w", id, err)
	}
	m.log.Info("sandbox removed", "sandbox", id)
	return nil
}

// Sandboxes lists the ids of the sandboxes present on the machine.
func (m *Manager) Sandboxes(ctx context.Context) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ids, err := m.listNS(kindSbx)
	if err != nil {
		return nil, err
	}
	return uniq(ids), nil
}

// DialContext dials addr, a literal "ip:port" of a container, over TCP from
// inside network's namespace, so a host process (the gateway) reaches
// containers whatever subnet they share with other networks. The connection
// lives in that namespace; the caller's thread does not move.
func (m *Manager) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if err := checkID("network", network); err != nil {
		return nil, err
	}
	// A literal address: a name would be resolved by goroutines on threads
	// outside the namespace.
	if _, err := netip.ParseAddrPort(addr); err != nil {
		return nil, fmt.Errorf("dial %s in network %s: want ip:port: %w", addr, network, ErrInvalid)
	}
	path := m.nsPath(kindNet, network)
	if !isNS(path) {
		return nil, fmt.Errorf("dial %s in network %s: %w", addr, network, ErrNotFound)
	}
	var conn net.Conn
	err := inNS(path, func() error {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		conn = c
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("network %s: %w", network, err)
	}
	return conn, nil
}

// delVeths deletes every veth in the namespace at path; their peers in other
// namespaces go with them.
func delVeths(path string) error {
	h, err := handleAt(path)
	if err != nil {
		return err
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		return err
	}
	for _, l := range links {
		if l.Type() == "veth" {
			if err := h.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
				return fmt.Errorf("delete %s: %w", l.Attrs().Name, err)
			}
		}
	}
	return nil
}

func upLo(h *netlink.Handle) error {
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("lo: %w", err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		return fmt.Errorf("lo up: %w", err)
	}
	return nil
}

// bridgeSubnet is the subnet of the bridge's IPv4 address, or the zero Prefix.
func bridgeSubnet(h *netlink.Handle, br netlink.Link) (netip.Prefix, error) {
	addrs, err := h.AddrList(br, netlink.FAMILY_V4)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("bridge addresses: %w", err)
	}
	for _, a := range addrs {
		if p, ok := prefixOf(a.IPNet); ok {
			return p.Masked(), nil
		}
	}
	return netip.Prefix{}, nil
}

// ensureAddr gives link the address p (h nil: the host), unless it has it.
func ensureAddr(h *netlink.Handle, link netlink.Link, p netip.Prefix) error {
	list, add := netlink.AddrList, netlink.AddrAdd
	if h != nil {
		list, add = h.AddrList, h.AddrAdd
	}
	addrs, err := list(link, netlink.FAMILY_V4)
	if err != nil {
		return err
	}
	for _, a := range addrs {
		if q, ok := prefixOf(a.IPNet); ok && q == p {
			return nil
		}
	}
	if err := add(link, &netlink.Addr{IPNet: ipNet(p)}); err != nil {
		return fmt.Errorf("address %s on %s: %w", p, link.Attrs().Name, err)
	}
	return nil
}

// nextEth is the first of eth0, eth1, ... not among links.
func nextEth(links []netlink.Link) string {
	names := make(map[string]bool)
	for _, l := range links {
		names[l.Attrs().Name] = true
	}
	for i := 0; ; i++ {
		if n := fmt.Sprintf("eth%d", i); !names[n] {
			return n
		}
	}
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}

func prefixLen(n *net.IPNet) int { ones, _ := n.Mask.Size(); return ones }

func uniq(ids []string) []string {
	sort.Strings(ids)
	out := ids[:0]
	for i, id := range ids {
		if i == 0 || id != ids[i-1] {
			out = append(out, id)
		}
	}
	return out
}
