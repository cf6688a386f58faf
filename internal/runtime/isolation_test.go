package runtime

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// facts parses "key: value" lines.
func facts(log string) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(log, "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m
}

func TestIsolation(t *testing.T) {
	needContainers(t)
	r := newRuntime(t)
	script := `
echo "pids: $(ls /proc | grep -E '^[0-9]+$' | tr '\n' ' ')"
echo "pid1: $(tr '\0' ' ' < /proc/1/cmdline)"
echo "nets: $(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\n' ' ')"
grep -E '^(NoNewPrivs|CapEff|CapBnd|CapPrm|CapInh|CapAmb|Seccomp):' /proc/self/status
try() { name=$1; shift; if "$@" >/dev/null 2>&1; then echo "$name: allowed"; else echo "$name: denied"; fi; }
try mount mount -t tmpfs t /mnt
try unshare-user unshare -U true
try unshare-net unshare -n true
try unshare-mount unshare -m true
try sysctl sh -c 'echo x > /proc/sys/kernel/hostname'
try sysrq sh -c 'echo h > /proc/sysrq-trigger'
try sys-write sh -c 'echo 1 > /sys/kernel/profiling'
try open-disk sh -c "mknod /tmp/vda b 253 0 && head -c 1 /tmp/vda"
try chroot chroot / true
for p in /proc/kcore /proc/keys /proc/timer_list /proc/sched_debug; do [ -e $p ] && echo "$p: $(wc -c < $p)"; done
echo "firmware: $(ls /sys/firmware | wc -l)"
echo "hostname: $(hostname)"
if [ "$(uname -m)" = x86_64 ]; then perl -e '
sub try { my ($name, @args) = @_; $! = 0; my $r = syscall($args[0], @args[1 .. $#args]); printf "%s: %d %d\n", $name, $r, $! + 0 }
try("keyctl", 250, 0, 0, 0, 0, 0); try("clone3", 435, 0, 0);
try("personality-aslr", 135, 0x0040000); try("personality-query", 135, 0xffffffff)'; fi
`
	s := start(t, r, Spec{Args: []string{"/bin/sh", "-c", script}, Hostname: "iso"})
	st := waitStopped(t, r, s.ID, 20*time.Second)
	log := readLog(t, s)
	f := facts(log)
	if st.ExitCode != 0 {
		t.Errorf("exit code %d\n%s", st.ExitCode, log)
	}

	// Pid namespace: a few pids of its own, pid 1 its own command.
	pids := strings.Fields(f["pids"])
	if len(pids) == 0 || len(pids) > 6 || pids[0] != "1" {
		t.Errorf("pids seen in the container: %q, want 1 and a few of its own", pids)
	}
	for _, p := range pids {
		if n, _ := strconv.Atoi(p); n > 20 {
			t.Errorf("container sees pid %d: a host process?", n)
		}
	}
	if !strings.HasPrefix(f["pid1"], "/bin/sh -c") {
		t.Errorf("pid 1 is %q, want the container's command", f["pid1"])
	}
	if f["nets"] != "lo" {
		t.Errorf("network interfaces %q, want only lo", f["nets"])
	}
	// Docker's default set: CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID
	// SETUID SETPCAP NET_BIND_SERVICE NET_RAW SYS_CHROOT MKNOD AUDIT_WRITE
	// SETFCAP.
	const caps = "00000000a80425fb"
	for k, want := range map[string]string{
		"NoNewPrivs": "1", "Seccomp": "2",
		"CapEff": caps, "CapBnd": caps, "CapPrm": caps, "CapInh": "0000000000000000", "CapAmb": "0000000000000000",
	} {
		if f[k] != want {
			t.Errorf("%s = %q, want %q", k, f[k], want)
		}
	}
	for k, want := range map[string]string{
		"mount": "denied", "unshare-user": "denied", "unshare-net": "denied", "unshare-mount": "denied",
		"sysctl": "denied", "sysrq": "denied", "sys-write": "denied",
		"open-disk": "denied", // the device cgroup (mknod itself is allowed, as in Docker)
		"chroot":    "allowed",
		"firmware":  "0", "hostname": "iso",
	} {
		if f[k] != want {
			t.Errorf("%s: %q, want %q", k, f[k], want)
		}
	}
	// The seccomp profile itself (x86_64 syscall numbers): refused with EPERM,
	// clone3 with ENOSYS, ordinary personalities allowed.
	if goruntime.GOARCH == "amd64" {
		for k, want := range map[string]string{
			"keyctl": "-1 1", "clone3": "-1 38", "personality-aslr": "-1 1", "personality-query": "0 0",
		} {
			if f[k] != want {
				t.Errorf("seccomp: %s: %q, want %q (result errno)", k, f[k], want)
			}
		}
	}
	// Masked: read as empty, where the host kernel has them at all.
	for _, p := range []string{"/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug"} {
		if _, err := os.Stat(p); err == nil && f[p] != "0" {
			t.Errorf("%s: %q bytes, want it masked (0)", p, f[p])
		}
	}
	if t.Failed() {
		t.Logf("container log:\n%s", log)
	}
}

