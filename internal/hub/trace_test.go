package hub

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/zosgrid/zos/internal/chunk"
	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/flist"
	"github.com/zosgrid/zos/internal/hub/hubclient"
	"github.com/zosgrid/zos/internal/mount"
	"github.com/zosgrid/zos/internal/store"
	"github.com/zosgrid/zos/internal/store/httpstore"
)

// TestTraces stores a prefetch trace beside a pushed flist and serves it
// to readers of the flist; writers of other namespaces, malformed traces
// and traces of another flist are refused; a private image's trace is
// hidden like the image; a GC that deletes the flist deletes its trace.
func TestTraces(t *testing.T) {
	ctx := context.Background()
	b, _, ca, cb, anon, fl, r := traceHub(t, 21)
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
	privateThenCollected(t, b, ca, cb, traceObj(d), tr, func(c *hubclient.Client) ([]byte, error) { return c.PullTrace(ctx, d) })
}

// traceHub starts a hub with alice and bob registered, and packs a tree
// into it (not yet pushed); it returns alice's, bob's and an anonymous
// client.
func traceHub(t *testing.T, seed uint64) (b *Backend, h *testHub, ca, cb, anon *hubclient.Client, fl []byte, r *flist.Reader) {
	t.Helper()
	b = dirBackend(t)
	h = startHub(t, b, nil)
	register(t, h.url, alice, "alice")
	register(t, h.url, bob, "bob")
	ca, cb, anon = client(t, h.url, &alice), client(t, h.url, &bob), client(t, h.url, nil)
	fl, _ = packTo(t, h.url, alice, tree(t, seed, nil), nil)
	r, err := flist.Open(fl)
	if err != nil {
		t.Fatal(err)
	}
	return b, h, ca, cb, anon, fl, r
}

