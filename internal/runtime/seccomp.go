package runtime

import (
	goruntime "runtime"

	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// seccompProfile is the default profile every container runs under: an
// allow list modelled on Docker's and containerd's default profiles, reduced
// to the capability set the containers get (no CAP_SYS_ADMIN, CAP_SYS_PTRACE,
// CAP_SYS_TIME, CAP_SYS_MODULE, ...). Anything not listed fails with EPERM.
// See the package documentation for why it is an allow list.
func seccompProfile() *specs.LinuxSeccomp {
	eperm, enosys := uint(unix.EPERM), uint(unix.ENOSYS)
	allow := func(names ...string) specs.LinuxSyscall {
		return specs.LinuxSyscall{Names: names, Action: specs.ActAllow}
	}
	personality := func(v uint64) specs.LinuxSyscall {
		return specs.LinuxSyscall{Names: []string{"personality"}, Action: specs.ActAllow,
			Args: []specs.LinuxSeccompArg{{Index: 0, Value: v, Op: specs.OpEqualTo}}}
	}
	s := &specs.LinuxSeccomp{
		DefaultAction:   specs.ActErrno,
		DefaultErrnoRet: &eperm,
		Architectures:   seccompArches(),
		Syscalls: []specs.LinuxSyscall{
			allow(allowedSyscalls...),
			// PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32 and the
			// query (0xffffffff); other personalities change how the
			// kernel lays out and treats the process (READ_IMPLIES_EXEC,
			// ADDR_NO_RANDOMIZE).
			personality(0x0), personality(0x8), personality(0x20000),
			personality(0x20008), personality(0xffffffff),
			// socket for every family except AF_VSOCK: vsock reaches the
			// hypervisor and its host-side services, outside the network
			// namespace.
			{
				Names: []string{"socket"}, Action: specs.ActAllow,
				Args: []specs.LinuxSeccompArg{{Index: 0, Value: unix.AF_VSOCK, Op: specs.OpNotEqual}},
			},
			// clone3 passes its flags in a struct seccomp cannot read, so it
			// cannot be filtered like clone: ENOSYS makes the C libraries
			// fall back to clone, which is.
			{Names: []string{"clone3"}, Action: specs.ActErrno, ErrnoRet: &enosys},
		},
	}
	const newNS = unix.CLONE_NEWNS | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC | unix.CLONE_NEWUSER |
		unix.CLONE_NEWPID | unix.CLONE_NEWNET | unix.CLONE_NEWCGROUP | unix.CLONE_NEWTIME
	// clone without namespace flags: threads and processes, never a new
	// namespace (the user namespace above all, the door to most kernel bugs
	// reachable by an unprivileged process). s390 swaps the first two
	// arguments.
	flagArg := uint(0)
	if goruntime.GOARCH == "s390x" {
		flagArg = 1
	}
	s.Syscalls = append(s.Syscalls, specs.LinuxSyscall{
		Names: []string{"clone"}, Action: specs.ActAllow,
		Args: []specs.LinuxSeccompArg{{Index: flagArg, Value: newNS, ValueTwo: 0, Op: specs.OpMaskedEqual}},
	})
	switch goruntime.GOARCH {
	case "amd64":
		s.Syscalls = append(s.Syscalls, allow("arch_prctl", "modify_ldt"))
	case "386":
		s.Syscalls = append(s.Syscalls, allow("modify_ldt"))
	case "arm", "arm64":
		s.Syscalls = append(s.Syscalls, allow("arm_fadvise64_64", "arm_sync_file_range",
			"sync_file_range2", "breakpoint", "cacheflush", "set_tls"))
	case "s390x":
		s.Syscalls = append(s.Syscalls, allow("s390_pci_mmio_read", "s390_pci_mmio_write", "s390_runtime_instr"))
	}
	return s
}

func seccompArches() []specs.Arch {
	switch goruntime.GOARCH {
	case "amd64":
		return []specs.Arch{specs.ArchX86_64, specs.ArchX86, specs.ArchX32}
	case "386":
		return []specs.Arch{specs.ArchX86}
	case "arm64":
		return []specs.Arch{specs.ArchAARCH64, specs.ArchARM}
	case "arm":
		return []specs.Arch{specs.ArchARM}
	case "s390x":
		return []specs.Arch{specs.ArchS390X, specs.ArchS390}
	case "riscv64":
		return []specs.Arch{specs.ArchRISCV64}
	case "ppc64le":
		return []specs.Arch{specs.ArchPPC64LE}
	}
	return nil
}

// allowedSyscalls are allowed with any arguments. Names unknown to the
// installed libseccomp or to the architecture are skipped when the filter is
// built, so the list names the 32-bit and time64 variants too.
//
// Deliberately absent (EPERM), grouped by what they would open:
//   - mounts and namespaces: mount, umount, umount2, pivot_root, unshare,
//     setns, fsopen, fsconfig, fsmount, fspick, open_tree, move_mount,
//     mount_setattr, statmount, listmount (chroot is allowed: CAP_SYS_CHROOT);
//   - the kernel itself: init_module, finit_module, delete_module,
//     create_module, get_kernel_syms, query_module, kexec_load,
//     kexec_file_load, bpf, perf_event_open, lookup_dcookie, syslog,
//     userfaultfd, io_uring_setup, io_uring_enter, io_uring_register;
//   - other processes: ptrace, process_vm_readv, process_vm_writev, kcmp,
//     pidfd_getfd, process_madvise;
//   - the host's identity and clock: reboot, swapon, swapoff, sethostname,
//     setdomainname, settimeofday, stime, clock_settime, clock_adjtime,
//     adjtimex, acct, quotactl, quotactl_fd, nfsservctl, vhangup;
//   - keys and handles: keyctl, add_key, request_key, open_by_handle_at,
//     name_to_handle_at, fanotify_init;
//   - hardware and old ABIs: iopl, ioperm, vm86, vm86old, uselib, ustat,
//     sysfs, mbind, set_mempolicy, move_pages, migrate_pages.
var allowedSyscalls = []string{
	"accept", "accept4", "access", "alarm", "bind", "brk",
	"cachestat", "capget", "capset", "chdir", "chmod", "chown", "chown32", "chroot",
	"clock_getres", "clock_getres_time64", "clock_gettime", "clock_gettime64",
	"clock_nanosleep", "clock_nanosleep_time64", "close", "close_range", "connect",
	"copy_file_range", "creat", "dup", "dup2", "dup3",
	"epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_pwait",
	"epoll_pwait2", "epoll_wait", "epoll_wait_old", "eventfd", "eventfd2",
	"execve", "execveat", "exit", "exit_group",
	"faccessat", "faccessat2", "fadvise64", "fadvise64_64", "fallocate", "fanotify_mark",
	"fchdir", "fchmod", "fchmodat", "fchmodat2", "fchown", "fchown32", "fchownat",
	"fcntl", "fcntl64", "fdatasync", "fgetxattr", "flistxattr", "flock", "fork",
	"fremovexattr", "fsetxattr", "fstat", "fstat64", "fstatat64", "fstatfs", "fstatfs64",
	"fsync", "ftruncate", "ftruncate64",
	"futex", "futex_requeue", "futex_time64", "futex_wait", "futex_waitv", "futex_wake",
	"futimesat", "get_mempolicy", "get_robust_list", "get_thread_area", "getcpu", "getcwd",
	"getdents", "getdents64", "getegid", "getegid32", "geteuid", "geteuid32",
	"getgid", "getgid32", "getgroups", "getgroups32", "getitimer", "getpeername",
	"getpgid", "getpgrp", "getpid", "getppid", "getpriority", "getrandom",
	"getresgid", "getresgid32", "getresuid", "getresuid32", "getrlimit", "getrusage",
	"getsid", "getsockname", "getsockopt", "gettid", "gettimeofday", "getuid", "getuid32",
	"getxattr", "getxattrat",
	"inotify_add_watch", "inotify_init", "inotify_init1", "inotify_rm_watch",
	"io_cancel", "io_destroy", "io_getevents", "io_pgetevents", "io_pgetevents_time64",
	"io_setup", "io_submit", "ioctl", "ioprio_get", "ioprio_set", "ipc", "kill",
	"landlock_add_rule", "landlock_create_ruleset", "landlock_restrict_self",
	"lchown", "lchown32", "lgetxattr", "link", "linkat", "listen", "listxattr", "listxattrat",
	"llistxattr", "_llseek", "lremovexattr", "lseek", "lsetxattr", "lstat", "lstat64",
	"madvise", "map_shadow_stack", "membarrier", "memfd_create", "memfd_secret", "mincore",
	"mkdir", "mkdirat", "mknod", "mknodat", "mlock", "mlock2", "mlockall", "mmap", "mmap2",
	"mprotect", "mq_getsetattr", "mq_notify", "mq_open", "mq_timedreceive",
	"mq_timedreceive_time64", "mq_timedsend", "mq_timedsend_time64", "mq_unlink",
	"mremap", "mseal", "msgctl", "msgget", "msgrcv", "msgsnd", "msync",
	"munlock", "munlockall", "munmap", "nanosleep", "newfstatat", "_newselect",
	"open", "openat", "openat2", "pause", "pidfd_open", "pidfd_send_signal",
	"pipe", "pipe2", "pkey_alloc", "pkey_free", "pkey_mprotect", "poll", "ppoll",
	"ppoll_time64", "prctl", "pread64", "preadv", "preadv2", "prlimit64", "process_mrelease",
	"pselect6", "pselect6_time64", "pwrite64", "pwritev", "pwritev2",
	"read", "readahead", "readlink", "readlinkat", "readv", "recv", "recvfrom", "recvmmsg",
	"recvmmsg_time64", "recvmsg", "remap_file_pages", "removexattr", "removexattrat",
	"rename", "renameat", "renameat2", "restart_syscall", "rmdir", "rseq",
	"rt_sigaction", "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn",
	"rt_sigsuspend", "rt_sigtimedwait", "rt_sigtimedwait_time64", "rt_tgsigqueueinfo",
	"sched_get_priority_max", "sched_get_priority_min", "sched_getaffinity", "sched_getattr",
	"sched_getparam", "sched_getscheduler", "sched_rr_get_interval",
	"sched_rr_get_interval_time64", "sched_setaffinity", "sched_setattr", "sched_setparam",
	"sched_setscheduler", "sched_yield", "seccomp", "select",
	"semctl", "semget", "semop", "semtimedop", "semtimedop_time64",
	"send", "sendfile", "sendfile64", "sendmmsg", "sendmsg", "sendto",
	"set_robust_list", "set_thread_area", "set_tid_address",
	"setfsgid", "setfsgid32", "setfsuid", "setfsuid32", "setgid", "setgid32",
	"setgroups", "setgroups32", "setitimer", "setpgid", "setpriority",
	"setregid", "setregid32", "setresgid", "setresgid32", "setresuid", "setresuid32",
	"setreuid", "setreuid32", "setrlimit", "setsid", "setsockopt", "setuid", "setuid32",
	"setxattr", "setxattrat", "shmat", "shmctl", "shmdt", "shmget", "shutdown",
	"sigaltstack", "signalfd", "signalfd4", "sigprocmask", "sigreturn",
	"socketcall", "socketpair", "splice", "stat", "stat64", "statfs", "statfs64", "statx",
	"symlink", "symlinkat", "sync", "sync_file_range", "syncfs", "sysinfo",
	"tee", "tgkill", "time", "timer_create", "timer_delete", "timer_getoverrun",
	"timer_gettime", "timer_gettime64", "timer_settime", "timer_settime64",
	"timerfd_create", "timerfd_gettime", "timerfd_gettime64", "timerfd_settime",
	"timerfd_settime64", "times", "tkill", "truncate", "truncate64",
	"ugetrlimit", "umask", "uname", "unlink", "unlinkat", "uretprobe",
	"utime", "utimensat", "utimensat_time64", "utimes",
	"vfork", "vmsplice", "wait4", "waitid", "waitpid", "write", "writev",
}
