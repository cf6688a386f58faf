package mount_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/zosgrid/zos/internal/chunk"
	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/mount"
	"github.com/zosgrid/zos/internal/store/cache"
	"github.com/zosgrid/zos/internal/store/dir"
	"github.com/zosgrid/zos/internal/store/mem"
)

func TestTraceEncoding(t *testing.T) {
	tr := &mount.Trace{Flist: digest.Sum([]byte("image")), Chunks: []uint32{5, 6, 7, 8, 0, 1, 2, 1000, 999, 70000}}
	b, err := tr.MarshalBinary()
	must(t, err)
	// A sequential run costs a byte per chunk.
	if want := 8 + 1 + 32 + 1 + 10 + 2 + 2 + 3 + 32; len(b) > want {
		t.Errorf("%d bytes, want at most %d", len(b), want)
	}
	got, err := mount.ParseTrace(b)
	must(t, err)
	if got.Flist != tr.Flist || !equalU32(got.Chunks, tr.Chunks) {
		t.Fatalf("round trip: %+v", got)
	}
	empty, err := (&mount.Trace{Flist: tr.Flist}).MarshalBinary()
	must(t, err)
	if e, err := mount.ParseTrace(empty); err != nil || len(e.Chunks) != 0 {
		t.Fatalf("empty trace: %v %v", e, err)
	}
	// Every damaged byte is refused.
	for i := range b {
		bad := bytes.Clone(b)
		bad[i] ^= 0x40
		if _, err := mount.ParseTrace(bad); !errors.Is(err, mount.ErrTrace) {
			t.Fatalf("byte %d flipped: %v", i, err)
		}
	}
	for _, n := range []int{0, 10, len(b) - 1} {
		if _, err := mount.ParseTrace(b[:n]); !errors.Is(err, mount.ErrTrace) {
			t.Fatalf("truncated to %d: %v", n, err)
		}
	}
}

// TestTraceRangesEncoding round-trips a version-2 trace and checks that
// ranges out of order, touching, empty or past their chunk are refused,
// by the encoder, the decoder (with a valid check) and Check.
func TestTraceRangesEncoding(t *testing.T) {
	src := makeTree(t)
	r := packTree(t, src, mem.New())
	n := len(r.Chunks())
	if n < 3 {
		t.Fatalf("tree has %d chunks", n)
	}
	big := uint32(0) // a chunk of at least 8 KiB
	for k, c := range r.Chunks() {
		if c.Size >= 8<<10 {
			big = uint32(k)
			break
		}
	}
	u := (r.Chunks()[big].Size + 1023) / 1024
	other := uint32(0)
	if big == 0 {
		other = 1
	}
	tr := &mount.Trace{Flist: r.Digest(), Chunks: []uint32{big, other},
		Ranges: [][]mount.Range{{{0, 1}, {3, 2}, {u - 1, 1}}, nil}}
	b, err := tr.MarshalBinary()
	must(t, err)
	if b[8] != 2 {
		t.Errorf("version %d, want 2", b[8])
	}
	got, err := mount.ParseTraceFor(b, r)
	must(t, err)
	if len(got.Ranges) != 2 || len(got.Ranges[0]) != 3 || got.Ranges[0][1] != (mount.Range{3, 2}) || got.Ranges[1] != nil {
		t.Fatalf("round trip: %+v", got.Ranges)
	}
	if off, size := got.Ranges[0][2].Bytes(uint64(r.Chunks()[big].Size)); off+size != uint64(r.Chunks()[big].Size) {
		t.Errorf("last range ends at %d, want the chunk's end %d", off+size, r.Chunks()[big].Size)
	}
	// A version-1 trace has no ranges.
	v1, err := (&mount.Trace{Flist: r.Digest(), Chunks: []uint32{1}}).MarshalBinary()
	must(t, err)
	if g, err := mount.ParseTrace(v1); err != nil || g.Ranges != nil || v1[8] != 1 {
		t.Fatalf("version 1: %v %+v", err, g)
	}

	for name, rs := range map[string][]mount.Range{
		"empty":       {{0, 0}},
		"touching":    {{0, 2}, {2, 1}},
		"overlapping": {{0, 3}, {2, 1}},
		"unsorted":    {{5, 1}, {2, 1}},
	} {
		bad := &mount.Trace{Flist: r.Digest(), Chunks: []uint32{big}, Ranges: [][]mount.Range{rs}}
		if _, err := bad.MarshalBinary(); !errors.Is(err, mount.ErrTrace) {
			t.Errorf("%s: encoded: %v", name, err)
		}
	}
	// The decoder refuses the same with a valid check: a range touching
	// the one before (gap 0 after the first).
	if big >= 64 {
		t.Fatalf("the hand-encoded trace below needs a one-byte chunk index, not %d", big)
	}
	d := r.Digest()
	raw := append([]byte("zostrace\x02"), d[:]...)
	raw = append(raw, 1, 2*byte(big), 2, 0, 1, 0, 1) // chunk big: ranges [0,1) and [1,2)
	sum := digest.Sum(raw)
	if _, err := mount.ParseTrace(append(raw, sum[:]...)); !errors.Is(err, mount.ErrTrace) {
		t.Errorf("touching ranges decoded: %v", err)
	}
	for name, rs := range map[string][]mount.Range{
		"past the end": {{u, 1}},
		"whole chunk":  {{0, u}},
	} {
		bad := &mount.Trace{Flist: r.Digest(), Chunks: []uint32{big}, Ranges: [][]mount.Range{rs}}
		if err := bad.Check(r); !errors.Is(err, mount.ErrTrace) {
			t.Errorf("%s: checked: %v", name, err)
		}
	}
}

