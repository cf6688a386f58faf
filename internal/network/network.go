package network

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
)

// Errors callers tell apart with errors.Is.
var (
	// ErrNotFound: the network or sandbox named does not exist on this machine.
	ErrNotFound = errors.New("not found")
	// ErrConflict: the request contradicts what exists (another subnet for a
	// network id, an address another sandbox holds, a second address for one
	// attachment).
	ErrConflict = errors.New("conflict")
	// ErrInvalid: a malformed id, subnet, address or option.
	ErrInvalid = errors.New("invalid")
)

// Options configure a Manager. The zero value is the node's default.
type Options struct {
	Prefix   string       // interface and namespace name prefix, default "zos"
	NetNSDir string       // where namespaces are bind-mounted, default /run/zos/netns
	Transit  netip.Prefix // host-side transit range, default 100.127.0.0/16
	Logger   *slog.Logger
}

const (
	defaultPrefix   = "zos"
	defaultNetNSDir = "/run/zos/netns"
	maxPrefix       = 6  // leaves at least 8 hex digits of hash in a 15-char interface name
	maxID           = 64 // ids are file names and link aliases
	ifNameMax       = 15 // IFNAMSIZ - 1

	bridgeName  = "br"      // inside a network's namespace
	transitName = "transit" // the network namespace's end of its transit veth
)

var defaultTransit = netip.MustParsePrefix("100.127.0.0/16")

// Manager owns the private networks and container sandboxes of this machine.
// It keeps no state of its own: everything it needs after a restart is read
// back from the namespaces under NetNSDir and from the links it named (see the
// package doc, "Names and recovery after a restart"). Safe for concurrent use.
type Manager struct {
	opts Options
	log  *slog.Logger

	mu sync.Mutex // serialises every change to links, namespaces and rules
}

func (o *Options) fill() error {
	if o.Prefix == "" {
		o.Prefix = defaultPrefix
	}
	if len(o.Prefix) > maxPrefix {
		return fmt.Errorf("prefix %q: longer than %d characters: %w", o.Prefix, maxPrefix, ErrInvalid)
	}
	for i, c := range o.Prefix {
		if !(c >= 'a' && c <= 'z' || i > 0 && c >= '0' && c <= '9') {
			return fmt.Errorf("prefix %q: want a lower-case letter then letters or digits: %w", o.Prefix, ErrInvalid)
		}
	}
	if o.NetNSDir == "" {
		o.NetNSDir = defaultNetNSDir
	}
	if !filepath.IsAbs(o.NetNSDir) {
		return fmt.Errorf("netns dir %q: not absolute: %w", o.NetNSDir, ErrInvalid)
	}
	if !o.Transit.IsValid() {
		o.Transit = defaultTransit
	}
	if !o.Transit.Addr().Is4() || o.Transit.Bits() > 30 || o.Transit.Bits() < 8 || o.Transit != o.Transit.Masked() {
		return fmt.Errorf("transit range %s: want an IPv4 network between /8 and /30: %w", o.Transit, ErrInvalid)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// checkID refuses ids that could not be a file name or a link alias.
func checkID(kind, id string) error {
	if id == "" || len(id) > maxID || id == "." || id == ".." {
		return fmt.Errorf("%s id %q: want 1 to %d characters: %w", kind, id, maxID, ErrInvalid)
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("%s id %q: only letters, digits, '-', '_' and '.': %w", kind, id, ErrInvalid)
		}
	}
	return nil
}

// checkSubnet refuses what cannot be a private network: it must be an IPv4
// network address with room for a gateway and at least one container.
func checkSubnet(subnet netip.Prefix) error {
	if !subnet.IsValid() || !subnet.Addr().Is4() || subnet.Bits() < 8 || subnet.Bits() > 30 {
		return fmt.Errorf("subnet %s: want an IPv4 network between /8 and /30: %w", subnet, ErrInvalid)
	}
	if subnet != subnet.Masked() {
		return fmt.Errorf("subnet %s: not a network address (%s): %w", subnet, subnet.Masked(), ErrInvalid)
	}
	return nil
}

// gatewayOf is the subnet's first host: the bridge's address, the containers'
// default route.
func gatewayOf(subnet netip.Prefix) netip.Addr { return subnet.Addr().Next() }

// broadcastOf is the subnet's last address.
func broadcastOf(subnet netip.Prefix) netip.Addr {
	a := subnet.Addr().As4()
	host := uint32(1)<<(32-subnet.Bits()) - 1
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// checkHost refuses an address a container cannot hold in subnet.
func checkHost(subnet netip.Prefix, ip netip.Addr) error {
	ip = ip.Unmap()
	switch {
	case !ip.Is4() || !subnet.Contains(ip):
		return fmt.Errorf("address %s: outside subnet %s: %w", ip, subnet, ErrInvalid)
	case ip == subnet.Addr():
		return fmt.Errorf("address %s: the network address of %s: %w", ip, subnet, ErrInvalid)
	case ip == gatewayOf(subnet):
		return fmt.Errorf("address %s: the gateway of %s: %w", ip, subnet, ErrInvalid)
	case ip == broadcastOf(subnet):
		return fmt.Errorf("address %s: the broadcast address of %s: %w", ip, subnet, ErrInvalid)
	}
	return nil
}

// Names. Namespace files are "<prefix>-net-<id>" and "<prefix>-sbx-<id>" under
// NetNSDir; links the host sees are "<prefix><kind><hash>", 15 characters.

const (
	kindNet = "net"
	kindSbx = "sbx"
)

func (m *Manager) nsPath(kind, id string) string {
	return filepath.Join(m.opts.NetNSDir, m.nsPrefix(kind)+id)
}

func (m *Manager) nsPrefix(kind string) string { return m.opts.Prefix + "-" + kind + "-" }

// linkName is prefix, one letter for the kind, and as many hex digits of
// sha256(key) as fit.
func (m *Manager) linkName(kind byte, key string) string {
	sum := sha256.Sum256([]byte(key))
	n := ifNameMax - len(m.opts.Prefix) - 1
	return m.opts.Prefix + string(kind) + hex.EncodeToString(sum[:])[:n]
}

// transitLink is the host's end of network id's transit veth.
func (m *Manager) transitLink(id string) string { return m.linkName('t', id) }

// portLink is the network namespace's end of sandbox's veth, a bridge port.
func (m *Manager) portLink(sandbox string) string { return m.linkName('v', sandbox) }

// Link aliases record whose a link is, since names are hashes.
const (
	aliasNet = "net:" // + network id: host transit link; sandbox end of a veth
	aliasSbx = "sbx:" // + sandbox id + " " + ip: the bridge port of a sandbox
)

func portAlias(sandbox string, ip netip.Addr) string { return aliasSbx + sandbox + " " + ip.String() }

func parsePortAlias(alias string) (sandbox string, ip netip.Addr, ok bool) {
	rest, ok := strings.CutPrefix(alias, aliasSbx)
	if !ok {
		return "", netip.Addr{}, false
	}
	sandbox, addr, ok := strings.Cut(rest, " ")
	if !ok {
		return "", netip.Addr{}, false
	}
	ip, err := netip.ParseAddr(addr)
	return sandbox, ip, err == nil
}
