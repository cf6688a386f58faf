package mount_test

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/zosgrid/zos/internal/flist"
	"github.com/zosgrid/zos/internal/mount"
	"github.com/zosgrid/zos/internal/store"
	"github.com/zosgrid/zos/internal/store/dir"
	"github.com/zosgrid/zos/internal/treediff"
)

// mountRW mounts r writable at a fresh mount point with its changes in
// layer; the mount is torn down when the test ends.
func mountRW(t *testing.T, mnt, layer string, r *flist.Reader, st store.Store) *mount.Server {
	t.Helper()
	m, err := mount.Mount(context.Background(), mnt, r, st, mount.Options{Upper: layer, Dev: true, Suid: true})
	must(t, err)
	t.Cleanup(func() {
		select {
		case <-m.Done():
		default:
			if err := m.Unmount(); err != nil {
				t.Errorf("unmount: %v", err)
				m.DetachLazy()
			}
		}
	})
	return m
}

func isMountPoint(t *testing.T, p string) bool {
	t.Helper()
	mi, err := os.ReadFile("/proc/self/mountinfo")
	must(t, err)
	for _, line := range strings.Split(string(mi), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == p {
			return true
		}
	}
	return false
}

func readString(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	must(t, err)
	return string(b)
}

// TestWritableLayer writes, deletes and renames files and directories of
// the image through a writable mount, remounts, and finds every change
// kept in the layer directory; the read-only image under it never changes.
func TestWritableLayer(t *testing.T) {
	src, st, r, layer, mnt := rwFixture(t)

	m := mountRW(t, mnt, layer, r, st)
	if m.Lower() != filepath.Join(layer, "lower") || !isMountPoint(t, m.Lower()) || !isMountPoint(t, mnt) {
		t.Fatalf("lower %s, mount points: %v %v", m.Lower(), isMountPoint(t, m.Lower()), isMountPoint(t, mnt))
	}
	// A change of attributes copies up metadata only: no chunk is fetched.
	must(t, os.Chmod(filepath.Join(mnt, "big.bin"), 0o700))
	must(t, os.Lchown(filepath.Join(mnt, "etc/f100"), 77, 88))
	if s := m.FS().Stats(); s.Bytes != 0 {
		t.Errorf("chmod and chown of image files fetched %d bytes: %+v", s.Bytes, s)
	}
	var st1 unix.Stat_t
	must(t, unix.Stat(filepath.Join(mnt, "etc/big-link"), &st1)) // the other name of big.bin
	if st1.Mode&0o777 != 0o700 {
		t.Errorf("chmod through one hard link: the other name has mode %o", st1.Mode&0o777)
	}
	// Before any other change the merged tree is the image.
	src100 := readString(t, filepath.Join(src, "etc/f100"))
	must(t, os.Lchown(filepath.Join(mnt, "etc/f100"), 0, 0)) // back, as treediff compares owners
	must(t, os.Chmod(filepath.Join(mnt, "big.bin"), 0o755))
	diffs, err := treediff.Compare(src, mnt)
	must(t, err)
	for _, d := range diffs {
		t.Errorf("fresh writable mount differs from the image: %s", d)
	}

	// Changes of every kind.
	must(t, os.WriteFile(filepath.Join(mnt, "new.txt"), []byte("new file\n"), 0o644))
	must(t, os.Mkdir(filepath.Join(mnt, "etc/newdir"), 0o755))
	f, err := os.OpenFile(filepath.Join(mnt, "etc/f100"), os.O_WRONLY|os.O_APPEND, 0)
	must(t, err)
	_, err = f.WriteString("appended")
	must(t, err)
	must(t, f.Close())
	must(t, os.Remove(filepath.Join(mnt, "etc/f007")))
	must(t, os.RemoveAll(filepath.Join(mnt, "etc/other")))
	must(t, os.Rename(filepath.Join(mnt, "etc/deep"), filepath.Join(mnt, "etc/renamed")))    // a directory of the image
	must(t, os.Rename(filepath.Join(mnt, "etc/f001"), filepath.Join(mnt, "etc/renamed/f1"))) // a file, into it
	f, err = os.OpenFile(filepath.Join(mnt, "etc/three-b"), os.O_WRONLY|os.O_APPEND, 0)
	must(t, err)
	_, err = f.WriteString("more\n")
	must(t, err)
	must(t, f.Close())

	check := func(when string) {
		t.Helper()
		for p, want := range map[string]string{
			"new.txt":             "new file\n",
			"etc/f100":            src100 + "appended",
			"etc/renamed/er/dup1": "same content",
			"etc/renamed/f1":      readString(t, filepath.Join(src, "etc/f001")),
			"three":               "three names\nmore\n",
			"etc/three-b":         "three names\nmore\n",
			"etc/renamed/three-c": "three names\nmore\n",
			"etc/f002":            readString(t, filepath.Join(src, "etc/f002")),
			"big.bin":             readString(t, filepath.Join(src, "big.bin")),
		} {
			b, err := os.ReadFile(filepath.Join(mnt, p))
			if err != nil || string(b) != want {
				t.Errorf("%s: %s: %d bytes %v, want %d bytes", when, p, len(b), err, len(want))
			}
		}
		for _, p := range []string{"etc/f007", "etc/other", "etc/deep", "etc/f001"} {
			if _, err := os.Lstat(filepath.Join(mnt, p)); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("%s: %s is back: %v", when, p, err)
			}
		}
		if fi, err := os.Stat(filepath.Join(mnt, "etc/newdir")); err != nil || !fi.IsDir() {
			t.Errorf("%s: etc/newdir: %v", when, err)
		}
		var a, b unix.Stat_t
		must(t, unix.Stat(filepath.Join(mnt, "three"), &a))
		must(t, unix.Stat(filepath.Join(mnt, "etc/renamed/three-c"), &b))
		if a.Ino != b.Ino || a.Nlink != 3 {
			t.Errorf("%s: hard links of a copied-up file: inodes %d %d, nlink %d", when, a.Ino, b.Ino, a.Nlink)
		}
		ents, err := os.ReadDir(filepath.Join(mnt, "etc/renamed"))
		must(t, err)
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		if strings.Join(names, " ") != "dup2 er f1 three-c" {
			t.Errorf("%s: renamed directory lists %v", when, names)
		}
	}
	check("mounted")
	// The image under the overlay has not changed.
	diffs, err = treediff.Compare(src, m.Lower())
	must(t, err)
	for _, d := range diffs {
		t.Errorf("lower layer changed: %s", d)
	}
	if err := os.WriteFile(filepath.Join(m.Lower(), "x"), nil, 0o644); !errors.Is(err, unix.EROFS) {
		t.Errorf("write to the lower layer: %v", err)
	}

	// Unmount tears down both layers; a new mount finds every change.
	must(t, m.Unmount())
	if isMountPoint(t, mnt) || isMountPoint(t, m.Lower()) {
		t.Fatalf("after unmount: overlay mounted %v, lower mounted %v", isMountPoint(t, mnt), isMountPoint(t, m.Lower()))
	}
	m = mountRW(t, mnt, layer, r, st)
	check("remounted")

	// The layer belongs to this image: another one is refused, and so is
	// a directory that holds other things.
	must(t, m.Unmount())
	other := filepath.Join(t.TempDir(), "other")
	must(t, os.MkdirAll(other, 0o755))
	must(t, os.WriteFile(filepath.Join(other, "f"), []byte("x"), 0o644))
	r2 := packTree(t, other, st)
	if _, err := mount.Mount(context.Background(), mnt, r2, st, mount.Options{Upper: layer}); !errors.Is(err, mount.ErrLayer) ||
		!strings.Contains(err.Error(), r.Digest().Short()) {
		t.Errorf("mount of another flist over the layer: %v", err)
	}
	if _, err := mount.Mount(context.Background(), mnt, r2, st, mount.Options{Upper: other}); !errors.Is(err, mount.ErrLayer) {
		t.Errorf("mount with a non-empty, non-layer upper directory: %v", err)
	}
	if isMountPoint(t, mnt) {
		t.Error("a refused mount left a mount behind")
	}

	// A crash while making a layer leaves its empty skeleton without the
	// mark: the next mount makes the layer again. A skeleton that holds
	// anything else is refused like any other directory.
	half := filepath.Join(t.TempDir(), "half")
	for _, d := range []string{"lower", "upper", "work"} {
		must(t, os.MkdirAll(filepath.Join(half, d), 0o755))
	}
	must(t, os.WriteFile(filepath.Join(half, "zos-layer.tmp"), []byte("zos la"), 0o644))
	m = mountRW(t, mnt, half, r2, st)
	if got := readString(t, filepath.Join(mnt, "f")); got != "x" {
		t.Errorf("mount over a half-made layer reads %q", got)
	}
	must(t, m.Unmount())
	stray := filepath.Join(t.TempDir(), "stray")
	for _, d := range []string{"lower", "upper/etc", "work"} {
		must(t, os.MkdirAll(filepath.Join(stray, d), 0o755))
	}
	if _, err := mount.Mount(context.Background(), mnt, r2, st, mount.Options{Upper: stray}); !errors.Is(err, mount.ErrLayer) {
		t.Errorf("mount over a skeleton holding files, without the mark: %v", err)
	}
}

