package lru

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/zosgrid/zos/internal/chunk"
	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/store"
	"github.com/zosgrid/zos/internal/store/dir"
	"github.com/zosgrid/zos/internal/store/storetest"
)

func open(t *testing.T, root string, budget int64) *Store {
	t.Helper()
	s, err := Open(context.Background(), root, Options{Budget: budget})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, storetest.Harness{
		New: func(t *testing.T) store.Store {
			s, err := Open(context.Background(), t.TempDir(), Options{})
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
		Corrupt: func(t *testing.T, s store.Store, id digest.ID, blob []byte) {
			if err := os.WriteFile(s.(*Store).Path(id), blob, 0o644); err != nil {
				t.Fatal(err)
			}
		},
	})
}

// blobs makes n sealed blobs named by prefix.
type blob struct {
	ref  chunk.Ref
	id   digest.ID
	data []byte
}

func blobs(prefix string, n, size int) []blob {
	out := make([]blob, n)
	for i := range out {
		ref, id, b := storetest.Blob(fmt.Sprint(prefix, i), size)
		out[i] = blob{ref, id, b}
	}
	return out
}

func putAll(t *testing.T, s *Store, bs []blob) {
	t.Helper()
	for _, b := range bs {
		if err := s.Put(context.Background(), b.id, b.data); err != nil {
			t.Fatal(err)
		}
	}
}

// age sets a blob's recency to d ago.
func age(t *testing.T, s *Store, id digest.ID, d time.Duration) {
	t.Helper()
	when := time.Now().Add(-d)
	if err := os.Chtimes(s.Path(id), when, when); err != nil {
		t.Fatal(err)
	}
}

func has(s *Store, id digest.ID) bool {
	ok, _ := s.Has(context.Background(), id)
	return ok
}

func sizeOf(bs ...blob) (n int64) {
	for _, b := range bs {
		n += int64(len(b.data))
	}
	return n
}

// checkCount fails unless the state record counts exactly what the
// directory holds.
func checkCount(t *testing.T, s *Store) Usage {
	t.Helper()
	u, err := s.Usage(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Used != u.Bytes || st.Blobs != u.Blobs {
		t.Fatalf("counted %d blobs, %d bytes; directory holds %d blobs, %d bytes", st.Blobs, st.Used, u.Blobs, u.Bytes)
	}
	return u
}

func TestSortLRU(t *testing.T) {
	a, b, c := digest.Sum([]byte("a")), digest.Sum([]byte("b")), digest.Sum([]byte("c"))
	es := []entry{{id: a, mtime: 30}, {id: b, mtime: 10}, {id: c, mtime: 10}}
	sortLRU(es)
	if es[0].mtime != 10 || es[1].mtime != 10 || es[2].id != a {
		t.Fatalf("order %v", es)
	}
	if bytes.Compare(es[0].id[:], es[1].id[:]) > 0 {
		t.Fatal("ties not ordered by ID")
	}
}

func TestEvictOldest(t *testing.T) {
	var es []entry
	for i := range 600 {
		es = append(es, entry{id: digest.Sum(fmt.Append(nil, i)), size: 10, mtime: int64(i)})
	}
	for _, tc := range []struct {
		name       string
		need       int64
		pinned     func(i int64) bool
		n, skipped int64
		commits    []int64
	}{
		{"nothing", 0, nil, 0, 0, nil},
		{"one", 1, nil, 1, 0, []int64{1}},
		{"exact", 30, nil, 3, 0, []int64{3}},
		{"skip pinned", 30, func(i int64) bool { return i%2 == 0 }, 3, 3, []int64{3}},
		{"batches", 5000, nil, 500, 0, []int64{256, 244}},
		{"all pinned", 100, func(int64) bool { return true }, 0, 600, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var tried []int64
			var commits []int64
			var committed int64
			n, freed, skipped := evictOldest(es, tc.need, func(e entry) (int64, bool) {
				tried = append(tried, e.mtime)
				if tc.pinned != nil && tc.pinned(e.mtime) {
					return 0, false
				}
				return e.size, true
			}, func(n, b int64) { commits = append(commits, n); committed += b })
			if n != tc.n || int64(skipped) != tc.skipped || freed != 10*tc.n || committed != freed {
				t.Fatalf("n %d freed %d skipped %d committed %d", n, freed, skipped, committed)
			}
			if !slices.Equal(commits, tc.commits) {
				t.Fatalf("commits %v, want %v", commits, tc.commits)
			}
			if !slices.IsSorted(tried) || (len(tried) > 0 && tried[0] != 0) {
				t.Fatal("not walked oldest first")
			}
		})
	}
}