// privateThenCollected checks what pull reads beside an flist of alice's
// (want, the object obj): once her namespace is private, bob reads nothing
// and she reads it; once the flist is removed and collected, it is gone.
func privateThenCollected(t *testing.T, b *Backend, ca, cb *hubclient.Client, obj string, want []byte, pull func(*hubclient.Client) ([]byte, error)) {
	t.Helper()
	ctx := context.Background()
	if _, err := ca.SetPrivate(ctx, "alice", true); err != nil {
		t.Fatal(err)
	}
	if _, err := pull(cb); code(err) != http.StatusNotFound {
		t.Fatalf("%s of a private image, by another key: %v", obj, err)
	}
	if got, err := pull(ca); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("%s of a private image, by its owner: %v", obj, err)
	}
	if err := ca.Remove(ctx, mustRef(t, "alice/app")); err != nil {
		t.Fatal(err)
	}
	if _, err := GC(ctx, b, GCOptions{Now: func() time.Time { return time.Now().Add(2 * time.Hour) }}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Objects.Stat(ctx, obj); !isNotFound(err) {
		t.Fatalf("%s after its flist was collected: %v", obj, err)
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

// TestBundles: from a version-2 trace the hub builds the start bundle
// (docs/BUNDLE.md) and serves it, streamed, byte for byte the bundle a
// client builds from the same flist and trace; a version-1 trace, a
// missing chunk or a removed trace leave none; a private image's bundle
// is hidden like the image, and a GC that deletes the flist deletes it.
func TestBundles(t *testing.T) {
	ctx := context.Background()
	b, h, ca, cb, anon, fl, r := traceHub(t, 22)
	d := r.Digest()
	if _, err := ca.Push(ctx, mustRef(t, "alice/app:v1"), fl); err != nil {
		t.Fatal(err)
	}
	refs := r.Chunks()
	tv2, want := traceAndBundle(t, h.url, r)
	tr := must1(t, tv2.MarshalBinary)
	if _, _, err := anon.PullBundle(ctx, d); code(err) != http.StatusNotFound {
		t.Fatalf("bundle before any trace: %v", err)
	}
	ti, err := ca.PushTrace(ctx, d, tr)
	if err != nil || ti.Bundle == nil || ti.BundleError != "" {
		t.Fatalf("push a version-2 trace: %+v %v", ti, err)
	}
	if ti.Bundle.Size != int64(len(want)) || ti.Bundle.Chunks != 3 || ti.Bundle.Proofs == 0 {
		t.Fatalf("bundle %+v, the client's is %d bytes", *ti.Bundle, len(want))
	}
	pull := func(c *hubclient.Client) ([]byte, error) { return pullBundle(c, d) }
	if got, err := pull(anon); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("pulled bundle (%d bytes, %v) is not the client's (%d bytes)", len(got), err, len(want))
	}

	// A version-1 trace replaces the bundle with none, and says why.
	v1 := must1(t, (&mount.Trace{Flist: d, Chunks: []uint32{2, 0, 1}}).MarshalBinary)
	if ti, err := ca.PushTrace(ctx, d, v1); err != nil || ti.Bundle != nil || !strings.Contains(ti.BundleError, "version-1") {
		t.Fatalf("push a version-1 trace: %+v %v", ti, err)
	}
	if _, err := pull(anon); code(err) != http.StatusNotFound {
		t.Fatalf("bundle after a version-1 trace: %v", err)
	}
	// Back again; then its trace removed: the bundle goes with it.
	if _, err := ca.PushTrace(ctx, d, tr); err != nil {
		t.Fatal(err)
	}
	if err := ca.RemoveTrace(ctx, d); err != nil {
		t.Fatal(err)
	}
	if _, err := pull(anon); code(err) != http.StatusNotFound {
		t.Fatalf("bundle after its trace was removed: %v", err)
	}
	if err := ca.RemoveTrace(ctx, d); code(err) != http.StatusNotFound {
		t.Fatalf("remove a removed trace: %v", err)
	}

	// A chunk the hub lost: the trace is stored, the bundle is not.
	if err := b.Chunks.Delete(ctx, chunk.ID(refs[1].Sum)); err != nil {
		t.Fatal(err)
	}
	ti, err = ca.PushTrace(ctx, d, tr)
	if err != nil || ti.Bundle != nil || !strings.Contains(ti.BundleError, "chunk 1") {
		t.Fatalf("push a trace over a missing chunk: %+v %v", ti, err)
	}
	if got, err := anon.PullTrace(ctx, d); err != nil || !bytes.Equal(got, tr) {
		t.Fatalf("the trace over a missing chunk: %v", err)
	}
	if _, err := pull(anon); code(err) != http.StatusNotFound {
		t.Fatalf("bundle over a missing chunk: %v", err)
	}
	packTo(t, h.url, alice, tree(t, 22, nil), nil)
	if ti, err := ca.PushTrace(ctx, d, tr); err != nil || ti.Bundle == nil {
		t.Fatalf("push the trace again once the chunk is back: %+v %v", ti, err)
	}

	privateThenCollected(t, b, ca, cb, bundleObj(d), want, pull)
}

// traceAndBundle returns a version-2 trace of r's first three chunks
// (chunk 2 whole, two leaves of chunk 0, the first leaf of chunk 1) and
// the bundle a client builds from it, fetching the chunks over the hub's
// chunk API.
func traceAndBundle(t *testing.T, hubURL string, r *flist.Reader) (*mount.Trace, []byte) {
	t.Helper()
	refs := r.Chunks()
	if len(refs) < 3 {
		t.Fatalf("the tree packs to %d chunks, want 3 or more", len(refs))
	}
	tr := &mount.Trace{Flist: r.Digest(), Chunks: []uint32{2, 0, 1}, Ranges: [][]mount.Range{
		nil, {{Start: 1, Len: 2}}, {{Start: 0, Len: 1}},
	}}
	chunks, err := httpstore.New(hubURL+"/chunks", httpstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer chunks.Close()
	var b bytes.Buffer
	if _, err := mount.BuildBundle(context.Background(), &b, r, tr, func(ctx context.Context, k int) ([]byte, error) {
		return store.Fetch(ctx, chunks, chunk.NewCodec(0), refs[k])
	}); err != nil {
		t.Fatal(err)
	}
	return tr, b.Bytes()
}

// pullBundle reads the start bundle c's hub serves for flist d, whole.
func pullBundle(c *hubclient.Client, d digest.ID) ([]byte, error) {
	rc, size, err := c.PullBundle(context.Background(), d)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err == nil && int64(len(b)) != size {
		err = fmt.Errorf("%d bytes, Content-Length %d", len(b), size)
	}
	return b, err
}
