package node

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/mount"
	"github.com/zosgrid/zos/internal/node/nodeclient"
	"github.com/zosgrid/zos/internal/runtime"
	"github.com/zosgrid/zos/internal/spec"
)

// StopGrace is how long a container has to exit after SIGTERM when it is
// deleted or recreated, before SIGKILL.
const StopGrace = 5 * time.Second

// crashState is a container's restart bookkeeping.
type crashState struct {
	restarts int
	next     time.Time // no restart before
	started  time.Time
	exit     *int
	oom      bool
}

// desired is what one reconcile pass wants to exist; the rest is removed.
type desired struct {
	containers map[string]bool
	sandboxes  map[string]bool
	networks   map[string]bool
	mounts     map[string]bool        // root filesystem mount points
	images     map[string]imageMount  // image mount points
	stores     map[digest.ID][]string // an image's stores: those of every deployment running it
	volumes    map[string]bool        // volume names (volumeName)
	hosts      map[string]bool
	hostOwner  map[string]uint64 // gateway host -> the deployment that got it first
	points     map[string]bool   // mount points when the pass began
	partial    bool              // a deployment could not be read: remove nothing this pass
}

// imageMount is what a pass found of an image mount: its unique mount ID
// once ensured, or why it could not be mounted.
type imageMount struct {
	id  uint64
	err error
}

// Names of things on the machine. Runtime ids and sandboxes are
// "d<deployment>-<workload>"; networks "<deployment>-<name>".
func containerID(dep uint64, name string) string {
	id := fmt.Sprintf("d%d-%s", dep, name)
	if len(id) > 64 {
		sum := sha256.Sum256([]byte(name))
		id = fmt.Sprintf("d%d-%s", dep, hex.EncodeToString(sum[:6]))
	}
	return id
}

func networkID(dep uint64, name string) string { return fmt.Sprintf("%d-%s", dep, name) }

func volumeName(dep uint64, name string) string { return fmt.Sprintf("d%d-%s", dep, name) }

func (a *Agent) depDir(dep uint64) string {
	return filepath.Join(a.opts.Data, "deployments", strconv.FormatUint(dep, 10))
}

// workDir holds a container's root mount point, writable layer and log.
func (a *Agent) workDir(dep uint64, name string) string {
	return filepath.Join(a.depDir(dep), name)
}

// reconcile makes the machine match the accepted deployments: it creates
// what is missing, restarts what crashed, tears down what was deleted and
// removes what nothing wants (leftovers of a crash of the agent).
func (a *Agent) reconcile(ctx context.Context) {
	recs, err := a.db.list()
	if err != nil {
		a.log.Error("reconcile: state", "err", err)
		return
	}
	// Each active deployment's spec is parsed once per pass: the image
	// stores of all of them are needed before the first container.
	specs := map[uint64]*spec.Deployment{}
	want := desired{
		containers: map[string]bool{}, sandboxes: map[string]bool{}, networks: map[string]bool{}, mounts: map[string]bool{},
		images: map[string]imageMount{}, volumes: map[string]bool{}, hosts: map[string]bool{},
		hostOwner: map[string]uint64{},
	}
	for _, r := range recs {
		if r.State != nodeclient.StateActive {
			continue
		}
		d, err := spec.Parse(r.Spec)
		if err != nil {
			// It verified when accepted: a parse failure now is damage to the state.
			a.log.Error("deployment spec unreadable", "deployment", r.ID, "err", err)
			want.partial = true
			continue
		}
		specs[r.ID] = d
	}
	want.stores = imageStoreSets(specs)
	want.points, err = mount.Points()
	if err != nil {
		a.log.Error("reconcile: mount table", "err", err)
		return
	}
	for _, r := range recs {
		if ctx.Err() != nil {
			return
		}
		switch r.State {
		case nodeclient.StateActive:
			if d := specs[r.ID]; d != nil {
				a.apply(ctx, r, d, &want)
			}
		case nodeclient.StateDeleting:
			if err := a.teardown(ctx, r); err != nil {
				a.log.Warn("teardown", "deployment", r.ID, "err", err)
				continue
			}
			_, err := a.db.update(r.ID, func(r *record) ([]nodeclient.Event, error) {
				r.State = nodeclient.StateDeleted
				return []nodeclient.Event{{Kind: "deleted"}}, nil
			})
			if err != nil {
				a.log.Error("reconcile: state", "err", err)
			}
			a.mu.Lock()
			delete(a.status, r.ID)
			a.mu.Unlock()
		}
	}
	if ctx.Err() == nil && !want.partial {
		a.collect(ctx, want)
	}
}

