package dir

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/store"
	"github.com/zosgrid/zos/internal/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, storetest.Harness{
		New: func(t *testing.T) store.Store {
			s, err := New(t.TempDir())
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

func TestTornBlobIsReplaced(t *testing.T) {
	ctx := context.Background()
	s, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	_, id, blob := storetest.Blob("torn", 9000)
	os.MkdirAll(filepath.Dir(s.Path(id)), 0o755)
	os.WriteFile(s.Path(id), blob[:100], 0o644) // what a crash before Sync can leave
	if _, err := s.Get(ctx, id); err == nil {
		t.Fatal("torn blob served")
	}
	if err := s.Put(ctx, id, blob); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(ctx, id)
	if err != nil || len(got) != len(blob) {
		t.Fatalf("after re-put: %d bytes, %v", len(got), err)
	}
	// No temporary files are left behind.
	left, _ := filepath.Glob(filepath.Join(s.Root(), "*", ".tmp-*"))
	if len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
}

// Every writeBackEvery bytes put start one background flush, and the
// count starts again.
func TestWriteBack(t *testing.T) {
	s, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	blob := make([]byte, 4<<20)
	for i := range writeBackEvery/len(blob) + 1 {
		blob[0] = byte(i)
		if err := s.Put(context.Background(), digest.Sum(blob), blob); err != nil {
			t.Fatal(err)
		}
		if i == writeBackEvery/len(blob)-2 && (s.dirty.Load() != writeBackEvery-int64(len(blob)) || s.flushing.Load()) {
			t.Fatalf("flush started early: dirty %d, flushing %v", s.dirty.Load(), s.flushing.Load())
		}
	}
	if got := s.dirty.Load(); got != int64(len(blob)) {
		t.Fatalf("dirty after %d MiB put = %d, want %d (no flush started at %d)", writeBackEvery>>20+4, got, len(blob), writeBackEvery)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// A second Put of a present blob keeps the first copy and leaves no
// temporary file behind.
func TestPutKeepsFirst(t *testing.T) {
	s, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	id := digest.Sum([]byte("id"))
	for _, b := range []string{"first", "second"} {
		if err := s.Put(context.Background(), id, []byte(b)); err != nil {
			t.Fatal(err)
		}
	}
	if b, err := os.ReadFile(s.Path(id)); err != nil || string(b) != "first" {
		t.Fatalf("blob = %q, %v; want the first copy", b, err)
	}
	names, err := os.ReadDir(filepath.Dir(s.Path(id)))
	if err != nil || len(names) != 1 {
		t.Fatalf("shard holds %v (%v), want the blob alone", names, err)
	}
}
