package runtime

import (
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/opencontainers/runc/libcontainer/specconv"
	"github.com/opencontainers/runtime-spec/specs-go"
)

// capabilities every container gets: Docker's default set. Missing, among
// others: SYS_ADMIN (mounts, namespaces), NET_ADMIN, SYS_PTRACE, SYS_MODULE,
// SYS_RAWIO, SYS_TIME, SYS_BOOT, DAC_READ_SEARCH, MAC_ADMIN, BPF, PERFMON.
var capabilities = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
	"CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
	"CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

// maskedPaths are hidden (/dev/null over files, an empty read-only tmpfs
// over directories): they leak host details or reach hardware.
var maskedPaths = []string{
	"/proc/acpi", "/proc/asound", "/proc/interrupts", "/proc/kcore", "/proc/keys",
	"/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
	"/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
}

// readonlyPaths are the kernel's knobs under /proc (/sys is read-only as a
// whole).
var readonlyPaths = []string{
	"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
}

const cpuPeriod = 100_000 // µs

// DefaultCgroupParent is where containers' cgroups go, as PARENT/ID in
// every hierarchy, unless Options.CgroupParent says otherwise.
const DefaultCgroupParent = "/zos"

// cgroupPath is the container's cgroup below each hierarchy's root.
func (r *Runtime) cgroupPath(id string) string { return r.cgroupParent + "/" + id }

// ociSpec turns s into an OCI runtime spec, starting from runc's example
// (the default mounts and device rules) and tightening it.
func ociSpec(s *Spec, u *execUser, cgroup string) *specs.Spec {
	sp := specconv.Example()
	sp.Root = &specs.Root{Path: s.Rootfs}
	sp.Hostname = s.Hostname
	sp.Process = &specs.Process{
		Args: s.Args,
		Env:  u.env,
		Cwd:  u.cwd,
		User: specs.User{UID: uint32(u.uid), GID: uint32(u.gid)},
		Capabilities: &specs.LinuxCapabilities{
			Bounding:  capabilities,
			Effective: capabilities,
			Permitted: capabilities,
		},
		NoNewPrivileges: true,
		Rlimits:         []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Soft: 1024, Hard: 524288}},
	}
	for _, g := range u.groups {
		sp.Process.User.AdditionalGids = append(sp.Process.User.AdditionalGids, uint32(g))
	}
	for _, m := range s.Mounts {
		opts := []string{"rbind", "rprivate", "nosuid", "nodev"}
		if m.ReadOnly {
			opts = append(opts, "ro")
		} else {
			opts = append(opts, "rw")
		}
		sp.Mounts = append(sp.Mounts, specs.Mount{Destination: m.Target, Type: "bind", Source: m.Source, Options: opts})
	}
	l := sp.Linux
	l.Namespaces = []specs.LinuxNamespace{
		{Type: specs.PIDNamespace},
		{Type: specs.NetworkNamespace, Path: s.NetNS},
		{Type: specs.IPCNamespace},
		{Type: specs.UTSNamespace},
		{Type: specs.MountNamespace},
		{Type: specs.CgroupNamespace},
	}
	l.CgroupsPath = cgroup
	l.MaskedPaths = maskedPaths
	l.ReadonlyPaths = readonlyPaths
	l.Seccomp = seccompProfile()
	r := l.Resources // keeps the example's deny-all device rule
	if s.CPU > 0 {
		quota := max(int64(s.CPU)*cpuPeriod/1000, 1000) // the kernel's minimum is 1 ms
		period := uint64(cpuPeriod)
		r.CPU = &specs.LinuxCPU{Quota: &quota, Period: &period}
	}
	if s.Memory > 0 {
		limit := int64(s.Memory)
		r.Memory = &specs.LinuxMemory{Limit: &limit}
		if swapAccounted() {
			// memory+swap equal to memory: the container cannot swap
			// its way past the limit.
			swap := limit
			r.Memory.Swap = &swap
		}
	}
	if s.Pids > 0 {
		pids := int64(s.Pids)
		r.Pids = &specs.LinuxPids{Limit: &pids}
	}
	return sp
}

// swapAccounted tells whether memory+swap can be limited: always on cgroup
// v2, on v1 only when the kernel accounts swap (memory.memsw.*).
func swapAccounted() bool {
	if cgroups.IsCgroup2UnifiedMode() {
		return true
	}
	mnt, err := cgroups.FindCgroupMountpoint("", "memory")
	if err != nil {
		return false
	}
	_, err = os.Stat(filepath.Join(mnt, "memory.memsw.limit_in_bytes"))
	return err == nil
}

// libcontainerConfig converts the OCI spec with runc's own converter, so
// the mounts, devices, masked paths and seccomp rules mean what they mean to
// runc.
func libcontainerConfig(s *Spec, u *execUser, cgroup string) (*configs.Config, error) {
	cfg, err := specconv.CreateLibcontainerConfig(&specconv.CreateOpts{
		CgroupName: s.ID,
		Spec:       ociSpec(s, u, cgroup),
	})
	if err != nil {
		return nil, err
	}
	// No parent-death signal: the container must outlive the agent that
	// started it (an agent killed with -9 and restarted finds it running).
	cfg.ParentDeathSignal = 0
	return cfg, nil
}

// withDefaults adds PATH and HOME to env when it lacks them, as Docker does.
func withDefaults(env []string, home string) []string {
	env = slices.Clone(env)
	has := func(k string) bool {
		return slices.ContainsFunc(env, func(e string) bool { return strings.HasPrefix(e, k+"=") })
	}
	if !has("PATH") {
		env = append(env, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	}
	if !has("HOME") {
		if home == "" {
			home = "/"
		}
		env = append(env, "HOME="+home)
	}
	return env
}
