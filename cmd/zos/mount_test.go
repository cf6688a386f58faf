package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zosgrid/zos/internal/treediff"
)

func needFUSE(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse: FUSE mounts are impossible here")
	}
	if os.Geteuid() != 0 {
		t.Skip("mounting with allow_other and device nodes needs root")
	}
}

var serverPid = regexp.MustCompile(`server pid (\d+)`)

// mountBG runs 'zos flist mount' in the background mode and returns the
// server's pid. The mount is gone (lazily) when the test ends.
func mountBG(t *testing.T, args ...string) int {
	t.Helper()
	out := mustRun(t, append([]string{"flist", "mount"}, args...)...)
	m := serverPid.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("mount printed no server pid: %q", out)
	}
	pid, _ := strconv.Atoi(m[1])
	mnt := args[1]
	t.Cleanup(func() {
		unix.Unmount(mnt, unix.MNT_DETACH)
		waitGone(t, pid)
	})
	return pid
}

// waitGone waits for a process that is not our child to exit.
func waitGone(t *testing.T, pid int) {
	t.Helper()
	for range 100 {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			return
		}
		if f := strings.Fields(string(b)); len(f) > 2 && f[2] == "Z" {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Errorf("server %d still running", pid)
}

// TestCLIMountLifecycle: a background mount is ready when the command
// returns; a second server is refused; a SIGKILLed server leaves a stale
// mount that the next mount detaches; umount stops the server; --cache
// keeps serving what it holds when the store loses it.
func TestCLIMountLifecycle(t *testing.T) {
	needFUSE(t)
	dir := t.TempDir()
	tree := smallTree(t)
	fl := filepath.Join(dir, "img.fl")
	storeDir := filepath.Join(dir, "store")
	mustRun(t, "flist", "pack", tree, "-o", fl, "--store", "dir://"+storeDir)
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	logf := filepath.Join(dir, "mount.log")
	cache := filepath.Join(dir, "cache")

	pid := mountBG(t, fl, mnt, "--log", logf, "--cache", cache)
	if b, err := os.ReadFile(filepath.Join(mnt, "etc/hostname")); err != nil || string(b) != "zos\n" {
		t.Fatalf("read right after mount returned: %q %v", b, err)
	}
	_, errs, code := run(t, "flist", "mount", fl, mnt, "--log", logf)
	if code == 0 || !strings.Contains(errs, "already mounted") || strings.Count(strings.TrimSpace(errs), "\n") != 0 {
		t.Fatalf("second mount on a live mount point: exit %d %q", code, errs)
	}

	// Kill the server: the mount is left stale.
	syscall.Kill(pid, syscall.SIGKILL)
	waitGone(t, pid)
	var sfs unix.Statfs_t
	if err := unix.Statfs(mnt, &sfs); !errors.Is(err, unix.ENOTCONN) && !errors.Is(err, unix.ECONNABORTED) {
		t.Fatalf("after SIGKILL: statfs %v, want ENOTCONN or ECONNABORTED", err)
	}
	// The next mount repairs it; the cache now serves the content the
	// store has lost.
	os.RemoveAll(storeDir)
	os.Mkdir(storeDir, 0o755)
	pid = mountBG(t, fl, mnt, "--log", logf, "--cache", cache)
	if b, err := os.ReadFile(filepath.Join(mnt, "etc/hostname")); err != nil || string(b) != "zos\n" {
		t.Fatalf("read after remounting a stale mount point: %q %v", b, err)
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "big")); err == nil {
		t.Fatalf("read a file neither the store nor the cache holds: %d bytes", len(b))
	} else if !errors.Is(err, unix.EIO) {
		t.Fatalf("uncached file: %v, want EIO", err)
	}
	logs, _ := os.ReadFile(logf)
	for _, want := range []string{"detaching stale mount", "chunk fetch failed", "store=\"cache{local="} {
		if !strings.Contains(string(logs), want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}

	// umount: the mount goes, the server exits.
	mustRun(t, "flist", "umount", mnt)
	waitGone(t, pid)
	if err := unix.Statfs(mnt, &sfs); err != nil || sfs.Type == 0x65735546 { // FUSE_SUPER_MAGIC
		t.Fatalf("after umount: statfs %v, type %x", err, sfs.Type)
	}
	if _, errs, code := run(t, "flist", "umount", mnt); code == 0 || !strings.Contains(errs, "not mounted") {
		t.Fatalf("umount of a plain directory: exit %d %q", code, errs)
	}
	// A mount that cannot start reports why, with the flist's exit status.
	garbage := filepath.Join(dir, "g.fl")
	os.WriteFile(garbage, []byte("zosflist\x01\x00garbage"), 0o644)
	if _, errs, code := run(t, "flist", "mount", garbage, mnt, "--log", logf); code != exitContent || !strings.Contains(errs, "g.fl") {
		t.Fatalf("mount of a corrupt flist: exit %d %q", code, errs)
	}
}

// TestCLIMountCorpus mounts a real Debian root filesystem: the mount
// matches the tree attribute by attribute, and the system runs from it.
func TestCLIMountCorpus(t *testing.T) {
	needFUSE(t)
	corpus := os.Getenv("ZOS_CORPUS")
	if corpus == "" {
		corpus = "/var/cache/zos-corpus"
	}
	src := filepath.Join(corpus, "min")
	if _, err := os.Stat(filepath.Join(src, ".done")); err != nil {
		msg := "Debian corpus not built: run ../shared/corpus/build-corpus.sh min"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	if testing.Short() {
		t.Skip("packs and reads 200 MB: skipped in -short mode")
	}
	dir := t.TempDir()
	fl := filepath.Join(dir, "min.fl")
	mustRun(t, "flist", "pack", src, "-o", fl, "--store", "dir://"+filepath.Join(dir, "store"), "--workers", "2")
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	mountBG(t, fl, mnt, "--log", filepath.Join(dir, "mount.log"))

	start := time.Now()
	out, err := exec.Command("chroot", mnt, "/bin/sh", "-c", "dpkg --verify").CombinedOutput()
	if err != nil || len(out) != 0 {
		t.Errorf("dpkg --verify in the mounted image: %v\n%s", err, out)
	}
	t.Logf("dpkg --verify, cold: %v", time.Since(start).Round(time.Millisecond))
	if _, err := os.Stat(filepath.Join(src, "usr/bin/python3")); err == nil {
		if out, err := exec.Command("chroot", mnt, "/usr/bin/python3", "-c", "1").CombinedOutput(); err != nil {
			t.Errorf("python3 in the mounted image: %v\n%s", err, out)
		}
	}
	diffs, err := treediff.Compare(src, mnt)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range diffs {
		t.Error(d)
	}
	mustRun(t, "flist", "umount", mnt)
}
