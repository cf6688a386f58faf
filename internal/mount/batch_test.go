package mount_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/zosgrid/zos/internal/chunk"
	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/mount"
	"github.com/zosgrid/zos/internal/store"
	"github.com/zosgrid/zos/internal/store/cache"
	"github.com/zosgrid/zos/internal/store/dir"
	"github.com/zosgrid/zos/internal/store/httpstore"
	"github.com/zosgrid/zos/internal/store/lru"
	"github.com/zosgrid/zos/internal/store/router"
)

// requests counts the GETs and POSTs a store server answers.
type requests struct {
	next      http.Handler
	get, post atomic.Int64
}

func (c *requests) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet:
		c.get.Add(1)
	case http.MethodPost:
		c.post.Add(1)
	}
	c.next.ServeHTTP(w, r)
}

// storeServer serves d on loopback, as a zos store server or (static) a
// static file server, counting into count (a new one if nil), and returns
// the counter and a client of the server.
func storeServer(t *testing.T, d *dir.Store, static bool, count *requests) (*requests, *httpstore.Store) {
	t.Helper()
	if count == nil {
		count = &requests{next: httpstore.Handler(d, httpstore.HandlerOptions{})}
		if static {
			count.next = http.FileServer(http.Dir(d.Root()))
		}
	}
	srv := httptest.NewServer(count)
	t.Cleanup(srv.Close)
	st, err := httpstore.New(srv.URL, httpstore.Options{})
	must(t, err)
	return count, st
}

// diskCache puts a new lru disk cache in front of remote, as a node
// mounts: it returns the store to read and the cache's lease.
func diskCache(t *testing.T, remote store.Store) (store.Store, func(store.Store) (store.Store, func())) {
	t.Helper()
	local, err := lru.Open(context.Background(), t.TempDir(), lru.Options{})
	must(t, err)
	return cache.New(local, remote), local.Lease
}

// TestBatchedFetches reads files from a real zos store server on loopback,
// with and without the machine's disk cache in front, from two replicas
// behind a router, and from a static server over the same store: a
// sequential reader's chunks come several to a request from zos servers
// (batched gets), one by one from the static one, and the content is the
// source's either way.
func TestBatchedFetches(t *testing.T) {
	src, d, r := packRandom(t, 3, 2<<20)
	for _, tc := range []struct {
		name                     string
		static, cached, replicas bool
	}{
		{"zos server", false, false, false},
		{"zos server, disk cache", false, true, false},
		{"two zos servers, router, disk cache", false, true, true},
		{"static server", true, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			count, first := storeServer(t, d, tc.static, nil)
			var remote store.Store = first
			if tc.replicas {
				// The second replica counts into the same counters.
				_, second := storeServer(t, d, false, count)
				var err error
				remote, err = router.New([]router.Route{{Lo: 0x00, Hi: 0xff, Store: first}, {Lo: 0x00, Hi: 0xff, Store: second}})
				must(t, err)
			}
			st, opt := remote, mount.Options{}
			if tc.cached {
				st, opt.Lease = diskCache(t, remote)
			}
			m, mnt := mountImage(t, r, st, opt)
			var firstPost int64
			for i := range 3 {
				checkFile(t, mnt, src, fmt.Sprintf("f%02d", i))
				if i == 0 {
					firstPost = count.post.Load()
				}
			}
			s := m.FS().Stats()
			chunks := int64(len(r.Chunks()))
			get, post := count.get.Load(), count.post.Load()
			t.Logf("%d chunks: %d GETs, %d batched gets; %+v", chunks, get, post, s)
			if s.Errors != 0 || s.Retries != 0 {
				t.Fatalf("stats %+v: errors or retries", s)
			}
			if tc.static {
				// The batches in flight when the first answer came were
				// sent; none after.
				if post == 0 || post > 8 || post != firstPost || get < chunks {
					t.Fatalf("static server: %d batched gets (%d while reading the first file) and %d GETs for %d chunks, "+
						"want a few, none after the first file, and one GET per chunk", post, firstPost, get, chunks)
				}
				return
			}
			if post == 0 || get+post > chunks/2 {
				t.Fatalf("%d GETs and %d batched gets for %d chunks: want batches, fewer than half as many requests as chunks", get, post, chunks)
			}
		})
	}
}

