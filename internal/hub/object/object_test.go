package object

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/zosgrid/zos/internal/store/storetest"
)

// conformance runs the Store contract against s.
func conformance(t *testing.T, s Store) {
	ctx := context.Background()
	if _, err := s.Get(ctx, "a/b"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get missing: %v", err)
	}
	if _, err := s.Stat(ctx, "a/b"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Stat missing: %v", err)
	}
	if err := s.Put(ctx, "a/b", []byte("one")); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "a/b", []byte("two")); err != nil {
		t.Fatal(err)
	}
	if b, err := s.Get(ctx, "a/b"); err != nil || string(b) != "two" {
		t.Fatalf("Get: %q %v", b, err)
	}
	if err := s.Create(ctx, "a/b", []byte("three")); !errors.Is(err, ErrExist) {
		t.Fatalf("Create over an object: %v", err)
	}
	if fi, err := s.Stat(ctx, "a/b"); err != nil || fi.Size != 3 || fi.ModTime.IsZero() {
		t.Fatalf("Stat: %+v %v", fi, err)
	}
	if _, _, err := s.Open(ctx, "a/c"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Open missing: %v", err)
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB: more than one read
	if err := s.Put(ctx, "a/big", big); err != nil {
		t.Fatal(err)
	}
	rc, fi, err := s.Open(ctx, "a/big")
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, big) || fi.Size != int64(len(big)) || fi.Name != "a/big" {
		t.Fatalf("Open read %d bytes (%v), info %+v; want %d", len(got), err, fi, len(big))
	}
	for _, bad := range []string{"", "/a", "a//b", "a/../b", ".tmp/x", "a b"} {
		if err := s.Put(ctx, bad, nil); err == nil {
			t.Errorf("Put %q accepted", bad)
		}
	}

	// Exactly one of many concurrent Creates wins.
	var wins atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			err := s.Create(ctx, "race/x", []byte("r"))
			if err == nil {
				wins.Add(1)
			} else if !errors.Is(err, ErrExist) {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d concurrent Creates won, want 1", wins.Load())
	}

	for _, n := range []string{"l/x/1", "l/x/2", "l/xy", "l/y/1", "m/1"} {
		if err := s.Put(ctx, n, []byte(n)); err != nil {
			t.Fatal(err)
		}
	}
	for prefix, want := range map[string][]string{
		"l/x/": {"l/x/1", "l/x/2"},
		"l/x":  {"l/x/1", "l/x/2", "l/xy"},
		"l/":   {"l/x/1", "l/x/2", "l/xy", "l/y/1"},
		"nope": nil,
	} {
		var got []string
		if err := s.List(ctx, prefix, func(fi Info) error { got = append(got, fi.Name); return nil }); err != nil {
			t.Fatal(err)
		}
		sort.Strings(got)
		if len(got) != len(want) || len(got) > 0 && got[0] != want[0] || len(got) > 0 && got[len(got)-1] != want[len(want)-1] {
			t.Errorf("List %q = %v, want %v", prefix, got, want)
		}
	}
	if err := s.Delete(ctx, "l/x/1"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "l/x/1"); err != nil {
		t.Fatalf("Delete missing: %v", err)
	}
	if _, err := s.Get(ctx, "l/x/1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get deleted: %v", err)
	}

	// Writes and deletes of neighbours race (as the hub's pending
	// markers do): every write lands, although a Delete that empties a
	// directory removes it (dir).
	for w := range 2 {
		wg.Go(func() {
			for i := range 150 {
				n := fmt.Sprintf("p/q/%d-%d", w, i)
				write := s.Put
				if i%2 == 0 {
					write = s.Create
				}
				if err := write(ctx, n, []byte(n)); err != nil {
					t.Errorf("write %s beside deletes: %v", n, err)
					return
				}
				if err := s.Delete(ctx, n); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestDir(t *testing.T) {
	s, err := NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	conformance(t, s)
}

func TestS3(t *testing.T) {
	endpoint, access, secret := storetest.StartMinIO(t)
	c, err := minio.New(endpoint, &minio.Options{Creds: credentials.NewStaticV4(access, secret, "")})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := c.MakeBucket(ctx, "objects", minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
	s, err := NewS3(ctx, c, "objects", "hub/meta", "s3://"+endpoint+"/objects/hub/meta")
	if err != nil {
		t.Fatal(err)
	}
	conformance(t, s)
}
