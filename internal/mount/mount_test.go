package mount_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zosgrid/zos/internal/chunk"
	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/flist"
	"github.com/zosgrid/zos/internal/mount"
	"github.com/zosgrid/zos/internal/pack"
	"github.com/zosgrid/zos/internal/store"
	"github.com/zosgrid/zos/internal/store/dir"
	"github.com/zosgrid/zos/internal/store/mem"
	"github.com/zosgrid/zos/internal/treediff"
)

// needFUSE skips tests that mount when this machine cannot.
func needFUSE(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse: FUSE mounts are impossible here")
	}
	if os.Geteuid() != 0 {
		t.Skip("mounting with allow_other and device nodes needs root")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// makeTree builds a tree with every kind of entry and attribute an flist
// records, and the shapes that matter to a mount: files spanning many
// chunks, small files sharing chunks, nested directories, hard links.
func makeTree(t *testing.T) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "src")
	must(t, os.MkdirAll(filepath.Join(root, "etc/deep/er/est"), 0o755))
	must(t, os.MkdirAll(filepath.Join(root, "etc/other"), 0o750))
	must(t, os.MkdirAll(filepath.Join(root, "empty"), 0o700))
	r := rand.New(rand.NewPCG(1, 1))
	big := make([]byte, 3<<20)
	for i := range big {
		big[i] = byte(r.Uint32() % 7) // compressible, varied: many chunks
	}
	must(t, os.WriteFile(filepath.Join(root, "big.bin"), big, 0o755))
	for i := 0; i < 200; i++ {
		name := fmt.Sprintf("etc/f%03d", i)
		must(t, os.WriteFile(filepath.Join(root, name), bytes.Repeat([]byte{byte(i)}, i*37), 0o644))
	}
	must(t, os.WriteFile(filepath.Join(root, "etc/deep/er/dup1"), []byte("same content"), 0o600))
	must(t, os.WriteFile(filepath.Join(root, "etc/deep/dup2"), []byte("same content"), 0o640))
	must(t, os.WriteFile(filepath.Join(root, "setuid"), []byte("#!/bin/sh\n"), 0o755))
	must(t, unix.Chmod(filepath.Join(root, "setuid"), 0o4755))
	must(t, os.WriteFile(filepath.Join(root, "setgid"), nil, 0o755))
	must(t, unix.Chmod(filepath.Join(root, "setgid"), 0o2711))
	must(t, unix.Chmod(filepath.Join(root, "empty"), 0o1777))
	must(t, os.Link(filepath.Join(root, "big.bin"), filepath.Join(root, "etc/big-link")))
	must(t, os.WriteFile(filepath.Join(root, "three"), []byte("three names\n"), 0o644))
	must(t, os.Link(filepath.Join(root, "three"), filepath.Join(root, "etc/three-b")))
	must(t, os.Link(filepath.Join(root, "three"), filepath.Join(root, "etc/deep/three-c")))
	must(t, os.Symlink("../big.bin", filepath.Join(root, "etc/sym")))
	must(t, os.Symlink("/nonexistent/abs", filepath.Join(root, "dangling")))
	must(t, unix.Mkfifo(filepath.Join(root, "fifo"), 0o620))
	must(t, os.Lchown(filepath.Join(root, "etc/deep"), 1234, 5678))
	must(t, os.Lchown(filepath.Join(root, "etc/sym"), 42, 43))
	must(t, unix.Setxattr(filepath.Join(root, "big.bin"), "user.zos", []byte("yes"), 0))
	must(t, unix.Setxattr(filepath.Join(root, "big.bin"), "user.empty", nil, 0))
	must(t, unix.Setxattr(filepath.Join(root, "etc"), "user.dir", []byte("on a directory"), 0))
	if os.Geteuid() == 0 {
		must(t, unix.Mknod(filepath.Join(root, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
		must(t, unix.Mknod(filepath.Join(root, "blk"), unix.S_IFBLK|0o600, int(unix.Mkdev(259, 70000))))
		// A file capability (cap_net_raw), as ping ships.
		must(t, unix.Setxattr(filepath.Join(root, "setuid"), "security.capability",
			[]byte{0, 0, 0, 2, 0, 32, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 0))
	}
	ts := []unix.Timespec{{Sec: 1600000000, Nsec: 123456789}, {Sec: 1600000000, Nsec: 123456789}}
	must(t, unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(root, "etc/sym"), ts, unix.AT_SYMLINK_NOFOLLOW))
	must(t, unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(root, "etc/f007"), ts, 0))
	must(t, unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(root, "etc"), ts, 0))
	return root
}

func packTree(t *testing.T, src string, st store.Store) *flist.Reader {
	t.Helper()
	fl, _, err := pack.Dir(context.Background(), src, st, pack.Options{Workers: 2})
	must(t, err)
	r, err := flist.Open(fl)
	must(t, err)
	return r
}

func mountImage(t *testing.T, r *flist.Reader, st store.Store, opt mount.Options) (*mount.Server, string) {
	t.Helper()
	mnt := filepath.Join(t.TempDir(), "mnt")
	must(t, os.Mkdir(mnt, 0o755))
	opt.Dev, opt.Suid = true, true
	m, err := mount.Mount(context.Background(), mnt, r, st, opt)
	must(t, err)
	t.Cleanup(func() {
		if err := m.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
			m.DetachLazy()
		}
	})
	return m, mnt
}

// logBuffer collects a logger's output for assertions.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestMountMatchesSource(t *testing.T) {
	needFUSE(t)
	src := makeTree(t)
	st, err := dir.New(t.TempDir())
	must(t, err)
	r := packTree(t, src, st)
	m, mnt := mountImage(t, r, st, mount.Options{})
	if got := m.FS().Stats(); got.Misses+got.Prefetches != 0 {
		t.Fatalf("chunks fetched at mount time: %+v", got)
	}

	// Everything treediff sees: type, mode, owner, mtime (ns), size,
	// content, symlink targets, rdev, xattrs, hard-link groups.
	diffs, err := treediff.Compare(src, mnt)
	must(t, err)
	for _, d := range diffs {
		t.Error(d)
	}

	// Link counts (treediff only groups by them): files and directories.
	filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		must(t, err)
		rel, _ := filepath.Rel(src, p)
		var a, b unix.Stat_t
		must(t, unix.Lstat(p, &a))
		must(t, unix.Lstat(filepath.Join(mnt, rel), &b))
		if a.Nlink != b.Nlink {
			t.Errorf("%s: nlink %d in source, %d mounted", rel, a.Nlink, b.Nlink)
		}
		return nil
	})
	// Hard links share one inode number.
	var s1, s2, s3 unix.Stat_t
	must(t, unix.Stat(filepath.Join(mnt, "three"), &s1))
	must(t, unix.Stat(filepath.Join(mnt, "etc/three-b"), &s2))
	must(t, unix.Stat(filepath.Join(mnt, "etc/deep/three-c"), &s3))
	if s1.Ino != s2.Ino || s1.Ino != s3.Ino || s1.Nlink != 3 {
		t.Errorf("hard links: inodes %d %d %d, nlink %d", s1.Ino, s2.Ino, s3.Ino, s1.Nlink)
	}
	// The file capability reads back byte for byte (exec reads it the same way).
	if os.Geteuid() == 0 {
		buf := make([]byte, 64)
		n, err := unix.Getxattr(filepath.Join(mnt, "setuid"), "security.capability", buf)
		must(t, err)
		if n != 20 || buf[4] != 0 || buf[5] != 32 {
			t.Errorf("security.capability = %x", buf[:n])
		}
	}
	if _, err := unix.Getxattr(filepath.Join(mnt, "three"), "user.none", nil); !errors.Is(err, unix.ENODATA) {
		t.Errorf("missing xattr: %v", err)
	}
	if n, err := unix.Getxattr(filepath.Join(mnt, "big.bin"), "user.zos", make([]byte, 1)); !errors.Is(err, unix.ERANGE) {
		t.Errorf("small xattr buffer: %d %v", n, err)
	}
	// Listings carry . and .. with the right inode numbers.
	ents, err := os.ReadDir(filepath.Join(mnt, "etc/deep"))
	must(t, err)
	names := []string{}
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != "dup2 er three-c" {
		t.Errorf("etc/deep lists %v", names)
	}
	dots := readDots(t, filepath.Join(mnt, "etc/deep"))
	var deep, etc unix.Stat_t
	must(t, unix.Stat(filepath.Join(mnt, "etc/deep"), &deep))
	must(t, unix.Stat(filepath.Join(mnt, "etc"), &etc))
	if dots["."] != deep.Ino || dots[".."] != etc.Ino {
		t.Errorf("dots %v, want . %d .. %d", dots, deep.Ino, etc.Ino)
	}
	// Read-only: writes are refused by the kernel.
	if _, err := os.OpenFile(filepath.Join(mnt, "three"), os.O_WRONLY, 0); !errors.Is(err, unix.EROFS) {
		t.Errorf("open for writing: %v", err)
	}
	if err := os.Mkdir(filepath.Join(mnt, "new"), 0o755); !errors.Is(err, unix.EROFS) {
		t.Errorf("mkdir: %v", err)
	}
	if _, err := os.Stat(filepath.Join(mnt, "etc/nothing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing name: %v", err)
	}
	var sfs unix.Statfs_t
	must(t, unix.Statfs(mnt, &sfs))
	if sfs.Files != r.Len() || uint64(sfs.Blocks)*uint64(sfs.Bsize) < r.StreamSize() || sfs.Namelen != 255 {
		t.Errorf("statfs %+v", sfs)
	}
	// The device node works as one (the mount honours dev).
	if os.Geteuid() == 0 {
		b, err := os.ReadFile(filepath.Join(mnt, "null"))
		if err != nil || len(b) != 0 {
			t.Errorf("reading the null device: %q %v", b, err)
		}
	}
	// Mount table: read-only, the requested options.
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(mi), "\n") {
		if strings.Contains(line, " "+mnt+" ") && !strings.Contains(line, "ro,") {
			t.Errorf("mount not read-only: %s", line)
		}
	}
}

// readDots returns the inode numbers the directory lists for . and ..
func readDots(t *testing.T, p string) map[string]uint64 {
	t.Helper()
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	must(t, err)
	defer unix.Close(fd)
	buf := make([]byte, 64<<10)
	out := map[string]uint64{}
	for {
		n, err := unix.Getdents(fd, buf)
		must(t, err)
		if n == 0 {
			return out
		}
		for b := buf[:n]; len(b) > 0; {
			ino := uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 | uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
			reclen := int(b[16]) | int(b[17])<<8
			name := string(bytes.TrimRight(b[19:reclen], "\x00"))
			if name == "." || name == ".." {
				out[name] = ino
			}
			b = b[reclen:]
		}
	}
}

// TestBadChunkIsEIOUntilRepaired corrupts, then removes, the chunk under a
// file: each read fails with EIO and is logged with the chunk's ID and
// store, nothing bad is cached, and the read succeeds once the store holds
// the right blob again.
func TestBadChunkIsEIOUntilRepaired(t *testing.T) {
	needFUSE(t)
	ctx := context.Background()
	src := makeTree(t)
	st := mem.New()
	r := packTree(t, src, st)
	var logs logBuffer
	_, mnt := mountImage(t, r, st, mount.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})

	_, e, err := r.Lookup("/etc/f100")
	must(t, err)
	id := chunk.ID(r.Chunks()[r.ChunkAt(e.Offset)].Sum)
	good, err := st.Get(ctx, id)
	must(t, err)
	want, _ := os.ReadFile(filepath.Join(src, "etc/f100"))
	file := filepath.Join(mnt, "etc/f100")

	bad := bytes.Clone(good)
	bad[len(bad)/2] ^= 1
	st.Corrupt(id, bad)
	if _, err := os.ReadFile(file); !errors.Is(err, unix.EIO) {
		t.Fatalf("read over a corrupt chunk: %v", err)
	}
	if l := logs.String(); !strings.Contains(l, id.String()) || !strings.Contains(l, "store=mem:") || !strings.Contains(l, "corrupt") {
		t.Fatalf("log does not name the chunk and store:\n%s", l)
	}
	// Missing is the same: EIO, logged.
	must(t, st.Delete(ctx, id))
	if _, err := os.ReadFile(file); !errors.Is(err, unix.EIO) {
		t.Fatalf("read over a missing chunk: %v", err)
	}
	if !strings.Contains(logs.String(), "not found") {
		t.Fatalf("missing chunk not logged:\n%s", logs.String())
	}
	// Repaired: the same mount now reads the right bytes.
	must(t, st.Put(ctx, id, good))
	got, err := os.ReadFile(file)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("after repair: %v, %d bytes (want %d)", err, len(got), len(want))
	}
}