// TestBatchedFetchBadChunk: a chunk whose stored blob is rotten, asked
// for in a batch (a read spanning it and the chunk before), fails the
// read with EIO, logged with its ID, while the rest of the file reads;
// once the store is repaired the read succeeds.
func TestBatchedFetchBadChunk(t *testing.T) {
	src, d, r := packRandom(t, 1, 2<<20)
	_, e, err := r.Lookup("f00")
	must(t, err)
	bad := r.ChunkAt(e.Offset + e.Size/2) // not the file's first
	id := chunk.ID(r.Chunks()[bad].Sum)
	good, err := os.ReadFile(d.Path(id))
	must(t, err)
	rotten := bytes.Clone(good)
	rotten[len(rotten)/2] ^= 1
	must(t, os.WriteFile(d.Path(id), rotten, 0o644))

	count, remote := storeServer(t, d, false, nil)
	var logs logBuffer
	m, mnt := mountImage(t, r, remote, mount.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		FilePrefetch: -1, ReadAhead: -1}) // only the reads' own fetches
	f, err := os.Open(filepath.Join(mnt, "f00"))
	must(t, err)
	defer f.Close()
	start := r.ChunkStart(bad-1) - e.Offset
	span := make([]byte, r.ChunkStart(bad+1)-r.ChunkStart(bad-1)) // two chunks
	if _, err := f.ReadAt(span, int64(start)); !errors.Is(err, syscall.EIO) {
		t.Fatalf("read of the rotten chunk: %v, want EIO", err)
	}
	if count.post.Load() == 0 {
		t.Fatal("the read spanning two chunks sent no batched get")
	}
	if !strings.Contains(logs.String(), id.String()) {
		t.Fatalf("the failure does not name chunk %s:\n%s", id, logs.String())
	}
	if _, err := f.ReadAt(make([]byte, 4096), 0); err != nil {
		t.Fatalf("read of a good chunk: %v", err)
	}
	// Repaired: the dir store dropped the rotten copy it found; put it back.
	must(t, d.Put(context.Background(), id, good))
	want, _ := os.ReadFile(filepath.Join(src, "f00"))
	if _, err := f.ReadAt(span, int64(start)); err != nil || !bytes.Equal(span, want[start:start+uint64(len(span))]) {
		t.Fatalf("read after repair: %v", err)
	}
	if s := m.FS().Stats(); s.Errors == 0 {
		t.Fatalf("stats %+v: the failure is not counted", s)
	}
}

// TestBatchedTracePrefetch prefetches a whole image by a trace from a real
// zos store server (also with the disk cache in front and a lead smaller
// than the image, as a node mounts) and from a static server over the
// same store: from the zos server the trace's chunks come several to a
// request, from the static one one by one; either way every chunk is
// fetched once, and the reads after it send no request.
func TestBatchedTracePrefetch(t *testing.T) {
	src, d, r := packRandom(t, 3, 1<<20)
	order := make([]uint32, len(r.Chunks()))
	for i := range order {
		order[i] = uint32(len(order) - 1 - i) // not file order
	}
	const fetchers = 4
	for _, tc := range []struct {
		name           string
		static, cached bool
	}{
		{"zos server", false, false},
		{"zos server, disk cache, lead", false, true},
		{"static server", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			count, remote := storeServer(t, d, tc.static, nil)
			var st store.Store = remote
			opt := mount.Options{Prefetch: order, PrefetchFetchers: fetchers, ReadAhead: -1, FilePrefetch: -1}
			if tc.cached {
				st, opt.Lease = diskCache(t, remote)
				opt.StoreKeeps, opt.PrefetchLead = true, 256<<10
			}
			m, mnt := mountImage(t, r, st, opt)
			waitPrefetch(t, m)
			chunks := int64(len(order))
			get, post := count.get.Load(), count.post.Load()
			s := m.FS().Stats()
			t.Logf("%d chunks: %d GETs, %d batched gets; %+v", chunks, get, post, s)
			if s.TraceFetches != chunks || s.Errors != 0 {
				t.Fatalf("prefetch: %+v, want %d chunks fetched, no errors", s, chunks)
			}
			if tc.static {
				if get != chunks || post > fetchers {
					t.Fatalf("static server: %d GETs and %d batched gets for %d chunks, want a GET each and at most a batched get per prefetcher", get, post, chunks)
				}
			} else if post == 0 || get+post > (chunks+7)/8+fetchers {
				t.Fatalf("%d GETs and %d batched gets for %d chunks: want batches of up to 8", get, post, chunks)
			}
			for i := range 3 {
				checkFile(t, mnt, src, fmt.Sprintf("f%02d", i))
			}
			if g, p := count.get.Load(), count.post.Load(); g != get || p != post {
				t.Fatalf("reads after the prefetch sent %d GETs and %d batched gets", g-get, p-post)
			}
		})
	}
}

