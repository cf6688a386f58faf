package hub

import (
	"bytes"
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/flist"
	"github.com/zosgrid/zos/internal/mount"
)

// TestTraces stores a prefetch trace beside a pushed flist and serves it
// to readers of the flist; writers of other namespaces, malformed traces
// and traces of another flist are refused; a private image's trace is
// hidden like the image; a GC that deletes the flist deletes its trace.
func TestTraces(t *testing.T) {
	ctx := context.Background()
	b := dirBackend(t)
	h := startHub(t, b, nil)
	register(t, h.url, alice, "alice")
	register(t, h.url, bob, "bob")
	ca, cb, anon := client(t, h.url, &alice), client(t, h.url, &bob), client(t, h.url, nil)
	fl, _ := packTo(t, h.url, alice, tree(t, 21, nil), nil)
	r, _ := flist.Open(fl)
	d := r.Digest()
	if _, err := ca.PullTrace(ctx, d); code(err) != http.StatusNotFound {
		t.Fatalf("trace of an unknown flist: %v", err)
	}
	if _, err := ca.Push(ctx, mustRef(t, "alice/app:v1"), fl); err != nil {
		t.Fatal(err)
	}
	tr, err := (&mount.Trace{Flist: d, Chunks: []uint32{2, 0, 1}}).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := anon.PullTrace(ctx, d); code(err) != http.StatusNotFound {
		t.Fatalf("trace before any was stored: %v", err)
	}
	if _, err := cb.PushTrace(ctx, d, tr); code(err) != http.StatusNotFound {
		t.Fatalf("trace by a key that writes no name holding the flist: %v", err)
	}
	other, _ := (&mount.Trace{Flist: digest.Sum([]byte("another flist")), Chunks: []uint32{0}}).MarshalBinary()
	for name, bad := range map[string][]byte{
		"garbage":         []byte("not a trace"),
		"another flist":   other,
		"index too large": must1(t, (&mount.Trace{Flist: d, Chunks: []uint32{uint32(len(r.Chunks()))}}).MarshalBinary),
		"truncated":       tr[:len(tr)-1],
	} {
		if _, err := ca.PushTrace(ctx, d, bad); code(err) != http.StatusBadRequest {
			t.Errorf("%s: %v", name, err)
		}
	}
	ti, err := ca.PushTrace(ctx, d, tr)
	if err != nil || ti.Chunks != 3 || ti.Flist != d {
		t.Fatalf("push trace: %+v %v", ti, err)
	}
	got, err := anon.PullTrace(ctx, d)
	if err != nil || !bytes.Equal(got, tr) {
		t.Fatalf("pull trace: %v", err)
	}
	// Removed by the owner only; then stored again.
	if err := cb.RemoveTrace(ctx, d); code(err) != http.StatusNotFound {
		t.Fatalf("remove by another key: %v", err)
	}
	if err := ca.RemoveTrace(ctx, d); err != nil {
		t.Fatal(err)
	}
	if _, err := anon.PullTrace(ctx, d); code(err) != http.StatusNotFound {
		t.Fatalf("trace after its removal: %v", err)
	}
	if _, err := ca.PushTrace(ctx, d, tr); err != nil {
		t.Fatal(err)
	}
	// Private: the trace is as hidden as the image.
	if _, err := ca.SetPrivate(ctx, "alice", true); err != nil {
		t.Fatal(err)
	}
	if _, err := cb.PullTrace(ctx, d); code(err) != http.StatusNotFound {
		t.Fatalf("private image's trace by another key: %v", err)
	}
	if got, err := ca.PullTrace(ctx, d); err != nil || !bytes.Equal(got, tr) {
		t.Fatalf("private image's trace by its owner: %v", err)
	}
	// The flist goes: so does its trace.
	if err := ca.Remove(ctx, mustRef(t, "alice/app")); err != nil {
		t.Fatal(err)
	}
	if _, err := GC(ctx, b, GCOptions{Now: func() time.Time { return time.Now().Add(2 * time.Hour) }}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Objects.Stat(ctx, traceObj(d)); !isNotFound(err) {
		t.Fatalf("trace after its flist was collected: %v", err)
	}
}

func must1(t *testing.T, f func() ([]byte, error)) []byte {
	t.Helper()
	b, err := f()
	if err != nil {
		t.Fatal(err)
	}
	return b
}