// TestLRUOrder: GC removes the least recently used blobs, and a read makes
// a blob recent.
func TestLRUOrder(t *testing.T) {
	ctx := context.Background()
	s := open(t, t.TempDir(), 0)
	bs := blobs("lru", 10, 3000)
	putAll(t, s, bs)
	for i, b := range bs {
		age(t, s, b.id, time.Duration(10-i)*time.Hour) // bs[0] is the oldest
	}
	for _, i := range []int{0, 1} {
		if _, err := s.Get(ctx, bs[i].id); err != nil {
			t.Fatal(err)
		}
	}
	keep := []blob{bs[0], bs[1], bs[7], bs[8], bs[9]}
	r, err := s.GC(ctx, sizeOf(keep...))
	if err != nil {
		t.Fatal(err)
	}
	if r.Removed != 5 || r.Freed != sizeOf(bs[2:7]...) || r.Bytes != sizeOf(keep...) {
		t.Fatalf("GC: %+v", r)
	}
	for i, b := range bs {
		if want := i < 2 || i >= 7; has(s, b.id) != want {
			t.Errorf("blob %d cached = %v, want %v", i, !want, want)
		}
	}
	checkCount(t, s)
	if st, _ := s.Stats(); st.Evictions != 5 || st.Hits != 2 || st.Budget != DefaultBudget {
		t.Fatalf("stats %+v", st)
	}
}

