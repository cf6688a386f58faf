package mount

import (
	"container/list"
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zosgrid/zos/internal/chunk"
	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/flist"
	"github.com/zosgrid/zos/internal/store"
)

// fetchError is a failed chunk fetch, already logged by the fetch.
type fetchError struct{ err error }

func (e *fetchError) Error() string { return e.err.Error() }
func (e *fetchError) Unwrap() error { return e.err }

// chunks fetches the chunks of one image, verified, at most once at a
// time each, and keeps the most recently used plaintexts under a byte
// budget. It is safe for concurrent use.
type chunks struct {
	refs    []flist.Chunk
	st      store.Store
	codec   *chunk.Codec
	log     *slog.Logger
	ctx     context.Context // the mount's lifetime: fetches run under it
	timeout time.Duration
	sem     chan struct{} // one slot per store fetch in progress

	mu       sync.Mutex
	budget   int64
	used     int64
	lru      list.List // of *cached, most recently used at the front
	cached   map[digest.ID]*list.Element
	flights  map[digest.ID]*flight
	ahead    int // read-ahead fetches in flight
	maxAhead int

	stats struct {
		hits, misses, joins, prefetches, errors, bytes atomic.Int64
	}
}

type cached struct {
	sum  digest.ID
	data []byte
}

// flight is one fetch of a chunk; done is closed once data or err is set.
type flight struct {
	done chan struct{}
	data []byte
	err  error
}

func newChunks(ctx context.Context, refs []flist.Chunk, st store.Store, opt *Options) *chunks {
	return &chunks{
		refs:     refs,
		st:       st,
		codec:    chunk.NewCodec(0), // the level only matters to Seal
		log:      opt.Logger,
		ctx:      ctx,
		timeout:  opt.FetchTimeout,
		sem:      make(chan struct{}, opt.Fetchers),
		budget:   opt.MemoryBytes,
		cached:   map[digest.ID]*list.Element{},
		flights:  map[digest.ID]*flight{},
		maxAhead: opt.Fetchers,
	}
}

// get returns the verified plaintext of chunk k, fetching it if it is not
// cached. The result is shared and must not be modified. ino names the
// inode the read is for, in logs.
//
// get does not give up when the reader is interrupted: a read of a regular
// file returning EINTR breaks programs that rightly never expect it (the
// kernel only sends FUSE an interrupt; it still waits for the answer, and
// a fatal signal ends the wait without us). The fetch timeout bounds the wait.
func (c *chunks) get(k int, ino uint64) ([]byte, error) {
	ref := c.refs[k]
	c.mu.Lock()
	if el, ok := c.cached[ref.Sum]; ok {
		c.lru.MoveToFront(el)
		data := el.Value.(*cached).data
		c.mu.Unlock()
		c.stats.hits.Add(1)
		return data, nil
	}
	f, started := c.startLocked(k, ino, false)
	c.mu.Unlock()
	if !started {
		c.stats.joins.Add(1)
	}
	<-f.done
	return f.data, f.err
}

// start begins fetching chunk k unless it is cached or in flight; a reader
// that needs several chunks starts them all before waiting for the first.
func (c *chunks) start(k int, ino uint64) {
	c.mu.Lock()
	if _, ok := c.cached[c.refs[k].Sum]; !ok {
		c.startLocked(k, ino, false)
	}
	c.mu.Unlock()
}

// prefetch starts background fetches of chunks [lo, hi) that are neither
// cached nor in flight, as long as fewer than maxAhead read-ahead fetches
// are running. It returns the first chunk it did not get to, so the caller
// can try again from there.
func (c *chunks) prefetch(lo, hi int, ino uint64) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := lo; k < hi; k++ {
		sum := c.refs[k].Sum
		if _, ok := c.cached[sum]; ok {
			continue
		}
		if _, ok := c.flights[sum]; ok {
			continue
		}
		if c.ahead >= c.maxAhead {
			return k
		}
		c.startLocked(k, ino, true)
	}
	return hi
}

