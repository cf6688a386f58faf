package network

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

func TestOneNetwork(t *testing.T) {
	m, _ := newTestManager(t)
	p := setup(t, m,
		map[string]string{"1-net": "10.1.0.0/24"},
		map[string][2]string{"1-a": {"1-net", "10.1.0.2"}, "1-b": {"1-net", "10.1.0.3"}})

	// The sandbox has eth0 with its address and a default route via the gateway.
	h, err := handleAt(p["1-a"])
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	eth0, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if eth0.Attrs().OperState != netlink.OperUp && eth0.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("eth0 is not up")
	}
	addrs, _ := h.AddrList(eth0, netlink.FAMILY_V4)
	if len(addrs) != 1 || addrs[0].IPNet.String() != "10.1.0.2/24" {
		t.Errorf("eth0 addresses %v, want 10.1.0.2/24", addrs)
	}
	routes, _ := h.RouteList(nil, netlink.FAMILY_V4)
	var gw string
	for _, r := range routes {
		if r.Dst == nil || r.Dst.String() == "0.0.0.0/0" {
			gw = r.Gw.String()
		}
	}
	if gw != "10.1.0.1" {
		t.Errorf("default route via %q, want 10.1.0.1 (routes %v)", gw, routes)
	}

	// Containers of one network reach each other.
	listenIn(t, p["1-a"], "10.1.0.2:8080", "a")
	listenIn(t, p["1-b"], ":8080", "b")
	mustReach(t, p["1-b"], "10.1.0.2:8080", "a 10.1.0.3")
	mustReach(t, p["1-a"], "10.1.0.3:8080", "b 10.1.0.2")

	// And the gateway address, the network namespace's bridge.
	npath := m.nsPath(kindNet, "1-net")
	listenIn(t, npath, "10.1.0.1:8081", "gateway")
	mustReach(t, p["1-b"], "10.1.0.1:8081", "gateway 10.1.0.3")

	// Forwarding is on in the network's namespace, off in the sandbox's.
	for path, want := range map[string]string{npath: "1", p["1-a"]: "0"} {
		var got []byte
		inNS(path, func() error {
			got, err = os.ReadFile("/proc/sys/net/ipv4/ip_forward")
			return err
		})
		if strings.TrimSpace(string(got)) != want {
			t.Errorf("ip_forward in %s = %q, want %s", filepath.Base(path), got, want)
		}
	}
}

// twoNetworks is two deployments that chose the same subnet, each with a
// container at 10.1.0.2 answering its own name on port 80.
func twoNetworks(t *testing.T, m *Manager) map[string]string {
	p := setup(t, m,
		map[string]string{"1-net": "10.1.0.0/24", "2-net": "10.1.0.0/24"},
		map[string][2]string{
			"1-a": {"1-net", "10.1.0.2"}, "1-b": {"1-net", "10.1.0.3"},
			"2-a": {"2-net", "10.1.0.2"}, "2-c": {"2-net", "10.1.0.9"},
		})
	listenIn(t, p["1-a"], ":80", "one")
	listenIn(t, p["2-a"], ":80", "two")
	listenIn(t, p["2-c"], ":80", "two-c")
	return p
}

func TestSameSubnetIsolated(t *testing.T) {
	m, opts := newTestManager(t)
	p := twoNetworks(t, m)

	// Each network works on its own, with the same addresses.
	mustReach(t, p["1-b"], "10.1.0.2:80", "one 10.1.0.3")
	mustReach(t, p["2-c"], "10.1.0.2:80", "two 10.1.0.9")

	// Network 2's container at an address free in network 1.
	mustNotReach(t, p["1-b"], "10.1.0.9:80")

	// Network 2's bridge: 10.1.0.1 is network 1's own gateway from here.
	listenIn(t, m.nsPath(kindNet, "2-net"), "10.1.0.1:82", "bridge-2")
	mustNotReach(t, p["1-b"], "10.1.0.1:82")

	// Network 2's namespace at its transit address, and the host's end of
	// both transits: the host forwards nothing between transits and takes
	// nothing from them.
	transit2 := transitAddrs(t, m, "2-net")
	transit1 := transitAddrs(t, m, "1-net")
	if !opts.Transit.Contains(transit1[0]) || transit1[0] == transit2[0] {
		t.Fatalf("transit addresses %v and %v: want distinct, in %s", transit1, transit2, opts.Transit)
	}
	listenIn(t, m.nsPath(kindNet, "2-net"), ":83", "transit-2")
	mustNotReach(t, p["1-b"], netip.AddrPortFrom(transit2[1], 83).String())
	host := listenHost(t, "host")
	mustNotReach(t, p["1-b"], netip.AddrPortFrom(transit2[0], host).String())
	mustNotReach(t, p["1-b"], netip.AddrPortFrom(transit1[0], host).String())
	// Nor does the host reach into a network.
	if c, err := net.DialTimeout("tcp", netip.AddrPortFrom(transit2[1], 83).String(), 400*time.Millisecond); err == nil {
		c.Close()
		t.Fatalf("the host reached network 2's namespace at %s", transit2[1])
	}
}

