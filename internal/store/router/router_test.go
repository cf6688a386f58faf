package router

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zosgrid/zos/internal/chunk"
	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/store"
	"github.com/zosgrid/zos/internal/store/dir"
	"github.com/zosgrid/zos/internal/store/mem"
	"github.com/zosgrid/zos/internal/store/storetest"
)

func must(t *testing.T, routes []Route) *Router {
	t.Helper()
	r, err := New(routes)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// corruptAll rots id in every mem store that routes hold it in.
func corruptAll(t *testing.T, s store.Store, id digest.ID, blob []byte) {
	for _, rt := range s.(*Router).Routes() {
		if rt.Lo <= id[0] && id[0] <= rt.Hi {
			rt.Store.(*mem.Store).Corrupt(id, blob)
		}
	}
}

func TestConformance(t *testing.T) {
	for name, routes := range map[string]func(t *testing.T) []Route{
		"single": func(t *testing.T) []Route { return []Route{{0x00, 0xff, mem.New()}} },
		"split": func(t *testing.T) []Route {
			return []Route{{0x00, 0x7f, mem.New()}, {0x80, 0xff, mem.New()}}
		},
		"replicated": func(t *testing.T) []Route {
			return []Route{{0x00, 0xff, mem.New()}, {0x00, 0x7f, mem.New()}, {0x80, 0xff, mem.New()}}
		},
		"one store twice": func(t *testing.T) []Route {
			m := mem.New()
			return []Route{{0x00, 0x3f, m}, {0x40, 0xbf, mem.New()}, {0xc0, 0xff, m}}
		},
	} {
		t.Run(name, func(t *testing.T) {
			storetest.Run(t, storetest.Harness{
				New:     func(t *testing.T) store.Store { return must(t, routes(t)) },
				Corrupt: corruptAll,
			})
		})
	}
	t.Run("dir", func(t *testing.T) {
		storetest.Run(t, storetest.Harness{New: func(t *testing.T) store.Store {
			a, _ := dir.New(t.TempDir())
			b, _ := dir.New(t.TempDir())
			return must(t, []Route{{0x00, 0xff, a}, {0x00, 0xff, b}})
		}})
	})
}

func TestNewRefuses(t *testing.T) {
	m := mem.New()
	for _, tc := range []struct {
		name   string
		routes []Route
		want   string
	}{
		{"none", nil, "00-ff"},
		{"gap at the end", []Route{{0x00, 0x7f, m}}, "80-ff"},
		{"gap in the middle", []Route{{0x00, 0x10, m}, {0x13, 0xff, m}}, "11-12"},
		{"gap at 00", []Route{{0x01, 0xff, m}}, "00-00"},
		{"empty range", []Route{{0x00, 0xff, m}, {0x80, 0x7f, m}}, "empty"},
		{"nil store", []Route{{0x00, 0xff, nil}}, "no store"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.routes)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
}

func TestParseRoute(t *testing.T) {
	for _, tc := range []struct {
		in     string
		lo, hi byte
		url    string
		bad    bool
	}{
		{in: "00-7f=dir:///a", lo: 0x00, hi: 0x7f, url: "dir:///a"},
		{in: "80-FF=http://h/x?a=b", lo: 0x80, hi: 0xff, url: "http://h/x?a=b"},
		{in: "dir:///a", lo: 0x00, hi: 0xff, url: "dir:///a"},
		{in: "https://u:p@h/c", lo: 0x00, hi: 0xff, url: "https://u:p@h/c"},
		{in: "10-10=s3://b", lo: 0x10, hi: 0x10, url: "s3://b"},
		{in: "/srv/00-7f=x", lo: 0x00, hi: 0xff, url: "/srv/00-7f=x"},
		{in: "7f-00=dir:///a", bad: true},
		{in: "00-7f=", bad: true},
		{in: "", bad: true},
	} {
		lo, hi, url, err := ParseRoute(tc.in)
		if tc.bad {
			if err == nil {
				t.Errorf("ParseRoute(%q) accepted", tc.in)
			}
			continue
		}
		if err != nil || lo != tc.lo || hi != tc.hi || url != tc.url {
			t.Errorf("ParseRoute(%q) = %02x, %02x, %q, %v", tc.in, lo, hi, url, err)
		}
	}
}

var errDown = errors.New("replica down")

// down is a store whose every operation fails, as an unreachable one would.
type down struct{}

func (down) Get(context.Context, digest.ID) ([]byte, error)    { return nil, errDown }
func (down) Has(context.Context, digest.ID) (bool, error)      { return false, errDown }
func (down) Put(context.Context, digest.ID, []byte) error      { return errDown }
func (down) Delete(context.Context, digest.ID) error           { return errDown }
func (down) List(context.Context, func(digest.ID) error) error { return errDown }
func (down) String() string                                    { return "down:" }
func (down) Close() error                                      { return nil }

func TestFailover(t *testing.T) {
	ctx := context.Background()
	good := mem.New()
	r := must(t, []Route{{0x00, 0xff, down{}}, {0x00, 0xff, good}})
	_, id, blob := storetest.Blob("f", 1000)
	_, absent, _ := storetest.Blob("absent", 10)
	good.Put(ctx, id, blob)

	if got, err := r.Get(ctx, id); err != nil || !bytes.Equal(got, blob) {
		t.Fatalf("Get with first replica down: %v", err)
	}
	if ok, err := r.Has(ctx, id); !ok || err != nil {
		t.Fatalf("Has with first replica down: %v, %v", ok, err)
	}
	// Absent from the live replica, unknown on the dead one: not "not found".
	if _, err := r.Get(ctx, absent); err == nil || errors.Is(err, store.ErrNotFound) || !errors.Is(err, errDown) {
		t.Fatalf("Get absent with a replica down: %v", err)
	}
	if _, err := r.Has(ctx, absent); !errors.Is(err, errDown) {
		t.Fatalf("Has absent with a replica down: %v", err)
	}
	// A write must reach every replica; the error names the failing one.
	_, id2, blob2 := storetest.Blob("g", 1000)
	err := r.Put(ctx, id2, blob2)
	if !errors.Is(err, errDown) || !strings.Contains(err.Error(), "down:") {
		t.Fatalf("Put with a replica down: %v", err)
	}
	if ok, _ := good.Has(ctx, id2); !ok {
		t.Fatal("Put did not reach the live replica")
	}
	if err := r.List(ctx, func(digest.ID) error { return nil }); !errors.Is(err, errDown) {
		t.Fatalf("List with a replica down: %v", err)
	}
}

func TestFailoverOnCorruptReplica(t *testing.T) {
	ctx := context.Background()
	_, id, blob := storetest.Blob("c", 4000)
	bad := bytes.Clone(blob)
	bad[len(bad)/2] ^= 1

	a, b := mem.New(), mem.New()
	r := must(t, []Route{{0x00, 0xff, a}, {0x00, 0xff, b}})
	a.Corrupt(id, bad)
	b.Put(ctx, id, blob)
	if got, err := r.Get(ctx, id); err != nil || !bytes.Equal(got, blob) {
		t.Fatalf("Get with first replica rotten: %v", err)
	}
	// Read repair replaced the rotten copy with the good one.
	r.repairs.Wait()
	if got, err := a.Get(ctx, id); err != nil || !bytes.Equal(got, blob) || r.Repaired() != 1 {
		t.Fatalf("rotten replica after read repair: %v (repaired %d)", err, r.Repaired())
	}

	a.Corrupt(id, bad)
	b.Delete(ctx, id) // now: rotten, missing
	var inv *chunk.Invalid
	if _, err := r.Get(ctx, id); !errors.As(err, &inv) || inv.Store != a.String() {
		t.Fatalf("Get rotten + missing: %v, want *chunk.Invalid from %s", err, a)
	}
	b.Corrupt(id, bad[:10]) // rotten, rotten
	if _, err := r.Get(ctx, id); !errors.As(err, &inv) || !errors.Is(err, chunk.ErrCorrupt) {
		t.Fatalf("Get rotten + rotten: %v", err)
	}
}

// TestRepairOnClose: Close waits for the repairs under way, and a Get
// after Close starts none.
func TestRepairOnClose(t *testing.T) {
	ctx := context.Background()
	a, b := mem.New(), mem.New()
	r := must(t, []Route{{0x00, 0xff, a}, {0x00, 0xff, b}})
	_, id, blob := storetest.Blob("close", 100)
	b.Put(ctx, id, blob)
	if _, err := r.Get(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if ok, _ := a.Has(ctx, id); !ok || r.Repaired() != 1 {
		t.Fatalf("Close returned before the repair: has %v, repaired %d", ok, r.Repaired())
	}
	_, id2, blob2 := storetest.Blob("close2", 100)
	b.Put(ctx, id2, blob2)
	r.Get(ctx, id2)
	r.repairs.Wait()
	if ok, _ := a.Has(ctx, id2); ok {
		t.Fatal("a Get after Close repaired")
	}
}

func TestNotFoundFromAll(t *testing.T) {
	r := must(t, []Route{{0x00, 0xff, mem.New()}, {0x00, 0xff, mem.New()}})
	_, id, _ := storetest.Blob("nf", 10)
	if _, err := r.Get(context.Background(), id); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get: %v", err)
	}
}

func TestReplication(t *testing.T) {
	ctx := context.Background()
	all, lo, hi := mem.New(), mem.New(), mem.New()
	r := must(t, []Route{{0x00, 0xff, all}, {0x00, 0x7f, lo}, {0x80, 0xff, hi}})
	var ids []digest.ID
	for i := range 64 {
		_, id, blob := storetest.Blob(strings.Repeat("r", i+1), 100)
		ids = append(ids, id)
		if err := r.Put(ctx, id, blob); err != nil {
			t.Fatal(err)
		}
	}
	if all.Len() != 64 || lo.Len()+hi.Len() != 64 || lo.Len() == 0 || hi.Len() == 0 {
		t.Fatalf("all %d, lo %d, hi %d", all.Len(), lo.Len(), hi.Len())
	}
	for _, id := range ids {
		half := lo
		if id[0] >= 0x80 {
			half = hi
		}
		if ok, _ := half.Has(ctx, id); !ok {
			t.Fatalf("%s not in its half", id.Short())
		}
	}
	// Losing a whole replica loses nothing, and reading heals it.
	for _, id := range ids {
		all.Delete(ctx, id)
	}
	for _, id := range ids {
		if _, err := r.Get(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	r.repairs.Wait()
	if all.Len() != 64 || r.Repaired() != 64 {
		t.Fatalf("after reading everything: the emptied replica holds %d of 64 (repaired %d)", all.Len(), r.Repaired())
	}
	if err := r.Delete(ctx, ids[0]); err != nil {
		t.Fatal(err)
	}
	if lo.Len()+hi.Len() != 63 {
		t.Fatal("Delete did not reach the replica")
	}
}

func TestListOnlyInRange(t *testing.T) {
	ctx := context.Background()
	lo, hi := mem.New(), mem.New()
	r := must(t, []Route{{0x00, 0x7f, lo}, {0x80, 0xff, hi}})
	var id digest.ID
	var blob []byte
	for i := 0; ; i++ { // find a chunk that belongs to hi
		_, id, blob = storetest.Blob(strings.Repeat("x", i+1), 50)
		if id[0] >= 0x80 {
			break
		}
	}
	lo.Put(ctx, id, blob) // misfiled: Get would never look for it in lo
	n := 0
	if err := r.List(ctx, func(digest.ID) error { n++; return nil }); err != nil || n != 0 {
		t.Fatalf("List = %d ids, %v; want 0", n, err)
	}
}

func TestString(t *testing.T) {
	r := must(t, []Route{{0x00, 0x7f, mem.New()}, {0x80, 0xff, mem.New()}})
	if got, want := r.String(), "router{00-7f=mem: 80-ff=mem:}"; got != want {
		t.Fatalf("String = %q, want %q", got, want)
	}
}

// switchable is a store that fails while off, counting the reads it gets.
type switchable struct {
	*mem.Store
	off   atomic.Bool
	reads atomic.Int64
}

func (s *switchable) Get(ctx context.Context, id digest.ID) ([]byte, error) {
	s.reads.Add(1)
	if s.off.Load() {
		return nil, errDown
	}
	return s.Store.Get(ctx, id)
}

func (s *switchable) String() string { return "switchable:" }

// A replica that fails is asked last for a while, so a dead replica costs
// one failed read, not one per chunk; it is asked again when it is all
// there is, and back in front once its hold expires.
func TestDownReplicaHeldBack(t *testing.T) {
	ctx := context.Background()
	flaky, good := &switchable{Store: mem.New()}, mem.New()
	r := must(t, []Route{{0x00, 0xff, flaky}, {0x00, 0xff, good}})
	clock := time.Unix(1000, 0)
	r.now = func() time.Time { return clock }
	var ids []digest.ID
	for i := range 20 {
		_, id, blob := storetest.Blob(fmt.Sprint("c", i), 100)
		flaky.Store.Put(ctx, id, blob)
		good.Put(ctx, id, blob)
		ids = append(ids, id)
	}
	flaky.off.Store(true)
	for _, id := range ids {
		if _, err := r.Get(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if n := flaky.reads.Load(); n != 1 {
		t.Fatalf("dead replica asked %d times for 20 chunks, want 1", n)
	}
	// Only the held-back replica has this one: it is still asked.
	_, only, blob := storetest.Blob("only", 100)
	flaky.off.Store(false)
	flaky.Store.Put(ctx, only, blob)
	if got, err := r.Get(ctx, only); err != nil || !bytes.Equal(got, blob) {
		t.Fatalf("chunk only on the held-back replica: %v", err)
	}
	// Its success cleared the hold: it is first again.
	before := flaky.reads.Load()
	r.Get(ctx, ids[0])
	if flaky.reads.Load() != before+1 {
		t.Fatal("a replica that answered again is not asked first")
	}
	// A hold expires on its own.
	flaky.off.Store(true)
	r.Get(ctx, ids[1])
	clock = clock.Add(DownFor + time.Second)
	flaky.off.Store(false)
	before = flaky.reads.Load()
	r.Get(ctx, ids[2])
	if flaky.reads.Load() != before+1 {
		t.Fatal("a replica is still held back after DownFor")
	}
}

// batcher is a mem store with Missing, counting its batches.
type batcher struct {
	*mem.Store
	calls atomic.Int64
	asked atomic.Int64
	fail  error
}

func (b *batcher) Missing(ctx context.Context, ids []digest.ID) ([]digest.ID, error) {
	b.calls.Add(1)
	b.asked.Add(int64(len(ids)))
	if b.fail != nil {
		return nil, b.fail
	}
	return store.MissingByHas(ctx, b.Store, ids, 4)
}

// TestMissing: the router asks every store once, for the IDs it holds, and
// reports an ID some store of it lacks (what a writer must Put), in order.
func TestMissing(t *testing.T) {
	ctx := context.Background()
	all, lo, hi := &batcher{Store: mem.New()}, &batcher{Store: mem.New()}, mem.New()
	r := must(t, []Route{{0x00, 0xff, all}, {0x00, 0x7f, lo}, {0x80, 0xff, hi}})
	var ids []digest.ID
	for i := range 200 {
		_, id, blob := storetest.Blob(fmt.Sprint("m", i), 100)
		ids = append(ids, id)
		if i%3 == 0 {
			continue // nowhere
		}
		if err := r.Put(ctx, id, blob); err != nil {
			t.Fatal(err)
		}
		if i%3 == 1 && i%2 == 0 { // lost by one replica
			if id[0] < 0x80 {
				lo.Delete(ctx, id)
			} else {
				all.Delete(ctx, id)
			}
		}
	}
	ids = append(ids, ids[0], ids[1]) // duplicates keep their places
	var want []digest.ID
	for _, id := range ids {
		complete := true
		for _, rt := range r.Routes() {
			if rt.Lo <= id[0] && id[0] <= rt.Hi {
				if ok, _ := rt.Store.Has(ctx, id); !ok {
					complete = false
				}
			}
		}
		if !complete {
			want = append(want, id)
		}
	}
	got, err := r.Missing(ctx, ids)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) || len(want) <= len(ids)/3 {
		t.Fatalf("Missing = %d IDs, want %d", len(got), len(want))
	}
	if all.calls.Load() != 1 || all.asked.Load() != int64(len(ids)) || lo.calls.Load() != 1 {
		t.Fatalf("batches: all %d calls for %d IDs, lo %d calls", all.calls.Load(), all.asked.Load(), lo.calls.Load())
	}
	lo.fail = errors.New("lo is down")
	if _, err := r.Missing(ctx, ids); err == nil || !strings.Contains(err.Error(), "lo is down") {
		t.Fatalf("a failing store: %v", err)
	}
}

// getBatcher is a mem store that batches reads, counting its batches; it
// fails them with fail, or refuses them as a static server would.
type getBatcher struct {
	*mem.Store
	calls       atomic.Int64
	fail        error
	unsupported bool
}

func (b *getBatcher) GetBatch(ctx context.Context, ids []digest.ID, fn func(int, []byte, error)) error {
	b.calls.Add(1)
	switch {
	case b.unsupported:
		return fmt.Errorf("static: %w", errors.ErrUnsupported)
	case b.fail != nil:
		return b.fail
	}
	for i, id := range ids {
		blob, err := b.Store.Get(ctx, id)
		fn(i, blob, err)
	}
	return nil
}

// TestGetBatch: the router batches each ID's reads to the first store of
// its read order, delivers what the batches bring and leaves the rest to
// Get (which fails over and repairs); a failed batch holds its store back,
// so the next batch goes to the replica; stores that refuse batches make
// the router refuse them too.
func TestGetBatch(t *testing.T) {
	ctx := context.Background()
	a, b, c := &getBatcher{Store: mem.New()}, &getBatcher{Store: mem.New()}, mem.New()
	r := must(t, []Route{{0x00, 0xff, a}, {0x00, 0x7f, b}, {0x80, 0xff, c}})
	clock := time.Unix(1000, 0)
	r.now = func() time.Time { return clock }
	var ids []digest.ID
	blobs := map[digest.ID][]byte{}
	lost := map[digest.ID]bool{}
	for i := range 100 {
		_, id, blob := storetest.Blob(fmt.Sprint("g", i), 100)
		if err := r.Put(ctx, id, blob); err != nil {
			t.Fatal(err)
		}
		ids, blobs[id] = append(ids, id), blob
		if i%10 == 0 {
			a.Delete(ctx, id) // lost by the first replica
			lost[id] = true
		}
	}
	batch := func() (map[int]bool, error) {
		got := map[int]bool{}
		err := r.GetBatch(ctx, ids, func(i int, blob []byte, err error) {
			if err != nil || !bytes.Equal(blob, blobs[ids[i]]) || got[i] {
				t.Fatalf("blob %d: %v, delivered before: %v", i, err, got[i])
			}
			got[i] = true
		})
		return got, err
	}

	got, err := batch()
	if err == nil || len(got) != 90 || a.calls.Load() != 1 || b.calls.Load() != 0 {
		t.Fatalf("first replica lacking 10: %d delivered, %v; batches: a %d, b %d", len(got), err, a.calls.Load(), b.calls.Load())
	}
	for i, id := range ids {
		if got[i] == lost[id] {
			t.Fatalf("blob %d (lost by a: %v) delivered: %v", i, lost[id], got[i])
		}
		if !got[i] { // left to Get: it fails over and repairs a
			if blob, err := r.Get(ctx, id); err != nil || !bytes.Equal(blob, blobs[id]) {
				t.Fatalf("Get of blob %d: %v", i, err)
			}
		}
	}
	r.repairs.Wait()
	if got, err := batch(); err != nil || len(got) != 100 || a.calls.Load() != 2 {
		t.Fatalf("after the repair: %d delivered, %v, %d batches of a", len(got), err, a.calls.Load())
	}

	// A failed batch holds a back: the next goes to b for IDs below 0x80
	// (c does not batch: the others are left to Get).
	a.fail = errDown
	if got, err := batch(); err == nil || len(got) != 0 {
		t.Fatalf("a failing: %d delivered, %v", len(got), err)
	}
	low := 0
	for _, id := range ids {
		if id[0] < 0x80 {
			low++
		}
	}
	got, err = batch()
	if err == nil || len(got) != low || b.calls.Load() != 1 || a.calls.Load() != 3 {
		t.Fatalf("a held back: %d delivered (want %d), %v; batches: a %d, b %d", len(got), low, err, a.calls.Load(), b.calls.Load())
	}

	// A store that refuses batches is not asked again; with no store left
	// that batches, the router refuses too.
	static := &getBatcher{Store: mem.New(), unsupported: true}
	r2 := must(t, []Route{{0x00, 0xff, static}, {0x00, 0xff, mem.New()}})
	var errs []error
	for range 3 {
		errs = append(errs, r2.GetBatch(ctx, ids, func(int, []byte, error) { t.Fatal("a blob from a refused batch") }))
	}
	if static.calls.Load() != 1 || !errors.Is(errs[0], errors.ErrUnsupported) || !errors.Is(errs[2], errors.ErrUnsupported) {
		t.Fatalf("a store refusing batches asked %d times; errors %v", static.calls.Load(), errs)
	}
}

// keeper is a cache in a route: a mem store that drops its copy on request.
type keeper struct{ *mem.Store }

func (k keeper) Drop(ctx context.Context, id digest.ID) { k.Delete(ctx, id) }

// A forgery that a cache in a route took in (it passes the store layer's
// check: only the plaintext's fingerprint tells) is dropped from it, so the
// next read reaches a good replica instead of the same forgery.
func TestDropReachesCacheInRoute(t *testing.T) {
	ctx := context.Background()
	ref, id, good := storetest.Blob("forged", 4000)
	codec := chunk.NewCodec(0)
	forged := codec.SealTo(nil, bytes.Repeat([]byte{'x'}, 4000), ref.Sum)
	cached, origin := keeper{mem.New()}, mem.New()
	cached.Corrupt(id, forged)
	origin.Corrupt(id, good)
	r := must(t, []Route{{0x00, 0xff, cached}, {0x00, 0xff, origin}})
	if _, err := store.Fetch(ctx, r, codec, ref); !errors.Is(err, chunk.ErrMismatch) {
		t.Fatalf("Fetch of a forgery: %v, want a mismatch", err)
	}
	if ok, _ := cached.Has(ctx, id); ok {
		t.Fatal("the cache in the route still holds the forgery")
	}
	if ok, _ := origin.Has(ctx, id); !ok {
		t.Fatal("the drop reached the origin, which is no Dropper")
	}
	got, err := store.Fetch(ctx, r, codec, ref)
	if err != nil || len(got) != int(ref.Size) {
		t.Fatalf("Fetch after the drop: %v", err)
	}
}

// A forgery one replica served is not left behind by read repair in the
// replica that lacked the chunk, once the reader finds it forged: the
// repair's copy is taken back, whether the drop came before or after it.
func TestDropUndoesRepair(t *testing.T) {
	ctx := context.Background()
	ref, id, _ := storetest.Blob("forged", 4000)
	codec := chunk.NewCodec(0)
	forged := codec.SealTo(nil, bytes.Repeat([]byte{'x'}, 4000), ref.Sum)
	for _, wait := range []bool{false, true} {
		empty, bad := mem.New(), mem.New()
		bad.Corrupt(id, forged)
		r := must(t, []Route{{0x00, 0xff, empty}, {0x00, 0xff, bad}})
		blob, err := r.Get(ctx, id) // empty lacks it: bad serves it, empty is repaired
		if err != nil {
			t.Fatal(err)
		}
		if wait {
			r.repairs.Wait() // the repair wrote the forgery before the drop
			if ok, _ := empty.Has(ctx, id); !ok {
				t.Fatal("read repair did not write the served blob")
			}
		}
		if _, err := store.Open(ctx, r, codec, ref, blob); !errors.Is(err, chunk.ErrMismatch) {
			t.Fatalf("Open of a forgery: %v, want a mismatch", err)
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		if ok, _ := empty.Has(ctx, id); ok {
			t.Fatalf("repair written before the drop %v: the forgery stayed in the replica read repair wrote it to", wait)
		}
		if ok, _ := bad.Has(ctx, id); !ok {
			t.Fatal("the drop deleted the serving replica's copy, which no repair wrote")
		}
	}
}
