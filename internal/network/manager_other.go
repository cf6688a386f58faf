//go:build !linux

package network

import (
	"context"
	"errors"
	"net"
	"net/netip"
)

// Network namespaces, veths and nftables are Linux's: elsewhere the package
// builds, so that its callers do, and every operation fails.

var errUnsupported = errors.New("private networks need Linux")

func New(opts Options) (*Manager, error) { return nil, errUnsupported }

func (m *Manager) EnsureNetwork(ctx context.Context, id string, subnet netip.Prefix) error {
	return errUnsupported
}
func (m *Manager) RemoveNetwork(ctx context.Context, id string) error     { return errUnsupported }
func (m *Manager) Networks(ctx context.Context) ([]string, error)         { return nil, errUnsupported }
func (m *Manager) Sandbox(ctx context.Context, id string) (string, error) { return "", errUnsupported }
func (m *Manager) RemoveSandbox(ctx context.Context, id string) error     { return errUnsupported }
func (m *Manager) Sandboxes(ctx context.Context) ([]string, error)        { return nil, errUnsupported }
func (m *Manager) Attach(ctx context.Context, sandbox, network string, ip netip.Addr) error {
	return errUnsupported
}
func (m *Manager) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return nil, errUnsupported
}