func TestUserByName(t *testing.T) {
	needContainers(t)
	r := newRuntime(t)
	s := start(t, r, Spec{
		Args: []string{"sh", "-c", `echo "$(id -u) $(id -g) $(id -G) $HOME $PATH"`},
		User: "daemon",
	})
	waitStopped(t, r, s.ID, 10*time.Second)
	want := "1 1 1 /usr/sbin /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
	if got := readLog(t, s); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestUserFilesInRoot: a symbolic link in the image cannot make the runtime
// read a host file as the image's /etc/passwd.
func TestUserFilesInRoot(t *testing.T) {
	host := filepath.Join(t.TempDir(), "passwd")
	if err := os.WriteFile(host, []byte("eve:x:77:77::/:/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	if err := os.Mkdir(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../../../../../../../.."+host, filepath.Join(root, "etc", "passwd")); err != nil {
		t.Fatal(err)
	}
	if u, err := resolveUser(&Spec{Rootfs: root, User: "eve"}); err == nil {
		t.Fatalf("user eve resolved to %d:%d through a link out of the rootfs", u.uid, u.gid)
	}
	u, err := resolveUser(&Spec{Rootfs: root, User: "77:78"})
	if err != nil || u.uid != 77 || u.gid != 78 {
		t.Fatalf("numeric user: %+v, %v", u, err)
	}
}

func TestMemory(t *testing.T) {
	needContainers(t)
	r := newRuntime(t)
	s := start(t, r, Spec{
		Args:   []string{"perl", "-e", `my $x = "a" x (200*1024*1024); print "survived\n"`},
		Memory: 32 << 20,
	})
	st := waitStopped(t, r, s.ID, 30*time.Second)
	if !st.OOMKilled || st.ExitCode != 137 {
		t.Errorf("state %+v, want OOM-killed with exit code 137", st)
	}
	if log := readLog(t, s); strings.Contains(log, "survived") {
		t.Errorf("the hog survived: %q", log)
	}
}

func TestPids(t *testing.T) {
	needContainers(t)
	r := newRuntime(t)
	s := start(t, r, Spec{
		Args: []string{"perl", "-e", `$| = 1; my ($ok, $fail) = (0, 0);
for (1..60) { my $p = fork(); if (!defined $p) { $fail++; next } if ($p == 0) { sleep 30; exit 0 } $ok++ }
print "forked $ok failed $fail\n"; sleep 30`},
		Pids: 16,
	})
	var ok, fail int
	deadline := time.Now().Add(10 * time.Second)
	for {
		if n, _ := fmt.Sscanf(readLog(t, s), "forked %d failed %d", &ok, &fail); n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no fork count in the log: %q", readLog(t, s))
		}
		time.Sleep(20 * time.Millisecond)
	}
	// perl itself is one of the 16.
	if ok < 1 || ok > 15 || ok+fail != 60 {
		t.Errorf("forked %d, failed %d: want at most 15 forks of 60 to succeed", ok, fail)
	}
	if err := r.Delete(context.Background(), s.ID); err != nil {
		t.Fatal(err)
	}
	assertGone(t, r, s.ID)
}

func TestCPU(t *testing.T) {
	needContainers(t)
	r := newRuntime(t)
	begin := time.Now()
	s := start(t, r, Spec{
		Args: []string{"perl", "-e", `my $end = time + 2; while (time < $end) {}`},
		CPU:  250,
	})
	waitStopped(t, r, s.ID, 20*time.Second)
	wall := time.Since(begin)
	used, err := cpuUsage(s.ID)
	if err != nil {
		t.Fatal(err)
	}
	share := used.Seconds() / wall.Seconds()
	t.Logf("cpu %v over %v: %.2f of a core", used, wall, share)
	if share < 0.15 || share > 0.35 {
		t.Errorf("a busy loop limited to 250 millicores used %.2f of a core", share)
	}
}

// cpuUsage reads the CPU time the container's cgroup used.
func cpuUsage(id string) (time.Duration, error) {
	if b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/cpuacct", (&Runtime{cgroupParent: DefaultCgroupParent}).cgroupPath(id), "cpuacct.usage")); err == nil {
		ns, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		return time.Duration(ns), err
	}
	b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", (&Runtime{cgroupParent: DefaultCgroupParent}).cgroupPath(id), "cpu.stat"))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "usage_usec "); ok {
			us, err := strconv.ParseInt(v, 10, 64)
			return time.Duration(us) * time.Microsecond, err
		}
	}
	return 0, fmt.Errorf("no usage_usec in cpu.stat")
}

