package network

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// newTestManager returns a Manager with a prefix, transit range and netns
// directory of this test's own; everything it made is removed in Cleanup and
// the removal checked.
func newTestManager(t *testing.T) (*Manager, Options) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces, veths and nftables rules")
	}
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("needs nft (Debian package nftables)")
	}
	const letters = "abcdefghijklmnopqrstuvwxyz"
	prefix := "zt"
	for range 3 {
		prefix += string(letters[rand.IntN(len(letters))])
	}
	opts := Options{
		Prefix:   prefix,
		NetNSDir: filepath.Join(t.TempDir(), "netns"),
		Transit:  netip.PrefixFrom(netip.AddrFrom4([4]byte{100, 127, byte(rand.IntN(256)), 0}), 24),
	}
	m, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// A Manager of its own, as an agent after a restart would do it.
		ctx := context.Background()
		c, err := New(opts)
		if err != nil {
			t.Error(err)
			return
		}
		sbx, _ := c.Sandboxes(ctx)
		for _, id := range sbx {
			if err := c.RemoveSandbox(ctx, id); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
		nets, _ := c.Networks(ctx)
		for _, id := range nets {
			if err := c.RemoveNetwork(ctx, id); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
		// Whatever is still mounted must go before TempDir's removal.
		entries, _ := os.ReadDir(opts.NetNSDir)
		for _, e := range entries {
			t.Errorf("cleanup: %s left in the netns dir", e.Name())
			removeNS(filepath.Join(opts.NetNSDir, e.Name()))
		}
		if names := hostLinks(t, prefix); len(names) > 0 {
			t.Errorf("cleanup: links left: %v", names)
			for _, n := range names {
				if l, err := netlink.LinkByName(n); err == nil {
					netlink.LinkDel(l)
				}
			}
		}
		if rules := nftRuleset(t); strings.Contains(rules, "table inet "+prefix+" ") {
			t.Errorf("cleanup: table inet %s left", prefix)
			nft(ctx, "", deleteTable("inet", prefix))
		}
	})
	return m, opts
}

// hostLinks lists the host's links whose names start with prefix.
func hostLinks(t *testing.T, prefix string) []string {
	t.Helper()
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, prefix) {
			names = append(names, l.Attrs().Name)
		}
	}
	return names
}

func nftRuleset(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("nft", "list", "ruleset").CombinedOutput()
	if err != nil {
		t.Fatalf("nft list ruleset: %v: %s", err, out)
	}
	return string(out)
}

// listenIn listens on addr inside the namespace at path and answers every
// connection with "<name> <remote ip>\n". Closed in Cleanup.
func listenIn(t *testing.T, path, addr, name string) net.Listener {
	t.Helper()
	var ln net.Listener
	err := inNS(path, func() error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		t.Fatalf("listen on %s in %s: %v", addr, path, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			ip, _, _ := net.SplitHostPort(c.RemoteAddr().String())
			fmt.Fprintf(c, "%s %s\n", name, ip)
			c.Close()
		}
	}()
	return ln
}

// dialIn dials addr from inside the namespace at path and reads the
// listener's one line.
func dialIn(path, addr string, timeout time.Duration) (string, error) {
	var conn net.Conn
	err := inNS(path, func() error {
		var err error
		conn, err = net.DialTimeout("tcp", addr, timeout)
		return err
	})
	if err != nil {
		return "", err
	}
	return readLine(conn, timeout)
}

func readLine(conn net.Conn, timeout time.Duration) (string, error) {
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(timeout))
	line, err := bufio.NewReader(conn).ReadString('\n')
	return strings.TrimSpace(line), err
}

// mustReach asserts that a dial from path to addr gets want.
func mustReach(t *testing.T, path, addr, want string) {
	t.Helper()
	start := time.Now()
	got, err := dialIn(path, addr, 2*time.Second)
	if d := time.Since(start); d > 200*time.Millisecond {
		t.Logf("slow dial %s from %s: %v (a retransmission; see the package report)", addr, filepath.Base(path), d)
	}
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, filepath.Base(path), err)
	}
	if got != want {
		t.Fatalf("dial %s from %s: got %q, want %q", addr, filepath.Base(path), got, want)
	}
}

// mustNotReach asserts that a dial from path to addr fails quickly (refused,
// unreachable or timed out).
func mustNotReach(t *testing.T, path, addr string) {
	t.Helper()
	got, err := dialIn(path, addr, 400*time.Millisecond)
	if err == nil {
		t.Fatalf("dial %s from %s: reached %q, want a failure", addr, filepath.Base(path), got)
	}
	t.Logf("dial %s from %s: %v (as it should)", addr, filepath.Base(path), err)
}

// setup makes networks (id -> subnet) and sandboxes (id -> network, ip).
func setup(t *testing.T, m *Manager, nets map[string]string, sbxs map[string][2]string) map[string]string {
	t.Helper()
	ctx := context.Background()
	for id, subnet := range nets {
		if err := m.EnsureNetwork(ctx, id, netip.MustParsePrefix(subnet)); err != nil {
			t.Fatal(err)
		}
	}
	paths := make(map[string]string)
	for id, att := range sbxs {
		p, err := m.Sandbox(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Attach(ctx, id, att[0], netip.MustParseAddr(att[1])); err != nil {
			t.Fatal(err)
		}
		paths[id] = p
	}
	return paths
}
