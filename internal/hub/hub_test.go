package hub

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zosgrid/zos/internal/auth"
	"github.com/zosgrid/zos/internal/chunk"
	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/flist"
	"github.com/zosgrid/zos/internal/hub/hubclient"
	"github.com/zosgrid/zos/internal/key"
	"github.com/zosgrid/zos/internal/pack"
	"github.com/zosgrid/zos/internal/store"
	"github.com/zosgrid/zos/internal/store/httpstore"
	"github.com/zosgrid/zos/internal/store/mem"
)

var (
	alice    = key.FromSeed([]byte("zos hub test key alice 000000001"))
	bob      = key.FromSeed([]byte("zos hub test key bob 00000000001"))
	admin    = key.FromSeed([]byte("zos hub test key admin 000000001"))
	stranger = key.FromSeed([]byte("zos hub test key stranger 000001"))
)

// lbHost is the name clients use for hubs behind one "load balancer".
const lbHost = "hub.example"

// testHub is a hub served on loopback, counting chunk PUTs.
type testHub struct {
	*Hub
	url  string
	host string
	puts atomic.Int64
}

func startHub(t *testing.T, b *Backend, mod func(*Options)) *testHub {
	t.Helper()
	srv := httptest.NewUnstartedServer(nil)
	th := &testHub{url: "http://" + srv.Listener.Addr().String(), host: srv.Listener.Addr().String()}
	opt := Options{Hosts: []string{th.host, lbHost}, Admins: []key.Public{admin.Public()}, FenceWait: 300 * time.Millisecond}
	if mod != nil {
		mod(&opt)
	}
	th.Hub = New(b, opt)
	srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut && strings.HasPrefix(r.URL.Path, "/chunks/") {
			th.puts.Add(1)
		}
		th.Hub.ServeHTTP(w, r)
	})
	srv.Start()
	t.Cleanup(srv.Close)
	return th
}

