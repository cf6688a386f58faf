package runtime

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/opencontainers/cgroups"
	// Device rules (the cgroup v1 devices controller, eBPF on v2) are
	// applied only when this package is linked in.
	_ "github.com/opencontainers/cgroups/devices"
	"github.com/opencontainers/cgroups/manager"
	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/seccomp"
	"golang.org/x/sys/unix"
)

// killWait bounds the wait for a container's processes to be gone after
// SIGKILL (a process in uninterruptible sleep dies only when it wakes).
const killWait = 10 * time.Second

// recordName is zos's own file in a container's libcontainer state dir.
const recordName = "zos.json"

// Runtime starts and supervises containers whose state lives under one root
// directory. Safe for concurrent use. Several Runtimes may open the same root
// one after another (an agent restarted); two at once work but serialise
// nothing between them.
type Runtime struct {
	root         string
	cgroupParent string
	log          *slog.Logger

	mu     sync.Mutex
	locks  map[string]*idLock // per container: Start, State and Delete of one ID in turn
	waited map[string]*waiter // containers this Runtime started, until deleted
}

type idLock struct {
	sync.Mutex
	refs int
}

// waiter follows the init process of a container this Runtime started:
// it is this process's child, so only this process learns its exit status.
type waiter struct {
	instance string
	done     chan struct{} // closed when the fields below are set
	exitCode int
	oom      bool
}

// record is what zos keeps beside libcontainer's state.json.
type record struct {
	Version  int         `json:"version"`
	Instance string      `json:"instance"` // tells a container from a later one with the same ID
	Started  time.Time   `json:"started"`
	Exited   *exitRecord `json:"exited,omitempty"`
}

type exitRecord struct {
	Code      int       `json:"code"`
	OOMKilled bool      `json:"oom_killed"`
	At        time.Time `json:"at"`
}

// New opens the runtime whose state lives under root (created, mode 0700),
// with cgroups under DefaultCgroupParent. Containers started by an earlier
// Runtime over the same root, such as one in an agent killed with -9, are
// found again: they keep running, and List, State, Stop and Delete work on
// them.
func New(root string, logger *slog.Logger) (*Runtime, error) {
	return Open(Options{Root: root, Logger: logger})
}

// Options configure Open.
type Options struct {
	Root string // state directory (created)
	// CgroupParent holds the containers' cgroups as CgroupParent/ID in
	// every hierarchy; default DefaultCgroupParent. Two runtimes on one
	// machine (two agents, a test beside a node) need different ones.
	CgroupParent string
	Logger       *slog.Logger
}