// TestRestartKeepsRecency: recency is on disk, so a new Store (a restart)
// evicts in the order the old one saw.
func TestRestartKeepsRecency(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	bs := blobs("restart", 3, 2000)
	s1, err := Open(ctx, root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	putAll(t, s1, bs)
	age(t, s1, bs[0].id, 3*time.Hour)
	age(t, s1, bs[1].id, 2*time.Hour)
	age(t, s1, bs[2].id, 1*time.Hour)
	if _, err := s1.Get(ctx, bs[0].id); err != nil { // now the most recent
		t.Fatal(err)
	}
	// A read of a blob used less than a minute ago does not write.
	before, _ := os.Stat(s1.Path(bs[0].id))
	s1.Get(ctx, bs[0].id)
	after, _ := os.Stat(s1.Path(bs[0].id))
	if !after.ModTime().Equal(before.ModTime()) {
		t.Fatal("recency written twice within a minute")
	}
	s1.Close()

	s2 := open(t, root, 0)
	if _, err := s2.GC(ctx, sizeOf(bs[0], bs[2])); err != nil {
		t.Fatal(err)
	}
	if has(s2, bs[1].id) || !has(s2, bs[0].id) || !has(s2, bs[2].id) {
		t.Fatalf("after restart the wrong blob was evicted: %v %v %v", has(s2, bs[0].id), has(s2, bs[1].id), has(s2, bs[2].id))
	}
	if st, _ := s2.Stats(); st.Hits != 2 {
		t.Fatalf("hits not persisted: %+v", st)
	}
}

// TestBudget: writes never take the cache past its budget; the background
// eviction brings it to the low-water mark; the count stays exact.
func TestBudget(t *testing.T) {
	ctx := context.Background()
	bs := blobs("budget", 200, 4000)
	budget := sizeOf(bs[:50]...)
	s := open(t, t.TempDir(), budget)
	for _, b := range bs {
		if err := s.Put(ctx, b.id, b.data); err != nil {
			t.Fatal(err)
		}
		if st, _ := s.Stats(); st.Used > budget {
			t.Fatalf("used %d > budget %d", st.Used, budget)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, _ := s.Stats()
		if st.Used <= budget*highWater/100 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("background eviction did not run: %+v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
	s.emu.Lock() // wait for an eviction in progress
	s.emu.Unlock()
	u := checkCount(t, s)
	if u.Bytes > budget || u.Bytes < budget/2 {
		t.Fatalf("%d bytes cached for a budget of %d", u.Bytes, budget)
	}
	// The newest blob survives: eviction takes the oldest.
	if !has(s, bs[len(bs)-1].id) {
		t.Fatal("newest blob evicted")
	}
	for _, b := range bs {
		if has(s, b.id) {
			if _, err := s.Get(ctx, b.id); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func TestFull(t *testing.T) {
	ctx := context.Background()
	bs := blobs("full", 3, 5000)
	s := open(t, t.TempDir(), sizeOf(bs[:2]...))
	_, id, big := storetest.Blob("too big", 50000)
	if err := s.Put(ctx, id, big); !errors.Is(err, ErrFull) || has(s, id) {
		t.Fatalf("blob larger than the budget: %v", err)
	}
	putAll(t, s, bs[:2])
	defer s.Pin(bs[0].id)()
	defer s.Pin(bs[1].id)()
	if err := s.Put(ctx, bs[2].id, bs[2].data); !errors.Is(err, ErrFull) {
		t.Fatalf("everything pinned: %v", err)
	}
	if !has(s, bs[0].id) || !has(s, bs[1].id) || has(s, bs[2].id) {
		t.Fatal("a pinned blob was evicted for a write")
	}
	checkCount(t, s)
}

// TestPins: pinned blobs survive eviction, whoever evicts (this Store, or
// another Store on the same directory, which has its own open files and
// so stands for another process as far as flock is concerned).
func TestPins(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	s := open(t, root, 0)
	other := open(t, root, 0)
	bs := blobs("pin", 6, 3000)
	putAll(t, s, bs[:4])
	for _, b := range bs[:4] {
		age(t, s, b.id, time.Hour) // oldest of all
	}
	unpin0 := s.Pin(bs[0].id)
	unpin1 := other.Pin(bs[1].id)
	unpin1b := other.Pin(bs[1].id) // pins nest
	// A pin taken before the blob is cached holds from when it is written.
	unpin4 := s.Pin(bs[4].id)
	putAll(t, s, bs[4:5])
	// ... or from when this process first reads it.
	unpin5 := other.Pin(bs[5].id)
	putAll(t, s, bs[5:6])
	if _, err := other.Get(ctx, bs[5].id); err != nil {
		t.Fatal(err)
	}

	if u, _ := s.Usage(ctx); u.Pinned != 4 {
		t.Fatalf("pinned %d, want 4", u.Pinned)
	}
	for _, gc := range []*Store{s, other} {
		r, err := gc.GC(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		for i, b := range bs {
			if want := i != 2 && i != 3; has(s, b.id) != want {
				t.Fatalf("blob %d cached = %v after GC: %+v", i, !want, r)
			}
		}
	}
	if r, _ := s.Prune(ctx, 0); r.Removed != 0 || r.Blobs != 4 {
		t.Fatalf("prune --all removed pinned blobs: %+v", r)
	}
	// Pinned blobs are read through their pin.
	for _, b := range bs[:2] {
		if got, err := s.Get(ctx, b.id); err != nil || !bytes.Equal(got, b.data) {
			t.Fatal(err)
		}
	}
	unpin0()
	unpin0() // idempotent
	unpin1()
	if r, _ := s.GC(ctx, 1); has(s, bs[0].id) || !has(s, bs[1].id) || r.Skipped == 0 {
		t.Fatalf("after unpinning 0 and once 1: %+v", r)
	}
	unpin1b()
	unpin4()
	unpin5()
	if r, _ := other.GC(ctx, 1); r.Blobs != 0 {
		t.Fatalf("all unpinned: %+v", r)
	}
	if u, _ := s.Usage(ctx); u.Pinned != 0 {
		t.Fatalf("pinned %d after unpinning all", u.Pinned)
	}
	checkCount(t, s)
}

// TestCrashLeftovers: a temporary file (a writer that crashed before its
// link) is never served and is cleaned up once stale; a torn blob (a power
// loss before the data reached the disk) is never served and is removed.
func TestCrashLeftovers(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	s := open(t, root, 0)
	bs := blobs("crash", 2, 6000)
	h := bs[0].id.String()
	os.MkdirAll(filepath.Join(root, h[:2]), 0o755)
	tmp := filepath.Join(root, h[:2], ".tmp-999999-1")
	os.WriteFile(tmp, bs[0].data, 0o644) // whole, but never linked
	if _, err := s.Get(ctx, bs[0].id); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get of an unlinked temporary file: %v", err)
	}
	if has(s, bs[0].id) {
		t.Fatal("Has sees a temporary file")
	}
	n := 0
	s.List(ctx, func(digest.ID) error { n++; return nil })
	if n != 0 {
		t.Fatal("List sees a temporary file")
	}
	if r, _ := s.GC(ctx, 0); r.Stale != 0 {
		t.Fatal("a young temporary file (a live writer's) was removed")
	}
	old := time.Now().Add(-2 * time.Hour)
	os.Chtimes(tmp, old, old)
	if r, _ := s.GC(ctx, 0); r.Stale != 1 {
		t.Fatalf("stale temporary file not removed: %+v", r)
	}

	putAll(t, s, bs[1:])
	p := s.Path(bs[1].id)
	os.Truncate(p, int64(len(bs[1].data)/2))
	_, err := s.Get(ctx, bs[1].id)
	var inv *chunk.Invalid
	if !errors.As(err, &inv) || !errors.Is(err, chunk.ErrCorrupt) {
		t.Fatalf("Get of a torn blob: %v", err)
	}
	if has(s, bs[1].id) {
		t.Fatal("torn blob kept")
	}
	// The count cannot know the size the torn blob had: it stays an upper
	// bound until a recount.
	if st, _ := s.Stats(); st.Used < 0 || st.Blobs != 0 {
		t.Fatalf("after dropping a torn blob: %+v", st)
	}
	s.GC(ctx, 0)
	checkCount(t, s)
	// A zero-length file (what a crash right after the link can leave).
	putAll(t, s, bs[1:])
	os.Truncate(p, 0)
	if _, err := s.Get(ctx, bs[1].id); !errors.Is(err, chunk.ErrCorrupt) {
		t.Fatalf("Get of an empty blob: %v", err)
	}
	putAll(t, s, bs[1:]) // written again
	if got, err := s.Get(ctx, bs[1].id); err != nil || !bytes.Equal(got, bs[1].data) {
		t.Fatalf("after re-put: %v", err)
	}
	s.GC(ctx, 0)
	checkCount(t, s)
}

// TestStateRebuilt: a cache without a valid state record (a dir store, an
// older cache, a torn record) is counted at Open; an unknown version is
// refused.
func TestStateRebuilt(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	d, _ := dir.New(root)
	bs := blobs("adopt", 5, 3000)
	for _, b := range bs {
		d.Put(ctx, b.id, b.data)
	}
	s := open(t, root, 0)
	if st, _ := s.Stats(); st.Blobs != 5 || st.Used != sizeOf(bs...) || st.Budget != DefaultBudget {
		t.Fatalf("adopted dir store: %+v", st)
	}
	s.Close()

	statePath := filepath.Join(root, metaDir, "state")
	b, _ := os.ReadFile(statePath)
	b[30] ^= 0xff // a torn record
	os.WriteFile(statePath, b, 0o644)
	s = open(t, root, 12345)
	if st, _ := s.Stats(); st.Blobs != 5 || st.Used != sizeOf(bs...) || st.Budget != 12345 {
		t.Fatalf("rebuilt: %+v", st)
	}
	s.Close()

	raw := (&state{}).encode()
	binary.LittleEndian.PutUint32(raw[8:], 9)
	binary.LittleEndian.PutUint32(raw[stateSize-4:], crc32.Checksum(raw[:stateSize-4], castagnoli))
	os.WriteFile(statePath, raw, 0o644)
	if _, err := Open(ctx, root, Options{}); err == nil || !strings.Contains(err.Error(), "version 9") {
		t.Fatalf("unknown state version: %v", err)
	}
}

// TestSetBudget: lowering the budget (here, from another Store: another
// process) brings the cache down in the background.
func TestSetBudget(t *testing.T) {
	root := t.TempDir()
	bs := blobs("setbudget", 40, 3000)
	s := open(t, root, 0)
	putAll(t, s, bs)
	budget := sizeOf(bs[:10]...)
	other := open(t, root, 0)
	if err := other.SetBudget(budget); err != nil {
		t.Fatal(err)
	}
	// The next write, in any process, evicts: here synchronously, as the
	// cache is past the budget itself.
	more := blobs("setbudget-more", 1, 3000)
	putAll(t, s, more)
	st, _ := s.Stats()
	if st.Budget != budget || st.Used > budget || !has(s, more[0].id) {
		t.Fatalf("after SetBudget and a write: %+v", st)
	}
	checkCount(t, s)
}

// TestEvictionSpeed measures a background eviction in a cache of many
// blobs while a reader and a writer keep working: the writer takes the
// cache past the high-water mark and goes on; its worst latency must stay
// far below the eviction's duration (it never waits for it).
func TestEvictionSpeed(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 20000 files")
	}
	ctx := context.Background()
	root := t.TempDir()
	const n = 20000
	bs := blobs("speed", n, 4096)
	s := open(t, root, 0)
	putAll(t, s, bs)
	for i, b := range bs {
		age(t, s, b.id, time.Duration(n-i)*time.Second)
	}
	if err := s.SetBudget(sizeOf(bs...) * 100 / 94); err != nil {
		t.Fatal(err)
	}
	extra := blobs("speed-extra", 2000, 4096)
	var worst, total time.Duration
	var ops int
	var t0, t1 time.Time
	for i := 0; ; i++ {
		start := time.Now()
		s.Get(ctx, bs[n-1-i%100].id)
		if err := s.Put(ctx, extra[i%len(extra)].id, extra[i%len(extra)].data); err != nil {
			t.Fatal(err)
		}
		d := time.Since(start)
		st, _ := s.Stats()
		if st.Used > st.Budget*highWater/100 || st.Evictions > 0 || !t0.IsZero() {
			if t0.IsZero() {
				t0 = start
			}
			worst = max(worst, d)
			total += d
			ops++
			if st.Evictions > 0 {
				// The eviction ran while we worked: wait for it (and any
				// our last writes started) to end, without more writes,
				// which could otherwise keep starting new ones.
				for deadline := time.Now().Add(30 * time.Second); !s.emu.TryLock(); {
					if time.Now().After(deadline) {
						t.Fatalf("eviction still running after 30s: %+v", st)
					}
					time.Sleep(time.Millisecond)
				}
				s.emu.Unlock()
				t1 = time.Now()
				break
			}
		}
		if i > 10*len(extra) {
			t.Fatalf("no eviction: %+v", st)
		}
	}
	st, _ := s.Stats()
	t.Logf("background eviction of %d of %d blobs (%d bytes): about %v; meanwhile %d Get+Put pairs, mean %v, worst %v",
		st.Evictions, n, st.EvictedBytes, t1.Sub(t0).Round(time.Millisecond), ops, (total / time.Duration(ops)).Round(time.Microsecond), worst.Round(time.Microsecond))
	if st.Used > st.Budget {
		t.Fatalf("over budget: %+v", st)
	}
}

// BenchmarkPinPut caches a new 27 KB blob the way a cold read does: pin it
// before it is there, put it, release the pin.
func BenchmarkPinPut(b *testing.B) {
	ctx := context.Background()
	s, err := Open(ctx, b.TempDir(), Options{Budget: 1 << 40})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	blob := bytes.Repeat([]byte{7}, 27<<10)
	b.SetBytes(int64(len(blob)))
	i := 0
	for b.Loop() {
		i++
		id := digest.Sum(binary.LittleEndian.AppendUint64(nil, uint64(i)))
		unpin := s.Pin(id)
		if err := s.Put(ctx, id, blob); err != nil {
			b.Fatal(err)
		}
		unpin()
	}
}
