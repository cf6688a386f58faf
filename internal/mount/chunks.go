package mount

import (
	"container/list"
	"context"
	"errors"
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

// fetchKind says who started a fetch, which sets its priority.
type fetchKind uint8

const (
	kindRead  fetchKind = iota // a reader needs the chunk now
	kindAhead                  // read-ahead of a sequential reader
	kindTrace                  // trace prefetch: background
)

// chunks fetches the chunks of one image, verified, at most once at a
// time each, and keeps the most recently used plaintexts under a byte
// budget. It is safe for concurrent use.
//
// Chunks fetched ahead of readers (read-ahead, trace prefetch) wait on
// their own list, fresh, until a read uses them and moves them to the
// LRU. Eviction takes from the LRU first, so a chunk fetched for a reader
// about to come is not pushed out by the chunks it read before; fresh
// holds at most half the budget, oldest evicted first, so prefetches that
// are never read cannot squeeze out the readers' working set.
type chunks struct {
	refs    []flist.Chunk
	st      store.Store
	codec   *chunk.Codec
	log     *slog.Logger
	ctx     context.Context // the mount's lifetime: fetches run under it
	timeout time.Duration
	slots   *slots // one per store fetch in progress

	mu         sync.Mutex
	cond       sync.Cond // on mu: pending went down, or the mount is closing
	budget     int64
	used       int64     // bytes in lru and fresh
	lru        list.List // of *cached that reads used, most recently used at the front
	fresh      list.List // of *cached fetched ahead and not yet read, oldest at the front
	freshBytes int64
	cached     map[digest.ID]*list.Element // in lru or fresh
	flights    map[digest.ID]*flight
	ahead      int   // read-ahead fetches in flight
	aheadBytes int64 // their plaintext bytes
	maxAhead   int

	// Trace prefetch: pending counts the bytes of chunks it fetched (or is
	// fetching to keep) that no reader has used yet; it starts no fetch
	// that would take pending past lead (negative: no bound). storeKeeps
	// says the store keeps on disk what it serves, so past the lead a
	// prefetch still fetches, through the store, without keeping the
	// plaintext in memory.
	lead       int64
	pending    int64
	storeKeeps bool
	lease      func(store.Store) (store.Store, func())

	// timedOut remembers chunks whose fetch gave up on the timeout, for
	// failMemory: the kernel retries a failed read-ahead with a read of
	// its own right away, which must not wait the whole timeout again.
	timedOut map[digest.ID]timeout

	rec    *recorder     // nil unless recording a trace
	bundle *bundleSlices // nil unless streaming a start bundle

	noBatch atomic.Bool // the store cannot fetch in batches: read-ahead fetches one by one

	lastRead atomic.Int64 // when the last read came (UnixNano), for settle; kept with a bundle only

	stats struct {
		hits, misses, joins, prefetches, errors, bytes, retries atomic.Int64
		traceFetches, traceHits, traceEvicted                   atomic.Int64
	}
	traceLeft atomic.Int64
}

// failMemory is how long a chunk whose fetch timed out fails at once.
const failMemory = 2 * time.Second

type timeout struct {
	at  time.Time
	err error
}

type cached struct {
	sum   digest.ID
	data  []byte
	fresh bool // fetched ahead of readers, not yet read: in chunks.fresh
	trace bool // fetched by the trace prefetch and not yet read
}

// flight is one fetch of a chunk; done is closed once data or err is set.
type flight struct {
	done chan struct{}
	data []byte
	err  error
	kind fetchKind
	// keep: a trace fetch within the lead, kept in memory for the reader
	// to come. Others of the trace are kept only if a reader joined.
	keep   bool
	waited atomic.Bool // a reader waits for it (set under chunks.mu)
}

func newChunks(ctx context.Context, refs []flist.Chunk, st store.Store, opt *Options) *chunks {
	c := &chunks{
		refs:       refs,
		st:         st,
		codec:      chunk.NewCodec(0), // the level only matters to Seal
		log:        opt.Logger,
		ctx:        ctx,
		timeout:    opt.FetchTimeout,
		slots:      newSlots(opt.Fetchers),
		budget:     opt.MemoryBytes,
		cached:     map[digest.ID]*list.Element{},
		flights:    map[digest.ID]*flight{},
		timedOut:   map[digest.ID]timeout{},
		maxAhead:   opt.Fetchers,
		lead:       opt.PrefetchLead,
		storeKeeps: opt.StoreKeeps,
		lease:      opt.Lease,
	}
	c.cond.L = &c.mu
	if _, ok := st.(store.Batcher); !ok {
		c.noBatch.Store(true)
	}
	if opt.Record {
		c.rec = newRecorder(refs)
	}
	context.AfterFunc(ctx, func() { // wake prefetchers waiting for the lead
		c.mu.Lock()
		c.cond.Broadcast()
		c.mu.Unlock()
	})
	return c
}

// get returns the verified plaintext of chunk k, fetching it if it is not
// cached. The result is shared and must not be modified. ino names the
// inode the read is for, in logs.
//
// get does not give up when the reader is interrupted: a read of a regular
// file returning EINTR breaks programs that rightly never expect it (the
// kernel only sends FUSE an interrupt; it still waits for the answer, and
// a fatal signal ends the wait without us). The fetch timeout bounds the wait.
//
// lo and hi are the bytes of the chunk the read needs, for the recorder.
func (c *chunks) get(k int, ino, lo, hi uint64) ([]byte, error) {
	if c.rec != nil {
		c.rec.add(k, lo, hi)
	}
	ref := c.refs[k]
	c.mu.Lock()
	if el, ok := c.cached[ref.Sum]; ok {
		v := c.touchLocked(el)
		c.mu.Unlock()
		c.stats.hits.Add(1)
		return v.data, nil
	}
	if err := c.timedOutLocked(ref.Sum); err != nil {
		c.mu.Unlock()
		c.stats.errors.Add(1)
		return nil, err
	}
	f, started := c.startLocked(k, ino, kindRead)
	if !started {
		if f.kind == kindTrace && !f.waited.Load() {
			c.stats.traceHits.Add(1)
		}
		f.waited.Store(true)
	}
	c.mu.Unlock()
	if !started {
		c.stats.joins.Add(1)
	}
	<-f.done
	return f.data, f.err
}

// touchLocked marks a cached chunk used by a read: most recently used,
// and no longer fresh. c.mu is held.
func (c *chunks) touchLocked(el *list.Element) *cached {
	v := el.Value.(*cached)
	if !v.fresh {
		c.lru.MoveToFront(el)
		return v
	}
	c.fresh.Remove(el)
	c.freshBytes -= int64(len(v.data))
	v.fresh = false
	c.cached[v.sum] = c.lru.PushFront(v)
	if v.trace {
		v.trace = false
		c.pending -= int64(len(v.data))
		c.stats.traceHits.Add(1)
		c.cond.Broadcast()
	}
	return v
}

// start begins fetching the chunks [lo, hi) that are neither cached nor
// in flight, together: a reader that needs several chunks starts them all
// before waiting for the first.
func (c *chunks) start(lo, hi int, ino uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var b batch
	for k := lo; k < hi; k++ {
		if c.hasLocked(c.refs[k].Sum) || c.bundle != nil && c.bundle.coming(k) {
			continue // a read of a chunk the bundle brings fetches it itself if need be
		}
		b.add(k, c.newFlightLocked(k, kindRead))
		if len(b.ks) == maxBatch {
			c.launch(&b, ino)
		}
	}
	c.launch(&b, ino)
}

// prefetch starts background fetches of chunks [lo, hi) that are neither
// cached nor in flight, as long as fewer than limit (at most maxAhead)
// read-ahead fetches are running. It returns the first chunk it did not
// get to, so the caller can try again from there.
func (c *chunks) prefetch(lo, hi int, ino uint64, limit int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.prefetchLocked(lo, hi, ino, limit)
}

func (c *chunks) prefetchLocked(lo, hi int, ino uint64, limit int) int {
	limit = min(limit, c.maxAhead)
	var b batch // the fetches started here, asked of the store together
	defer func() { c.launch(&b, ino) }()
	for k := lo; k < hi; k++ {
		if c.hasLocked(c.refs[k].Sum) || c.bundle != nil && c.bundle.coming(k) {
			continue
		}
		if c.ahead >= limit {
			return k
		}
		// Never fetch ahead more than fresh may hold: a chunk evicted
		// before its reader comes is fetched twice.
		if room := c.budget/2 - c.freshBytes - c.aheadBytes; int64(c.refs[k].Size) > room && (c.ahead > 0 || c.freshBytes > 0) {
			return k
		}
		b.add(k, c.newFlightLocked(k, kindAhead))
		if len(b.ks) == maxBatch {
			c.launch(&b, ino)
		}
	}
	return hi
}

// maxBatch is the most chunks one batched fetch asks for. Read-ahead
// keeps up to Options.Fetchers chunks in flight, so a sequential reader
// has a few batches in flight at once.
const maxBatch = 8

// batch is fetches started together: chunk indexes and their flights.
type batch struct {
	ks []int
	fs []*flight
}

func (b *batch) add(k int, f *flight) {
	b.ks = append(b.ks, k)
	b.fs = append(b.fs, f)
}

// launch runs the fetches of b, as one batched fetch when there are
// several and the store can batch, and empties b.
func (c *chunks) launch(b *batch, ino uint64) {
	switch {
	case len(b.ks) == 0:
		return
	case len(b.ks) == 1 || c.noBatch.Load():
		for i, k := range b.ks {
			go c.fetch(k, ino, b.fs[i], false)
		}
	default:
		go c.fetchBatch(b.ks, b.fs, ino, false)
	}
	*b = batch{}
}

// prefetchWait starts background fetches of chunks [lo, hi) like
// prefetch, bounded only by read-ahead's own bound (maxAhead fetches in
// flight), at which it waits for a fetch to end; it stops early at the
// memory bound, or when the mount closes.
func (c *chunks) prefetchWait(lo, hi int, ino uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := lo; ; {
		k = c.prefetchLocked(k, hi, ino, c.maxAhead)
		if k == hi || c.ahead < c.maxAhead || c.ctx.Err() != nil {
			return
		}
		c.cond.Wait()
	}
}

// peek returns the verified plaintext of chunk k like get, but as a
// background fetch (read-ahead priority) that is not a read: it is not
// recorded in a trace and does not change the cache's order.
func (c *chunks) peek(k int, ino uint64) ([]byte, error) {
	ref := c.refs[k]
	c.mu.Lock()
	if el, ok := c.cached[ref.Sum]; ok {
		data := el.Value.(*cached).data
		c.mu.Unlock()
		return data, nil
	}
	if err := c.timedOutLocked(ref.Sum); err != nil {
		c.mu.Unlock()
		return nil, err
	}
	f, _ := c.startLocked(k, ino, kindAhead)
	c.mu.Unlock()
	<-f.done
	return f.data, f.err
}

// hasLocked reports a chunk cached, in flight, or just timed out: one
// that needs no fetch started now. c.mu is held.
func (c *chunks) hasLocked(sum digest.ID) bool {
	if _, ok := c.cached[sum]; ok {
		return true
	}
	if _, ok := c.flights[sum]; ok {
		return true
	}
	return c.timedOutLocked(sum) != nil
}

// timedOutLocked returns the error of a fetch of sum that timed out less
// than failMemory ago. c.mu is held.
func (c *chunks) timedOutLocked(sum digest.ID) error {
	t, ok := c.timedOut[sum]
	if !ok {
		return nil
	}
	if time.Since(t.at) >= failMemory {
		delete(c.timedOut, sum)
		return nil
	}
	return t.err
}

// rememberTimeoutLocked notes a fetch that timed out. c.mu is held.
func (c *chunks) rememberTimeoutLocked(sum digest.ID, err error) {
	if len(c.timedOut) >= 1024 {
		for id, t := range c.timedOut {
			if time.Since(t.at) >= failMemory {
				delete(c.timedOut, id)
			}
		}
	}
	c.timedOut[sum] = timeout{time.Now(), err}
}

// startLocked returns the fetch of chunk k in flight, or starts one and
// reports so. c.mu is held.
func (c *chunks) startLocked(k int, ino uint64, kind fetchKind) (*flight, bool) {
	if f, ok := c.flights[c.refs[k].Sum]; ok {
		return f, false
	}
	f := c.newFlightLocked(k, kind)
	go c.fetch(k, ino, f, false)
	return f, true
}

// newFlightLocked records a fetch of chunk k, not in flight, as started;
// the caller runs it. c.mu is held.
func (c *chunks) newFlightLocked(k int, kind fetchKind) *flight {
	f := &flight{done: make(chan struct{}), kind: kind}
	c.flights[c.refs[k].Sum] = f
	if kind == kindAhead {
		c.ahead++
		c.aheadBytes += int64(c.refs[k].Size)
		c.stats.prefetches.Add(1)
	} else {
		c.stats.misses.Add(1)
	}
	return f
}

// settle waits until no read has come for quiet, for at most most, or
// until the mount closes: background work that would share the link and
// the CPU with the readers waits for them to settle.
func (c *chunks) settle(quiet, most time.Duration) {
	deadline := time.Now().Add(most)
	for c.ctx.Err() == nil {
		idle := time.Since(time.Unix(0, c.lastRead.Load()))
		if idle >= quiet || time.Now().After(deadline) {
			return
		}
		select {
		case <-time.After(min(quiet-idle, time.Until(deadline)) + time.Millisecond):
		case <-c.ctx.Done():
		}
	}
}

// fetch runs one flight: it reads the chunk from the store under the
// mount's context (not the reader's: others may wait on it), retrying
// transient failures until the fetch timeout, caches it on success and
// logs a failure once, for every reader that waited. held says the caller
// already holds a fetch slot for the first try.
func (c *chunks) fetch(k int, ino uint64, f *flight, held bool) {
	ref := c.refs[k]
	start := time.Now()
	ctx, cancel := context.WithTimeout(c.ctx, c.timeout)
	acquire := func(ctx context.Context) error {
		if held {
			held = false
			return nil
		}
		return c.slots.acquire(ctx, f.kind == kindTrace && !f.waited.Load())
	}
	st, release := c.view()
	defer release()
	f.data, f.err = retryFetch(ctx, st, c.codec, ref, acquire, c.slots.release,
		func(try int, wait time.Duration, err error) {
			c.stats.retries.Add(1)
			c.log.Warn("chunk fetch failed, retrying", "id", chunk.ID(ref.Sum).String(), "chunk", k,
				"try", try, "in", wait.Round(time.Millisecond), "store", c.st.String(), "err", err)
		})
	cancel()
	c.finish(k, ino, f, start)
}

// view returns the store a fetch reads: the mount's store, or a lease of
// it that pins what the fetch reads until release.
func (c *chunks) view() (store.Store, func()) {
	if c.lease == nil {
		return c.st, func() {}
	}
	return c.lease(c.st)
}

// fetchBatch runs the flights of chunks ks as one
// batched read of the store holding one fetch slot: for a sequential
// reader, one request for several chunks instead of one each. A chunk the
// batch does not bring (the store cannot batch, a failure, a chunk that
// fails to open) is fetched on its own, with fetch's retries and logs.
//
// held says the caller holds a fetch slot for the batch.
func (c *chunks) fetchBatch(ks []int, fs []*flight, ino uint64, held bool) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(c.ctx, c.timeout)
	defer cancel()
	st, release := c.view()
	defer release()
	done := make([]bool, len(ks))
	b, ok := st.(store.Batcher)
	if held && !ok {
		c.slots.release()
	}
	if ok && (held || c.slots.acquire(ctx, false) == nil) {
		ids := make([]digest.ID, len(ks))
		for i, k := range ks {
			ids[i] = chunk.ID(c.refs[k].Sum)
		}
		err := b.GetBatch(ctx, ids, func(i int, blob []byte, err error) {
			if err != nil {
				return
			}
			data, err := store.Open(ctx, st, c.codec, c.refs[ks[i]], blob)
			if err != nil {
				return
			}
			fs[i].data, done[i] = data, true
			c.finish(ks[i], ino, fs[i], start)
		})
		c.slots.release()
		if errors.Is(err, errors.ErrUnsupported) && !c.noBatch.Swap(true) {
			c.log.Info("the store cannot fetch chunks in batches; fetching them one by one", "store", c.st.String(), "err", err)
		}
	}
	for i, k := range ks {
		if !done[i] {
			go c.fetch(k, ino, fs[i], false)
		}
	}
}

