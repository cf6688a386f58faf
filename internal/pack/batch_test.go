package pack_test

import (
	"context"
	"errors"
	"os"
	"sync/atomic"
	"testing"

	"github.com/zosgrid/zos/internal/chunk"
	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/flist"
	"github.com/zosgrid/zos/internal/pack"
	"github.com/zosgrid/zos/internal/store"
	"github.com/zosgrid/zos/internal/store/mem"
)

// batchStore is a store with a batched membership query, like an http
// store; it counts queries and fails the test if Has is used.
type batchStore struct {
	store.Store
	t       *testing.T
	queries atomic.Int64
	asked   atomic.Int64
	fail    error
}

func (b *batchStore) Has(ctx context.Context, id digest.ID) (bool, error) {
	b.t.Error("Has called on a store that answers Missing")
	return b.Store.Has(ctx, id)
}

func (b *batchStore) Missing(ctx context.Context, ids []digest.ID) ([]digest.ID, error) {
	b.queries.Add(1)
	b.asked.Add(int64(len(ids)))
	if b.fail != nil {
		return nil, b.fail
	}
	return store.MissingByHas(ctx, b.Store, ids, 4)
}

// TestBatchedMissing: against a store with Missing, pack asks in batches,
// never per chunk, and writes the golden flist whatever the worker count;
// every chunk lands in the store; a second pack stores nothing.
func TestBatchedMissing(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to set owners (golden tree)")
	}
	root := goldenTree(t)
	ctx := context.Background()
	for _, w := range []int{1, 5} {
		st := &batchStore{Store: mem.New(), t: t}
		fl, stats, err := pack.Dir(ctx, root, st, pack.Options{Workers: w})
		if err != nil {
			t.Fatal(err)
		}
		r, _ := flist.Open(fl)
		const want = "78539075b12d4171c582400f3a06dc843385f156906d65c8bf6f2b98cdcf9dc9"
		if got := r.Digest().String(); got != want {
			t.Errorf("workers %d: digest %s, want %s", w, got, want)
		}
		for _, c := range r.Chunks() {
			if ok, _ := st.Store.Has(ctx, chunk.ID(c.Sum)); !ok {
				t.Fatalf("workers %d: chunk %x not stored", w, c.Sum[:4])
			}
		}
		if q := st.queries.Load(); q == 0 || q > int64(stats.Chunks) || stats.NewChunks == 0 {
			t.Errorf("workers %d: %d queries for %d chunks (%d new)", w, q, stats.Chunks, stats.NewChunks)
		}
		again, stats2, err := pack.Dir(ctx, root, st, pack.Options{Workers: w})
		if err != nil || string(again) != string(fl) || stats2.NewChunks != 0 {
			t.Errorf("workers %d: second pack: %v, %d new chunks", w, err, stats2.NewChunks)
		}
	}

	boom := errors.New("store down")
	st := &batchStore{Store: mem.New(), t: t, fail: boom}
	if _, _, err := pack.Dir(ctx, root, st, pack.Options{Workers: 3}); !errors.Is(err, boom) {
		t.Fatalf("a failing Missing: %v", err)
	}
}
