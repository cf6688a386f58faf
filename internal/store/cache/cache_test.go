package cache

import (
	"bytes"
	"context"
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"

	"github.com/zosgrid/zos/internal/chunk"
	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/store"
	"github.com/zosgrid/zos/internal/store/dir"
	"github.com/zosgrid/zos/internal/store/mem"
	"github.com/zosgrid/zos/internal/store/storetest"
)

func TestConformance(t *testing.T) {
	t.Run("mem", func(t *testing.T) {
		storetest.Run(t, storetest.Harness{
			New: func(t *testing.T) store.Store { return New(mem.New(), mem.New()) },
			Corrupt: func(t *testing.T, s store.Store, id digest.ID, blob []byte) {
				// Rot in both: rot only in the cache is healed (TestRotHealed).
				s.(*Store).local.(*mem.Store).Corrupt(id, blob)
				s.(*Store).remote.(*mem.Store).Corrupt(id, blob)
			},
		})
	})
	t.Run("dir", func(t *testing.T) {
		storetest.Run(t, storetest.Harness{
			New: func(t *testing.T) store.Store {
				d, err := dir.New(t.TempDir())
				if err != nil {
					t.Fatal(err)
				}
				return New(d, mem.New())
			},
			Corrupt: func(t *testing.T, s store.Store, id digest.ID, blob []byte) {
				if err := os.WriteFile(s.(*Store).local.(*dir.Store).Path(id), blob, 0o644); err != nil {
					t.Fatal(err)
				}
				s.(*Store).remote.(*mem.Store).Corrupt(id, blob)
			},
		})
	})
}

// counting is a remote that counts Gets and, when gate is set, holds each
// one until gate is closed or its context ends.
type counting struct {
	*mem.Store
	gets    atomic.Int64
	gate    chan struct{}
	aborted atomic.Int64
}

func (c *counting) Get(ctx context.Context, id digest.ID) ([]byte, error) {
	c.gets.Add(1)
	if c.gate != nil {
		select {
		case <-c.gate:
		case <-ctx.Done():
			c.aborted.Add(1)
			return nil, ctx.Err()
		}
	}
	return c.Store.Get(ctx, id)
}

func TestReadThrough(t *testing.T) {
	ctx := context.Background()
	local, remote := mem.New(), &counting{Store: mem.New()}
	c := New(local, remote)
	_, id, blob := storetest.Blob("rt", 3000)
	remote.Put(ctx, id, blob)
	for range 3 {
		got, err := c.Get(ctx, id)
		if err != nil || !bytes.Equal(got, blob) {
			t.Fatalf("Get: %v", err)
		}
	}
	if n := remote.gets.Load(); n != 1 {
		t.Fatalf("%d remote Gets, want 1", n)
	}
	if ok, _ := local.Has(ctx, id); !ok {
		t.Fatal("not cached")
	}
}

// TestSingleFlight checks that concurrent Gets of one ID fetch it once.
// synctest.Wait makes "all of them are waiting" exact, not a sleep.
//
// Blobs are sealed outside the bubble: the codec pools zstd encoders, and an
// encoder made inside a bubble must not be used outside it.
func TestSingleFlight(t *testing.T) {
	_, id, blob := storetest.Blob("sf", 50000)
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		remote := &counting{Store: mem.New(), gate: make(chan struct{})}
		c := New(mem.New(), remote)
		remote.Put(ctx, id, blob)

		const n = 16
		var wg sync.WaitGroup
		got := make([][]byte, n)
		errs := make([]error, n)
		for i := range n {
			wg.Go(func() { got[i], errs[i] = c.Get(ctx, id) })
		}
		synctest.Wait() // every Get is blocked: one in the remote, the rest on it
		close(remote.gate)
		wg.Wait()
		for i := range n {
			if errs[i] != nil || !bytes.Equal(got[i], blob) {
				t.Fatalf("Get %d: %v", i, errs[i])
			}
		}
		if k := remote.gets.Load(); k != 1 {
			t.Fatalf("%d remote Gets for %d concurrent Gets, want 1", k, n)
		}
		got[0][0] ^= 1 // callers own their copies
		if got[1][0] == got[0][0] {
			t.Fatal("concurrent Gets share one buffer")
		}
	})
}