// transitAddrs is [host end, namespace end] of network id's transit.
func transitAddrs(t *testing.T, m *Manager, id string) [2]netip.Addr {
	t.Helper()
	l, err := netlink.LinkByName(m.transitLink(id))
	if err != nil {
		t.Fatal(err)
	}
	slot, err := m.transitSlot(l)
	if err != nil || !slot.IsValid() {
		t.Fatalf("transit of %s: %v %v", id, slot, err)
	}
	return [2]netip.Addr{slot.Addr().Next(), slot.Addr().Next().Next()}
}

// listenHost listens on all the host's addresses and returns the port.
func listenHost(t *testing.T, name string) uint16 {
	t.Helper()
	ln, err := net.Listen("tcp4", ":0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "%s\n", name)
			c.Close()
		}
	}()
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

func TestOutboundNAT(t *testing.T) {
	m, opts := newTestManager(t)
	p := setup(t, m,
		map[string]string{"1-net": "10.1.0.0/24"},
		map[string][2]string{"1-a": {"1-net", "10.1.0.2"}})

	// "The outside": a namespace behind a veth of the host, as the internet is
	// behind eth0. The host has 198.51.100.1 on it, the outside .2.
	upPath := filepath.Join(opts.NetNSDir, "upstream")
	if _, err := ensureNS(upPath); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeNS(upPath) })
	ns, err := netns.GetFromPath(upPath)
	if err != nil {
		t.Fatal(err)
	}
	attrs := netlink.NewLinkAttrs()
	attrs.Name = opts.Prefix + "u0"
	err = netlink.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: "eth0", PeerNamespace: netlink.NsFd(ns)})
	ns.Close()
	if err != nil {
		t.Fatal(err)
	}
	host, _ := netlink.LinkByName(attrs.Name)
	t.Cleanup(func() { netlink.LinkDel(host) })
	if err := ensureAddr(nil, host, netip.MustParsePrefix("198.51.100.1/30")); err != nil {
		t.Fatal(err)
	}
	netlink.LinkSetUp(host)
	uh, err := handleAt(upPath)
	if err != nil {
		t.Fatal(err)
	}
	defer uh.Close()
	upLo(uh)
	eth0, _ := uh.LinkByName("eth0")
	if err := ensureAddr(uh, eth0, netip.MustParsePrefix("198.51.100.2/30")); err != nil {
		t.Fatal(err)
	}
	uh.LinkSetUp(eth0)
	listenIn(t, upPath, "198.51.100.2:9000", "outside")

	// The connection arrives from the host's address: masqueraded in the
	// network's namespace to the transit address, then by the host.
	mustReach(t, p["1-a"], "198.51.100.2:9000", "outside 198.51.100.1")
}

func TestDialContext(t *testing.T) {
	m, _ := newTestManager(t)
	twoNetworks(t, m)
	ctx := context.Background()
	for net, want := range map[string]string{"1-net": "one", "2-net": "two"} {
		c, err := m.DialContext(ctx, net, "10.1.0.2:80")
		if err != nil {
			t.Fatalf("%s: %v", net, err)
		}
		got, err := readLine(c, 2*time.Second)
		if err != nil || !strings.HasPrefix(got, want+" 10.1.0.1") {
			t.Errorf("%s: got %q, %v; want %q from the gateway address", net, got, err, want+" 10.1.0.1")
		}
	}
	if _, err := m.DialContext(ctx, "3-net", "10.1.0.2:80"); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown network: %v, want ErrNotFound", err)
	}
	if _, err := m.DialContext(ctx, "1-net", "app.example:80"); !errors.Is(err, ErrInvalid) {
		t.Errorf("a name: %v, want ErrInvalid", err)
	}
	tctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if c, err := m.DialContext(tctx, "1-net", "10.1.0.77:80"); err == nil {
		c.Close()
		t.Errorf("dialed an absent container")
	}
	// The caller's thread and the Manager's later dials are in the host's
	// namespace still: a plain dial reaches the host's loopback.
	port := listenHost(t, "host")
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := readLine(c, time.Second); got != "host" {
		t.Errorf("host loopback answered %q", got)
	}
}

