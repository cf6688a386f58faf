// Package storetest is the conformance suite every store.Store passes.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/zosgrid/zos/internal/chunk"
	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/store"
)

// Harness describes the store under test.
type Harness struct {
	// New returns an empty store; the suite closes it.
	New func(t *testing.T) store.Store
	// Corrupt, if set, replaces the stored bytes under id behind the store's
	// back (as rot or a bad disk would), so the suite can check that Get
	// refuses them.
	Corrupt func(t *testing.T, s store.Store, id digest.ID, blob []byte)
}

var codec = chunk.NewCodec(zstd.SpeedFastest)

// Blob returns a sealed blob of n pseudo-random-ish bytes derived from seed.
func Blob(seed string, n int) (chunk.Ref, digest.ID, []byte) {
	plain := make([]byte, 0, n)
	for i := 0; len(plain) < n; i++ {
		plain = fmt.Appendf(plain, "%s-%d;", seed, i*i)
	}
	plain = plain[:n]
	sum, id, blob := codec.Seal(plain)
	return chunk.Ref{Sum: sum, Size: uint32(n)}, id, blob
}

// Run runs the suite.
func Run(t *testing.T, h Harness) {
	ctx := context.Background()
	open := func(t *testing.T) store.Store {
		s := h.New(t)
		t.Cleanup(func() { s.Close() })
		return s
	}

	t.Run("PutGetHas", func(t *testing.T) {
		s := open(t)
		ref, id, blob := Blob("a", 5000)
		if ok, err := s.Has(ctx, id); err != nil || ok {
			t.Fatalf("Has before Put = %v, %v", ok, err)
		}
		if err := s.Put(ctx, id, blob); err != nil {
			t.Fatal(err)
		}
		if ok, err := s.Has(ctx, id); err != nil || !ok {
			t.Fatalf("Has after Put = %v, %v", ok, err)
		}
		got, err := s.Get(ctx, id)
		if err != nil || !bytes.Equal(got, blob) {
			t.Fatalf("Get = %d bytes, %v", len(got), err)
		}
		plain, err := store.Fetch(ctx, s, codec, ref)
		if err != nil || len(plain) != 5000 {
			t.Fatalf("Fetch: %v", err)
		}
	})

	t.Run("Missing", func(t *testing.T) {
		s := open(t)
		_, id, _ := Blob("missing", 10)
		if _, err := s.Get(ctx, id); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("Get missing: err = %v, want ErrNotFound", err)
		}
		if err := s.Delete(ctx, id); err != nil {
			t.Fatalf("Delete missing: %v", err)
		}
	})

	t.Run("Idempotent", func(t *testing.T) {
		s := open(t)
		_, id, blob := Blob("b", 100)
		for i := 0; i < 3; i++ {
			if err := s.Put(ctx, id, blob); err != nil {
				t.Fatal(err)
			}
		}
		if n := count(t, s); n != 1 {
			t.Fatalf("List after 3 puts of one ID: %d", n)
		}
	})

	t.Run("DeleteList", func(t *testing.T) {
		s := open(t)
		var ids []digest.ID
		for i := 0; i < 20; i++ {
			_, id, blob := Blob(fmt.Sprint("l", i), 300+i)
			ids = append(ids, id)
			if err := s.Put(ctx, id, blob); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Delete(ctx, ids[3]); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Get(ctx, ids[3]); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("Get after Delete: %v", err)
		}
		var listed []digest.ID
		if err := s.List(ctx, func(id digest.ID) error { listed = append(listed, id); return nil }); err != nil {
			t.Fatal(err)
		}
		want := append(append([]digest.ID{}, ids[:3]...), ids[4:]...)
		sortIDs(listed)
		sortIDs(want)
		if fmt.Sprint(listed) != fmt.Sprint(want) {
			t.Fatalf("List = %d ids, want %d", len(listed), len(want))
		}
		stop := errors.New("stop")
		n := 0
		if err := s.List(ctx, func(digest.ID) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
			t.Fatalf("List must stop at fn's error: %v after %d", err, n)
		}
	})

	t.Run("Concurrent", func(t *testing.T) {
		s := open(t)
		var wg sync.WaitGroup
		errs := make(chan error, 64)
		for w := 0; w < 8; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 8; i++ {
					// Every worker writes the same 8 IDs: racing writers of one ID.
					ref, id, blob := Blob(fmt.Sprint("c", i), 20000)
					if err := s.Put(ctx, id, blob); err != nil {
						errs <- err
						return
					}
					if _, err := store.Fetch(ctx, s, codec, ref); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if n := count(t, s); n != 8 {
			t.Fatalf("%d blobs, want 8", n)
		}
	})

	t.Run("Large", func(t *testing.T) {
		s := open(t)
		ref, id, blob := Blob("big", chunk.MaxSize)
		if err := s.Put(ctx, id, blob); err != nil {
			t.Fatal(err)
		}
		if _, err := store.Fetch(ctx, s, codec, ref); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("Corrupt", func(t *testing.T) {
		if h.Corrupt == nil {
			t.Skip("harness cannot corrupt this backend's stored bytes")
		}
		s := open(t)
		_, id, blob := Blob("rot", 4000)
		if err := s.Put(ctx, id, blob); err != nil {
			t.Fatal(err)
		}
		bad := bytes.Clone(blob)
		bad[len(bad)/2] ^= 1
		h.Corrupt(t, s, id, bad)
		_, err := s.Get(ctx, id)
		var inv *chunk.Invalid
		if !errors.As(err, &inv) || inv.ID != id || inv.Store == "" {
			t.Fatalf("Get of rotten blob: err = %v, want *chunk.Invalid naming the store", err)
		}
		h.Corrupt(t, s, id, blob[:10])
		if _, err := s.Get(ctx, id); !errors.Is(err, chunk.ErrCorrupt) {
			t.Fatalf("Get of truncated blob: err = %v", err)
		}
	})

	t.Run("Cancelled", func(t *testing.T) {
		s := open(t)
		_, id, blob := Blob("x", 10)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		// A cancelled context must not hang; an error is expected from
		// remote stores, local ones may finish the cheap operation.
		_ = s.Put(cctx, id, blob)
		_, _ = s.Get(cctx, id)
	})
}

func count(t *testing.T, s store.Store) int {
	t.Helper()
	n := 0
	if err := s.List(context.Background(), func(digest.ID) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

func sortIDs(ids []digest.ID) {
	sort.Slice(ids, func(i, j int) bool { return bytes.Compare(ids[i][:], ids[j][:]) < 0 })
}