func TestNetNS(t *testing.T) {
	needContainers(t)
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("no ip command (iproute2)")
	}
	name := testID(t)
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	ip("netns", "add", name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	ip("-n", name, "link", "add", "zt0", "type", "veth", "peer", "name", "zt1")

	r := newRuntime(t)
	s := start(t, r, Spec{
		Args:  []string{"sh", "-c", `tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort | tr '\n' ' '; ls /sys/class/net | tr '\n' ' '`},
		NetNS: filepath.Join("/run/netns", name),
	})
	waitStopped(t, r, s.ID, 10*time.Second)
	if got, want := readLog(t, s), "lo zt0 zt1 lo zt0 zt1 "; got != want {
		t.Errorf("interfaces %q, want %q", got, want)
	}
}

func TestStopGraceful(t *testing.T) {
	needContainers(t)
	r := newRuntime(t)
	ctx := context.Background()
	// An init that handles SIGTERM receives it and ends in time.
	s := start(t, r, Spec{Args: []string{"sh", "-c", `trap 'echo term; exit 3' TERM; echo up; while :; do sleep 0.05; done`}})
	waitLog(t, s, "up\n")
	begin := time.Now()
	if err := r.Stop(ctx, s.ID, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(begin); d > 5*time.Second {
		t.Errorf("stop took %v: SIGTERM not delivered?", d)
	}
	st, err := r.State(ctx, s.ID)
	if err != nil || st.Status != Stopped || st.ExitCode != 3 {
		t.Errorf("state %+v, %v: want stopped with exit code 3", st, err)
	}
	// sh also reports its sleep child, which got SIGTERM too.
	if got := readLog(t, s); !strings.HasPrefix(got, "up\n") || !strings.HasSuffix(got, "term\n") {
		t.Errorf("log %q", got)
	}
	if err := r.Stop(ctx, s.ID, time.Second); err != nil {
		t.Errorf("second stop: %v", err)
	}
}

func TestStopKill(t *testing.T) {
	needContainers(t)
	r := newRuntime(t)
	ctx := context.Background()
	// sleep as init has no handler: the kernel drops SIGTERM, SIGKILL ends it.
	s := start(t, r, Spec{Args: []string{"sleep", "300"}})
	st, err := r.State(ctx, s.ID)
	if err != nil || st.Status != Running || st.Pid <= 0 || st.ExitCode != -1 {
		t.Fatalf("state %+v, %v: want running with a pid", st, err)
	}
	if err := r.Stop(ctx, s.ID, 200*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	st, err = r.State(ctx, s.ID)
	if err != nil || st.Status != Stopped || st.ExitCode != 137 || st.Pid != 0 {
		t.Errorf("state %+v, %v: want stopped with exit code 137", st, err)
	}
}

func waitLog(t *testing.T, s Spec, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for readLog(t, s) != want {
		if time.Now().After(deadline) {
			t.Fatalf("log %q, want %q", readLog(t, s), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// assertGone checks that nothing is left of a deleted container.
func assertGone(t *testing.T, r *Runtime, id string) {
	t.Helper()
	if _, err := os.Lstat(r.dir(id)); !os.IsNotExist(err) {
		t.Errorf("state dir: %v", err)
	}
	left, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup/*", (&Runtime{cgroupParent: DefaultCgroupParent}).cgroupPath(id)))
	if more, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", (&Runtime{cgroupParent: DefaultCgroupParent}).cgroupPath(id))); len(more) > 0 {
		left = append(left, more...)
	}
	if len(left) > 0 {
		t.Errorf("cgroups left: %v", left)
	}
	if _, err := r.State(context.Background(), id); !errorsIs(err, ErrNotFound) {
		t.Errorf("state after delete: %v, want ErrNotFound", err)
	}
}
