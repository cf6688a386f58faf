package runtime

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// Spec is what a container is started from.
type Spec struct {
	ID       string   // [a-z0-9][a-z0-9_.-]{0,63}; unique on the machine
	Rootfs   string   // an existing directory that becomes /
	Args     []string // argv; Args[0] looked up in PATH from Env when it has no slash
	Env      []string // KEY=VALUE; PATH and HOME get defaults when absent
	Cwd      string   // default "/"
	User     string   // "", "uid[:gid]" or "name[:group]" (resolved in the rootfs' /etc/passwd, /etc/group)
	Hostname string
	CPU      uint64 // millicores (1000 = one core), 0 = unlimited
	Memory   uint64 // bytes, 0 = unlimited; swap is not allowed past it
	Pids     uint64 // 0 = unlimited
	Mounts   []Mount
	NetNS    string // path of an existing network namespace to join; "" = a new one with only loopback (up)
	Log      string // file receiving stdout and stderr, appended; "" = /dev/null
}

// Mount is a bind mount of a host path (a volume) into the container.
type Mount struct {
	Source   string // existing host file or directory
	Target   string // absolute path in the container, created when missing
	ReadOnly bool
}

// Status of a container.
type Status string

const (
	Created Status = "created" // init set up, the command not yet executed (only seen when a start was cut short)
	Running Status = "running"
	Paused  Status = "paused" // frozen (zos does not pause, an operator may)
	Stopped Status = "stopped"
)

// State of a container as the runtime sees it now.
type State struct {
	ID        string
	Status    Status
	Pid       int       // of the container's init (in the host's pid namespace), while running
	Started   time.Time // when Start ran it
	ExitCode  int       // once Stopped: the init's exit status, 128+signal when killed; -1 when unknown (running, or started by an earlier agent)
	OOMKilled bool      // the memory cgroup killed a process for exceeding Memory
}

var (
	// ErrNotFound is returned for an ID with no container under the root.
	ErrNotFound = errors.New("no such container")
	// ErrExists is returned by Start for an ID that is taken.
	ErrExists = errors.New("container exists")
)

var idPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,63}$`)

func validID(id string) error {
	if !idPattern.MatchString(id) {
		return fmt.Errorf("container %q: invalid id: want [a-z0-9][a-z0-9_.-]{0,63}", id)
	}
	return nil
}

// check refuses a spec before anything is created for it.
func (s *Spec) check() error {
	if err := validID(s.ID); err != nil {
		return err
	}
	fail := func(format string, a ...any) error {
		return fmt.Errorf("container %s: %s", s.ID, fmt.Sprintf(format, a...))
	}
	if !filepath.IsAbs(s.Rootfs) {
		return fail("rootfs %q is not an absolute path", s.Rootfs)
	}
	if fi, err := os.Stat(s.Rootfs); err != nil {
		return fail("rootfs: %v", err)
	} else if !fi.IsDir() {
		return fail("rootfs %s is not a directory", s.Rootfs)
	}
	if len(s.Args) == 0 || s.Args[0] == "" {
		return fail("no command")
	}
	for _, e := range s.Env {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" || strings.ContainsRune(e, 0) {
			return fail("env %q is not KEY=VALUE", e)
		}
	}
	if s.Cwd != "" && !filepath.IsAbs(s.Cwd) {
		return fail("cwd %q is not absolute", s.Cwd)
	}
	if s.Hostname != "" && !hostnamePattern.MatchString(s.Hostname) {
		return fail("invalid hostname %q", s.Hostname)
	}
	for _, m := range s.Mounts {
		if !filepath.IsAbs(m.Source) || !filepath.IsAbs(m.Target) {
			return fail("mount %s:%s: paths must be absolute", m.Source, m.Target)
		}
		if _, err := os.Stat(m.Source); err != nil {
			return fail("mount source: %v", err)
		}
	}
	if s.NetNS != "" {
		if _, err := os.Stat(s.NetNS); err != nil {
			return fail("network namespace: %v", err)
		}
	}
	if s.Log != "" && !filepath.IsAbs(s.Log) {
		return fail("log %q is not an absolute path", s.Log)
	}
	return nil
}

var hostnamePattern = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]{0,62})$`)
