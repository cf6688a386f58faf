package mount

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/zosgrid/zos/internal/chunk"
	"github.com/zosgrid/zos/internal/flist"
	"github.com/zosgrid/zos/internal/store"
	"github.com/zosgrid/zos/internal/store/mem"
)

// sealed stores n distinct chunks of size bytes and returns their refs.
func sealed(t *testing.T, st *mem.Store, n, size int) []flist.Chunk {
	t.Helper()
	codec := chunk.NewCodec(chunk.DefaultLevel)
	var refs []flist.Chunk
	for i := range n {
		plain := bytes.Repeat([]byte{byte(i), byte(i >> 8)}, size/2)
		sum, id, blob := codec.Seal(plain)
		if err := st.Put(context.Background(), id, blob); err != nil {
			t.Fatal(err)
		}
		refs = append(refs, flist.Chunk{Sum: sum, Size: uint32(len(plain))})
	}
	return refs
}

func TestChunkCacheBudgetAndErrors(t *testing.T) {
	st := mem.New()
	refs := sealed(t, st, 12, 1<<20)
	opt := Options{MemoryBytes: 8 << 20}
	opt.setDefaults()
	c := newChunks(context.Background(), refs, st, &opt)
	for k := range refs {
		data, err := c.get(k, 1, 0, 1)
		if err != nil || len(data) != 1<<20 || data[0] != byte(k) {
			t.Fatalf("chunk %d: %v", k, err)
		}
		if s := c.snapshot(); s.Cached > 8<<20 {
			t.Fatalf("after %d chunks: %d bytes cached over an 8 MiB budget", k+1, s.Cached)
		}
	}
	// The most recent chunks are hits, the oldest were evicted.
	before := c.snapshot()
	c.get(11, 1, 0, 1)
	c.get(0, 1, 0, 1)
	after := c.snapshot()
	if after.Hits != before.Hits+1 || after.Misses != before.Misses+1 {
		t.Fatalf("want one hit (newest) and one miss (evicted): %+v -> %+v", before, after)
	}

	// A failure is not cached: the next get fetches again and succeeds.
	id := chunk.ID(refs[5].Sum)
	good, _ := st.Get(context.Background(), id)
	st.Delete(context.Background(), id)
	c2 := newChunks(context.Background(), refs, st, &opt)
	if _, err := c2.get(5, 1, 0, 1); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("missing chunk: %v", err)
	}
	st.Put(context.Background(), id, good)
	if _, err := c2.get(5, 1, 0, 1); err != nil {
		t.Fatalf("after repair: %v", err)
	}
}

func TestRdev32(t *testing.T) {
	for _, d := range [][2]uint32{{1, 3}, {8, 0}, {259, 70000}, {4095, 1 << 19}} {
		got := rdev32(unix.Mkdev(d[0], d[1]))
		// The kernel's new_decode_dev.
		major, minor := (got&0xfff00)>>8, (got&0xff)|((got>>12)&0xfff00)
		if major != d[0] || minor != d[1] {
			t.Errorf("%d:%d encodes as %#x, decodes as %d:%d", d[0], d[1], got, major, minor)
		}
	}
}

func TestUnescapeMount(t *testing.T) {
	for in, want := range map[string]string{`/a\040b`: "/a b", `/plain`: "/plain", `/t\011ab\134`: "/t\tab\\", `/x\09`: `/x\09`} {
		if got := unescapeMount(in); got != want {
			t.Errorf("unescapeMount(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestFreshChunksOutliveReadOnes: chunks fetched ahead of readers are
// evicted after the chunks reads used, whatever their age, but hold at
// most half the budget.
func TestFreshChunksOutliveReadOnes(t *testing.T) {
	st := mem.New()
	refs := sealed(t, st, 30, 1<<20)
	opt := Options{MemoryBytes: 8 << 20}
	opt.setDefaults()
	c := newChunks(context.Background(), refs, st, &opt)
	insert := func(k int, ahead bool) {
		c.mu.Lock()
		c.insertLocked(refs[k].Sum, make([]byte, refs[k].Size), ahead, false)
		c.mu.Unlock()
	}
	cachedNow := func(k int) bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		_, ok := c.cached[refs[k].Sum]
		return ok
	}
	for k := range 3 {
		insert(k, true) // read-ahead of chunks 0-2
	}
	for k := 10; k < 25; k++ {
		insert(k, false) // the reader goes on reading other chunks meanwhile
	}
	for k := range 3 {
		if !cachedNow(k) {
			t.Errorf("chunk %d, fetched ahead and not yet read, was evicted by read chunks", k)
		}
	}
	if s := c.snapshot(); s.Cached > 8<<20 {
		t.Errorf("%d bytes cached over an 8 MiB budget", s.Cached)
	}
	// Read, they become ordinary LRU entries.
	for k := range 3 {
		if _, err := c.get(k, 1, 0, 1); err != nil {
			t.Fatal(err)
		}
	}
	if c.fresh.Len() != 0 || c.freshBytes != 0 {
		t.Errorf("after reads: %d fresh chunks, %d bytes", c.fresh.Len(), c.freshBytes)
	}
	// Fresh chunks never read hold at most half the budget, oldest out first.
	for k := 25; k < 30; k++ {
		insert(k, true)
	}
	if c.freshBytes > 4<<20 || cachedNow(25) || !cachedNow(29) {
		t.Errorf("5 MiB fetched ahead: %d bytes fresh; oldest cached %v, newest cached %v", c.freshBytes, cachedNow(25), cachedNow(29))
	}
}