func equalU32(a, b []uint32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func FuzzParseTrace(f *testing.F) {
	tr := &mount.Trace{Flist: digest.Sum([]byte("x")), Chunks: []uint32{3, 4, 5, 0, 9}}
	b, _ := tr.MarshalBinary()
	f.Add(b)
	tr.Ranges = [][]mount.Range{nil, {{0, 1}, {4, 60}}, nil, {{7, 1}}, nil}
	b, _ = tr.MarshalBinary()
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		tr, err := mount.ParseTrace(b)
		if err != nil {
			return
		}
		// What parses re-encodes to the same bytes: one encoding per trace.
		again, err := tr.MarshalBinary()
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("re-encoding differs: %v", err)
		}
	})
}

// TestTraceRecordAndPrefetch records which chunks a run reads, in order,
// then mounts with that trace over a slow store: the prefetch fetches
// them all before any read, once each, and the same run then reads only
// from memory.
func TestTraceRecordAndPrefetch(t *testing.T) {
	needFUSE(t)
	src := makeTree(t)
	base := mem.New()
	r := packTree(t, src, base)
	run := func(mnt string) {
		t.Helper()
		for _, p := range []string{"etc/f150", "big.bin", "etc/f010", "etc/deep/er/dup1"} {
			checkFile(t, mnt, src, p)
		}
	}

	// The kernel's own read-ahead at its default (128 KiB) bounds how far
	// apart its concurrent reads of one file may arrive (see below).
	m, mnt := mountImage(t, r, base, mount.Options{Record: true, ReadAhead: -1, KernelReadAhead: -1})
	run(mnt)
	order, ranges := m.FS().Trace()
	tr := &mount.Trace{Flist: r.Digest(), Chunks: order, Ranges: ranges}
	must(t, tr.Check(r))
	// First-read order: f150's chunk first, then big.bin's in file order.
	_, f150, _ := r.Lookup("/etc/f150")
	_, big, _ := r.Lookup("/big.bin")
	if int(order[0]) != r.ChunkAt(f150.Offset) {
		t.Errorf("trace starts with chunk %d, want f150's %d", order[0], r.ChunkAt(f150.Offset))
	}
	// The kernel's read-ahead sends several reads at once, so chunks of a
	// file read in order may come a few places apart.
	lo, hi := r.ChunkAt(big.Offset), r.ChunkAt(big.Offset+big.Size-1)
	prev, n := -1, 0
	for _, k := range order {
		if int(k) >= lo && int(k) <= hi {
			if int(k) < prev-8 {
				t.Errorf("big.bin's chunks out of order: %d after %d", k, prev)
			}
			prev = max(prev, int(k))
			n++
		}
	}
	if n != hi-lo+1 {
		t.Errorf("trace has %d of big.bin's %d chunks", n, hi-lo+1)
	}
	t.Logf("trace: %d of %d chunks", len(order), len(r.Chunks()))

	// A trace is bound to its flist.
	other := filepath.Join(t.TempDir(), "o")
	must(t, os.MkdirAll(other, 0o755))
	r2 := packTree(t, other, base)
	if err := tr.Check(r2); !errors.Is(err, mount.ErrTrace) {
		t.Errorf("trace checked against another flist: %v", err)
	}
	path := filepath.Join(t.TempDir(), "img.trace")
	b, err := tr.MarshalBinary()
	must(t, err)
	must(t, os.WriteFile(path, b, 0o644))
	tr2, err := mount.ReadTrace(path, r)
	must(t, err)
	if _, err := mount.ReadTrace(path, r2); !errors.Is(err, mount.ErrTrace) {
		t.Errorf("ReadTrace with another flist: %v", err)
	}

	cs := &countingStore{Store: base, delay: 10 * time.Millisecond, gets: map[digest.ID]int{}}
	m, mnt = mountImage(t, r, cs, mount.Options{Prefetch: tr2.Chunks, ReadAhead: -1})
	waitPrefetch(t, m)
	s := m.FS().Stats()
	if s.Misses != 0 || s.TraceFetches != int64(len(order)) {
		t.Errorf("after the prefetch, before any read: %+v", s)
	}
	run(mnt)
	s = m.FS().Stats()
	if s.Misses != 0 || s.Joins != 0 || s.TraceHits != int64(len(order)) || s.TraceEvicted != 0 {
		t.Errorf("the traced run after the prefetch: %+v; want only hits on %d prefetched chunks", s, len(order))
	}
	if dup := cs.total.Load() - int64(len(cs.gets)); dup != 0 {
		t.Errorf("%d chunks fetched twice", dup)
	}
}