// TestWritableLayerStaleLower aborts the FUSE connection under a writable
// mount, as a killed server leaves it: the overlay is stale; the next
// mount detaches it and the lower, and serves the layer again. A live
// mount is refused.
func TestWritableLayerStaleLower(t *testing.T) {
	src, st, r, layer, mnt := rwFixture(t)
	m := mountRW(t, mnt, layer, r, st)
	must(t, os.WriteFile(filepath.Join(mnt, "kept"), []byte("kept"), 0o644))
	if _, err := mount.Mount(context.Background(), mnt, r, st, mount.Options{Upper: layer}); !errors.Is(err, mount.ErrMounted) {
		t.Fatalf("second writable mount on a live one: %v", err)
	}

	abortFUSE(t, m.Lower())
	<-m.Done()
	if _, err := os.ReadFile(filepath.Join(mnt, "etc/f002")); err == nil {
		t.Fatal("read through a dead lower succeeded")
	}
	m = mountRW(t, mnt, layer, r, st)
	if got := readString(t, filepath.Join(mnt, "kept")); got != "kept" {
		t.Errorf("kept = %q", got)
	}
	if got, want := readString(t, filepath.Join(mnt, "etc/f002")), readString(t, filepath.Join(src, "etc/f002")); got != want {
		t.Errorf("etc/f002 after repair: %q", got)
	}
	// One overlay and one lower, not stacks of stale ones.
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	if n := bytes.Count(mi, []byte(" "+mnt+" ")); n != 1 {
		t.Errorf("%d mounts at %s", n, mnt)
	}
	if n := bytes.Count(mi, []byte(" "+m.Lower()+" ")); n != 1 {
		t.Errorf("%d mounts at %s", n, m.Lower())
	}
	// umount by path tears down both, as the CLI does.
	must(t, mount.Unmount(mnt, false))
	<-m.Done()
	if isMountPoint(t, mnt) || isMountPoint(t, m.Lower()) {
		t.Error("umount left a layer mounted")
	}
}

