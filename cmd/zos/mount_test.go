package main

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
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
	src := corpusMin(t, "packs and reads 200 MB")
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

// TestCLIMountRW: a writable mount keeps its changes in the layer
// directory across a killed server and a remount, and umount takes both
// layers down.
func TestCLIMountRW(t *testing.T) {
	needFUSE(t)
	dir := t.TempDir()
	tree := smallTree(t)
	fl := filepath.Join(dir, "img.fl")
	mustRun(t, "flist", "pack", tree, "-o", fl, "--store", "dir://"+filepath.Join(dir, "store"))
	mnt, layer := filepath.Join(dir, "mnt"), filepath.Join(dir, "layer")
	lower := filepath.Join(layer, "lower")
	os.Mkdir(mnt, 0o755)
	logf := filepath.Join(dir, "mount.log")
	if _, errs, code := run(t, "flist", "mount", fl, mnt, "--rw"); code != exitUsage || !strings.Contains(errs, "--upper") {
		t.Fatalf("--rw without --upper: exit %d %q", code, errs)
	}
	detach := func() {
		unix.Unmount(mnt, unix.MNT_DETACH)
		unix.Unmount(lower, unix.MNT_DETACH)
	}

	pid := mountBG(t, fl, mnt, "--rw", "--upper", layer, "--log", logf)
	t.Cleanup(detach)
	os.WriteFile(filepath.Join(mnt, "etc/new"), []byte("new\n"), 0o644)
	os.Remove(filepath.Join(mnt, "link"))
	if err := os.Rename(filepath.Join(mnt, "etc"), filepath.Join(mnt, "etc2")); err != nil {
		t.Fatalf("rename a directory of the image: %v", err)
	}
	_, errs, code := run(t, "flist", "mount", fl, mnt, "--rw", "--upper", layer, "--log", logf)
	if code == 0 || !strings.Contains(errs, "already mounted") {
		t.Fatalf("second writable mount on a live one: exit %d %q", code, errs)
	}

	// Kill the server: the overlay is left over a dead lower.
	syscall.Kill(pid, syscall.SIGKILL)
	waitGone(t, pid)
	if _, err := os.ReadFile(filepath.Join(mnt, "big")); err == nil {
		t.Fatal("read through the overlay of a killed server succeeded")
	}
	pid = mountBG(t, fl, mnt, "--rw", "--upper", layer, "--log", logf)
	for p, want := range map[string]string{"etc2/new": "new\n", "etc2/hostname": "zos\n"} {
		if b, err := os.ReadFile(filepath.Join(mnt, p)); err != nil || string(b) != want {
			t.Errorf("after a killed server and a remount: %s: %q %v", p, b, err)
		}
	}
	for _, p := range []string{"link", "etc"} {
		if _, err := os.Lstat(filepath.Join(mnt, p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s is back: %v", p, err)
		}
	}
	logs, _ := os.ReadFile(logf)
	if !strings.Contains(string(logs), "detaching stale overlay") {
		t.Errorf("log lacks the repair:\n%s", logs)
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	if n := strings.Count(string(mi), " "+mnt+" "); n != 1 {
		t.Errorf("%d mounts at %s after the repair", n, mnt)
	}

	// umount: both layers go, the server exits.
	mustRun(t, "flist", "umount", mnt)
	waitGone(t, pid)
	mi, _ = os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mi), " "+mnt+" ") || strings.Contains(string(mi), " "+lower+" ") {
		t.Errorf("after umount:\n%s", mi)
	}
	// The layer belongs to this image.
	fl2 := filepath.Join(dir, "img2.fl")
	os.WriteFile(filepath.Join(tree, "etc/hostname"), []byte("other\n"), 0o644)
	mustRun(t, "flist", "pack", tree, "-o", fl2, "--store", "dir://"+filepath.Join(dir, "store"))
	if _, errs, code := run(t, "flist", "mount", fl2, mnt, "--rw", "--upper", layer, "--log", logf); code != exitUsage || !strings.Contains(errs, "holds changes to flist") {
		t.Errorf("another image over the layer: exit %d %q", code, errs)
	}
}

// TestCLIMountCacheBudget: a mount whose --cache is smaller than the image
// reads every file right and leaves the cache within its budget.
func TestCLIMountCacheBudget(t *testing.T) {
	needFUSE(t)
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	os.Mkdir(tree, 0o755)
	r := rand.New(rand.NewPCG(5, 5))
	want := map[string][]byte{}
	for i := range 4 {
		b := make([]byte, 1<<20)
		for j := range b {
			b[j] = byte(r.Uint32()) // incompressible: blobs as big as chunks
		}
		name := fmt.Sprintf("f%d", i)
		want[name] = b
		os.WriteFile(filepath.Join(tree, name), b, 0o644)
	}
	fl := filepath.Join(dir, "img.fl")
	mustRun(t, "flist", "pack", tree, "-o", fl, "--store", "dir://"+filepath.Join(dir, "store"))
	mnt, cache := filepath.Join(dir, "mnt"), filepath.Join(dir, "cache")
	os.Mkdir(mnt, 0o755)
	mountBG(t, fl, mnt, "--log", filepath.Join(dir, "mount.log"), "--cache", cache, "--cache-size", "1M")
	for name, b := range want {
		got, err := os.ReadFile(filepath.Join(mnt, name))
		if err != nil || !bytes.Equal(got, b) {
			t.Fatalf("%s: %d bytes, %v", name, len(got), err)
		}
	}
	mustRun(t, "flist", "umount", mnt)
	st := statsOf(t, cache)
	if st.Budget != 1<<20 || st.Bytes > st.Budget || st.Evictions == 0 || st.Blobs == 0 {
		t.Fatalf("cache after reading 4 MiB through a 1 MiB budget: %+v", st)
	}
}