// waitPrefetch waits for a mount's trace prefetch to finish.
func waitPrefetch(t *testing.T, m *mount.Server) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		s := m.FS().Stats()
		if s.PrefetchDone && s.InFlight == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("prefetch not done: %+v", s)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestPrefetchYieldsToReads reads a file over a slow store, first alone,
// then while a prefetch of the whole image, with as many fetchers as there
// are fetch slots, competes for the slots: the read takes hardly longer.
func TestPrefetchYieldsToReads(t *testing.T) {
	needFUSE(t)
	src := makeTree(t)
	base := mem.New()
	r := packTree(t, src, base)
	all := make([]uint32, len(r.Chunks()))
	for i := range all {
		all[i] = uint32(len(all) - 1 - i) // the end of the image first
	}
	const delay = 100 * time.Millisecond
	read := func(opt mount.Options) (time.Duration, *countingStore, mount.Stats) {
		cs := &countingStore{Store: base, delay: delay, gets: map[digest.ID]int{}}
		opt.Fetchers, opt.ReadAhead = 4, -1
		m, mnt := mountImage(t, r, cs, opt)
		time.Sleep(delay / 2) // every slot busy with the prefetch, if any
		start := time.Now()
		b, err := os.ReadFile(filepath.Join(mnt, "big.bin"))
		took := time.Since(start)
		must(t, err)
		if len(b) != 3<<20 {
			t.Fatalf("big.bin: %d bytes", len(b))
		}
		return took, cs, m.FS().Stats()
	}
	alone, _, _ := read(mount.Options{})
	shared, cs, s := read(mount.Options{Prefetch: all, PrefetchFetchers: 4})
	t.Logf("read of big.bin: alone %v, during a prefetch of the image %v; peak %d Gets: %+v",
		alone.Round(time.Millisecond), shared.Round(time.Millisecond), cs.peak.Load(), s)
	if shared > alone+3*delay {
		t.Errorf("read took %v during the prefetch, %v alone", shared, alone)
	}
	if cs.peak.Load() > 4 {
		t.Errorf("%d Gets at once with 4 fetch slots", cs.peak.Load())
	}
}