// finish ends flight f of chunk k, whose data or err is set: it caches
// the data, updates the bounds and statistics, logs a failure and wakes
// the readers waiting.
func (c *chunks) finish(k int, ino uint64, f *flight, start time.Time) {
	ref := c.refs[k]
	_, timedOut := errors.AsType[*timeoutError](f.err)
	c.mu.Lock()
	delete(c.flights, ref.Sum)
	if timedOut {
		c.rememberTimeoutLocked(ref.Sum, &fetchError{f.err})
	}
	waited := f.waited.Load()
	switch f.kind {
	case kindAhead:
		c.ahead--
		c.aheadBytes -= int64(ref.Size)
		c.cond.Broadcast() // a read-ahead slot is free (prefetchWait)
	case kindTrace:
		c.stats.traceFetches.Add(1)
		if f.keep && (f.err != nil || waited) {
			c.pending -= int64(ref.Size)
			c.cond.Broadcast()
		}
	}
	if f.err == nil && (f.kind != kindTrace || f.keep || waited) {
		ahead := f.kind != kindRead && !waited
		c.insertLocked(ref.Sum, f.data, ahead, ahead && f.kind == kindTrace)
	}
	c.mu.Unlock()
	if f.err != nil {
		c.stats.errors.Add(1)
		if c.ctx.Err() == nil { // not a shutdown
			msg, level := "chunk fetch failed", slog.LevelError
			if f.kind == kindTrace && !waited {
				msg, level = "trace prefetch failed", slog.LevelWarn // no reader saw it
			}
			c.log.Log(context.Background(), level, msg, "id", chunk.ID(ref.Sum).String(), "chunk", k, "size", ref.Size,
				"store", c.st.String(), "inode", ino, "kind", f.kind.String(), "elapsed", time.Since(start).Round(time.Millisecond), "err", f.err)
		}
		f.err = &fetchError{f.err}
	} else {
		c.stats.bytes.Add(int64(len(f.data)))
	}
	close(f.done)
}

