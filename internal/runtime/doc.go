// Package runtime is the node's container driver: it runs a command on a
// root filesystem it is given (the node's overlay over a lazily mounted
// flist), isolated by namespaces, cgroups, capabilities and seccomp, through
// runc's libcontainer in-process. There is no runc binary and no shim: the
// agent's own binary is re-executed as each container's init (see Init).
//
// # The container
//
// A container has its own pid, mount, UTS, IPC and cgroup namespaces and a
// network namespace: a new one with only loopback (up), or an existing one
// named by Spec.NetNS (a private network prepared by internal/network). There
// is no user namespace: root in the container is root on the host, so the
// other layers carry the isolation:
//
//   - capabilities: Docker's default set (CHOWN, DAC_OVERRIDE, FSETID,
//     FOWNER, MKNOD, NET_RAW, SETGID, SETUID, SETFCAP, SETPCAP,
//     NET_BIND_SERVICE, SYS_CHROOT, KILL, AUDIT_WRITE) in the bounding,
//     effective and permitted sets, none inheritable or ambient; no
//     SYS_ADMIN, NET_ADMIN, SYS_PTRACE, SYS_MODULE;
//   - no new privileges: setuid binaries and file capabilities grant nothing;
//   - the seccomp profile below;
//   - masked paths (/proc/kcore, /proc/keys, /proc/timer_list, /sys/firmware,
//     ...: /dev/null or an empty tmpfs over them) and read-only kernel knobs
//     (/proc/sys, /proc/sysrq-trigger, /proc/bus, /proc/fs, /proc/irq);
//     /sys is read-only as a whole. /proc itself stays writable, as in
//     Docker, for what processes write about themselves (/proc/self/comm,
//     oom_score_adj);
//   - /dev is a tmpfs with only the default devices (null, zero, full,
//     random, urandom, tty, pts, ptmx), and the device cgroup refuses every
//     other device even if a process creates the node;
//   - cgroups at /zos/<id> in every hierarchy (cgroup v1 here, v2 works the
//     same through libcontainer): CPU as a CFS quota of Spec.CPU millicores
//     per 100 ms period, memory with memory+swap set to the same limit so
//     swap cannot bypass it, pids.max. OOM kills are read from the memory
//     cgroup (oom_kill in memory.oom_control on v1, memory.events on v2).
//
// Volumes (Spec.Mounts) are bind mounts with nosuid and nodev. Users named
// in Spec.User are resolved in the rootfs' /etc/passwd and /etc/group, read
// with the rootfs as the root of every path lookup so that a symbolic link
// in an image cannot make the agent read a host file. PATH and HOME get
// Docker's defaults when Spec.Env lacks them.
//
// # State and survival across agent restarts
//
// Everything about a container lives in its state directory under the
// Runtime's root: libcontainer's state.json (config, init pid and start
// time, cgroup paths) and zos.json (when it started, and once known how it
// ended). Nothing is kept only in memory, so a new Runtime over the same
// root, in an agent restarted after kill -9, lists the containers an earlier
// one started and can stop and delete them.
//
// A container must outlive the agent: no parent-death signal is set, its
// stdio are files rather than pipes to the agent, and Start returns once the
// command runs. Its init is a child of the agent that started it; when that
// agent dies, the kernel hands it to the nearest subreaper or pid 1, which
// must reap it (zinit does; a supervisor that does not leaves a zombie after
// Stop, harmless but visible in ps).
//
// The exit status of a process is reported only to its parent. For the
// containers it started, a Runtime waits for the init and records the exit
// code (128+signal when killed) and whether the OOM killer struck in
// zos.json, so State reports them after the exit, and a later Runtime too.
// For a container whose agent died before it exited, the code is unknown:
// State says -1. OOMKilled needs no parent: it is read from the cgroup.
//
// # Stop and Delete
//
// Stop sends SIGTERM to every process in the container's cgroup, then SIGKILL
// after the grace period. The container's init is pid 1 of its namespace:
// the kernel drops a signal it has no handler for, so an init that does not
// handle SIGTERM (a bare "sleep") is killed only when the grace ends. Delete
// kills at once, then removes the cgroups from every hierarchy and the state
// directory; afterwards nothing of the container is left.
//
// # Logs
//
// Spec.Log is opened by the agent (append, create) and the open file itself
// becomes the container's stdout and stderr. Nothing passes through the
// agent, so a container keeps logging while the agent restarts, and the two
// streams interleave in the order they were written. libcontainer gives the
// file to the container's user (as runc does with any stdio), so the log of
// a container running as uid 1000 is owned by uid 1000.
//
// # The seccomp profile
//
// Every container runs under the profile in seccomp.go, Go data rather than
// a JSON file so it is compiled in and reviewed with the code. It is an
// allow list, modelled on Docker's and containerd's default profiles and
// reduced to the capabilities containers get: about 350 syscalls are allowed
// (the ordinary ones of any Linux program, including io_setup, landlock,
// pidfd, rseq and the *_time64 variants), everything else fails with EPERM.
// clone is allowed only without namespace flags, clone3 fails with ENOSYS
// (its flags live in memory seccomp cannot inspect, and ENOSYS makes the C
// libraries fall back to clone), personality only with the ordinary
// personas, socket for every family but AF_VSOCK.
//
// An allow list rather than a deny list because it fails closed: the
// kernel gains syscalls every few releases (io_uring in 5.1, the new mount
// API in 5.2, statmount and listmount in 6.8), and with a deny list each of
// them reaches every container until the list is updated.
// With an allow list a new syscall is refused (libcontainer even answers
// ENOSYS for syscalls newer than the profile, so programs fall back to older
// ones), and the price, a workload needing a syscall Docker also refuses, is
// the same price every Docker image has already been built to pay. Among the
// refused: mount and the new mount API, unshare, setns, pivot_root, bpf,
// perf_event_open, the module and kexec calls, keyctl and friends, ptrace
// and process_vm_*, userfaultfd, io_uring, open_by_handle_at, reboot, swap,
// clock setting, acct, quotactl, syslog, iopl/ioperm.
//
// libcontainer compiles seccomp support only with the build tag seccomp
// (and libseccomp). Without it Start refuses every container rather than run
// them unconfined.
package runtime