// imageStoreSets returns, for each image the active deployments run, the
// stores they name for it, in order and without repeats: an image mounted
// once for all of them reads from all of their stores.
func imageStoreSets(specs map[uint64]*spec.Deployment) map[digest.ID][]string {
	out := map[digest.ID][]string{}
	for _, id := range slices.Sorted(maps.Keys(specs)) { // deployment order, whatever the map's
		for _, w := range specs[id].Workloads {
			if w.Kind != spec.KindContainer {
				continue
			}
			stores, err := imageStores(w.Container.Image)
			if err != nil {
				continue // the container's image step reports it
			}
			img := w.Container.Image.Digest
			for _, st := range stores {
				if !slices.Contains(out[img], st) {
					out[img] = append(out[img], st)
				}
			}
		}
	}
	return out
}

// setStatus records a workload's state and reports whether state or
// detail changed; a change to failed is an event in the history (a steady
// state is not repeated every pass).
func (a *Agent) setStatus(dep uint64, w *spec.Workload, state, detail string, edit func(*nodeclient.WorkloadStatus)) (changed bool) {
	a.mu.Lock()
	m := a.status[dep]
	if m == nil {
		m = map[string]*nodeclient.WorkloadStatus{}
		a.status[dep] = m
	}
	s := m[w.Name]
	if s == nil {
		s = &nodeclient.WorkloadStatus{Name: w.Name, Kind: string(w.Kind), State: nodeclient.WorkloadPending}
		m[w.Name] = s
	}
	changed = s.State != state || s.Detail != detail
	if changed {
		s.State, s.Detail, s.Since = state, detail, a.opts.Now().UTC()
	}
	if edit != nil {
		edit(s)
	}
	a.mu.Unlock()
	if changed && state == nodeclient.WorkloadFailed {
		a.event(dep, w.Name, "failed", detail)
	}
	return changed
}

