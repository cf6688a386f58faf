package node

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/zosgrid/zos/internal/flist"
	"github.com/zosgrid/zos/internal/runtime"
)

// In-memory parts for the agent's logic tests. The real runtime, network
// and mounts are exercised by the end-to-end test in cmd/zos.

type fakeRuntime struct {
	mu     sync.Mutex
	cs     map[string]*runtime.State
	specs  map[string]runtime.Spec
	starts map[string]int
	fail   error // Start fails with it
}

func newFakeRuntime() *fakeRuntime {
	return &fakeRuntime{cs: map[string]*runtime.State{}, specs: map[string]runtime.Spec{}, starts: map[string]int{}}
}

func (f *fakeRuntime) Start(_ context.Context, s runtime.Spec) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	if _, ok := f.cs[s.ID]; ok {
		return runtime.ErrExists
	}
	f.cs[s.ID] = &runtime.State{ID: s.ID, Status: runtime.Running, Pid: 1000 + len(f.cs), Started: time.Now(), ExitCode: -1}
	f.specs[s.ID] = s
	f.starts[s.ID]++
	return nil
}

func (f *fakeRuntime) State(_ context.Context, id string) (runtime.State, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.cs[id]
	if !ok {
		return runtime.State{}, fmt.Errorf("%s: %w", id, runtime.ErrNotFound)
	}
	return *s, nil
}

func (f *fakeRuntime) List(context.Context) ([]runtime.State, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []runtime.State
	for _, s := range f.cs {
		out = append(out, *s)
	}
	return out, nil
}

func (f *fakeRuntime) Stop(_ context.Context, id string, _ time.Duration) error {
	f.exit(id, 143, false)
	return nil
}

func (f *fakeRuntime) Delete(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.cs, id)
	return nil
}

// exit makes container id exit with code.
func (f *fakeRuntime) exit(id string, code int, oom bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s, ok := f.cs[id]; ok {
		s.Status, s.ExitCode, s.OOMKilled, s.Pid = runtime.Stopped, code, oom, 0
	}
}

func (f *fakeRuntime) ids() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for id := range f.cs {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

type fakeNetwork struct {
	mu        sync.Mutex
	networks  map[string]netip.Prefix
	sandboxes map[string]map[string]netip.Addr
}

func newFakeNetwork() *fakeNetwork {
	return &fakeNetwork{networks: map[string]netip.Prefix{}, sandboxes: map[string]map[string]netip.Addr{}}
}

func (f *fakeNetwork) EnsureNetwork(_ context.Context, id string, subnet netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if p, ok := f.networks[id]; ok && p != subnet {
		return fmt.Errorf("network %s has subnet %s", id, p)
	}
	f.networks[id] = subnet
	return nil
}

func (f *fakeNetwork) RemoveNetwork(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.networks, id)
	return nil
}

func (f *fakeNetwork) Networks(context.Context) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for id := range f.networks {
		out = append(out, id)
	}
	sort.Strings(out)
	return out, nil
}

func (f *fakeNetwork) Sandbox(_ context.Context, id string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.sandboxes[id] == nil {
		f.sandboxes[id] = map[string]netip.Addr{}
	}
	return "/run/fake/" + id, nil
}

func (f *fakeNetwork) Attach(_ context.Context, sandbox, network string, ip netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.networks[network]
	if !ok {
		return fmt.Errorf("no network %s", network)
	}
	if !p.Contains(ip) {
		return fmt.Errorf("%s not in %s", ip, p)
	}
	f.sandboxes[sandbox][network] = ip
	return nil
}

func (f *fakeNetwork) RemoveSandbox(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.sandboxes, id)
	return nil
}

func (f *fakeNetwork) Sandboxes(context.Context) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for id := range f.sandboxes {
		out = append(out, id)
	}
	sort.Strings(out)
	return out, nil
}

type fakeGateway struct {
	mu    sync.Mutex
	hosts map[string]string
}

func (g *fakeGateway) Set(host, network string, target netip.AddrPort) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.hosts[host] = network + " " + target.String()
}

func (g *fakeGateway) Remove(host string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.hosts, host)
}

func (g *fakeGateway) Hosts() map[string]string {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := map[string]string{}
	for k, v := range g.hosts {
		out[k] = v
	}
	return out
}

// fakeMounter records mounts: images, and overlays stacked on them. A
// test kills a mount by deleting it from mounted.
type fakeMounter struct {
	mu      sync.Mutex
	mounted map[string]Mount
	ids     map[string]uint64 // mount point -> unique mount ID
	stacked map[string]uint64 // layer -> the image mount ID it was stacked on
	last    uint64
	fail    error
}

func newFakeMounter() *fakeMounter {
	return &fakeMounter{mounted: map[string]Mount{}, ids: map[string]uint64{}, stacked: map[string]uint64{}}
}

func (f *fakeMounter) MountImage(_ context.Context, m Mount) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	if _, ok := f.mounted[m.Dir]; ok {
		return fmt.Errorf("%s: already mounted", m.Dir)
	}
	f.last++
	f.mounted[m.Dir], f.ids[m.Dir] = m, f.last
	return nil
}

func (f *fakeMounter) Overlay(_ context.Context, m Mount) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	if _, ok := f.mounted[m.Image]; !ok {
		return fmt.Errorf("image %s not mounted", m.Image)
	}
	if _, ok := f.mounted[m.Dir]; ok {
		return fmt.Errorf("%s: already mounted", m.Dir)
	}
	f.last++
	f.mounted[m.Dir], f.ids[m.Dir] = m, f.last
	f.stacked[m.Layer] = f.ids[m.Image]
	return nil
}

func (f *fakeMounter) Unmount(_ context.Context, dir string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.mounted, dir)
	return nil
}

func (f *fakeMounter) Alive(dir string, _ map[string]bool) (uint64, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.mounted[dir]; !ok {
		return 0, false
	}
	return f.ids[dir], true
}

func (f *fakeMounter) StackedOn(layer string) (uint64, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	id, ok := f.stacked[layer]
	return id, ok
}

// count returns the number of mounts: images and overlays.
func (f *fakeMounter) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.mounted)
}

// kill makes the mounts whose point is under prefix dead, as if their
// servers died.
func (f *fakeMounter) kill(prefix string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for dir := range f.mounted {
		if strings.HasPrefix(dir, prefix) {
			delete(f.mounted, dir)
		}
	}
}

func flistDigest(fl []byte) (string, error) {
	r, err := flist.Open(fl)
	if err != nil {
		return "", err
	}
	return r.Digest().String(), nil
}

func ioNopCloser(b []byte) io.ReadCloser { return io.NopCloser(bytes.NewReader(b)) }

func runtimeSpec(id string) runtime.Spec { return runtime.Spec{ID: id, Args: []string{"true"}} }

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func mustAddrPort(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }
