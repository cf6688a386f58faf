package mount_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zosgrid/zos/internal/flist"
	"github.com/zosgrid/zos/internal/mount"
	"github.com/zosgrid/zos/internal/store"
	"github.com/zosgrid/zos/internal/store/cache"
	"github.com/zosgrid/zos/internal/store/lru"
	"github.com/zosgrid/zos/internal/store/mem"
)

// wholeFixture packs makeTree's tree into a remote store and returns
// big.bin's content, the image, a local cache and the cache in front of
// the remote.
func wholeFixture(t *testing.T) ([]byte, *flist.Reader, *lru.Store, store.Store) {
	t.Helper()
	src := makeTree(t)
	want, err := os.ReadFile(filepath.Join(src, "big.bin"))
	must(t, err)
	remote := mem.New()
	r := packTree(t, src, remote)
	local, err := lru.Open(context.Background(), t.TempDir(), lru.Options{})
	must(t, err)
	t.Cleanup(func() { local.Close() })
	return want, r, local, cache.New(local, remote)
}

// TestWholeFilePassthrough: a large file read through one mount is kept
// whole in the local cache; a later mount over that cache opens it in
// passthrough mode (the kernel reads the cached file: no read reaches the
// server), by read and by mmap, with the right content. While open, the
// whole file is pinned; once evicted, opens fall back to chunk reads.
func TestWholeFilePassthrough(t *testing.T) {
	needFUSE(t)
	ctx := context.Background()
	want, r, local, st := wholeFixture(t)
	opt := mount.Options{Files: local}

	m1, mnt1 := mountImage(t, r, st, opt)
	got, err := os.ReadFile(filepath.Join(mnt1, "big.bin"))
	must(t, err)
	if !bytes.Equal(got, want) {
		t.Fatal("first read: content differs")
	}
	deadline := time.Now().Add(20 * time.Second)
	for m1.FS().Stats().WholeKept == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("file never kept whole: %+v", m1.FS().Stats())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if s := m1.FS().Stats(); s.PassthroughOpens != 0 || s.WholeKept != 1 {
		t.Fatalf("first mount: %+v", s)
	}
	u, err := local.Usage(ctx)
	must(t, err)
	if u.Bytes < int64(len(want)) {
		t.Fatalf("cache holds %d bytes, less than the whole file (%d)", u.Bytes, len(want))
	}

	// A new mount over the same cache: passthrough, by both names.
	m2, mnt2 := mountImage(t, r, st, opt)
	for _, name := range []string{"big.bin", "etc/big-link"} {
		got, err = os.ReadFile(filepath.Join(mnt2, name))
		must(t, err)
		if !bytes.Equal(got, want) {
			t.Fatalf("%s through passthrough: content differs", name)
		}
	}
	f, err := os.Open(filepath.Join(mnt2, "big.bin"))
	must(t, err)
	mm, err := unix.Mmap(int(f.Fd()), 0, len(want), unix.PROT_READ, unix.MAP_SHARED)
	must(t, err)
	if !bytes.Equal(mm, want) {
		t.Fatal("mmap through passthrough: content differs")
	}
	unix.Munmap(mm)
	s := m2.FS().Stats()
	if s.PassthroughOpens != 3 || s.Hits+s.Misses+s.Joins != 0 {
		t.Fatalf("second mount: want 3 passthrough opens and no chunk read: %+v", s)
	}

	// Pinned while open; gone once closed and pruned.
	res, err := local.Prune(ctx, 0)
	must(t, err)
	if res.Skipped != 1 {
		t.Fatalf("prune with the whole file open: %+v", res)
	}
	f.Close()
	deadline = time.Now().Add(10 * time.Second)
	for {
		res, err = local.Prune(ctx, 0)
		must(t, err)
		if res.Bytes == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the whole file stayed pinned after close: %+v", res)
		}
		time.Sleep(20 * time.Millisecond) // the kernel releases asynchronously
	}
	got, err = os.ReadFile(filepath.Join(mnt2, "big.bin"))
	must(t, err)
	if !bytes.Equal(got, want) {
		t.Fatal("after eviction: content differs")
	}
	if s := m2.FS().Stats(); s.PassthroughOpens != 3 || s.Misses == 0 {
		t.Fatalf("after eviction: want chunk reads and no new passthrough open: %+v", s)
	}
}

// TestKeepWhole: after Warm and KeepWhole, the first open of a new mount
// is already passthrough; a file whose chunks are not local is skipped.
func TestKeepWhole(t *testing.T) {
	needFUSE(t)
	ctx := context.Background()
	want, r, local, st := wholeFixture(t)

	// Nothing local yet: skipped, nothing written.
	kept, _, skipped, err := mount.KeepWhole(ctx, r, local, local, 0)
	if err != nil || kept != 0 || skipped != 1 {
		t.Fatalf("cold cache: kept %d, skipped %d, %v", kept, skipped, err)
	}
	if _, err := mount.Warm(ctx, r.Chunks(), st, mount.WarmOptions{}); err != nil {
		t.Fatal(err)
	}
	kept, n, skipped, err := mount.KeepWhole(ctx, r, st, local, 0)
	if err != nil || kept != 1 || n != int64(len(want)) || skipped != 0 {
		t.Fatalf("warm cache: kept %d (%d bytes), skipped %d, %v", kept, n, skipped, err)
	}
	m, mnt := mountImage(t, r, st, mount.Options{Files: local})
	got, err := os.ReadFile(filepath.Join(mnt, "big.bin"))
	must(t, err)
	if !bytes.Equal(got, want) {
		t.Fatal("content differs")
	}
	if s := m.FS().Stats(); s.PassthroughOpens != 1 || s.Hits+s.Misses != 0 {
		t.Fatalf("want a passthrough open and no chunk read: %+v", s)
	}
}
