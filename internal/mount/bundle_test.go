package mount_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zosgrid/zos/internal/chunk"
	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/flist"
	"github.com/zosgrid/zos/internal/mount"
	"github.com/zosgrid/zos/internal/store"
	"github.com/zosgrid/zos/internal/store/mem"
)

// gatedStore holds every Get until open is closed, and counts them.
type gatedStore struct {
	store.Store
	open chan struct{}
	gets atomic.Int64
}

func (g *gatedStore) Get(ctx context.Context, id digest.ID) ([]byte, error) {
	g.gets.Add(1)
	select {
	case <-g.open:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return g.Store.Get(ctx, id)
}

// span is a read of a file of the tree: the start run reads these.
type span struct {
	path    string
	off, n  int64
	partial bool // a small part of a large file
}

var startSpans = []span{
	{"big.bin", 100000, 4096, true},
	{"big.bin", 1500000, 3000, true},
	{"big.bin", 2900000, 10000, true},
	{"etc/f150", 0, 150 * 37, false},
}

func readSpans(t *testing.T, mnt, src string) {
	t.Helper()
	for _, s := range startSpans {
		got := make([]byte, s.n)
		f, err := os.Open(filepath.Join(mnt, s.path))
		must(t, err)
		n, err := f.ReadAt(got, s.off)
		f.Close()
		if err != nil && err != io.EOF {
			t.Fatalf("%s at %d: %v", s.path, s.off, err)
		}
		want, err := os.ReadFile(filepath.Join(src, s.path))
		must(t, err)
		if !bytes.Equal(got[:n], want[s.off:s.off+int64(n)]) || n != int(min(s.n, int64(len(want))-s.off)) {
			t.Fatalf("%s at %d: %d bytes differ from the source", s.path, s.off, n)
		}
	}
}

// recordStart records a version-2 trace of the start spans on a real
// mount and checks that it lists only the parts read.
func recordStart(t *testing.T, r *flist.Reader, st store.Store, src string) *mount.Trace {
	t.Helper()
	m, mnt := mountImage(t, r, st, mount.Options{Record: true, ReadAhead: -1, FilePrefetch: -1, NoLoaderPrefetch: true})
	readSpans(t, mnt, src)
	order, ranges := m.FS().Trace()
	tr := &mount.Trace{Flist: r.Digest(), Chunks: order, Ranges: ranges}
	must(t, tr.Check(r))
	_, big, err := r.Lookup("/big.bin")
	must(t, err)
	var listed, read uint64
	for i, k := range order {
		size := uint64(r.Chunks()[k].Size)
		listed += size
		if len(ranges[i]) == 0 {
			read += size
		}
		for _, rg := range ranges[i] {
			_, n := rg.Bytes(size)
			read += n
		}
		if c := r.ChunkStart(int(k)); c <= big.Offset+100000 && big.Offset+100000 < c+size && len(ranges[i]) == 0 {
			t.Errorf("the chunk of big.bin's first 4 KiB read is listed whole")
		}
	}
	// With one page of read-around, the trace holds what was read (17 KiB
	// of big.bin and f150) and little more.
	if read > 64<<10 || read >= listed {
		t.Errorf("the trace lists %d bytes in ranges of %d in its chunks", read, listed)
	}
	t.Logf("trace: %d chunks, %d of their %d bytes read", len(order), read, listed)
	return tr
}

func bundleOf(t *testing.T, r *flist.Reader, st store.Store, tr *mount.Trace, forge int) []byte {
	t.Helper()
	codec := chunk.NewCodec(0)
	var b bytes.Buffer
	_, err := mount.BuildBundle(context.Background(), &b, r, tr, func(ctx context.Context, k int) ([]byte, error) {
		d, err := store.Fetch(ctx, st, codec, r.Chunks()[k])
		if k == forge && err == nil {
			d = bytes.Clone(d)
			d[0] ^= 1
		}
		return d, err
	})
	must(t, err)
	return b.Bytes()
}

// tracedTree packs makeTree's tree, records the start spans' trace on a
// mount of it and builds their bundle.
func tracedTree(t *testing.T) (src string, base store.Store, r *flist.Reader, tr *mount.Trace, bundle []byte) {
	needFUSE(t)
	src = makeTree(t)
	base = mem.New()
	r = packTree(t, src, base)
	tr = recordStart(t, r, base, src)
	return src, base, r, tr, bundleOf(t, r, base, tr, -1)
}

func fromBytes(b []byte) func(context.Context) (io.ReadCloser, error) {
	return func(context.Context) (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
}

// TestBundleServesStart records the start spans, builds their bundle and
// mounts with it over a store that answers nothing: the spans read
// correctly from the bundle alone. Once the store opens, the chunks are
// fetched whole and every file reads back in full.
func TestBundleServesStart(t *testing.T) {
	src, base, r, tr, b := tracedTree(t)

	gs := &gatedStore{Store: base, open: make(chan struct{})}
	m, mnt := mountImage(t, r, gs, mount.Options{Bundle: &mount.Bundle{Trace: tr, Open: fromBytes(b), Source: "test"},
		ReadAhead: -1, FilePrefetch: -1})
	done := make(chan struct{})
	go func() {
		defer close(done)
		readSpans(t, mnt, src)
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		close(gs.open)
		t.Fatalf("the start spans waited for the store: %+v", m.FS().Stats())
	}
	s := m.FS().Stats()
	if s.BundleEntries != int64(len(tr.Chunks)) || s.BundleHits < int64(len(startSpans)) || s.BundleBad != 0 || s.Misses != 0 {
		t.Errorf("after the start: %+v", s)
	}
	close(gs.open)
	waitPrefetch(t, m)
	s = m.FS().Stats()
	if s.TraceFetches != int64(len(tr.Chunks)) || s.BundleStreaming {
		t.Errorf("after the whole fetch: %+v", s)
	}
	checkFile(t, mnt, src, "big.bin")
	checkFile(t, mnt, src, "etc/f150")
}

// TestBundleFallsBack mounts with bundles that cannot serve everything: a
// forged entry, a truncated stream, another image's bundle, none at all.
// Every read still returns the image's bytes, from whole chunks, and the
// bad parts are counted and logged.
func TestBundleFallsBack(t *testing.T) {
	src, base, r, tr, good := tracedTree(t)
	src2 := makeTree(t)
	must(t, os.WriteFile(filepath.Join(src2, "big.bin"), []byte("another image"), 0o644))
	r2 := packTree(t, src2, base)
	tr2 := &mount.Trace{Flist: r2.Digest(), Chunks: []uint32{0}, Ranges: [][]mount.Range{nil}}

	missing := func(context.Context) (io.ReadCloser, error) { return nil, os.ErrNotExist }
	// A stream that stops halfway and stays open: reads past it wait a
	// bounded time, then fetch whole.
	stalled := func(context.Context) (io.ReadCloser, error) {
		pr, pw := io.Pipe()
		go pw.Write(good[:len(good)/2])
		return pr, nil
	}
	for _, c := range []struct {
		name    string
		open    func(context.Context) (io.ReadCloser, error)
		entries int64 // at most
		bad     int64
		log     string
	}{
		{"forged", fromBytes(bundleOf(t, r, base, tr, int(tr.Chunks[0]))), int64(len(tr.Chunks)) - 1, 1, "failed verification"},
		{"truncated", fromBytes(good[:len(good)/2]), int64(len(tr.Chunks)) - 1, 0, "ended early"},
		{"other image", fromBytes(bundleOf(t, r2, base, tr2, -1)), 0, 0, "refused"},
		{"missing", missing, 0, 0, "unavailable"},
		{"stalled", stalled, int64(len(tr.Chunks)) - 1, 0, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			var log logBuffer
			m, mnt := mountImage(t, r, base, mount.Options{Bundle: &mount.Bundle{Trace: tr, Open: c.open, Source: c.name},
				Logger: slog.New(slog.NewTextHandler(&log, nil)), ReadAhead: -1, FilePrefetch: -1})
			start := time.Now()
			readSpans(t, mnt, src)
			if c.name == "stalled" {
				// The stream never ends while the mount lives (until
				// it has brought nothing for 30 s).
				if s := m.FS().Stats(); s.BundleWaits == 0 || s.Misses == 0 || time.Since(start) > 15*time.Second {
					t.Errorf("reads past a stalled stream: %v, %+v", time.Since(start), s)
				}
				return
			}
			waitPrefetch(t, m)
			s := m.FS().Stats()
			if s.BundleEntries > c.entries || s.BundleBad != c.bad || s.Errors != 0 {
				t.Errorf("stats %+v; want at most %d entries, %d bad", s, c.entries, c.bad)
			}
			if !strings.Contains(log.String(), c.log) {
				t.Errorf("log has no %q:\n%s", c.log, log.String())
			}
			checkFile(t, mnt, src, "big.bin")
		})
	}
}