// TestCancel checks that a Get whose context ends returns at once, that
// the shared fetch goes on for the others, and that it is cancelled when
// the last waiter leaves.
func TestCancel(t *testing.T) {
	_, id, blob := storetest.Blob("cancel", 100)
	synctest.Test(t, func(t *testing.T) {
		remote := &counting{Store: mem.New(), gate: make(chan struct{})}
		c := New(mem.New(), remote)
		remote.Put(context.Background(), id, blob)

		ctxA, cancelA := context.WithCancel(context.Background())
		ctxB, cancelB := context.WithCancel(context.Background())
		var errA, errB error
		var wg sync.WaitGroup
		wg.Go(func() { _, errA = c.Get(ctxA, id) })
		wg.Go(func() { _, errB = c.Get(ctxB, id) })
		synctest.Wait()
		cancelA()
		synctest.Wait()
		if !errors.Is(errA, context.Canceled) {
			t.Fatalf("cancelled Get: %v", errA)
		}
		if remote.aborted.Load() != 0 {
			t.Fatal("fetch cancelled while a Get still waits on it")
		}
		cancelB()
		wg.Wait()
		synctest.Wait()
		if !errors.Is(errB, context.Canceled) {
			t.Fatalf("second cancelled Get: %v", errB)
		}
		if remote.aborted.Load() != 1 {
			t.Fatal("fetch not cancelled when its last Get left")
		}
		// A later Get starts afresh and succeeds.
		close(remote.gate)
		if _, err := c.Get(context.Background(), id); err != nil {
			t.Fatal(err)
		}
	})
}

