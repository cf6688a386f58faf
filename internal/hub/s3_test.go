package hub

import (
	"bytes"
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/zosgrid/zos/internal/auth"
	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/flist"
	"github.com/zosgrid/zos/internal/hub/hubclient"
	"github.com/zosgrid/zos/internal/store/storetest"
)

// TestTwoHubsOneBucket runs two hubs over one MinIO bucket, as behind a
// load balancer: what one writes the other serves, and a request one
// accepted the other refuses as a replay.
func TestTwoHubsOneBucket(t *testing.T) {
	ctx := context.Background()
	endpoint, access, secret := storetest.StartMinIO(t)
	data := "s3://" + access + ":" + secret + "@" + endpoint + "/zoshub/prod?tls=false"
	open := func() *Backend {
		b, err := OpenBackend(ctx, data)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		return b
	}
	bA, bB := open(), open()
	a, b := startHub(t, bA, nil), startHub(t, bB, nil)

	register(t, a.url, alice, "alice")
	if _, err := client(t, b.url, &alice).Register(ctx, hubclient.Register{Name: "alice"}); code(err) != http.StatusConflict {
		t.Fatalf("registration through the other hub: %v", err)
	}

	// Chunks through A, only new ones; the flist through A; read through B.
	before := a.puts.Load()
	fl, stats := packTo(t, a.url, alice, tree(t, 11, nil), nil)
	if got := a.puts.Load() - before; got != int64(stats.NewChunks) {
		t.Fatalf("%d PUTs for %d new chunks", got, stats.NewChunks)
	}
	before = b.puts.Load()
	packTo(t, b.url, alice, tree(t, 11, nil), nil)
	if got := b.puts.Load() - before; got != 0 {
		t.Fatalf("repack through the other hub uploaded %d chunks", got)
	}
	r, _ := flist.Open(fl)
	if _, err := client(t, a.url, &alice).Push(ctx, mustRef(t, "alice/app:v1"), fl); err != nil {
		t.Fatal(err)
	}
	got, err := client(t, b.url, nil).Pull(ctx, mustRef(t, "alice/app:v1"))
	if err != nil || !bytes.Equal(got.Flist, fl) {
		t.Fatalf("pull through B: %v", err)
	}
	// A start bundle built by A from the bucket's chunks, streamed by B.
	tr, want := traceAndBundle(t, a.url, r)
	if ti, err := client(t, a.url, &alice).PushTrace(ctx, r.Digest(), must1(t, tr.MarshalBinary)); err != nil || ti.Bundle == nil {
		t.Fatalf("trace through A: %+v %v", ti, err)
	}
	if got, err := pullBundle(client(t, b.url, nil), r.Digest()); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("bundle through B (%d bytes, %v) is not the client's (%d bytes)", len(got), err, len(want))
	}
	if err := client(t, b.url, &alice).Tag(ctx, "alice", "app", "latest", r.Digest()); err != nil {
		t.Fatal(err)
	}
	repo, err := client(t, a.url, nil).Repo(ctx, "alice", "app")
	if err != nil || repo.Tags["latest"] != r.Digest() {
		t.Fatalf("tag made through B, read through A: %+v %v", repo, err)
	}

	// One signed request, addressed to the balancer's name, sent to A and
	// replayed to B.
	body := []byte(`{"digest":"` + r.Digest().String() + `"}`)
	target := "/v1/tags/alice/app/stable"
	hd := auth.SignParts(alice, "PUT", lbHost, target, time.Now().Unix(), auth.NewNonce(), digest.Sum(body))
	send := func(url string) int {
		req, _ := http.NewRequest(http.MethodPut, url+target, bytes.NewReader(body))
		req.Host = lbHost
		req.Header.Set("Authorization", hd.String())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if c := send(a.url); c != http.StatusNoContent {
		t.Fatalf("first use on A: %d", c)
	}
	if c := send(b.url); c != http.StatusUnauthorized {
		t.Fatalf("replay on B: %d, want 401", c)
	}
	if c := send(a.url); c != http.StatusUnauthorized {
		t.Fatalf("replay on A: %d, want 401", c)
	}

	// GC over the bucket: orphans go once old, the image stays whole.
	_, orphans := packTo(t, b.url, alice, tree(t, 12, nil), nil)
	st, err := GC(ctx, bB, GCOptions{Now: func() time.Time { return time.Now().Add(2 * time.Hour) }})
	if err != nil {
		t.Fatal(err)
	}
	if st.Deleted != orphans.NewChunks {
		t.Fatalf("GC deleted %d chunks, want the %d orphans: %+v", st.Deleted, orphans.NewChunks, st)
	}
	if missing, err := a.missingClosure(ctx, r.Chunks()); err != nil || len(missing) != 0 {
		t.Fatalf("after GC the image lacks %d chunks (%v)", len(missing), err)
	}
}
