package lru

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/zosgrid/zos/internal/chunk"
	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/store"
	"github.com/zosgrid/zos/internal/store/cache"
	"github.com/zosgrid/zos/internal/store/mem"
)

// counting is a remote that counts Gets.
type counting struct {
	*mem.Store
	gets atomic.Int64
}

func (c *counting) Get(ctx context.Context, id digest.ID) ([]byte, error) {
	c.gets.Add(1)
	return c.Store.Get(ctx, id)
}

// TestReadThrough: a bounded cache under store/cache is a read-through
// cache: one remote fetch per chunk however many readers, only verified
// blobs cached, and the bound holds.
func TestReadThrough(t *testing.T) {
	ctx := context.Background()
	bs := blobs("rt", 40, 8000)
	budget := sizeOf(bs[:10]...)
	local := open(t, t.TempDir(), budget)
	remote := &counting{Store: mem.New()}
	for _, b := range bs {
		remote.Put(ctx, b.id, b.data)
	}
	c := cache.New(local, remote)

	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if got, err := c.Get(ctx, bs[0].id); err != nil || !bytes.Equal(got, bs[0].data) {
				t.Errorf("Get: %v", err)
			}
		})
	}
	wg.Wait()
	if n := remote.gets.Load(); n != 1 {
		t.Fatalf("%d remote Gets for one chunk", n)
	}
	for range 2 {
		if _, err := c.Get(ctx, bs[0].id); err != nil {
			t.Fatal(err)
		}
	}
	if n := remote.gets.Load(); n != 1 {
		t.Fatalf("cached chunk fetched again: %d remote Gets", n)
	}

	// Every chunk, twice: the cache stays within its budget.
	for range 2 {
		for _, b := range bs {
			if _, err := c.Get(ctx, b.id); err != nil {
				t.Fatal(err)
			}
			if st, _ := local.Stats(); st.Used > budget {
				t.Fatalf("used %d > budget %d", st.Used, budget)
			}
		}
	}

	// A corrupt remote blob is an error and is never cached.
	rb := blobs("rotten remote", 1, 3000)[0]
	id, blob := rb.id, rb.data
	bad := bytes.Clone(blob)
	bad[100] ^= 1
	remote.Corrupt(id, bad)
	if _, err := c.Get(ctx, id); !errors.Is(err, chunk.ErrCorrupt) {
		t.Fatalf("corrupt remote blob: %v", err)
	}
	if has(local, id) {
		t.Fatal("corrupt blob cached")
	}
}

// TestReadThroughStats: under store/cache, a chunk fetched from the remote
// counts one miss and a chunk read back one hit, as 'zos cache stats'
// reports them.
func TestReadThroughStats(t *testing.T) {
	ctx := context.Background()
	bs := blobs("stats", 3, 5000)
	local := open(t, t.TempDir(), 0)
	remote := mem.New()
	for _, b := range bs {
		remote.Put(ctx, b.id, b.data)
	}
	c := cache.New(local, remote)
	for range 2 {
		for _, b := range bs {
			if _, err := c.Get(ctx, b.id); err != nil {
				t.Fatal(err)
			}
		}
	}
	st, err := local.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Misses != 3 || st.Hits != 3 {
		t.Fatalf("%d misses and %d hits for 3 chunks fetched and read back once, want 3 and 3", st.Misses, st.Hits)
	}
}