func (a *Agent) statusOf(r record) nodeclient.Status {
	st := nodeclient.Status{ID: r.ID, Owner: r.Owner, Version: r.Version, State: r.State, Accepted: r.Accepted}
	d, err := spec.Parse(r.Spec)
	if err != nil {
		return st
	}
	if ch, err := d.Challenge(); err == nil {
		st.Challenge = ch.String()
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, w := range d.Workloads {
		ws := nodeclient.WorkloadStatus{Name: w.Name, Kind: string(w.Kind), State: nodeclient.WorkloadPending}
		if s := a.status[r.ID][w.Name]; s != nil {
			ws = *s
			ws.IPs = append([]string(nil), s.IPs...)
		}
		if r.State != nodeclient.StateActive {
			ws.State = r.State
		}
		st.Workloads = append(st.Workloads, ws)
	}
	return st
}

// apply drives one active deployment towards its spec.
func (a *Agent) apply(ctx context.Context, r record, d *spec.Deployment, want *desired) {
	for i := range d.Workloads {
		w := &d.Workloads[i]
		switch w.Kind {
		case spec.KindVolume:
			want.volumes[volumeName(r.ID, w.Name)] = true
			if _, err := a.ensureVolume(ctx, r.ID, w, want.points); err != nil {
				a.setStatus(r.ID, w, nodeclient.WorkloadFailed, err.Error(), nil)
			} else {
				a.setStatus(r.ID, w, nodeclient.WorkloadOK, "", nil)
			}
		case spec.KindNetwork:
			id := networkID(r.ID, w.Name)
			want.networks[id] = true
			if err := a.opts.Network.EnsureNetwork(ctx, id, w.Network.Subnet); err != nil {
				a.setStatus(r.ID, w, nodeclient.WorkloadFailed, err.Error(), nil)
			} else {
				a.setStatus(r.ID, w, nodeclient.WorkloadOK, w.Network.Subnet.String(), nil)
			}
		}
	}
	ips := assignIPs(d)
	for i := range d.Workloads {
		if w := &d.Workloads[i]; w.Kind == spec.KindContainer {
			a.ensureContainer(ctx, r, d, w, ips, want)
		}
	}
	for i := range d.Workloads {
		w := &d.Workloads[i]
		if w.Kind != spec.KindGateway {
			continue
		}
		want.hosts[w.Gateway.Host] = true
		if o, ok := want.hostOwner[w.Gateway.Host]; ok && o != r.ID {
			a.setStatus(r.ID, w, nodeclient.WorkloadFailed, fmt.Sprintf("host %s is served by deployment %d", w.Gateway.Host, o), nil)
			continue
		}
		want.hostOwner[w.Gateway.Host] = r.ID
		if a.opts.Gateway == nil {
			a.setStatus(r.ID, w, nodeclient.WorkloadFailed, "this node runs no gateway", nil)
			continue
		}
		c := d.Workload(w.Gateway.Container)
		if len(c.Container.Networks) == 0 {
			a.setStatus(r.ID, w, nodeclient.WorkloadFailed, fmt.Sprintf("container %s is on no network", c.Name), nil)
			continue
		}
		at := c.Container.Networks[0]
		ip := ips[c.Name][at.Network]
		target := netip.AddrPortFrom(ip, w.Gateway.Port)
		a.opts.Gateway.Set(w.Gateway.Host, networkID(r.ID, at.Network), target)
		a.setStatus(r.ID, w, nodeclient.WorkloadOK, w.Gateway.Host+" -> "+target.String(), nil)
	}
}

// assignIPs gives every attachment an address: the spec's, or the next
// free one of the subnet after the gateway, in workload order.
func assignIPs(d *spec.Deployment) map[string]map[string]netip.Addr {
	used := map[string]map[netip.Addr]bool{}
	out := map[string]map[string]netip.Addr{}
	for _, w := range d.Workloads {
		if w.Kind != spec.KindContainer {
			continue
		}
		out[w.Name] = map[string]netip.Addr{}
		for _, at := range w.Container.Networks {
			if at.IP.IsValid() {
				if used[at.Network] == nil {
					used[at.Network] = map[netip.Addr]bool{}
				}
				used[at.Network][at.IP] = true
				out[w.Name][at.Network] = at.IP
			}
		}
	}
	for _, w := range d.Workloads {
		if w.Kind != spec.KindContainer {
			continue
		}
		for _, at := range w.Container.Networks {
			if at.IP.IsValid() {
				continue
			}
			n := d.Workload(at.Network)
			if n == nil || n.Network == nil {
				continue
			}
			if used[at.Network] == nil {
				used[at.Network] = map[netip.Addr]bool{}
			}
			p := n.Network.Subnet.Masked()
			ip := p.Addr().Next().Next() // the first host is the gateway
			for used[at.Network][ip] && p.Contains(ip) {
				ip = ip.Next()
			}
			if p.Contains(ip) {
				used[at.Network][ip] = true
				out[w.Name][at.Network] = ip
			}
		}
	}
	return out
}

// runSpec is what a container runs: the spec's fields over the image's.
func runSpec(w *spec.Workload, img imageConfig) (runtime.Spec, error) {
	c := w.Container
	s := runtime.Spec{
		Hostname: w.Name,
		CPU:      c.CPU,
		Memory:   c.Memory,
		Pids:     c.Pids,
		Cwd:      c.Workdir,
		User:     c.User,
	}
	args := img.Cmd
	entry := img.Entrypoint
	if len(c.Entrypoint) > 0 {
		entry, args = c.Entrypoint, nil // as Docker: a new entrypoint drops the image's cmd
	}
	if len(c.Args) > 0 {
		args = c.Args
	}
	s.Args = append(append([]string{}, entry...), args...)
	if len(s.Args) == 0 {
		return s, errors.New("nothing to run: neither the spec nor the image gives an entrypoint or args")
	}
	if s.Cwd == "" {
		s.Cwd = img.WorkingDir
	}
	if s.User == "" {
		s.User = img.User
	}
	env := map[string]string{"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOSTNAME": w.Name}
	for _, kv := range img.Env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	for k, v := range c.Env {
		env[k] = v
	}
	for k, v := range env {
		s.Env = append(s.Env, k+"="+v)
	}
	sort.Strings(s.Env)
	return s, nil
}

// ensureContainer drives one container: image, root mount, sandbox,
// running process; restarts it with backoff when it exits; recreates it
// when its spec changed or its image's mount died.
func (a *Agent) ensureContainer(ctx context.Context, r record, d *spec.Deployment, w *spec.Workload, ips map[string]map[string]netip.Addr, want *desired) {
	id := containerID(r.ID, w.Name)
	work := a.workDir(r.ID, w.Name)
	root := filepath.Join(work, "rootfs")
	layer := filepath.Join(work, "upper")
	imgDir := a.imageDir(w.Container.Image.Digest)
	want.containers[id], want.sandboxes[id], want.mounts[root] = true, true, true
	if _, ok := want.images[imgDir]; !ok {
		want.images[imgDir] = imageMount{} // wanted even if this pass cannot fetch it
	}
	fail := func(format string, args ...any) {
		a.setStatus(r.ID, w, nodeclient.WorkloadFailed, fmt.Sprintf(format, args...), nil)
	}

	fl, img, stores, err := a.image(ctx, r.ID, w)
	if err != nil {
		if a.setStatus(r.ID, w, nodeclient.WorkloadFailed, "image: "+err.Error(), nil) && errors.Is(err, ErrImageChanged) {
			a.event(r.ID, w.Name, "image-refused", err.Error())
		}
		return
	}
	rs, err := runSpec(w, img)
	if err != nil {
		fail("%v", err)
		return
	}
	imageID, err := a.ensureImage(ctx, w.Container.Image, fl, want)
	if err != nil {
		fail("%v", err)
		return
	}
	var ipList []string
	for _, at := range w.Container.Networks {
		ip, ok := ips[w.Name][at.Network]
		if !ok {
			fail("network %s: no free address", at.Network)
			return
		}
		ipList = append(ipList, at.Network+"="+ip.String())
	}
	for _, m := range w.Container.Mounts {
		rs.Mounts = append(rs.Mounts, runtime.Mount{Source: a.volumeDir(r.ID, m.Volume), Target: m.Path, ReadOnly: m.ReadOnly})
	}
	rs.ID, rs.Rootfs, rs.Log = id, root, filepath.Join(work, "log")
	sum := specSum(rs, w.Container.Image.Digest.String(), ipList, stores)

	a.mu.Lock()
	cs := a.crash[id]
	if cs == nil {
		cs = &crashState{}
		a.crash[id] = cs
	}
	a.mu.Unlock()
	now := a.opts.Now()

	st, err := a.opts.Runtime.State(ctx, id)
	switch {
	case err == nil && st.Status == runtime.Running:
		alive := a.rootAlive(root, layer, imageID, want.points)
		if old, _ := os.ReadFile(filepath.Join(work, "spec.sum")); string(old) == sum && alive {
			if now.Sub(cs.started) > a.opts.Backoff && cs.restarts > 0 && !cs.started.IsZero() {
				cs.restarts = 0 // ran long enough: a later crash starts the backoff over
			}
			a.setStatus(r.ID, w, nodeclient.WorkloadRunning, "", func(s *nodeclient.WorkloadStatus) {
				s.IPs, s.Pid, s.Restarts, s.ExitCode, s.OOMKilled = ipList, st.Pid, cs.restarts, cs.exit, cs.oom
			})
			if err := rotateLog(rs.Log, MaxLog); err != nil {
				a.log.Warn("log rotation", "container", id, "err", err)
			}
			return
		}
		why := "spec changed"
		if !alive {
			why = "image mount died"
		}
		if alive { // a container on a dead mount cannot shut down cleanly anyway
			a.opts.Runtime.Stop(ctx, id, StopGrace)
		}
		if err := a.opts.Runtime.Delete(ctx, id); err != nil {
			fail("recreate (%s): %v", why, err)
			return
		}
		a.event(r.ID, w.Name, "stopped", why+": recreating")
		cs.next = time.Time{}
	case err == nil:
		// It exited (or never finished starting under an agent that died).
		code := st.ExitCode
		detail := fmt.Sprintf("exit code %d", code)
		if code < 0 {
			detail = "exit code unknown (started by an earlier agent)"
		}
		if st.OOMKilled {
			detail += ", killed for exceeding its memory limit"
		}
		if err := a.opts.Runtime.Delete(ctx, id); err != nil {
			fail("clean up after exit: %v", err)
			return
		}
		cs.restarts++
		c := code
		cs.exit, cs.oom = &c, st.OOMKilled
		delay := min(time.Second<<min(cs.restarts-1, 16), a.opts.Backoff)
		cs.next = now.Add(delay)
		a.event(r.ID, w.Name, "exited", fmt.Sprintf("%s; restart %d in %s", detail, cs.restarts, delay))
		a.setStatus(r.ID, w, nodeclient.WorkloadRestarting, detail, func(s *nodeclient.WorkloadStatus) {
			s.Restarts, s.ExitCode, s.OOMKilled, s.Pid = cs.restarts, cs.exit, cs.oom, 0
		})
		return
	case !errors.Is(err, runtime.ErrNotFound):
		fail("runtime: %v", err)
		return
	}
	if now.Before(cs.next) {
		return // backing off
	}

	// Start: root filesystem, sandbox, process.
	if err := os.MkdirAll(root, 0o755); err != nil {
		fail("%v", err)
		return
	}
	if !a.rootAlive(root, layer, imageID, want.points) {
		if err := a.opts.Mounter.Unmount(ctx, root); err != nil { // what is left of a dead one
			fail("unmount dead root filesystem: %v", err)
			return
		}
		if err := a.opts.Mounter.Overlay(ctx, Mount{Flist: fl, Dir: root, Image: imgDir, Layer: layer}); err != nil {
			fail("mount root filesystem: %v", err)
			return
		}
		a.event(r.ID, w.Name, "mounted", "image "+w.Container.Image.Digest.String())
	}
	ns, err := a.opts.Network.Sandbox(ctx, id)
	if err != nil {
		fail("sandbox: %v", err)
		return
	}
	for _, at := range w.Container.Networks {
		if err := a.opts.Network.Attach(ctx, id, networkID(r.ID, at.Network), ips[w.Name][at.Network]); err != nil {
			fail("attach to %s: %v", at.Network, err)
			return
		}
	}
	rs.NetNS = ns
	if err := a.opts.Runtime.Start(ctx, rs); err != nil {
		a.opts.Runtime.Delete(ctx, id)
		fail("start: %v", err)
		cs.next = now.Add(min(time.Second<<min(cs.restarts, 16), a.opts.Backoff))
		cs.restarts++
		return
	}
	if err := os.WriteFile(filepath.Join(work, "spec.sum"), []byte(sum), 0o600); err != nil {
		a.log.Error("spec.sum", "err", err)
	}
	cs.started = now
	kind := "started"
	if cs.restarts > 0 {
		kind = "restarted"
	}
	a.event(r.ID, w.Name, kind, strings.Join(rs.Args, " "))
	a.setStatus(r.ID, w, nodeclient.WorkloadRunning, "", func(s *nodeclient.WorkloadStatus) {
		s.IPs, s.Restarts, s.ExitCode, s.OOMKilled = ipList, cs.restarts, cs.exit, cs.oom
	})
}

// MaxLog is the size at which a container's log is rotated: its content
// moves to log.1 (replacing the older one), so at most twice this is kept.
const MaxLog = 32 << 20

// rotateLog copies path to path.1 and truncates path when it exceeds max.
// The container keeps writing through its O_APPEND descriptor, from the
// new end: nothing is reopened (copytruncate). Lines written between the
// copy and the truncation are lost, a window of microseconds.
func rotateLog(path string, max int64) error {
	st, err := os.Stat(path)
	if err != nil || st.Size() <= max {
		return nil
	}
	src, err := os.Open(path)
	if err != nil {
		return err
	}
	defer src.Close()
	tmp := path + ".1.tmp"
	dst, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return err
	}
	if err := dst.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path+".1"); err != nil {
		return err
	}
	return os.Truncate(path, 0)
}