func TestRestart(t *testing.T) {
	m, opts := newTestManager(t)
	ctx := context.Background()
	p := setup(t, m,
		map[string]string{"7-net": "10.7.0.0/24"},
		map[string][2]string{"7-a": {"7-net", "10.7.0.2"}})
	listenIn(t, p["7-a"], ":80", "a")
	before := transitAddrs(t, m, "7-net")

	m2, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	nets, err := m2.Networks(ctx)
	if err != nil || fmt.Sprint(nets) != "[7-net]" {
		t.Fatalf("Networks after restart: %v %v", nets, err)
	}
	sbx, err := m2.Sandboxes(ctx)
	if err != nil || fmt.Sprint(sbx) != "[7-a]" {
		t.Fatalf("Sandboxes after restart: %v %v", sbx, err)
	}
	// The new agent re-applies the same state: nothing changes.
	if err := m2.EnsureNetwork(ctx, "7-net", netip.MustParsePrefix("10.7.0.0/24")); err != nil {
		t.Fatal(err)
	}
	if path, err := m2.Sandbox(ctx, "7-a"); err != nil || path != p["7-a"] {
		t.Fatalf("Sandbox after restart: %q %v", path, err)
	}
	if err := m2.Attach(ctx, "7-a", "7-net", netip.MustParseAddr("10.7.0.2")); err != nil {
		t.Fatal(err)
	}
	if after := transitAddrs(t, m2, "7-net"); after != before {
		t.Errorf("transit moved from %v to %v", before, after)
	}
	c, err := m2.DialContext(ctx, "7-net", "10.7.0.2:80")
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := readLine(c, time.Second); got != "a 10.7.0.1" {
		t.Errorf("after restart the container answered %q", got)
	}

	transit := m.transitLink("7-net")
	if !strings.Contains(nftRuleset(t), "table inet "+opts.Prefix+" ") {
		t.Errorf("no host table %s while a network exists", opts.Prefix)
	}
	if err := m2.RemoveSandbox(ctx, "7-a"); err != nil {
		t.Fatal(err)
	}
	if err := m2.RemoveNetwork(ctx, "7-net"); err != nil {
		t.Fatal(err)
	}
	for _, again := range []func() error{
		func() error { return m2.RemoveSandbox(ctx, "7-a") },
		func() error { return m2.RemoveNetwork(ctx, "7-net") },
	} {
		if err := again(); err != nil {
			t.Errorf("second remove: %v", err)
		}
	}
	if names := hostLinks(t, opts.Prefix); len(names) > 0 {
		t.Errorf("links left: %v", names)
	}
	if entries, _ := os.ReadDir(opts.NetNSDir); len(entries) > 0 {
		t.Errorf("namespace files left: %v", entries)
	}
	if rules := nftRuleset(t); strings.Contains(rules, opts.Prefix) || strings.Contains(rules, transit) || strings.Contains(rules, opts.Transit.String()) {
		t.Errorf("nft rules left:\n%s", rules)
	}
	nets, _ = m2.Networks(ctx)
	sbx, _ = m2.Sandboxes(ctx)
	if len(nets)+len(sbx) > 0 {
		t.Errorf("after removal: networks %v, sandboxes %v", nets, sbx)
	}
}

func TestIdempotenceAndRefusals(t *testing.T) {
	m, _ := newTestManager(t)
	ctx := context.Background()
	subnet := netip.MustParsePrefix("10.1.0.0/24")
	ip := netip.MustParseAddr
	for range 2 {
		if err := m.EnsureNetwork(ctx, "1-net", subnet); err != nil {
			t.Fatal(err)
		}
	}
	p1, err := m.Sandbox(ctx, "1-a")
	if err != nil {
		t.Fatal(err)
	}
	if p2, err := m.Sandbox(ctx, "1-a"); err != nil || p2 != p1 {
		t.Fatalf("second Sandbox: %q %v, want %q", p2, err, p1)
	}
	for range 2 {
		if err := m.Attach(ctx, "1-a", "1-net", ip("10.1.0.2")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := m.Sandbox(ctx, "1-b"); err != nil {
		t.Fatal(err)
	}
	h, _ := handleAt(p1)
	links, _ := h.LinkList()
	h.Close()
	if len(links) != 2 {
		t.Errorf("sandbox links after two Attach: %d, want lo and eth0", len(links))
	}

	for _, tc := range []struct {
		name string
		err  error
		want error
	}{
		{"another subnet", m.EnsureNetwork(ctx, "1-net", netip.MustParsePrefix("10.2.0.0/24")), ErrConflict},
		{"not a network address", m.EnsureNetwork(ctx, "2-net", netip.MustParsePrefix("10.2.0.1/24")), ErrInvalid},
		{"IPv6 subnet", m.EnsureNetwork(ctx, "2-net", netip.MustParsePrefix("fd00::/64")), ErrInvalid},
		{"bad network id", m.EnsureNetwork(ctx, "../x", subnet), ErrInvalid},
		{"bad sandbox id", func() error { _, err := m.Sandbox(ctx, "a b"); return err }(), ErrInvalid},
		{"outside the subnet", m.Attach(ctx, "1-b", "1-net", ip("10.2.0.2")), ErrInvalid},
		{"the gateway", m.Attach(ctx, "1-b", "1-net", ip("10.1.0.1")), ErrInvalid},
		{"the network address", m.Attach(ctx, "1-b", "1-net", ip("10.1.0.0")), ErrInvalid},
		{"the broadcast address", m.Attach(ctx, "1-b", "1-net", ip("10.1.0.255")), ErrInvalid},
		{"another sandbox's address", m.Attach(ctx, "1-b", "1-net", ip("10.1.0.2")), ErrConflict},
		{"a second address", m.Attach(ctx, "1-a", "1-net", ip("10.1.0.3")), ErrConflict},
		{"no such network", m.Attach(ctx, "1-a", "9-net", ip("10.1.0.3")), ErrNotFound},
		{"no such sandbox", m.Attach(ctx, "9-a", "1-net", ip("10.1.0.3")), ErrNotFound},
	} {
		if !errors.Is(tc.err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, tc.err, tc.want)
		} else {
			t.Logf("%s: %v", tc.name, tc.err)
		}
	}
	// Nothing was left of the refused ones.
	if nets, _ := m.Networks(ctx); fmt.Sprint(nets) != "[1-net]" {
		t.Errorf("networks %v, want [1-net]", nets)
	}
}

func TestConcurrentNetworks(t *testing.T) {
	m, _ := newTestManager(t)
	ctx := context.Background()
	const n = 6
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			errs[i] = m.EnsureNetwork(ctx, fmt.Sprintf("%d-net", i), netip.MustParsePrefix("10.1.0.0/24"))
		})
	}
	wg.Wait()
	seen := make(map[netip.Addr]string)
	for i := range n {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		id := fmt.Sprintf("%d-net", i)
		a := transitAddrs(t, m, id)[0]
		if other, ok := seen[a]; ok {
			t.Errorf("%s and %s share transit %s", id, other, a)
		}
		seen[a] = id
	}
}

func TestTwoAttachments(t *testing.T) {
	m, opts := newTestManager(t)
	ctx := context.Background()
	p := setup(t, m,
		map[string]string{"3-front": "10.3.1.0/24", "3-back": "10.3.2.0/24"},
		map[string][2]string{"3-web": {"3-front", "10.3.1.2"}, "3-db": {"3-back", "10.3.2.2"}})
	if err := m.Attach(ctx, "3-web", "3-back", netip.MustParseAddr("10.3.2.3")); err != nil {
		t.Fatal(err)
	}
	listenIn(t, p["3-db"], ":5432", "db")
	mustReach(t, p["3-web"], "10.3.2.2:5432", "db 10.3.2.3")

	defaultVia := func() (string, string) {
		h, err := handleAt(p["3-web"])
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		routes, _ := h.RouteList(nil, netlink.FAMILY_V4)
		for _, r := range routes {
			if r.Dst == nil || r.Dst.String() == "0.0.0.0/0" {
				l, _ := h.LinkByIndex(r.LinkIndex)
				return r.Gw.String(), l.Attrs().Name
			}
		}
		return "", ""
	}
	if gw, dev := defaultVia(); gw != "10.3.1.1" || dev != "eth0" {
		t.Errorf("default route via %s dev %s, want 10.3.1.1 dev eth0 (the first attachment)", gw, dev)
	}

	// The first network goes: the next Attach of the other gives the way out.
	if err := m.RemoveNetwork(ctx, "3-front"); err != nil {
		t.Fatal(err)
	}
	if gw, _ := defaultVia(); gw != "" {
		t.Errorf("default route via %s after its network went", gw)
	}
	if err := m.Attach(ctx, "3-web", "3-back", netip.MustParseAddr("10.3.2.3")); err != nil {
		t.Fatal(err)
	}
	if gw, dev := defaultVia(); gw != "10.3.2.1" || dev != "eth1" {
		t.Errorf("default route via %s dev %s, want 10.3.2.1 dev eth1", gw, dev)
	}

	// A flushed host table comes back with the next EnsureNetwork.
	if err := nft(ctx, "", deleteTable("inet", opts.Prefix)); err != nil {
		t.Fatal(err)
	}
	if err := m.EnsureNetwork(ctx, "3-back", netip.MustParsePrefix("10.3.2.0/24")); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(nftRuleset(t), "table inet "+opts.Prefix+" ") {
		t.Errorf("host table not restored")
	}
}
