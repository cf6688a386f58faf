package hub

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zosgrid/zos/internal/chunk"
	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/flist"
	"github.com/zosgrid/zos/internal/hub/object"
	"github.com/zosgrid/zos/internal/store"
	"github.com/zosgrid/zos/internal/store/dir"
	"github.com/zosgrid/zos/internal/store/mem"
)

// TestRecompress: a hub with a recompression level re-seals the whole
// chunks of pushed flists smaller, in place, under the same IDs; every
// chunk still reads back verified; deltas and a damaged blob are left as
// they are; a restarted hub does not do the work again; GC removes the
// record with the flist.
func TestRecompress(t *testing.T) {
	ctx := context.Background()
	b := dirBackend(t)
	level := func(o *Options) { o.RecompressLevel = chunk.MaxLevel }
	h := startHub(t, b, level)
	register(t, h.url, alice, "alice")
	cl := client(t, h.url, &alice)

	fl1, _ := packTo(t, h.url, alice, tree(t, 7, nil), nil)
	r1, _ := flist.Open(fl1)
	edit := func(b []byte) {
		for i := 1000; i < len(b); i += 20 << 10 {
			b[i] = '#'
		}
	}
	fl2, s2 := packTo(t, h.url, alice, tree(t, 7, edit), r1)
	r2, _ := flist.Open(fl2)
	if s2.DeltaChunks == 0 {
		t.Fatalf("v2 has no delta chunks: %+v", s2)
	}
	// One whole blob of v2 damaged on disk (not v1's: those are v2's bases).
	var damaged digest.ID
	in1 := map[digest.ID]bool{}
	for _, c := range r1.Chunks() {
		in1[chunk.ID(c.Sum)] = true
	}
	for _, c := range r2.Chunks() {
		if id := chunk.ID(c.Sum); !in1[id] {
			if depth, _, _ := chunk.Deps(readBlob(t, b, id)); depth == 0 {
				damaged = id
			}
		}
	}
	if damaged == (digest.ID{}) {
		t.Fatal("v2 has no whole chunk of its own")
	}
	p := b.Chunks.(*dir.Store).Path(damaged)
	raw, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	raw[len(raw)/2] ^= 1
	if err := os.WriteFile(p, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	before := map[digest.ID][]byte{}
	for _, r := range []*flist.Reader{r1, r2} {
		for _, c := range r.Chunks() {
			before[chunk.ID(c.Sum)] = readBlob(t, b, chunk.ID(c.Sum))
		}
	}
	for ref, fl := range map[string][]byte{"alice/app:v1": fl1, "alice/app:v2": fl2} {
		if _, err := cl.Push(ctx, mustRef(t, ref), fl); err != nil {
			t.Fatal(err)
		}
	}
	if h.RecompressIdle() {
		t.Fatal("idle before Run, with two flists pushed")
	}
	runUntilIdle(t, h)

	var m1, m2 recompressMark
	if err := h.getJSON(ctx, recompressedObj(r1.Digest()), &m1); err != nil || !m1.Done || m1.Level != chunk.MaxLevel {
		t.Fatalf("v1's record: %+v, %v", m1, err)
	}
	if err := h.getJSON(ctx, recompressedObj(r2.Digest()), &m2); err != nil || !m2.Done {
		t.Fatalf("v2's record: %+v, %v", m2, err)
	}
	replaced, saved := 0, int64(0)
	var deltas int
	for id, old := range before {
		if id == damaged {
			// The dir store drops a torn blob it reads, so that a later
			// upload can mend it; recompression must not put one back.
			if _, err := os.Stat(b.Chunks.(*dir.Store).Path(id)); !os.IsNotExist(err) {
				t.Fatalf("the damaged chunk after recompression: %v", err)
			}
			continue
		}
		now := readBlob(t, b, id)
		depth, _, _ := chunk.Deps(old)
		switch {
		case depth > 0:
			if !bytes.Equal(now, old) {
				t.Fatalf("delta chunk %s (depth %d) was rewritten", id.Short(), depth)
			}
			deltas++
		case !bytes.Equal(now, old):
			if len(now)+len(now)/minGain >= len(old) {
				t.Fatalf("chunk %s replaced by a blob of %d bytes for %d", id.Short(), len(now), len(old))
			}
			replaced++
			saved += int64(len(old) - len(now))
		}
	}
	if deltas == 0 || replaced < len(r1.Chunks())/2 {
		t.Fatalf("%d of %d chunks replaced, %d deltas: the test shows little", replaced, len(before), deltas)
	}
	if got := m1.Chunks + m2.Chunks; got != replaced || m1.Before-m1.After+m2.Before-m2.After != saved {
		t.Fatalf("records say %d chunks and %d bytes saved, the store %d and %d", got, m1.Before-m1.After+m2.Before-m2.After, replaced, saved)
	}
	if m, want := getText(t, h.url+"/metrics"), fmt.Sprintf("zos_hub_recompress_saved_bytes_total %d\n", saved); !strings.Contains(m, want) {
		t.Fatalf("metrics lack %q", want)
	}
	t.Logf("%d chunks re-sealed at level %d, %d bytes saved; %d deltas kept", replaced, chunk.MaxLevel, saved, deltas)

	// Every chunk but the damaged one reads back, verified, deltas too.
	codec := chunk.NewCodec(0)
	for _, r := range []*flist.Reader{r1, r2} {
		for _, c := range r.Chunks() {
			if chunk.ID(c.Sum) == damaged {
				continue
			}
			if plain, err := store.Fetch(ctx, b.Chunks, codec, c); err != nil || uint32(len(plain)) != c.Size {
				t.Fatalf("chunk %s after recompression: %v", chunk.ID(c.Sum).Short(), err)
			}
		}
	}

	// A hub started again over the same data finds the work done.
	// (Re-sealing again would replace nothing, the sizes being equal: the
	// records, untouched, show that it did not even try.)
	stat := func() (ts []time.Time) {
		for _, d := range []digest.ID{r1.Digest(), r2.Digest()} {
			fi, err := b.Objects.Stat(ctx, recompressedObj(d))
			if err != nil {
				t.Fatal(err)
			}
			ts = append(ts, fi.ModTime)
		}
		return ts
	}
	was := stat()
	h2 := startHub(t, b, level)
	runUntilIdle(t, h2)
	if m := getText(t, h2.url+"/metrics"); !strings.Contains(m, "zos_hub_recompressed_chunks_total 0\n") {
		t.Fatal("the restarted hub re-sealed chunks")
	}
	if now := stat(); !now[0].Equal(was[0]) || !now[1].Equal(was[1]) {
		t.Fatalf("the restarted hub recompressed again: records written at %v, then %v", was, now)
	}

	// GC removes the record with its flist.
	if err := cl.Remove(ctx, mustRef(t, "alice/app@"+r1.Digest().String())); err != nil {
		t.Fatal(err)
	}
	later := func() time.Time { return time.Now().Add(2 * time.Hour) }
	if st, err := GC(ctx, b, GCOptions{Now: later}); err != nil || st.DeletedFlists != 1 {
		t.Fatalf("GC: %+v, %v", st, err)
	}
	if _, err := b.Objects.Stat(ctx, recompressedObj(r1.Digest())); !isNotFound(err) {
		t.Fatalf("v1's recompression record after GC: %v", err)
	}
}

// runUntilIdle runs h until its recompression has caught up.
func runUntilIdle(t *testing.T, h *testHub) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go h.Run(ctx)
	deadline := time.Now().Add(time.Minute)
	for !h.RecompressIdle() {
		if time.Now().After(deadline) {
			t.Fatal("recompression did not finish within a minute")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func readBlob(t *testing.T, b *Backend, id digest.ID) []byte {
	t.Helper()
	raw, err := os.ReadFile(b.Chunks.(*dir.Store).Path(id))
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// flakyStore fails the next fail Gets, as a store that drops connections.
type flakyStore struct {
	*mem.Store
	fail atomic.Int32
}

func (s *flakyStore) Get(ctx context.Context, id digest.ID) ([]byte, error) {
	if s.fail.Add(-1) >= 0 {
		return nil, errors.New("connection reset by peer")
	}
	return s.Store.Get(ctx, id)
}

// TestRecompressRetries: a store fault stops a flist's recompression,
// which is queued again and finishes.
func TestRecompressRetries(t *testing.T) {
	ctx := context.Background()
	defer func(d time.Duration) { retryRecompress = d }(retryRecompress)
	retryRecompress = 50 * time.Millisecond
	objs, err := object.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	st := &flakyStore{Store: mem.New()}
	b := NewBackend(st, objs)
	h := startHub(t, b, func(o *Options) { o.RecompressLevel = chunk.MaxLevel })
	register(t, h.url, alice, "alice")
	fl, _ := packTo(t, h.url, alice, tree(t, 9, nil), nil)
	r, _ := flist.Open(fl)
	if _, err := client(t, h.url, &alice).Push(ctx, mustRef(t, "alice/app:v1"), fl); err != nil {
		t.Fatal(err)
	}
	st.fail.Store(2)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go h.Run(rctx)
	var m recompressMark
	for deadline := time.Now().Add(time.Minute); !m.Done; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not recompressed after a store fault: %+v", m)
		}
		h.getJSON(ctx, recompressedObj(r.Digest()), &m)
	}
	if st.fail.Load() >= 0 || m.Chunks == 0 {
		t.Fatalf("faults left %d, record %+v", st.fail.Load(), m)
	}
}

// TestRecompressRescan: a flist pushed through another hub over the same
// backend, which does not recompress, is found by this hub's rescan and
// recompressed; without the rescan it would wait for this hub's restart.
func TestRecompressRescan(t *testing.T) {
	ctx := context.Background()
	defer func(d time.Duration) { rescanRecompress = d }(rescanRecompress)
	rescanRecompress = 100 * time.Millisecond
	b := dirBackend(t)
	other := startHub(t, b, nil) // takes the push, recompresses nothing
	h := startHub(t, b, func(o *Options) { o.RecompressLevel = chunk.MaxLevel })
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go h.Run(rctx)
	for !h.RecompressIdle() { // its start-up listing is over, with nothing stored
		time.Sleep(10 * time.Millisecond)
	}
	register(t, other.url, alice, "alice")
	fl, _ := packTo(t, other.url, alice, tree(t, 10, nil), nil)
	r, _ := flist.Open(fl)
	if _, err := client(t, other.url, &alice).Push(ctx, mustRef(t, "alice/app:v1"), fl); err != nil {
		t.Fatal(err)
	}
	var m recompressMark
	for deadline := time.Now().Add(time.Minute); !m.Done; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("a flist pushed through another hub was not recompressed: %+v", m)
		}
		h.getJSON(ctx, recompressedObj(r.Digest()), &m)
	}
	if m.Chunks == 0 || m.After >= m.Before {
		t.Fatalf("record %+v", m)
	}
}