// TestBatchedWarm warms a disk cache from a real zos store server: the
// chunks come several to a request, every one lands in the cache
// verified, and a rotten one among them is reported alone.
func TestBatchedWarm(t *testing.T) {
	_, d, r := packRandom(t, 3, 1<<20)
	ids := map[digest.ID]bool{}
	for _, c := range r.Chunks() {
		ids[chunk.ID(c.Sum)] = true
	}
	chunks := int64(len(ids))
	for _, rotten := range []bool{false, true} {
		t.Run(fmt.Sprintf("rotten=%v", rotten), func(t *testing.T) {
			if rotten {
				id := chunk.ID(r.Chunks()[len(r.Chunks())/2].Sum)
				good, err := os.ReadFile(d.Path(id))
				must(t, err)
				bad := bytes.Clone(good)
				bad[len(bad)/2] ^= 1
				must(t, os.WriteFile(d.Path(id), bad, 0o644))
				t.Cleanup(func() { os.WriteFile(d.Path(id), good, 0o644) })
			}
			count, remote := storeServer(t, d, false, nil)
			local, err := lru.Open(context.Background(), t.TempDir(), lru.Options{})
			must(t, err)
			const workers = 4
			ws, err := mount.Warm(context.Background(), r.Chunks(), cache.New(local, remote), mount.WarmOptions{Workers: workers})
			get, post := count.get.Load(), count.post.Load()
			t.Logf("%d chunks: %d GETs, %d batched gets; %+v %v", chunks, get, post, ws, err)
			if post == 0 || get+post > (chunks+7)/8+workers+1 {
				t.Fatalf("%d GETs and %d batched gets for %d chunks: want batches of up to 8", get, post, chunks)
			}
			held := 0
			for id := range ids {
				if ok, _ := local.Has(context.Background(), id); ok {
					held++
				}
			}
			if !rotten {
				if err != nil || ws.Chunks != chunks || ws.Failed != 0 || held != len(ids) {
					t.Fatalf("warm: %+v %v, cache holds %d of %d chunks", ws, err, held, len(ids))
				}
				return
			}
			if err == nil || ws.Failed != 1 || held != len(ids)-1 {
				t.Fatalf("warm with a rotten chunk: %+v %v, cache holds %d of %d chunks; want that one failed and not cached", ws, err, held, len(ids))
			}
		})
	}
}

// TestForgedChunkNotCached: a store serves, for one chunk, a blob that
// passes every check a store can make (its keyed check and its AES-GCM
// tag, both keyed by the chunk's fingerprint, which the flist publishes)
// but holds other plaintext. Only the plaintext's fingerprint tells. The
// read fails with EIO, the node's disk cache does not keep the forgery,
// and once the store holds the right blob the same mount reads the file.
// Through a zos server the chunk comes in a batched get, through a static
// one by a GET of its own: the cache fills on both paths.
func TestForgedChunkNotCached(t *testing.T) {
	ctx := context.Background()
	for _, static := range []bool{false, true} {
		t.Run(map[bool]string{false: "zos server", true: "static server"}[static], func(t *testing.T) {
			src, d, r := packRandom(t, 1, 1<<20)
			_, e, err := r.Lookup("f00")
			must(t, err)
			ref := r.Chunks()[r.ChunkAt(e.Offset+e.Size/2)]
			id := chunk.ID(ref.Sum)
			good, err := os.ReadFile(d.Path(id))
			must(t, err)
			other := bytes.Repeat([]byte("forged "), int(ref.Size)/7+1)[:ref.Size]
			forged := chunk.NewCodec(0).SealTo(nil, other, ref.Sum)
			if err := chunk.Check(id, forged); err != nil {
				t.Fatalf("the forgery fails the store layer's check: %v", err)
			}
			must(t, os.WriteFile(d.Path(id), forged, 0o644))

			_, remote := storeServer(t, d, static, nil)
			local, err := lru.Open(ctx, t.TempDir(), lru.Options{})
			must(t, err)
			var logs logBuffer
			_, mnt := mountImage(t, r, cache.New(local, remote), mount.Options{Lease: local.Lease,
				Logger: slog.New(slog.NewTextHandler(&logs, nil)), FilePrefetch: -1})
			file := filepath.Join(mnt, "f00")
			if _, err := os.ReadFile(file); !errors.Is(err, syscall.EIO) {
				t.Fatalf("read over a forged chunk: %v, want EIO", err)
			}
			if l := logs.String(); !strings.Contains(l, id.String()) || !strings.Contains(l, "BLAKE3") {
				t.Fatalf("the failure does not name chunk %s and its mismatch:\n%s", id, l)
			}
			if _, err := local.Get(ctx, id); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("the disk cache kept the forged blob: Get = %v, want not found", err)
			}
			must(t, os.WriteFile(d.Path(id), good, 0o644)) // repaired
			checkFile(t, mnt, src, "f00")
		})
	}
}
