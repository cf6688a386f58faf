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
	"time"

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
	// Remote says the store talks to a server: with a cancelled context
	// its operations must fail (a local store may finish a cheap one).
	Remote bool
}

// missinger is a store that answers a batch of membership questions at
// once (httpstore, s3, router).
type missinger interface {
	Missing(ctx context.Context, ids []digest.ID) ([]digest.ID, error)
}

var codec = chunk.NewCodec(chunk.DefaultLevel)

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

	// A batch of membership questions: the store's own Missing if it has
	// one, and the Has fallback every store gets, agree on the IDs it
	// lacks, in the order asked.
	t.Run("MissingBatch", func(t *testing.T) {
		s := open(t)
		var ids, want []digest.ID
		for i := range 40 {
			_, id, blob := Blob(fmt.Sprintf("batch-%d", i), 50+i)
			ids = append(ids, id)
			if i%3 == 0 {
				want = append(want, id)
				continue
			}
			if err := s.Put(ctx, id, blob); err != nil {
				t.Fatal(err)
			}
		}
		check := func(name string, got []digest.ID, err error) {
			t.Helper()
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if len(got) != len(want) {
				t.Fatalf("%s: %d missing, want %d", name, len(got), len(want))
			}
			for i := range got {
				if got[i] != want[i] {
					t.Fatalf("%s: missing[%d] = %s, want %s (order as asked)", name, i, got[i].Short(), want[i].Short())
				}
			}
		}
		got, err := store.MissingByHas(ctx, s, ids, 8)
		check("MissingByHas", got, err)
		if m, ok := s.(missinger); ok {
			got, err := m.Missing(ctx, ids)
			check("Missing", got, err)
			if got, err := m.Missing(ctx, nil); err != nil || len(got) != 0 {
				t.Fatalf("Missing of nothing: %v, %v", got, err)
			}
		}
	})

	// A store that can replace a blob (the hub's recompression) swaps it
	// whole: a reader racing the replacements gets the old blob or the
	// new one, never a miss or a mix, and a later Put keeps the new one.
	t.Run("Replace", func(t *testing.T) {
		s := open(t)
		r, ok := s.(store.Replacer)
		if !ok {
			t.Skipf("%s cannot replace blobs (no store.Replacer)", s)
		}
		ref, id, blob := Blob("replace", 60000)
		plain, err := codec.Open(ref, blob)
		if err != nil {
			t.Fatal(err)
		}
		other := chunk.NewCodec(chunk.MaxLevel).SealSum(plain, ref.Sum)
		if bytes.Equal(other, blob) {
			t.Fatal("the two levels sealed the same blob: the test shows nothing")
		}
		if err := s.Put(ctx, id, blob); err != nil {
			t.Fatal(err)
		}
		done := make(chan error)
		go func() {
			for i := 0; i < 20; i++ {
				if err := r.Replace(ctx, id, [][]byte{other, blob}[i%2]); err != nil {
					done <- err
					return
				}
			}
			done <- r.Replace(ctx, id, other)
		}()
		for reading := true; reading; {
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("Replace: %v", err)
				}
				reading = false
			default:
			}
			got, err := s.Get(ctx, id)
			if err != nil || !bytes.Equal(got, blob) && !bytes.Equal(got, other) {
				t.Fatalf("Get during Replace = %d bytes, %v", len(got), err)
			}
		}
		if err := s.Put(ctx, id, blob); err != nil {
			t.Fatal(err)
		}
		if got, err := s.Get(ctx, id); err != nil || !bytes.Equal(got, other) {
			t.Fatalf("Get after Replace and Put = %d bytes, %v; want the replacement (%d bytes)", len(got), err, len(other))
		}
		if n := count(t, s); n != 1 {
			t.Fatalf("List after replacing: %d blobs", n)
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
		if err := s.Put(ctx, id, blob); err != nil {
			t.Fatal(err)
		}
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		// A cancelled context must not hang (each operation returns within
		// seconds), and a remote store must fail rather than go on.
		_, id2, blob2 := Blob("y", 10)
		ops := map[string]func() error{
			"Put": func() error { return s.Put(cctx, id2, blob2) },
			"Get": func() error { _, err := s.Get(cctx, id); return err },
			"Has": func() error { _, err := s.Has(cctx, id); return err },
			"List": func() error {
				return s.List(cctx, func(digest.ID) error { return nil })
			},
		}
		for name, op := range ops {
			done := make(chan error, 1)
			go func() { done <- op() }()
			select {
			case err := <-done:
				if h.Remote && err == nil {
					t.Errorf("%s with a cancelled context succeeded on a remote store", name)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("%s with a cancelled context still runs after 10 s", name)
			}
		}
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