// TestPrefetchLead: without reads, the prefetch holds at most its lead in
// memory and waits; reads let it go on. With StoreKeeps it goes on past
// the lead without keeping the chunks in memory.
func TestPrefetchLead(t *testing.T) {
	needFUSE(t)
	src := makeTree(t)
	base := mem.New()
	r := packTree(t, src, base)
	all := make([]uint32, len(r.Chunks()))
	for i := range all {
		all[i] = uint32(i)
	}
	const lead = 512 << 10
	m, mnt := mountImage(t, r, base, mount.Options{Prefetch: all, PrefetchLead: lead, ReadAhead: -1})
	time.Sleep(200 * time.Millisecond)
	s := m.FS().Stats()
	if s.TraceLeft == 0 || s.Cached > lead || s.Cached == 0 {
		t.Errorf("prefetch without reads: %+v; want it stopped with at most %d bytes held", s, lead)
	}
	// Reading the image lets it finish.
	filepath.Walk(mnt, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			_, err = os.ReadFile(p)
			must(t, err)
		}
		return nil
	})
	waitPrefetch(t, m)

	m, _ = mountImage(t, r, base, mount.Options{Prefetch: all, PrefetchLead: lead, StoreKeeps: true, ReadAhead: -1})
	waitPrefetch(t, m)
	if s := m.FS().Stats(); s.TraceFetches != int64(len(all)) || s.Cached > lead {
		t.Errorf("with StoreKeeps: %+v; want every chunk fetched, at most %d bytes held", s, lead)
	}
}

// TestWarm fetches every chunk of an image into a cache, verified.
func TestWarm(t *testing.T) {
	src := makeTree(t)
	remote := mem.New()
	r := packTree(t, src, remote)
	local, err := dir.New(t.TempDir())
	must(t, err)
	var calls, bytesSeen int64
	var progressMu sync.Mutex
	ws, err := mount.Warm(context.Background(), r.Chunks(), cache.New(local, remote), mount.WarmOptions{
		Workers: 4,
		Progress: func(size int64, failed bool) {
			progressMu.Lock() // calls may be concurrent
			calls++
			bytesSeen += size
			progressMu.Unlock()
		},
	})
	must(t, err)
	distinct := map[digest.ID]bool{}
	var total int64
	for _, c := range r.Chunks() {
		if !distinct[c.Sum] {
			total += int64(c.Size)
		}
		distinct[c.Sum] = true
	}
	if ws.Chunks != int64(len(distinct)) || ws.Bytes != total || ws.Failed != 0 || calls != ws.Chunks || bytesSeen != total {
		t.Errorf("warm %+v, %d progress calls for %d bytes; want %d chunks, %d bytes", ws, calls, bytesSeen, len(distinct), total)
	}
	n := 0
	local.List(context.Background(), func(digest.ID) error { n++; return nil })
	if n < len(distinct) {
		t.Errorf("cache holds %d blobs, want %d", n, len(distinct))
	}
	// A chunk the store has lost is reported, the others still fetched.
	remote2 := mem.New()
	r2 := packTree(t, src, remote2)
	lost := r2.Chunks()[0].Sum
	must(t, remote2.Delete(context.Background(), chunk.ID(lost)))
	ws, err = mount.Warm(context.Background(), r2.Chunks(), remote2, mount.WarmOptions{})
	if err == nil || ws.Failed != 1 || ws.Bytes != total-int64(r2.Chunks()[0].Size) {
		t.Errorf("warm with a lost chunk: %+v %v", ws, err)
	}
}