// Open is New with every option.
func Open(o Options) (*Runtime, error) {
	root, logger := o.Root, o.Logger
	parent := o.CgroupParent
	if parent == "" {
		parent = DefaultCgroupParent
	}
	if !filepath.IsAbs(parent) || filepath.Clean(parent) != parent || parent == "/" {
		return nil, fmt.Errorf("cgroup parent %q: want a clean absolute path below /", parent)
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("runtime root %s: %w", root, err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, fmt.Errorf("runtime root: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Runtime{root: abs, cgroupParent: parent, log: logger, locks: map[string]*idLock{}, waited: map[string]*waiter{}}, nil
}

func (r *Runtime) lock(id string) (unlock func()) {
	r.mu.Lock()
	l := r.locks[id]
	if l == nil {
		l = &idLock{}
		r.locks[id] = l
	}
	l.refs++
	r.mu.Unlock()
	l.Lock()
	return func() {
		l.Unlock()
		r.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(r.locks, id)
		}
		r.mu.Unlock()
	}
}

func (r *Runtime) dir(id string) string { return filepath.Join(r.root, id) }

// Start creates the container and starts its command; it returns once the
// command runs (or failed to start: a missing executable is an error here).
// The container is not a process that dies with the caller: it keeps running
// when the agent exits, until Stop or Delete. ErrExists if the ID is taken.
func (r *Runtime) Start(ctx context.Context, s Spec) error {
	if !seccomp.Enabled {
		return fmt.Errorf("container %s: zos was built without -tags seccomp: containers need a seccomp profile", s.ID)
	}
	if err := s.check(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("container %s: %w", s.ID, err)
	}
	unlock := r.lock(s.ID)
	defer unlock()
	if _, err := os.Lstat(r.dir(s.ID)); err == nil {
		return fmt.Errorf("container %s: %w", s.ID, ErrExists)
	}
	u, err := resolveUser(&s)
	if err != nil {
		return fmt.Errorf("container %s: %w", s.ID, err)
	}
	cfg, err := libcontainerConfig(&s, u, r.cgroupPath(s.ID))
	if err != nil {
		return fmt.Errorf("container %s: config: %w", s.ID, err)
	}
	logf, err := openLog(s.Log)
	if err != nil {
		return fmt.Errorf("container %s: %w", s.ID, err)
	}
	defer logf.Close() // the container holds its own descriptor

	c, err := libcontainer.Create(r.root, s.ID, cfg)
	if errors.Is(err, libcontainer.ErrExist) {
		return fmt.Errorf("container %s: %w", s.ID, ErrExists)
	}
	if err != nil {
		return fmt.Errorf("container %s: create: %w", s.ID, err)
	}
	rec := &record{Version: 1, Instance: newInstance(), Started: time.Now().UTC()}
	if err := r.writeRecord(s.ID, rec); err != nil {
		r.cleanup(s.ID, c)
		return fmt.Errorf("container %s: %w", s.ID, err)
	}
	p := &libcontainer.Process{
		Args:             s.Args,
		Env:              u.env,
		UID:              u.uid,
		GID:              u.gid,
		AdditionalGroups: u.groups,
		Cwd:              u.cwd,
		Stdout:           logf, // an *os.File: the init gets the descriptor, no copying through us
		Stderr:           logf,
		Init:             true,
	}
	if err := c.Run(p); err != nil {
		r.cleanup(s.ID, c)
		return fmt.Errorf("container %s: start: %w", s.ID, err)
	}
	st, err := c.State()
	if err != nil {
		r.cleanup(s.ID, c)
		return fmt.Errorf("container %s: state: %w", s.ID, err)
	}
	waitExec(st.InitProcessPid)
	w := &waiter{instance: rec.Instance, done: make(chan struct{})}
	r.mu.Lock()
	r.waited[s.ID] = w
	r.mu.Unlock()
	go r.wait(s.ID, p, w, st.CgroupPaths)
	r.log.Info("container started", "id", s.ID, "pid", st.InitProcessPid)
	return nil
}

// wait reaps the init of a container this Runtime started and records how it
// ended, in memory for State and in the state dir for a later Runtime.
func (r *Runtime) wait(id string, p *libcontainer.Process, w *waiter, cgroupPaths map[string]string) {
	ps, err := p.Wait()
	code := -1
	if ps != nil {
		if ws, ok := ps.Sys().(syscall.WaitStatus); ok {
			switch {
			case ws.Signaled():
				code = 128 + int(ws.Signal())
			case ws.Exited():
				code = ws.ExitStatus()
			}
		}
	} else if err != nil {
		r.log.Warn("container wait", "id", id, "err", err)
	}
	w.exitCode, w.oom = code, oomKills(cgroupPaths) > 0
	close(w.done)
	r.log.Info("container exited", "id", id, "code", code, "oom_killed", w.oom)

	unlock := r.lock(id)
	defer unlock()
	r.mu.Lock()
	current := r.waited[id] == w
	r.mu.Unlock()
	if !current {
		return // deleted meanwhile, perhaps already started again
	}
	rec, err := r.readRecord(id)
	if err != nil || rec.Instance != w.instance {
		return
	}
	rec.Exited = &exitRecord{Code: code, OOMKilled: w.oom, At: time.Now().UTC()}
	if err := r.writeRecord(id, rec); err != nil {
		r.log.Warn("container exit not recorded", "id", id, "err", err)
	}
}

// State returns the container's state; ErrNotFound when there is none.
func (r *Runtime) State(ctx context.Context, id string) (State, error) {
	if err := validID(id); err != nil {
		return State{}, err
	}
	unlock := r.lock(id)
	defer unlock()
	return r.state(ctx, id)
}

func (r *Runtime) state(ctx context.Context, id string) (State, error) {
	st := State{ID: id, Status: Stopped, ExitCode: -1}
	rec, _ := r.readRecord(id) // absent for a start cut short before it was written
	if rec != nil {
		st.Started = rec.Started
	}
	c, err := libcontainer.Load(r.root, id)
	if errors.Is(err, libcontainer.ErrNotExist) {
		if _, err := os.Lstat(r.dir(id)); errors.Is(err, fs.ErrNotExist) {
			return State{}, fmt.Errorf("container %s: %w", id, ErrNotFound)
		}
		return st, nil // a start cut short: nothing runs
	}
	if err != nil {
		return State{}, fmt.Errorf("container %s: %w", id, err)
	}
	status, err := c.Status()
	if err != nil {
		return State{}, fmt.Errorf("container %s: status: %w", id, err)
	}
	lc, err := c.State()
	if err != nil {
		return State{}, fmt.Errorf("container %s: state: %w", id, err)
	}
	if rec == nil {
		st.Started = lc.Created
	}
	switch status {
	case libcontainer.Created:
		st.Status = Created
	case libcontainer.Running:
		st.Status = Running
	case libcontainer.Paused:
		st.Status = Paused
	}
	if st.Status != Stopped {
		st.Pid = lc.InitProcessPid
	} else {
		r.mu.Lock()
		w := r.waited[id]
		r.mu.Unlock()
		if w != nil {
			// Ours: the init is dead (a zombie at most), so the
			// waiter is about to report.
			select {
			case <-w.done:
				st.ExitCode, st.OOMKilled = w.exitCode, w.oom
			case <-ctx.Done():
				return State{}, fmt.Errorf("container %s: %w", id, ctx.Err())
			}
		} else if rec != nil && rec.Exited != nil {
			st.ExitCode, st.OOMKilled = rec.Exited.Code, rec.Exited.OOMKilled
		}
	}
	if !st.OOMKilled {
		st.OOMKilled = oomKills(lc.CgroupPaths) > 0
	}
	return st, nil
}

// List returns the state of every container under the root, by ID.
func (r *Runtime) List(ctx context.Context) ([]State, error) {
	entries, err := os.ReadDir(r.root)
	if err != nil {
		return nil, fmt.Errorf("runtime root: %w", err)
	}
	var out []State
	for _, e := range entries {
		if !e.IsDir() || validID(e.Name()) != nil {
			continue
		}
		st, err := r.State(ctx, e.Name())
		if errors.Is(err, ErrNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b State) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// Stop sends SIGTERM to every process of the container and SIGKILL to what
// is left after grace, and returns once none runs. Stopping a stopped
// container does nothing; ErrNotFound when there is none.
//
// Note that the container's init, pid 1 of its pid namespace, receives
// SIGTERM only if it handles it: the kernel drops signals an init does not
// handle. A plain "sleep" as init therefore lasts the whole grace.
func (r *Runtime) Stop(ctx context.Context, id string, grace time.Duration) error {
	if err := validID(id); err != nil {
		return err
	}
	c, err := libcontainer.Load(r.root, id)
	if errors.Is(err, libcontainer.ErrNotExist) {
		if _, err := os.Lstat(r.dir(id)); errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("container %s: %w", id, ErrNotFound)
		}
		return nil // a start cut short: nothing runs
	}
	if err != nil {
		return fmt.Errorf("container %s: %w", id, err)
	}
	if r.stopped(c) {
		return nil
	}
	signalAll(c, unix.SIGTERM)
	if r.waitStopped(ctx, c, grace) {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("container %s: stop: %w", id, err)
	}
	r.log.Info("container killed after grace", "id", id, "grace", grace)
	return r.kill(ctx, id, c)
}

// kill sends SIGKILL to the container's init (which takes its whole pid
// namespace with it) and to every process in its cgroup, and waits until
// none is left.
func (r *Runtime) kill(ctx context.Context, id string, c *libcontainer.Container) error {
	if err := c.Signal(unix.SIGKILL); err != nil && !errors.Is(err, libcontainer.ErrNotRunning) {
		r.log.Debug("container kill", "id", id, "err", err)
	}
	signalAll(c, unix.SIGKILL)
	if !r.waitStopped(ctx, c, killWait) {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("container %s: kill: %w", id, err)
		}
		return fmt.Errorf("container %s: still running %v after SIGKILL", id, killWait)
	}
	return nil
}

// stopped tells whether the container's init is gone and its cgroup empty.
func (r *Runtime) stopped(c *libcontainer.Container) bool {
	status, err := c.Status()
	if err != nil {
		// The state or cgroups are being removed under us (Delete).
		return true
	}
	if status != libcontainer.Stopped {
		return false
	}
	pids, err := c.Processes()
	return err != nil || len(pids) == 0
}

func (r *Runtime) waitStopped(ctx context.Context, c *libcontainer.Container, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		if r.stopped(c) {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		select {
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
		}
	}
}

// signalAll signals every process in the container's cgroup.
func signalAll(c *libcontainer.Container, sig unix.Signal) {
	pids, _ := c.Processes()
	for _, pid := range pids {
		_ = unix.Kill(pid, sig)
	}
}

// Delete kills the container if it runs (SIGKILL at once: Stop first for a
// graceful end), then removes its cgroups and state. Nothing of it is left
// afterwards. Deleting an absent container returns nil.
func (r *Runtime) Delete(ctx context.Context, id string) error {
	if err := validID(id); err != nil {
		return err
	}
	unlock := r.lock(id)
	defer unlock()
	defer func() {
		r.mu.Lock()
		delete(r.waited, id)
		r.mu.Unlock()
	}()
	c, err := libcontainer.Load(r.root, id)
	if err != nil {
		if !errors.Is(err, libcontainer.ErrNotExist) {
			r.log.Warn("container state unreadable, removing what is left", "id", id, "err", err)
		}
		return r.cleanup(id, nil)
	}
	if !r.stopped(c) {
		if err := r.kill(ctx, id, c); err != nil {
			return err
		}
	}
	if err := c.Destroy(); err != nil {
		return fmt.Errorf("container %s: %w", id, err)
	}
	if err := r.removeCgroups(id); err != nil { // whatever Destroy did not know of
		return fmt.Errorf("container %s: %w", id, err)
	}
	r.log.Info("container deleted", "id", id)
	return nil
}

// cleanup removes a container libcontainer cannot (or can no longer) load:
// a failed start, a start cut short, a corrupt state. c may be nil.
func (r *Runtime) cleanup(id string, c *libcontainer.Container) error {
	if c != nil {
		signalAll(c, unix.SIGKILL)
		_ = c.Signal(unix.SIGKILL)
		if err := c.Destroy(); err != nil {
			r.log.Warn("container destroy", "id", id, "err", err)
		}
	}
	if err := r.removeCgroups(id); err != nil {
		return fmt.Errorf("container %s: %w", id, err)
	}
	if err := os.RemoveAll(r.dir(id)); err != nil {
		return fmt.Errorf("container %s: %w", id, err)
	}
	return nil
}

// removeCgroups kills whatever is left in the container's cgroups and removes
// them from every hierarchy.
func (r *Runtime) removeCgroups(id string) error {
	m, err := manager.New(&cgroups.Cgroup{Path: r.cgroupPath(id), Resources: &cgroups.Resources{}})
	if err != nil {
		return fmt.Errorf("cgroups: %w", err)
	}
	for range 100 {
		pids, err := m.GetAllPids()
		if err != nil || len(pids) == 0 {
			break
		}
		for _, pid := range pids {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := m.Destroy(); err != nil {
		return fmt.Errorf("cgroups: %w", err)
	}
	return nil
}

// oomKills reads how many processes the memory cgroup's OOM killer killed;
// 0 when unknown.
func oomKills(paths map[string]string) uint64 {
	var file string
	if cgroups.IsCgroup2UnifiedMode() {
		file = filepath.Join(paths[""], "memory.events")
	} else if p := paths["memory"]; p != "" {
		file = filepath.Join(p, "memory.oom_control")
	} else {
		return 0
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := bytes.Cut(sc.Bytes(), []byte(" "))
		if ok && string(k) == "oom_kill" {
			n, _ := strconv.ParseUint(string(v), 10, 64)
			return n
		}
	}
	return 0
}

func openLog(path string) (*os.File, error) {
	if path == "" {
		return os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("log: %w", err)
	}
	return f, nil
}

func newInstance() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (r *Runtime) readRecord(id string) (*record, error) {
	b, err := os.ReadFile(filepath.Join(r.dir(id), recordName))
	if err != nil {
		return nil, err
	}
	var rec record
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, fmt.Errorf("%s: %w", recordName, err)
	}
	return &rec, nil
}

// writeRecord replaces the record atomically.
func (r *Runtime) writeRecord(id string, rec *record) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(r.dir(id), recordName+".*")
	if err != nil {
		return fmt.Errorf("record: %w", err)
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), filepath.Join(r.dir(id), recordName))
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("record: %w", err)
	}
	return nil
}

// waitExec waits, briefly, until the container's init has executed the
// command. libcontainer's Run returns when the init (still this binary, a
// Go program) has passed its last step but not yet called execve; a signal
// in between would reach the Go runtime instead of the command (SIGTERM
// would end it with status 2). Until execve the init's command line is the
// one libcontainer gave it: argv[0] of this process and "init".
func waitExec(pid int) {
	init := []byte(os.Args[0] + "\x00init\x00")
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || !bytes.Equal(b, init) {
			return // executed, or gone already
		}
	}
}
