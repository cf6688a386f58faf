package lru

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/store"
)

func putFile(t *testing.T, s *Store, id digest.ID, content []byte) {
	t.Helper()
	err := s.PutFile(context.Background(), id, int64(len(content)), func(w io.Writer) error {
		_, err := w.Write(content)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestWholeFiles: a whole file is written whole or not at all, opens
// read-only with its content, counts in the budget like a blob, is pinned
// while open and evicted like a blob once closed, and is invisible to the
// store contract (List, Has).
func TestWholeFiles(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	s := open(t, root, 1<<20)
	other := open(t, root, 0) // another process, as far as flock is concerned
	id := digest.Sum([]byte("file id"))
	content := bytes.Repeat([]byte("whole file "), 10000) // 110 KB

	if _, err := s.OpenFile(id); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("open of a file never put: %v", err)
	}
	// A fill that fails or writes the wrong size leaves nothing.
	boom := errors.New("boom")
	if err := s.PutFile(ctx, id, 100, func(io.Writer) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("failed fill: %v", err)
	}
	if err := s.PutFile(ctx, id, 100, func(w io.Writer) error { _, err := w.Write([]byte("short")); return err }); err == nil {
		t.Fatal("a fill of the wrong size was kept")
	}
	if _, err := s.OpenFile(id); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a failed put left a file: %v", err)
	}
	// Larger than a quarter of the budget: refused.
	if err := s.PutFile(ctx, digest.Sum([]byte("big")), 300<<10, func(w io.Writer) error { return nil }); !errors.Is(err, ErrFull) {
		t.Fatalf("file over a quarter of the budget: %v", err)
	}

	// Concurrent puts of one file: one copy, counted once.
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() { putFile(t, s, id, content) })
	}
	wg.Wait()
	u := checkCount(t, s)
	if u.Blobs != 1 || u.Bytes != int64(len(content)) || u.Temps != 0 {
		t.Fatalf("after puts: %+v", u)
	}
	f, err := other.OpenFile(id)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(f)
	if err != nil || !bytes.Equal(got, content) {
		t.Fatalf("content read back differs (%v)", err)
	}
	if _, err := f.Write([]byte("x")); err == nil {
		t.Fatal("whole file opened writable")
	}
	if st, _ := os.Stat(s.FilePath(id)); st.Mode().Perm() != 0o444 {
		t.Fatalf("mode %v, want read-only", st.Mode())
	}
	if ok, _ := s.Has(ctx, id); ok {
		t.Fatal("Has reports a whole file as a blob")
	}
	s.List(ctx, func(got digest.ID) error {
		t.Fatalf("List gave a whole file: %s", got)
		return nil
	})

	// Open (pinned): GC cannot remove it. Closed: it goes, oldest first.
	when := time.Now().Add(-time.Hour)
	os.Chtimes(s.FilePath(id), when, when)
	bs := blobs("beside", 2, 1000)
	putAll(t, s, bs)
	r, err := s.GC(ctx, 1)
	if err != nil || r.Skipped != 1 || r.Removed != 2 {
		t.Fatalf("GC with the file open: %+v %v", r, err)
	}
	if _, err := os.Stat(s.FilePath(id)); err != nil {
		t.Fatal("an open whole file was evicted")
	}
	f.Close()
	if r, err = s.GC(ctx, 1); err != nil || r.Removed != 1 || r.Bytes != 0 {
		t.Fatalf("GC with the file closed: %+v %v", r, err)
	}
	if _, err := s.OpenFile(id); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("evicted file still opens: %v", err)
	}
	checkCount(t, s)
}