// TestRotHealed checks that a rotten local copy is dropped and refetched.
func TestRotHealed(t *testing.T) {
	ctx := context.Background()
	for name, local := range map[string]func(t *testing.T) (store.Store, func(digest.ID, []byte)){
		"mem": func(t *testing.T) (store.Store, func(digest.ID, []byte)) {
			m := mem.New()
			return m, m.Corrupt
		},
		"dir": func(t *testing.T) (store.Store, func(digest.ID, []byte)) {
			d, err := dir.New(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			return d, func(id digest.ID, b []byte) { os.WriteFile(d.Path(id), b, 0o644) }
		},
	} {
		t.Run(name, func(t *testing.T) {
			l, corrupt := local(t)
			remote := &counting{Store: mem.New()}
			c := New(l, remote)
			_, id, blob := storetest.Blob("rot", 4000)
			if err := c.Put(ctx, id, blob); err != nil {
				t.Fatal(err)
			}
			bad := bytes.Clone(blob)
			bad[len(bad)/2] ^= 1
			corrupt(id, bad)
			got, err := c.Get(ctx, id)
			if err != nil || !bytes.Equal(got, blob) {
				t.Fatalf("Get over a rotten cache: %v", err)
			}
			if got, err := l.Get(ctx, id); err != nil || !bytes.Equal(got, blob) {
				t.Fatalf("cache not healed: %v", err)
			}
			if n := remote.gets.Load(); n != 1 {
				t.Fatalf("%d remote Gets, want 1", n)
			}
		})
	}
}

// TestRemoteRotNotCached checks that a blob failing verification at the
// remote is an error and never enters the cache.
func TestRemoteRotNotCached(t *testing.T) {
	ctx := context.Background()
	local, remote := mem.New(), mem.New()
	c := New(local, remote)
	_, id, blob := storetest.Blob("rr", 4000)
	remote.Corrupt(id, blob[:100])
	if _, err := c.Get(ctx, id); !errors.Is(err, chunk.ErrCorrupt) {
		t.Fatalf("Get: %v", err)
	}
	if local.Len() != 0 {
		t.Fatal("rotten blob cached")
	}
	if _, err := c.Get(ctx, digest.Sum(nil)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get missing: %v", err)
	}
}

// TestForgeryDropped: a remote blob that passes the store layer's check
// but not the chunk layer's (other plaintext sealed under the chunk's
// fingerprint) fails store.Fetch, which drops the cache's copy, so the
// next Fetch asks the remote again and succeeds once it is repaired.
func TestForgeryDropped(t *testing.T) {
	ctx := context.Background()
	local, remote := mem.New(), &counting{Store: mem.New()}
	c := New(local, remote)
	ref, id, good := storetest.Blob("forged", 4000)
	codec := chunk.NewCodec(0)
	forged := codec.SealTo(nil, bytes.Repeat([]byte{'x'}, 4000), ref.Sum)
	if err := chunk.Check(id, forged); err != nil {
		t.Fatalf("the forgery fails the store layer's check: %v", err)
	}
	remote.Store.Corrupt(id, forged)
	if _, err := store.Fetch(ctx, c, codec, ref); !errors.Is(err, chunk.ErrMismatch) {
		t.Fatalf("Fetch of a forgery: %v, want a mismatch", err)
	}
	if local.Len() != 0 {
		t.Fatal("the forgery stayed in the cache")
	}
	remote.Store.Corrupt(id, good) // repaired
	got, err := store.Fetch(ctx, c, codec, ref)
	if err != nil || len(got) != int(ref.Size) {
		t.Fatalf("Fetch after repair: %v", err)
	}
	if n := remote.gets.Load(); n != 2 {
		t.Fatalf("%d remote Gets, want 2 (the forgery, then the repaired blob)", n)
	}
}

func TestWriteThrough(t *testing.T) {
	ctx := context.Background()
	local, remote := mem.New(), mem.New()
	c := New(local, remote)
	_, id, blob := storetest.Blob("wt", 100)
	if err := c.Put(ctx, id, blob); err != nil {
		t.Fatal(err)
	}
	if local.Len() != 1 || remote.Len() != 1 {
		t.Fatalf("after Put: local %d, remote %d", local.Len(), remote.Len())
	}
	if err := c.Delete(ctx, id); err != nil {
		t.Fatal(err)
	}
	if local.Len() != 0 || remote.Len() != 0 {
		t.Fatalf("after Delete: local %d, remote %d", local.Len(), remote.Len())
	}
}

// batching is a remote that answers batches from a memory store, one
// call per batch, as Get would answer each ID.
type batching struct {
	*mem.Store
	batches [][]digest.ID
}

func (b *batching) GetBatch(ctx context.Context, ids []digest.ID, fn func(int, []byte, error)) error {
	b.batches = append(b.batches, ids)
	for i, id := range ids {
		blob, err := b.Get(ctx, id)
		fn(i, blob, err)
	}
	return nil
}

// TestGetBatch: local hits are served locally, the misses (a rotten
// local copy among them) go to the remote in one batch and fill the local
// store, and a remote that cannot batch is reported before anything.
func TestGetBatch(t *testing.T) {
	ctx := context.Background()
	local, remote := mem.New(), &batching{Store: mem.New()}
	var ids []digest.ID
	blobs := map[digest.ID][]byte{}
	for i := range 6 {
		_, id, blob := storetest.Blob(string(rune('a'+i)), 3000)
		remote.Put(ctx, id, blob)
		if i < 3 {
			local.Put(ctx, id, blob)
		}
		ids = append(ids, id)
		blobs[id] = blob
	}
	local.Corrupt(ids[2], []byte("rot"))
	_, absent, _ := storetest.Blob("absent", 10)
	ids = append(ids, absent)
	c := New(local, remote)
	seen := make([]int, len(ids))
	err := c.GetBatch(ctx, ids, func(i int, blob []byte, err error) {
		seen[i]++
		if ids[i] == absent {
			if !errors.Is(err, store.ErrNotFound) {
				t.Errorf("absent: %v", err)
			}
		} else if err != nil || !bytes.Equal(blob, blobs[ids[i]]) {
			t.Errorf("index %d: %v", i, err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range seen {
		if n != 1 {
			t.Fatalf("index %d answered %d times", i, n)
		}
	}
	if len(remote.batches) != 1 || len(remote.batches[0]) != 5 || remote.batches[0][0] != ids[2] {
		t.Fatalf("remote batches %v, want one of the rotten, 3 uncached and the absent", remote.batches)
	}
	for _, id := range ids[:6] {
		if b, err := local.Get(ctx, id); err != nil || !bytes.Equal(b, blobs[id]) {
			t.Fatalf("local after the batch: %v", err)
		}
	}
	if err := New(mem.New(), mem.New()).GetBatch(ctx, ids, func(int, []byte, error) {
		t.Fatal("a non-batching remote delivered")
	}); !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("non-batching remote: %v, want ErrUnsupported", err)
	}
}