func (k fetchKind) String() string {
	switch k {
	case kindRead:
		return "read"
	case kindAhead:
		return "readahead"
	}
	return "trace"
}

// insertLocked caches data, in the LRU or, fetched ahead of any read, in
// fresh, and evicts until the budget holds again. c.mu is held.
func (c *chunks) insertLocked(sum digest.ID, data []byte, ahead, trace bool) {
	if el, ok := c.cached[sum]; ok {
		if !ahead {
			c.touchLocked(el)
		}
		return
	}
	v := &cached{sum: sum, data: data, fresh: ahead, trace: trace}
	if ahead {
		c.cached[sum] = c.fresh.PushBack(v)
		c.freshBytes += int64(len(data))
	} else {
		c.cached[sum] = c.lru.PushFront(v)
	}
	c.used += int64(len(data))
	c.evictLocked()
}

// evictLocked drops chunks until the budget holds and fresh holds at most
// half of it: the least recently used read chunk, or the oldest fresh one
// when fresh is over its half or nothing else is left. c.mu is held.
func (c *chunks) evictLocked() {
	for c.used > c.budget || c.freshBytes > c.budget/2 {
		if c.lru.Len()+c.fresh.Len() <= 1 {
			return
		}
		var el *list.Element
		if c.freshBytes > c.budget/2 || c.lru.Len() == 0 {
			el = c.fresh.Front()
			c.fresh.Remove(el)
		} else {
			el = c.lru.Back()
			c.lru.Remove(el)
		}
		v := el.Value.(*cached)
		delete(c.cached, v.sum)
		c.used -= int64(len(v.data))
		if v.fresh {
			c.freshBytes -= int64(len(v.data))
		}
		if v.trace {
			c.pending -= int64(len(v.data))
			c.stats.traceEvicted.Add(1)
			c.cond.Broadcast()
		}
	}
}