// startLocked returns the fetch of chunk k in flight, or starts one and
// reports so. c.mu is held.
func (c *chunks) startLocked(k int, ino uint64, ahead bool) (*flight, bool) {
	sum := c.refs[k].Sum
	if f, ok := c.flights[sum]; ok {
		return f, false
	}
	f := &flight{done: make(chan struct{})}
	c.flights[sum] = f
	if ahead {
		c.ahead++
		c.stats.prefetches.Add(1)
	} else {
		c.stats.misses.Add(1)
	}
	go c.fetch(k, ino, ahead, f)
	return f, true
}

// fetch runs one flight: it reads the chunk from the store under the
// mount's context (not the reader's: others may wait on it), caches it on
// success and logs a failure once, for every reader that waited.
func (c *chunks) fetch(k int, ino uint64, ahead bool, f *flight) {
	ref := c.refs[k]
	start := time.Now()
	select {
	case c.sem <- struct{}{}:
		f.data, f.err = c.fetchSlot(ref)
		<-c.sem
	case <-c.ctx.Done():
		f.err = c.ctx.Err()
	}
	c.mu.Lock()
	delete(c.flights, ref.Sum)
	if ahead {
		c.ahead--
	}
	if f.err == nil {
		c.insertLocked(ref.Sum, f.data)
	}
	c.mu.Unlock()
	if f.err != nil {
		c.stats.errors.Add(1)
		if c.ctx.Err() == nil { // not a shutdown
			c.log.Error("chunk fetch failed", "id", chunk.ID(ref.Sum).String(), "chunk", k, "size", ref.Size,
				"store", c.st.String(), "inode", ino, "readahead", ahead, "elapsed", time.Since(start).Round(time.Millisecond), "err", f.err)
		}
		f.err = &fetchError{f.err}
	} else {
		c.stats.bytes.Add(int64(len(f.data)))
	}
	close(f.done)
}

func (c *chunks) fetchSlot(ref flist.Chunk) ([]byte, error) {
	ctx, cancel := context.WithTimeout(c.ctx, c.timeout)
	defer cancel()
	return store.Fetch(ctx, c.st, c.codec, ref)
}

// insertLocked caches data and evicts the least recently used chunks until
// the budget holds again. c.mu is held.
func (c *chunks) insertLocked(sum digest.ID, data []byte) {
	if el, ok := c.cached[sum]; ok {
		c.lru.MoveToFront(el)
		return
	}
	c.cached[sum] = c.lru.PushFront(&cached{sum: sum, data: data})
	c.used += int64(len(data))
	for c.used > c.budget && c.lru.Len() > 1 {
		el := c.lru.Back()
		v := el.Value.(*cached)
		c.lru.Remove(el)
		delete(c.cached, v.sum)
		c.used -= int64(len(v.data))
	}
}

// Stats count what the chunk layer of a mount has done.
type Stats struct {
	Hits       int64 // reads of a chunk found in memory
	Misses     int64 // fetches started by a read
	Joins      int64 // reads that waited for a fetch already in flight
	Prefetches int64 // fetches started by read-ahead
	Errors     int64 // failed fetches
	Bytes      int64 // verified plaintext bytes fetched
	Cached     int64 // plaintext bytes held in memory now
	InFlight   int   // fetches in progress now
}

func (c *chunks) snapshot() Stats {
	c.mu.Lock()
	used, n := c.used, len(c.flights)
	c.mu.Unlock()
	return Stats{
		Hits: c.stats.hits.Load(), Misses: c.stats.misses.Load(), Joins: c.stats.joins.Load(),
		Prefetches: c.stats.prefetches.Load(), Errors: c.stats.errors.Load(), Bytes: c.stats.bytes.Load(),
		Cached: used, InFlight: n,
	}
}