// specSum names everything a running container was made from, to tell
// when an update must recreate it.
func specSum(rs runtime.Spec, image string, ips, stores []string) string {
	b, _ := json.Marshal(struct {
		Spec   runtime.Spec
		Image  string
		IPs    []string
		Stores []string
	}{rs, image, ips, stores})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// rootAlive reports whether a container's root overlay is mounted at root
// and stacked on the image mount whose ID is image: an overlay over an
// image server that died stays broken even once the image is mounted
// again at the same path.
func (a *Agent) rootAlive(root, layer string, image uint64, points map[string]bool) bool {
	if _, ok := a.opts.Mounter.Alive(root, points); !ok {
		return false
	}
	on, ok := a.opts.Mounter.StackedOn(layer)
	return ok && on == image
}

// MountAlive returns the unique ID of the image mount at dir (as
// internal/mount.MountID gives it) if dir is mounted and its server
// answers. A FUSE server that died leaves its mount giving ENOTCONN;
// statfs asks the server every time, where a stat or a readdir may be
// answered from the kernel's caches.
func MountAlive(dir string, points map[string]bool) (uint64, bool) {
	if points == nil {
		var err error
		if points, err = mount.Points(); err != nil {
			return 0, false
		}
	}
	if !points[filepath.Clean(dir)] {
		return 0, false
	}
	var st unix.Statfs_t
	if unix.Statfs(dir, &st) != nil {
		return 0, false
	}
	id, err := mount.MountID(dir)
	return id, err == nil
}

// isMountPoint reports whether dir is a mount point.
func isMountPoint(dir string) bool {
	mps, err := mount.Points()
	if err != nil {
		return false
	}
	return mps[filepath.Clean(dir)]
}

// teardown removes everything of deployment r.
func (a *Agent) teardown(ctx context.Context, r record) error {
	d, err := spec.Parse(r.Spec)
	if err != nil {
		return err
	}
	// SIGTERM to every container at once, so they share one grace period.
	var wg sync.WaitGroup
	for _, w := range d.Workloads {
		if w.Kind == spec.KindContainer {
			wg.Go(func() { a.opts.Runtime.Stop(ctx, containerID(r.ID, w.Name), StopGrace) })
		}
	}
	wg.Wait()
	var errs []error
	for _, w := range d.Workloads {
		switch w.Kind {
		case spec.KindContainer:
			id := containerID(r.ID, w.Name)
			if err := a.opts.Runtime.Delete(ctx, id); err != nil {
				errs = append(errs, err)
				continue
			}
			if err := a.opts.Network.RemoveSandbox(ctx, id); err != nil {
				errs = append(errs, err)
			}
			if err := a.opts.Mounter.Unmount(ctx, filepath.Join(a.workDir(r.ID, w.Name), "rootfs")); err != nil {
				errs = append(errs, err)
			}
			a.mu.Lock()
			delete(a.crash, id)
			a.mu.Unlock()
		case spec.KindGateway:
			if a.opts.Gateway != nil {
				a.opts.Gateway.Remove(w.Gateway.Host)
			}
		}
	}
	for _, w := range d.Workloads {
		switch w.Kind {
		case spec.KindNetwork:
			if err := a.opts.Network.RemoveNetwork(ctx, networkID(r.ID, w.Name)); err != nil {
				errs = append(errs, err)
			}
		case spec.KindVolume:
			if err := a.removeVolume(ctx, volumeName(r.ID, w.Name)); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if len(errs) == 0 {
		if err := os.RemoveAll(a.depDir(r.ID)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// collect removes what no accepted deployment wants: leftovers of an agent
// killed half-way, or of a deployment deleted while the agent was down.
func (a *Agent) collect(ctx context.Context, want desired) {
	if cs, err := a.opts.Runtime.List(ctx); err == nil {
		for _, c := range cs {
			if !want.containers[c.ID] {
				a.log.Info("removing orphan container", "id", c.ID)
				if err := a.opts.Runtime.Delete(ctx, c.ID); err != nil {
					a.log.Warn("orphan container", "id", c.ID, "err", err)
				}
			}
		}
	}
	if mps := want.points; mps != nil {
		// Roots before images: an image is busy while overlays stand on it.
		// A root mount of an agent before shared image mounts (rootfs over
		// upper/lower) goes with its whole stack.
		deps := filepath.Join(a.opts.Data, "deployments") + "/"
		var roots []string
		for mp := range mps {
			switch {
			case strings.HasPrefix(mp, deps) && strings.HasSuffix(mp, "/rootfs") && !want.mounts[mp]:
				roots = append(roots, mp)
			case strings.HasPrefix(mp, deps) && strings.HasSuffix(mp, "/upper/lower") && !want.mounts[filepath.Join(filepath.Dir(filepath.Dir(mp)), "rootfs")]:
				roots = append(roots, filepath.Join(filepath.Dir(filepath.Dir(mp)), "rootfs"))
			}
		}
		for _, mp := range roots {
			a.log.Info("removing orphan mount", "dir", mp)
			if err := a.opts.Mounter.Unmount(ctx, mp); err != nil {
				a.log.Warn("orphan mount", "dir", mp, "err", err)
			}
		}
	}
	// An image no container wants any more: its mount point goes with its
	// mount, so a later pass does not look at it again.
	imgs := filepath.Join(a.opts.Data, "images", "mnt")
	if ents, err := os.ReadDir(imgs); err == nil {
		for _, e := range ents {
			dir := filepath.Join(imgs, e.Name())
			if _, ok := want.images[dir]; ok || !e.IsDir() {
				continue
			}
			a.log.Info("unmounting image no container uses", "dir", dir)
			if err := a.opts.Mounter.Unmount(ctx, dir); err != nil {
				a.log.Warn("image mount", "dir", dir, "err", err)
				continue
			}
			if err := os.Remove(dir); err != nil {
				a.log.Warn("image mount point", "dir", dir, "err", err)
			}
			os.Remove(dir + ".log")
		}
	}
	if ids, err := a.opts.Network.Sandboxes(ctx); err == nil {
		for _, id := range ids {
			if !want.sandboxes[id] {
				a.log.Info("removing orphan sandbox", "id", id)
				if err := a.opts.Network.RemoveSandbox(ctx, id); err != nil {
					a.log.Warn("orphan sandbox", "id", id, "err", err)
				}
			}
		}
	}
	if ids, err := a.opts.Network.Networks(ctx); err == nil {
		for _, id := range ids {
			if !want.networks[id] {
				a.log.Info("removing orphan network", "id", id)
				if err := a.opts.Network.RemoveNetwork(ctx, id); err != nil {
					a.log.Warn("orphan network", "id", id, "err", err)
				}
			}
		}
	}
	if names, err := a.volumes(); err == nil {
		for _, n := range names {
			if !want.volumes[n] {
				a.log.Info("removing orphan volume", "volume", n)
				if err := a.removeVolume(ctx, n); err != nil {
					a.log.Warn("orphan volume", "volume", n, "err", err)
				}
			}
		}
	}
	if a.opts.Gateway != nil {
		for h := range a.opts.Gateway.Hosts() {
			if !want.hosts[h] {
				a.opts.Gateway.Remove(h)
			}
		}
	}
}