// countingStore counts Gets per ID and makes each one slow, so readers
// that need the same chunk overlap.
type countingStore struct {
	store.Store
	delay    time.Duration
	mu       sync.Mutex
	gets     map[digest.ID]int
	total    atomic.Int64
	inflight atomic.Int64
	peak     atomic.Int64 // most Gets at once
}

func (c *countingStore) Get(ctx context.Context, id digest.ID) ([]byte, error) {
	c.mu.Lock()
	c.gets[id]++
	c.mu.Unlock()
	c.total.Add(1)
	n := c.inflight.Add(1)
	defer c.inflight.Add(-1)
	for p := c.peak.Load(); n > p && !c.peak.CompareAndSwap(p, n); p = c.peak.Load() {
	}
	time.Sleep(c.delay)
	return c.Store.Get(ctx, id)
}

func (c *countingStore) count(id digest.ID) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gets[id]
}

// TestConcurrentReadersShareOneFetch reads many small files that share one
// chunk, all at once: the kernel sends one read per file, and the chunk is
// fetched from the store once.
func TestConcurrentReadersShareOneFetch(t *testing.T) {
	needFUSE(t)
	src := filepath.Join(t.TempDir(), "src")
	must(t, os.Mkdir(src, 0o755))
	for i := range 32 {
		must(t, os.WriteFile(filepath.Join(src, fmt.Sprintf("f%02d", i)), []byte(strings.Repeat(fmt.Sprint(i), 100)), 0o644))
	}
	base := mem.New()
	r := packTree(t, src, base)
	if len(r.Chunks()) != 1 {
		t.Fatalf("want the small files in one chunk, got %d chunks", len(r.Chunks()))
	}
	cs := &countingStore{Store: base, delay: 300 * time.Millisecond, gets: map[digest.ID]int{}}
	m, mnt := mountImage(t, r, cs, mount.Options{})
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make(chan error, 32)
	for i := range 32 {
		wg.Go(func() {
			<-start
			b, err := os.ReadFile(filepath.Join(mnt, fmt.Sprintf("f%02d", i)))
			if err == nil && string(b) != strings.Repeat(fmt.Sprint(i), 100) {
				err = fmt.Errorf("f%02d: wrong content", i)
			}
			errs <- err
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		must(t, err)
	}
	id := chunk.ID(r.Chunks()[0].Sum)
	if n := cs.count(id); n != 1 {
		t.Fatalf("32 concurrent readers caused %d store Gets of the chunk", n)
	}
	s := m.FS().Stats()
	// The first read starts its chunk before the file prefetch and then
	// joins that fetch: up to 32 joins.
	if s.Misses != 1 || s.Joins+s.Hits < 31 {
		t.Errorf("stats %+v: want 1 miss, the rest joins or hits", s)
	}
	t.Logf("32 readers: %+v", s)
}

// TestReadAheadAndMemoryBound streams a large file: read-ahead fetches the
// chunks before the reader asks, no chunk is fetched twice, and the
// plaintexts held stay under the budget. A random read starts no
// read-ahead.
func TestReadAheadAndMemoryBound(t *testing.T) {
	needFUSE(t)
	src := filepath.Join(t.TempDir(), "src")
	must(t, os.Mkdir(src, 0o755))
	data := make([]byte, 24<<20)
	rng := rand.New(rand.NewPCG(2, 2))
	for i := range data {
		data[i] = byte(rng.Uint32() % 5)
	}
	must(t, os.WriteFile(filepath.Join(src, "stream"), data, 0o644))
	must(t, os.WriteFile(filepath.Join(src, "random"), data[:8<<20], 0o644)) // same chunks: dedup
	must(t, os.WriteFile(filepath.Join(src, "other"), bytes.Repeat([]byte("x"), 8<<20), 0o644))
	base := mem.New()
	r := packTree(t, src, base)
	cs := &countingStore{Store: base, delay: 2 * time.Millisecond, gets: map[digest.ID]int{}}
	var logs logBuffer
	m, mnt := mountImage(t, r, cs, mount.Options{MemoryBytes: 8 << 20, FilePrefetch: -1, Logger: slog.New(slog.NewTextHandler(&logs, nil))})

	f, err := os.Open(filepath.Join(mnt, "stream"))
	must(t, err)
	h := sha(t, f)
	f.Close()
	if h != sha(t, bytes.NewReader(data)) {
		t.Fatal("streamed content differs")
	}
	s := m.FS().Stats()
	_, e, _ := r.Lookup("/stream")
	n := r.ChunkAt(e.Offset+e.Size-1) - r.ChunkAt(e.Offset) + 1
	if s.Prefetches < int64(n)/2 {
		t.Errorf("streaming %d chunks: only %d prefetched (%+v)", n, s.Prefetches, s)
	}
	if dup := cs.total.Load() - int64(len(cs.gets)); dup != 0 {
		t.Errorf("%d chunks fetched more than once", dup)
	}
	if s.Cached > 8<<20 {
		t.Errorf("%d plaintext bytes held over an 8 MiB budget", s.Cached)
	}
	t.Logf("stream of %d chunks: %+v", n, s)
	// The kernel's 1 MiB reads are answered without a word in the log (a
	// splice tried for each reply logged its failure each time).
	if strings.Contains(logs.String(), "source=go-fuse") {
		t.Errorf("go-fuse logged while streaming:\n%s", logs.String())
	}

	// A random read of a file whose chunks are not cached starts nothing.
	f, err = os.Open(filepath.Join(mnt, "other"))
	must(t, err)
	defer f.Close()
	must(t, unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_RANDOM))
	before := m.FS().Stats().Prefetches
	buf := make([]byte, 4096)
	_, err = f.ReadAt(buf, 5<<20)
	must(t, err)
	if after := m.FS().Stats().Prefetches; after != before {
		t.Errorf("a random 4 KiB read started %d read-ahead fetches", after-before)
	}
}

// TestFirstReadPrefetchesFile reads 4 KiB of a cold file, with kernel
// read-ahead off: the mount fetches the file's other chunks, up to
// Options.FilePrefetch, in the background.
func TestFirstReadPrefetchesFile(t *testing.T) {
	needFUSE(t)
	src := filepath.Join(t.TempDir(), "src")
	must(t, os.Mkdir(src, 0o755))
	data := make([]byte, 6<<20)
	rng := rand.New(rand.NewPCG(4, 4))
	for i := range data {
		data[i] = byte(rng.Uint32() % 5)
	}
	must(t, os.WriteFile(filepath.Join(src, "f"), data, 0o644))
	base := mem.New()
	r := packTree(t, src, base)
	cs := &countingStore{Store: base, delay: 20 * time.Millisecond, gets: map[digest.ID]int{}}
	// Fetchers bounds the read-ahead fetches at once, and so what one read
	// starts: let it cover the whole first 4 MiB.
	m, mnt := mountImage(t, r, cs, mount.Options{FilePrefetch: 4 << 20, Fetchers: 64, FilePrefetchFetchers: 64})
	want := r.ChunkAt(4<<20-1) + 1 // the chunks of the file's first 4 MiB
	if want < 4 || want >= len(r.Chunks()) {
		t.Fatalf("want a file of several chunks past 4 MiB, got %d chunks, %d in 4 MiB", len(r.Chunks()), want)
	}
	f, err := os.Open(filepath.Join(mnt, "f"))
	must(t, err)
	defer f.Close()
	must(t, unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_RANDOM))
	buf := make([]byte, 4096)
	_, err = f.ReadAt(buf, 0)
	must(t, err)
	for deadline := time.Now().Add(10 * time.Second); cs.total.Load() < int64(want) && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // nothing past the cap should follow
	if got := cs.total.Load(); got != int64(want) {
		t.Errorf("a 4 KiB first read led to %d store Gets, want the %d chunks of the first 4 MiB", got, want)
	}
	t.Logf("%d chunks of %d prefetched: %+v", want, len(r.Chunks()), m.FS().Stats())
}

// TestParallelFetches reads a file over a store with 50 ms per Get: its
// chunks are fetched many at a time, not one after the other.
func TestParallelFetches(t *testing.T) {
	needFUSE(t)
	src := filepath.Join(t.TempDir(), "src")
	must(t, os.Mkdir(src, 0o755))
	data := make([]byte, 4<<20)
	rng := rand.New(rand.NewPCG(3, 3))
	for i := range data {
		data[i] = byte(rng.Uint32() % 5)
	}
	must(t, os.WriteFile(filepath.Join(src, "f"), data, 0o644))
	base := mem.New()
	r := packTree(t, src, base)
	cs := &countingStore{Store: base, delay: 50 * time.Millisecond, gets: map[digest.ID]int{}}
	_, mnt := mountImage(t, r, cs, mount.Options{})
	start := time.Now()
	got, err := os.ReadFile(filepath.Join(mnt, "f"))
	must(t, err)
	elapsed := time.Since(start)
	if !bytes.Equal(got, data) {
		t.Fatal("content differs")
	}
	n := len(r.Chunks())
	serial := time.Duration(n) * cs.delay
	t.Logf("%d chunks in %v (serial would take %v), up to %d Gets at once", n, elapsed.Round(time.Millisecond), serial, cs.peak.Load())
	if cs.peak.Load() < 4 || elapsed > serial/3 {
		t.Errorf("fetches not parallel: peak %d Gets at once, %v for %d chunks", cs.peak.Load(), elapsed, n)
	}
}

func sha(t *testing.T, r io.Reader) digest.ID {
	t.Helper()
	b, err := io.ReadAll(r)
	must(t, err)
	return digest.Sum(b)
}

// TestMountRefusesLiveMount keeps a second server off a live mount point.
func TestMountRefusesLiveMount(t *testing.T) {
	needFUSE(t)
	src := filepath.Join(t.TempDir(), "src")
	must(t, os.MkdirAll(src, 0o755))
	must(t, os.WriteFile(filepath.Join(src, "f"), []byte("x"), 0o644))
	st := mem.New()
	r := packTree(t, src, st)
	_, mnt := mountImage(t, r, st, mount.Options{})
	if _, err := mount.Mount(context.Background(), mnt, r, st, mount.Options{}); !errors.Is(err, mount.ErrMounted) {
		t.Fatalf("second mount on a live mount point: %v", err)
	}
	if err := mount.Unmount(t.TempDir(), false); !errors.Is(err, mount.ErrNotMounted) {
		t.Fatalf("unmount of a plain directory: %v", err)
	}
}