// abortFUSE aborts the FUSE connection of the mount at dir, which then
// answers ENOTCONN as if its server had been killed.
func abortFUSE(t *testing.T, dir string) {
	t.Helper()
	var st unix.Stat_t
	must(t, unix.Stat(dir, &st))
	const ctl = "/sys/fs/fuse/connections"
	if !isMountPoint(t, ctl) {
		// The control filesystem systemd usually mounts.
		if err := unix.Mount("fusectl", ctl, "fusectl", 0, ""); err != nil {
			t.Skipf("no FUSE control filesystem at %s: %v", ctl, err)
		}
	}
	// The connection is named by the superblock's device number; FUSE
	// mounts have major 0.
	abort := filepath.Join(ctl, strconv.FormatUint(uint64(unix.Minor(st.Dev)), 10), "abort")
	if err := os.WriteFile(abort, []byte("1"), 0o200); err != nil {
		t.Skipf("cannot abort a FUSE connection here: %v", err)
	}
}

// rwFixture packs the test tree into a dir store and returns it with the
// opened flist, a layer directory and an empty mount point (FUSE needed).
func rwFixture(t *testing.T) (src string, st *dir.Store, r *flist.Reader, layer, mnt string) {
	t.Helper()
	needFUSE(t)
	src = makeTree(t)
	st, err := dir.New(t.TempDir())
	must(t, err)
	r = packTree(t, src, st)
	layer = filepath.Join(t.TempDir(), "layer")
	mnt = filepath.Join(t.TempDir(), "mnt")
	must(t, os.Mkdir(mnt, 0o755))
	return src, st, r, layer, mnt
}