// TestLeaseDelta: a chunk stored as a delta is read through a lease; the
// chunk and its base stay pinned (and cached) until the lease is released.
func TestLeaseDelta(t *testing.T) {
	ctx := context.Background()
	codec := chunk.NewCodec(3)
	base := make([]byte, 64<<10) // incompressible alone, so the delta pays
	rand.NewChaCha8([32]byte{1}).Read(base)
	next := bytes.Clone(base)
	copy(next[5000:], "a small change in the middle")
	bsum, bid, bblob := codec.Seal(base)
	nsum := digest.Sum(next)
	nblob, ok := codec.SealDelta(nil, next, nsum, []chunk.Base{{Ref: chunk.Ref{Sum: bsum, Size: uint32(len(base))}, Plain: base}})
	if !ok {
		t.Fatal("no delta")
	}
	nid := chunk.ID(nsum)
	if _, deps, _ := chunk.Deps(nblob); len(deps) != 1 || deps[0] != bid {
		t.Fatalf("deps %v", deps)
	}
	remote := mem.New()
	remote.Put(ctx, bid, bblob)
	remote.Put(ctx, nid, nblob)
	local := open(t, t.TempDir(), 0)
	c := cache.New(local, remote)

	view, release := local.Lease(c)
	plain, err := store.Fetch(ctx, view, codec, chunk.Ref{Sum: nsum, Size: uint32(len(next))})
	if err != nil || !bytes.Equal(plain, next) {
		t.Fatalf("Fetch through a lease: %v", err)
	}
	if u, _ := local.Usage(ctx); u.Pinned != 2 || u.Blobs != 2 {
		t.Fatalf("during the lease: %+v", u)
	}
	other := open(t, local.Root(), 0) // another process's evictor, as flock sees it
	if r, _ := other.GC(ctx, 1); r.Blobs != 2 {
		t.Fatalf("GC removed leased blobs: %+v", r)
	}
	release()
	release()
	if u, _ := local.Usage(ctx); u.Pinned != 0 {
		t.Fatalf("after release: %+v", u)
	}
	if r, _ := other.GC(ctx, 1); r.Blobs != 0 {
		t.Fatalf("GC after release: %+v", r)
	}
	// A warm read through a fresh lease: served from the cache, pinned again.
	remote2 := &counting{Store: remote}
	view, release = local.Lease(cache.New(local, remote2))
	defer release()
	for range 2 {
		if _, err := store.Fetch(ctx, view, codec, chunk.Ref{Sum: nsum, Size: uint32(len(next))}); err != nil {
			t.Fatal(err)
		}
	}
	if n := remote2.gets.Load(); n != 2 {
		t.Fatalf("%d remote Gets after eviction, want 2 (chunk and base, once)", n)
	}
	if u, _ := local.Usage(ctx); u.Pinned != 2 {
		t.Fatalf("second lease: %+v", u)
	}
}

// batchRemote answers batches from a memory store.
type batchRemote struct{ *mem.Store }

func (b batchRemote) GetBatch(ctx context.Context, ids []digest.ID, fn func(int, []byte, error)) error {
	for i, id := range ids {
		blob, err := b.Get(ctx, id)
		fn(i, blob, err)
	}
	return nil
}

// TestLeaseBatch: a batch read through a lease pins every blob it reads
// until release; through a store that cannot batch it is unsupported.
func TestLeaseBatch(t *testing.T) {
	ctx := context.Background()
	bs := blobs("lb", 5, 4000)
	remote := batchRemote{mem.New()}
	var ids []digest.ID
	for _, b := range bs {
		remote.Put(ctx, b.id, b.data)
		ids = append(ids, b.id)
	}
	local := open(t, t.TempDir(), 0)
	view, release := local.Lease(cache.New(local, remote))
	n := 0
	err := view.(store.Batcher).GetBatch(ctx, ids, func(i int, blob []byte, err error) {
		if err != nil || !bytes.Equal(blob, bs[i].data) {
			t.Errorf("index %d: %v", i, err)
		}
		n++
	})
	if err != nil || n != len(ids) {
		t.Fatalf("GetBatch: %v, %d delivered", err, n)
	}
	if u, _ := local.Usage(ctx); u.Pinned != int64(len(ids)) || u.Blobs != int64(len(ids)) {
		t.Fatalf("during the lease: %+v", u)
	}
	release()
	if u, _ := local.Usage(ctx); u.Pinned != 0 {
		t.Fatalf("after release: %+v", u)
	}
	view, release = local.Lease(mem.New())
	defer release()
	if err := view.(store.Batcher).GetBatch(ctx, ids, nil); !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("lease of a non-batching store: %v", err)
	}
}