// Stats count what the chunk layer of a mount has done.
type Stats struct {
	Hits       int64 // reads of a chunk found in memory
	Misses     int64 // fetches started by a read
	Joins      int64 // reads that waited for a fetch already in flight
	Prefetches int64 // fetches started by read-ahead
	Errors     int64 // failed fetches
	Retries    int64 // fetch tries that failed and were tried again
	Bytes      int64 // verified plaintext bytes fetched
	Cached     int64 // plaintext bytes held in memory now
	InFlight   int   // fetches in progress now

	TraceFetches int64 // fetches done by the trace prefetch
	TraceHits    int64 // reads that used a chunk the trace prefetch fetched or was fetching
	TraceEvicted int64 // trace-prefetched chunks evicted before any read used them
	TraceLeft    int64 // trace entries the prefetch has yet to handle
	PrefetchDone bool  // the trace's (or bundle's) prefetch is over

	BundleEntries   int64 // start bundle entries received and verified
	BundleBad       int64 // start bundle entries that failed verification
	BundleBytes     int64 // plaintext bytes they brought
	BundleHits      int64 // reads served from them
	BundleWaits     int64 // reads that waited for the bundle's stream
	BundleStreaming bool  // the bundle's stream has not ended

	PassthroughOpens int64 // opens of files the cache holds whole (no Read reaches us)
	WholeKept        int64 // files written whole into the cache
}

func (c *chunks) snapshot() Stats {
	c.mu.Lock()
	used, n := c.used, len(c.flights)
	c.mu.Unlock()
	return Stats{
		Hits: c.stats.hits.Load(), Misses: c.stats.misses.Load(), Joins: c.stats.joins.Load(),
		Prefetches: c.stats.prefetches.Load(), Errors: c.stats.errors.Load(), Retries: c.stats.retries.Load(),
		Bytes: c.stats.bytes.Load(), Cached: used, InFlight: n,
		TraceFetches: c.stats.traceFetches.Load(), TraceHits: c.stats.traceHits.Load(),
		TraceEvicted: c.stats.traceEvicted.Load(), TraceLeft: c.traceLeft.Load(),
	}
}