// TestSharedImageOverlays stacks two writable overlays on one read-only
// image mount: each sees the image and only its own changes; unmounting
// an overlay leaves the image and the other overlay serving; an overlay
// over a dead image is detached when mounted again over a new one.
func TestSharedImageOverlays(t *testing.T) {
	src, st, r, _, _ := rwFixture(t)
	img := filepath.Join(t.TempDir(), "image")
	must(t, os.Mkdir(img, 0o755))
	m, err := mount.Mount(context.Background(), img, r, st, mount.Options{Dev: true, Suid: true})
	must(t, err)
	t.Cleanup(func() {
		if err := m.Unmount(); err != nil {
			m.DetachLazy()
		}
	})
	base := t.TempDir()
	dirs := []string{filepath.Join(base, "a"), filepath.Join(base, "b")}
	layers := []string{filepath.Join(base, "la"), filepath.Join(base, "lb")}
	for i := range dirs {
		must(t, os.Mkdir(dirs[i], 0o755))
		must(t, mount.Overlay(dirs[i], img, layers[i], r, mount.OverlayOptions{Suid: true}))
		t.Cleanup(func() { mount.Unmount(dirs[i], true) })
	}
	want := readString(t, filepath.Join(src, "etc/f002"))
	must(t, os.WriteFile(filepath.Join(dirs[0], "etc/f002"), []byte("changed in a"), 0o644))
	must(t, os.Remove(filepath.Join(dirs[1], "etc/f003")))
	if got := readString(t, filepath.Join(dirs[1], "etc/f002")); got != want {
		t.Errorf("b sees a's change: %q", got)
	}
	if _, err := os.Stat(filepath.Join(dirs[0], "etc/f003")); err != nil {
		t.Errorf("a lost the file b deleted: %v", err)
	}
	if got := readString(t, filepath.Join(img, "etc/f002")); got != want {
		t.Errorf("the image changed: %q", got)
	}
	// A second overlay on a live one is refused, as for Mount.
	if err := mount.Overlay(dirs[0], img, layers[0], r, mount.OverlayOptions{}); !errors.Is(err, mount.ErrMounted) {
		t.Errorf("overlay on a live overlay: %v", err)
	}
	// Unmounting a's overlay leaves the image and b.
	must(t, mount.Unmount(dirs[0], false))
	if isMountPoint(t, dirs[0]) || !isMountPoint(t, img) {
		t.Fatal("unmounting an overlay took the shared image with it, or left the overlay")
	}
	if got := readString(t, filepath.Join(dirs[1], "etc/f002")); got != want {
		t.Errorf("b after a's unmount: %q", got)
	}
	// The image's server dies: b breaks; mounted again over a new image
	// mount, the stale overlay is detached and b's change is kept.
	abortFUSE(t, img)
	<-m.Done()
	if _, err := os.ReadFile(filepath.Join(dirs[1], "etc/f010")); err == nil {
		t.Fatal("read through a dead image succeeded")
	}
	if err := mount.Overlay(dirs[1], img, layers[1], r, mount.OverlayOptions{}); !errors.Is(err, mount.ErrNotMounted) {
		t.Errorf("overlay over a dead image: %v", err)
	}
	m, err = mount.Mount(context.Background(), img, r, st, mount.Options{})
	must(t, err)
	must(t, mount.Overlay(dirs[1], img, layers[1], r, mount.OverlayOptions{}))
	if _, err := os.Stat(filepath.Join(dirs[1], "etc/f003")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("b's delete lost across the remount: %v", err)
	}
	if got := readString(t, filepath.Join(dirs[1], "etc/f002")); got != want {
		t.Errorf("b after the image's remount: %q", got)
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	if n := bytes.Count(mi, []byte(" "+dirs[1]+" ")); n != 1 {
		t.Errorf("%d mounts at %s", n, dirs[1])
	}
}