func dirBackend(t *testing.T) *Backend {
	t.Helper()
	b, err := OpenBackend(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func client(t *testing.T, url string, k *key.Secret) *hubclient.Client {
	t.Helper()
	c, err := hubclient.New(url, k)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func register(t *testing.T, url string, k key.Secret, ns string) {
	t.Helper()
	if _, err := client(t, url, &k).Register(context.Background(), hubclient.Register{Name: ns}); err != nil {
		t.Fatalf("register %s: %v", ns, err)
	}
}

// tree writes a small tree: a 600 KiB text file (several chunks, good
// delta material), a few small files, and whatever extra says.
func tree(t *testing.T, seed uint64, edit func([]byte)) string {
	t.Helper()
	root := t.TempDir()
	rng := rand.New(rand.NewPCG(seed, 1))
	var big bytes.Buffer
	words := []string{"alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"}
	for big.Len() < 600<<10 {
		fmt.Fprintf(&big, "%s %d %s\n", words[rng.IntN(len(words))], rng.Uint32(), words[rng.IntN(len(words))])
	}
	b := big.Bytes()
	if edit != nil {
		edit(b)
	}
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	os.WriteFile(filepath.Join(root, "big.txt"), b, 0o644)
	os.WriteFile(filepath.Join(root, "etc", "hostname"), []byte(fmt.Sprintf("host-%d\n", seed)), 0o644)
	return root
}

// packTo packs root into the hub's chunk store with k's signed writes.
func packTo(t *testing.T, hubURL string, k key.Secret, root string, base *flist.Reader) ([]byte, pack.Stats) {
	t.Helper()
	st, err := httpstore.New(hubURL+"/chunks", httpstore.Options{Key: &k})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	fl, stats, err := pack.Dir(context.Background(), root, st, pack.Options{Base: base})
	if err != nil {
		t.Fatalf("pack to hub: %v", err)
	}
	return fl, stats
}

func mustRef(t *testing.T, s string) hubclient.Ref {
	t.Helper()
	r, err := hubclient.ParseRef(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func code(err error) int {
	var se *hubclient.StatusError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

func TestHub(t *testing.T) {
	ctx := context.Background()
	h := startHub(t, dirBackend(t), nil)
	ca, cb := client(t, h.url, &alice), client(t, h.url, &bob)
	anon := client(t, h.url, nil)

	// Registration: first come, first served; one namespace per key.
	register(t, h.url, alice, "alice")
	register(t, h.url, bob, "bob")
	if _, err := cb.Register(ctx, hubclient.Register{Name: "alice"}); code(err) != http.StatusConflict {
		t.Fatalf("taken namespace: %v", err)
	}
	if _, err := ca.Register(ctx, hubclient.Register{Name: "alice2"}); code(err) != http.StatusConflict {
		t.Fatalf("second namespace for one key: %v", err)
	}
	if _, err := ca.Register(ctx, hubclient.Register{Name: "Bad Name"}); code(err) != http.StatusBadRequest {
		t.Fatalf("bad namespace: %v", err)
	}

	// Chunk writes need a registered key.
	st, _ := httpstore.New(h.url+"/chunks", httpstore.Options{Key: &stranger})
	_, id, blob := sealed([]byte("stranger's chunk"))
	if err := st.Put(ctx, id, blob); !errors.Is(err, httpstore.ErrUnauthorized) {
		t.Fatalf("unregistered chunk write: %v", err)
	}

	// Pack to the hub uploads every chunk once; again, none.
	root := tree(t, 1, nil)
	before := h.puts.Load()
	fl, stats := packTo(t, h.url, alice, root, nil)
	if got := h.puts.Load() - before; got != int64(stats.NewChunks) || got == 0 {
		t.Fatalf("first pack: %d PUTs for %d new chunks", got, stats.NewChunks)
	}
	before = h.puts.Load()
	packTo(t, h.url, alice, root, nil)
	if got := h.puts.Load() - before; got != 0 {
		t.Fatalf("repack uploaded %d chunks, want 0", got)
	}

	// Push, signed; pull by tag, by latest and by digest.
	r, _ := flist.Open(fl)
	signed := flist.Sign(r, alice)
	p, err := ca.Push(ctx, mustRef(t, "alice/app:v1"), signed)
	if err != nil {
		t.Fatal(err)
	}
	if p.Digest != r.Digest() || len(p.Signers) != 1 || p.Signers[0] != alice.Public() {
		t.Fatalf("pushed %+v", p)
	}
	if _, err := anon.Pull(ctx, mustRef(t, "alice/app")); !errors.Is(err, hubclient.ErrNotFound) {
		t.Fatalf("a tagged push moved latest: %v", err)
	}
	if p, err := ca.Push(ctx, mustRef(t, "alice/app"), fl); err != nil || p.Ref != "alice/app:latest" {
		t.Fatalf("push without a tag: %+v %v", p, err)
	}
	for _, ref := range []string{"alice/app:v1", "alice/app", "alice/app@" + r.Digest().String()} {
		got, err := anon.Pull(ctx, mustRef(t, ref))
		if err != nil {
			t.Fatalf("pull %s: %v", ref, err)
		}
		if !bytes.Equal(got.Flist, signed) || got.Digest != r.Digest() || len(got.Signers) != 1 {
			t.Fatalf("pull %s: wrong flist", ref)
		}
	}
	if got, err := anon.PullDigest(ctx, r.Digest()); err != nil || !bytes.Equal(got.Flist, signed) {
		t.Fatalf("pull by digest: %v", err)
	}
	resp, err := http.Get(h.url + "/v1/flists/alice/app:v1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get(hubclient.HeaderDigest) != r.Digest().String() || resp.Header.Get(hubclient.HeaderSigners) != alice.Public().String() {
		t.Fatalf("headers %v", resp.Header)
	}

	// Refusals: someone else's namespace, a corrupt flist, a digest target.
	if _, err := cb.Push(ctx, mustRef(t, "alice/evil"), fl); code(err) != http.StatusForbidden {
		t.Fatalf("push to another's namespace: %v", err)
	}
	if _, err := ca.Push(ctx, mustRef(t, "alice/bad"), fl[:len(fl)/2]); code(err) != http.StatusBadRequest {
		t.Fatalf("truncated flist: %v", err)
	}
	bad := bytes.Clone(fl)
	bad[len(bad)-40] ^= 0xff // a chunk fingerprint: a well-formed flist naming an unknown chunk
	if _, err := ca.Push(ctx, mustRef(t, "alice/bad"), bad); code(err) != http.StatusConflict {
		t.Fatalf("flist with a changed fingerprint: %v", err)
	}
	forged := bytes.Clone(signed)
	forged[len(forged)-1] ^= 1 // the signature
	if _, err := ca.Push(ctx, mustRef(t, "alice/forged"), forged); code(err) != http.StatusBadRequest {
		t.Fatalf("bad signature: %v", err)
	}

	// An flist whose chunks the hub lacks is refused, with the list.
	other, ostats, err := pack.Dir(ctx, tree(t, 2, nil), mem.New(), pack.Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = ca.Push(ctx, mustRef(t, "alice/dangling"), other)
	var se *hubclient.StatusError
	if !errors.As(err, &se) || se.Code != http.StatusConflict || se.Body.MissingCount != ostats.Chunks || len(se.Body.Missing) != ostats.Chunks {
		t.Fatalf("dangling push: %v (want 409 with %d missing)", err, ostats.Chunks)
	}
	if _, err := anon.Pull(ctx, mustRef(t, "alice/dangling")); !errors.Is(err, hubclient.ErrNotFound) {
		t.Fatalf("refused flist is served: %v", err)
	}

	// Tags, links, promote.
	if err := ca.Tag(ctx, "alice", "app", "stable", r.Digest()); err != nil {
		t.Fatal(err)
	}
	if err := ca.Tag(ctx, "alice", "app", "x", digest.Sum([]byte("nope"))); code(err) != http.StatusNotFound {
		t.Fatalf("tag of an unknown version: %v", err)
	}
	if err := cb.Link(ctx, "bob", "app", mustRef(t, "alice/app")); err != nil {
		t.Fatal(err)
	}
	if got, err := anon.Pull(ctx, mustRef(t, "bob/app:stable")); err != nil || got.Digest != r.Digest() || got.Resolved != "alice/app@"+r.Digest().String() {
		t.Fatalf("pull through a link: %+v %v", got, err)
	}
	if err := cb.Link(ctx, "bob", "loop", mustRef(t, "bob/loop2")); err != nil {
		t.Fatal(err)
	}
	if err := cb.Link(ctx, "bob", "loop2", mustRef(t, "bob/loop")); err != nil {
		t.Fatal(err)
	}
	if _, err := anon.Pull(ctx, mustRef(t, "bob/loop")); code(err) != http.StatusConflict {
		t.Fatalf("link cycle: %v", err)
	}
	pp, err := cb.Promote(ctx, mustRef(t, "bob/mine:prod"), mustRef(t, "bob/app:stable"))
	if err != nil || pp.Digest != r.Digest() {
		t.Fatalf("promote: %+v %v", pp, err)
	}
	repo, err := anon.Repo(ctx, "bob", "mine")
	if err != nil || repo.Tags["prod"] != r.Digest() || len(repo.Versions) != 1 || repo.Versions[0].From != "alice/app@"+r.Digest().String() {
		t.Fatalf("promoted repo: %+v %v", repo, err)
	}
	repos, err := anon.Repos(ctx, "alice")
	if err != nil || len(repos) != 1 || len(repos[0].Tags) != 3 {
		t.Fatalf("alice's repos: %+v %v", repos, err)
	}

	// Private namespaces: reads need the owner's signature.
	if _, err := ca.SetPrivate(ctx, "alice", true); err != nil {
		t.Fatal(err)
	}
	if _, err := anon.Pull(ctx, mustRef(t, "alice/app")); code(err) != http.StatusNotFound {
		t.Fatalf("anonymous private read: %v", err)
	}
	if _, err := cb.Pull(ctx, mustRef(t, "alice/app")); code(err) != http.StatusNotFound {
		t.Fatalf("other user's private read: %v", err)
	}
	if _, err := anon.Pull(ctx, mustRef(t, "bob/app")); code(err) != http.StatusNotFound {
		t.Fatalf("a public link into a private namespace: %v", err)
	}
	if _, err := ca.Pull(ctx, mustRef(t, "alice/app")); err != nil {
		t.Fatalf("owner's private read: %v", err)
	}
	if _, err := client(t, h.url, &admin).Pull(ctx, mustRef(t, "alice/app")); err != nil {
		t.Fatalf("admin's private read: %v", err)
	}
	if _, err := anon.PullDigest(ctx, r.Digest()); err != nil {
		t.Fatalf("digest held by bob's public name: %v", err)
	}
	if err := cb.Remove(ctx, mustRef(t, "bob/mine")); err != nil {
		t.Fatal(err)
	}
	if _, err := anon.PullDigest(ctx, r.Digest()); code(err) != http.StatusNotFound {
		t.Fatalf("digest held only by a private name: %v", err)
	}
	if _, err := ca.SetPrivate(ctx, "alice", false); err != nil {
		t.Fatal(err)
	}

	// rm: a tag, then a version with its tags.
	if err := ca.Remove(ctx, mustRef(t, "alice/app:stable")); err != nil {
		t.Fatal(err)
	}
	if _, err := anon.Pull(ctx, mustRef(t, "alice/app:stable")); !errors.Is(err, hubclient.ErrNotFound) {
		t.Fatalf("removed tag: %v", err)
	}
	if err := ca.Remove(ctx, mustRef(t, "alice/app@"+r.Digest().String())); err != nil {
		t.Fatal(err)
	}
	if _, err := anon.Pull(ctx, mustRef(t, "alice/app:v1")); !errors.Is(err, hubclient.ErrNotFound) {
		t.Fatalf("tag of a removed version: %v", err)
	}

	// Health and metrics. Packing asks which chunks are missing in batches
	// (POST), so look one up to count a miss.
	if resp, err := http.Head(h.url + "/chunks/00/" + strings.Repeat("0", 64)); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("HEAD of a missing chunk: %v %v", resp, err)
	}
	for path, want := range map[string]string{"/healthz": "ok", "/metrics": `zos_hub_chunk_lookups_total{result="miss"}`} {
		resp, err := http.Get(h.url + path)
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		b.ReadFrom(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(b.String(), want) {
			t.Fatalf("%s: %d, no %q in\n%.2000s", path, resp.StatusCode, want, b.String())
		}
	}
}

// sealed returns a chunk's plaintext, ID and blob.
func sealed(plain []byte) ([]byte, digest.ID, []byte) {
	_, id, blob := chunk.NewCodec(0).Seal(plain)
	return plain, id, blob
}

// TestAuthRefusals sends hand-signed requests to the hub.
func TestAuthRefusals(t *testing.T) {
	h := startHub(t, dirBackend(t), nil)
	register(t, h.url, alice, "alice")
	body := []byte(`{"private":false}`)
	target := "/v1/users/alice"
	now := time.Now().Unix()
	send := func(host string, hd auth.Header) int {
		req, _ := http.NewRequest(http.MethodPost, h.url+target, bytes.NewReader(body))
		req.Host = host
		req.Header.Set("Authorization", hd.String())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	sum := digest.Sum(body)
	valid := auth.SignParts(alice, "POST", h.host, target, now, auth.NewNonce(), sum)
	if c := send(h.host, valid); c != 200 {
		t.Fatalf("valid: %d", c)
	}
	forged := auth.SignParts(alice, "POST", h.host, target, now, auth.NewNonce(), sum)
	forged.Sig[0] ^= 1
	for name, tc := range map[string]struct {
		host string
		hd   auth.Header
		want int
	}{
		"replayed":       {h.host, valid, 401},
		"expired":        {h.host, auth.SignParts(alice, "POST", h.host, target, now-600, auth.NewNonce(), sum), 401},
		"future":         {h.host, auth.SignParts(alice, "POST", h.host, target, now+600, auth.NewNonce(), sum), 401},
		"wrong host":     {"evil.example", auth.SignParts(alice, "POST", "evil.example", target, now, auth.NewNonce(), sum), 401},
		"host mismatch":  {h.host, auth.SignParts(alice, "POST", lbHost, target, now, auth.NewNonce(), sum), 401},
		"bad signature":  {h.host, forged, 401},
		"other path":     {h.host, auth.SignParts(alice, "POST", h.host, "/v1/users/bob", now, auth.NewNonce(), sum), 401},
		"other body":     {h.host, auth.SignParts(alice, "POST", h.host, target, now, auth.NewNonce(), digest.Sum(nil)), 401},
		"not the owner":  {h.host, auth.SignParts(bob, "POST", h.host, target, now, auth.NewNonce(), sum), 403},
		"other key sign": {h.host, auth.Header{Key: bob.Public(), TS: now, Nonce: valid.Nonce, Sig: valid.Sig}, 401},
	} {
		if c := send(tc.host, tc.hd); c != tc.want {
			t.Errorf("%s: status %d, want %d", name, c, tc.want)
		}
	}
}

// TestFence: a push waits for a sweeping GC, then answers 503.
func TestFence(t *testing.T) {
	ctx := context.Background()
	b := dirBackend(t)
	h := startHub(t, b, nil)
	register(t, h.url, alice, "alice")
	fl, _ := packTo(t, h.url, alice, tree(t, 3, nil), nil)
	if err := takeSweep(ctx, b.Objects, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := GC(ctx, b, GCOptions{}); !errors.Is(err, ErrSweeping) {
		t.Fatalf("second GC while one sweeps: %v", err)
	}
	cl := client(t, h.url, &alice)
	cctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond) // no retries
	defer cancel()
	if _, err := cl.Push(cctx, mustRef(t, "alice/x"), fl); code(err) != http.StatusServiceUnavailable && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("push during a sweep: %v", err)
	}
	b.Objects.Delete(ctx, sweepName)
	if _, err := cl.Push(ctx, mustRef(t, "alice/x"), fl); err != nil {
		t.Fatalf("push after the sweep: %v", err)
	}
}

// TestGC packs two versions (the second with deltas against the first),
// leaves orphan chunks, removes the first version, and collects: orphans
// and the first version's unshared chunks go, the second's chunks and
// their delta bases stay, and the second reads back whole.
func TestGC(t *testing.T) {
	ctx := context.Background()
	b := dirBackend(t)
	h := startHub(t, b, nil)
	register(t, h.url, alice, "alice")
	cl := client(t, h.url, &alice)

	fl1, _ := packTo(t, h.url, alice, tree(t, 7, nil), nil)
	r1, _ := flist.Open(fl1)
	if _, err := cl.Push(ctx, mustRef(t, "alice/app:v1"), fl1); err != nil {
		t.Fatal(err)
	}
	edit := func(b []byte) { // scattered small edits: every chunk changes a little
		for i := 1000; i < len(b); i += 20 << 10 {
			b[i] = '#'
		}
	}
	fl2, s2 := packTo(t, h.url, alice, tree(t, 7, edit), r1)
	if s2.DeltaChunks == 0 {
		t.Fatalf("v2 has no delta chunks: %+v", s2)
	}
	r2, _ := flist.Open(fl2)
	if _, err := cl.Push(ctx, mustRef(t, "alice/app:v2"), fl2); err != nil {
		t.Fatal(err)
	}
	_, orphans := packTo(t, h.url, alice, tree(t, 8, nil), nil) // uploaded, never pushed

	// Nothing is old yet: a GC now deletes nothing.
	st, err := GC(ctx, b, GCOptions{})
	if err != nil || st.Deleted != 0 || st.DeletedFlists != 0 {
		t.Fatalf("GC within the grace period: %+v %v", st, err)
	}
	if err := cl.Remove(ctx, mustRef(t, "alice/app@"+r1.Digest().String())); err != nil {
		t.Fatal(err)
	}

	// Two hours later everything is old.
	later := func() time.Time { return time.Now().Add(2 * time.Hour) }
	dry, err := GC(ctx, b, GCOptions{Now: later, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	before := countChunks(t, b)
	st, err = GC(ctx, b, GCOptions{Now: later})
	if err != nil {
		t.Fatal(err)
	}
	after := countChunks(t, b)
	if st.Deleted != dry.Deleted || st.Deleted != before-after || st.DeletedFlists != 1 {
		t.Fatalf("GC %+v, dry run %+v, chunks %d -> %d", st, dry, before, after)
	}
	if st.Deleted < orphans.NewChunks {
		t.Fatalf("GC deleted %d chunks, fewer than the %d orphans", st.Deleted, orphans.NewChunks)
	}

	// v2 reads back whole: its chunks and every delta base survived.
	codec := chunk.NewCodec(0)
	bases := 0
	for _, c := range r2.Chunks() {
		plain, depth, err := store.FetchDepth(ctx, b.Chunks, codec, c)
		if err != nil || uint32(len(plain)) != c.Size {
			t.Fatalf("v2 chunk after GC: %v", err)
		}
		if depth > 0 {
			bases++
		}
	}
	if bases == 0 {
		t.Fatal("no v2 chunk is a delta; the test proves nothing about bases")
	}
	// Some of v1's chunks were bases only: kept; v1's flist file is gone.
	if _, err := b.Objects.Stat(ctx, flistObj(r1.Digest())); !isNotFound(err) {
		t.Fatalf("v1's file after GC: %v", err)
	}
	if _, err := client(t, h.url, nil).Pull(ctx, mustRef(t, "alice/app:v2")); err != nil {
		t.Fatal(err)
	}
}

func countChunks(t *testing.T, b *Backend) int {
	t.Helper()
	n := 0
	if err := b.Chunks.List(context.Background(), func(digest.ID) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestBatchedGetLookups: the hub counts each ID a batched get answers as
// a chunk lookup, found or not, as it counts GETs.
func TestBatchedGetLookups(t *testing.T) {
	ctx := context.Background()
	b := dirBackend(t)
	h := startHub(t, b, nil)
	_, id, blob := sealed([]byte("a chunk looked up in a batch"))
	if err := b.Chunks.Put(ctx, id, blob); err != nil {
		t.Fatal(err)
	}
	_, absent1, _ := sealed([]byte("absent 1"))
	_, absent2, _ := sealed([]byte("absent 2"))
	st, err := httpstore.New(h.url+"/chunks", httpstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var found, missing int
	err = st.GetBatch(ctx, []digest.ID{absent1, id, absent2}, func(i int, got []byte, err error) {
		switch {
		case err == nil && bytes.Equal(got, blob):
			found++
		case errors.Is(err, store.ErrNotFound):
			missing++
		default:
			t.Errorf("ID %d: %v", i, err)
		}
	})
	if err != nil || found != 1 || missing != 2 {
		t.Fatalf("batched get: %v, %d found, %d missing", err, found, missing)
	}
	resp, err := http.Get(h.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	var m bytes.Buffer
	m.ReadFrom(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`zos_hub_chunk_lookups_total{result="hit"} 1` + "\n", `zos_hub_chunk_lookups_total{result="miss"} 2` + "\n"} {
		if !strings.Contains(m.String(), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}
