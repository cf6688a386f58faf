package network

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestNames(t *testing.T) {
	for _, prefix := range []string{"z", "zos", "zt123", "abcdef"} {
		m := &Manager{opts: Options{Prefix: prefix, NetNSDir: "/run/x"}}
		for _, id := range []string{"1-net", "12345678901234567890-a-very-long-network-name"} {
			for _, name := range []string{m.transitLink(id), m.portLink(id)} {
				if len(name) != ifNameMax || !strings.HasPrefix(name, prefix) {
					t.Errorf("prefix %q id %q: link name %q: want %d characters starting with the prefix", prefix, id, name, ifNameMax)
				}
			}
			if m.transitLink(id) != m.transitLink(id) || m.transitLink(id) == m.portLink(id) {
				t.Errorf("link names not deterministic or not distinct by kind")
			}
		}
		if got := m.nsPath(kindNet, "1-net"); got != "/run/x/"+prefix+"-net-1-net" {
			t.Errorf("nsPath %q", got)
		}
	}
}

func TestOptions(t *testing.T) {
	var o Options
	if err := o.fill(); err != nil || o.Prefix != "zos" || o.NetNSDir != "/run/zos/netns" || o.Transit.String() != "100.127.0.0/16" {
		t.Fatalf("defaults: %+v %v", o, err)
	}
	for _, bad := range []Options{
		{Prefix: "toolong7"},
		{Prefix: "Zos"},
		{Prefix: "1zos"},
		{Prefix: "z-s"},
		{NetNSDir: "relative"},
		{Transit: netip.MustParsePrefix("100.127.0.0/31")},
		{Transit: netip.MustParsePrefix("100.127.0.1/16")},
		{Transit: netip.MustParsePrefix("fd00::/64")},
	} {
		if err := bad.fill(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: %v, want ErrInvalid", bad, err)
		}
	}
}

func TestCheckHost(t *testing.T) {
	subnet := netip.MustParsePrefix("10.1.0.0/24")
	for ip, ok := range map[string]bool{
		"10.1.0.2": true, "10.1.0.254": true, "::ffff:10.1.0.3": true,
		"10.1.0.0": false, "10.1.0.1": false, "10.1.0.255": false, "10.1.1.2": false, "fd00::2": false,
	} {
		if err := checkHost(subnet, netip.MustParseAddr(ip)); (err == nil) != ok {
			t.Errorf("%s: %v", ip, err)
		}
	}
	if b := broadcastOf(netip.MustParsePrefix("10.1.4.0/22")); b.String() != "10.1.7.255" {
		t.Errorf("broadcast of 10.1.4.0/22: %s", b)
	}
}

func TestCanonicalHost(t *testing.T) {
	for in, want := range map[string]string{
		"App.Example": "app.example", "app.example:8080": "app.example", "app.example.": "app.example",
		"[::1]:80": "::1", "10.0.0.1": "10.0.0.1",
	} {
		if got := canonicalHost(in); got != want {
			t.Errorf("canonicalHost(%q) = %q, want %q", in, got, want)
		}
	}
}
