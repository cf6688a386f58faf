package mount

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zosgrid/zos/internal/chunk"
	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/flist"
	"github.com/zosgrid/zos/internal/store"
)

// prefetchTrace fetches the chunks order lists, in that order, in the
// background, with n fetches at most at once, until done or the mount
// closes, and then closes the channel it returns. Each fetch asks for up
// to maxBatch chunks of the order.
func (c *chunks) prefetchTrace(order []uint32, n int) <-chan struct{} {
	done := make(chan struct{})
	c.traceLeft.Store(int64(len(order)))
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			for c.ctx.Err() == nil {
				step := int64(maxBatch)
				if c.noBatch.Load() {
					step = 1 // one chunk a request: keep the requests in the order's order
				}
				lo := next.Add(step) - step
				if lo >= int64(len(order)) {
					return
				}
				for ks := order[lo:min(lo+step, int64(len(order)))]; len(ks) > 0 && c.ctx.Err() == nil; {
					done := c.traceBatch(ks)
					c.traceLeft.Add(-int64(done))
					ks = ks[done:]
				}
			}
		})
	}
	go func() {
		defer close(done)
		wg.Wait()
		if c.ctx.Err() == nil {
			s := c.snapshot()
			c.log.Info("trace prefetch done", "chunks", len(order), "fetched", s.TraceFetches,
				"used", s.TraceHits, "evicted", s.TraceEvicted, "elapsed", time.Since(start).Round(time.Millisecond))
		}
	}()
	return done
}

// traceBatch fetches for the trace the chunks at the head of ks that are
// neither cached nor in flight, as one batch, once the lead allows them,
// and returns when their fetches are done. It returns how many of ks it
// dealt with: at least one, fewer than all when the lead holds the rest
// back (the caller calls again for them, after waiting).
func (c *chunks) traceBatch(ks []uint32) int {
	type want struct {
		k    int
		keep bool
	}
	var ws []want
	c.mu.Lock()
	n := 0
	for _, k := range ks {
		ref := c.refs[k]
		size := int64(ref.Size)
		over := func() bool { return c.lead >= 0 && c.pending > 0 && c.pending+size > c.lead }
		if !c.hasLocked(ref.Sum) && over() && !c.storeKeeps {
			if len(ws) > 0 {
				break // fetch what is reserved first: the lead may wait on it
			}
			for !c.hasLocked(ref.Sum) && over() && c.ctx.Err() == nil {
				c.cond.Wait()
			}
		}
		n++
		if c.hasLocked(ref.Sum) || c.ctx.Err() != nil {
			continue
		}
		// Past the lead, a store that keeps what it serves holds the
		// chunk for its reader instead of memory.
		keep := !over()
		if keep {
			c.pending += size // reserved while waiting for a slot
		}
		ws = append(ws, want{int(k), keep})
	}
	c.mu.Unlock()
	if len(ws) == 0 {
		return n
	}
	unreserveLocked := func(w want) {
		if w.keep {
			c.pending -= int64(c.refs[w.k].Size)
			c.cond.Broadcast()
		}
	}
	err := c.slots.acquire(c.ctx, true)
	var b batch
	c.mu.Lock()
	for _, w := range ws {
		if err != nil || c.hasLocked(c.refs[w.k].Sum) { // closing, or a reader got there first
			unreserveLocked(w)
			continue
		}
		f := &flight{done: make(chan struct{}), kind: kindTrace, keep: w.keep}
		c.flights[c.refs[w.k].Sum] = f
		b.add(w.k, f)
	}
	c.mu.Unlock()
	switch {
	case err != nil:
	case len(b.ks) == 0:
		c.slots.release()
	case len(b.ks) == 1 || c.noBatch.Load():
		c.fetch(b.ks[0], 0, b.fs[0], true)
		for i := 1; i < len(b.ks); i++ {
			c.fetch(b.ks[i], 0, b.fs[i], false)
		}
	default:
		c.fetchBatch(b.ks, b.fs, 0, true)
		for _, f := range b.fs {
			<-f.done
		}
	}
	return n
}

// recorder keeps the order in which reads first needed each chunk, and
// which parts of it they asked for, in Range units.
type recorder struct {
	mu    sync.Mutex
	sizes []flist.Chunk
	read  map[uint32][]uint64 // by chunk index: a bitmap of the units read
	order []uint32
}

func newRecorder(refs []flist.Chunk) *recorder {
	return &recorder{sizes: refs, read: map[uint32][]uint64{}}
}

// add records a read of bytes [lo, hi) of chunk k.
func (r *recorder) add(k int, lo, hi uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	bits, ok := r.read[uint32(k)]
	if !ok {
		bits = make([]uint64, (units(r.sizes[k].Size)+63)/64)
		r.read[uint32(k)] = bits
		r.order = append(r.order, uint32(k))
	}
	for u := lo / rangeUnit; u < (hi+rangeUnit-1)/rangeUnit; u++ {
		bits[u/64] |= 1 << (u % 64)
	}
}

// snapshot returns the chunks read so far, in order, and their ranges.
func (r *recorder) snapshot() ([]uint32, [][]Range) {
	r.mu.Lock()
	defer r.mu.Unlock()
	order := append([]uint32(nil), r.order...)
	ranges := make([][]Range, len(order))
	for i, k := range order {
		bits, n := r.read[k], units(r.sizes[k].Size)
		var rs []Range
		for u := uint32(0); u < n; u++ {
			if bits[u/64]&(1<<(u%64)) == 0 {
				continue
			}
			if len(rs) > 0 && rs[len(rs)-1].Start+rs[len(rs)-1].Len == u {
				rs[len(rs)-1].Len++
			} else {
				rs = append(rs, Range{u, 1})
			}
		}
		if len(rs) == 1 && rs[0].Len == n {
			rs = nil // the whole chunk
		}
		ranges[i] = rs
	}
	return order, ranges
}

// WarmOptions tune Warm. The zero value is usable.
type WarmOptions struct {
	Logger  *slog.Logger // default: discard
	Workers int          // parallel fetches; default 16
	// FetchTimeout bounds each chunk's fetch, retries included; default 2
	// minutes.
	FetchTimeout time.Duration
	// Progress, if set, is called after each chunk with its plaintext
	// size and whether it failed. Calls may be concurrent.
	Progress func(size int64, failed bool)
}

// WarmStats summarise a Warm.
type WarmStats struct {
	Chunks int64 `json:"chunks"`  // distinct chunks asked for
	Bytes  int64 `json:"bytes"`   // their plaintext bytes, verified
	Failed int64 `json:"failed"`  // chunks that could not be fetched
	Tries  int64 `json:"retries"` // failed tries that were tried again
}

// Warm fetches every distinct chunk of refs through st and verifies it,
// as a mount's read would (retries and timeout included), so that a cache
// in st holds them all, up to maxBatch chunks a request when st batches.
// It goes on past failures, logging each, and returns an error naming how
// many failed and the first failure.
func Warm(ctx context.Context, refs []flist.Chunk, st store.Store, opt WarmOptions) (WarmStats, error) {
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	if opt.Workers <= 0 {
		opt.Workers = 16
	}
	if opt.FetchTimeout <= 0 {
		opt.FetchTimeout = 2 * time.Minute
	}
	seen := make(map[digest.ID]struct{}, len(refs))
	var todo []flist.Chunk
	for _, r := range refs {
		if _, dup := seen[r.Sum]; !dup {
			seen[r.Sum] = struct{}{}
			todo = append(todo, r)
		}
	}
	codec := chunk.NewCodec(0)
	var stats struct{ bytes, failed, tries atomic.Int64 }
	var first error
	var once sync.Once
	var next atomic.Int64
	var wg sync.WaitGroup
	free := func() {}
	hold := func(context.Context) error { return nil }
	one := func(ref flist.Chunk, err error) {
		if err != nil && ctx.Err() == nil {
			stats.failed.Add(1)
			opt.Logger.Error("chunk fetch failed", "id", chunk.ID(ref.Sum).String(), "store", st.String(), "err", err)
			once.Do(func() { first = fmt.Errorf("chunk %s: %w", chunk.ID(ref.Sum).Short(), err) })
		} else if err == nil {
			stats.bytes.Add(int64(ref.Size))
		}
		if opt.Progress != nil && ctx.Err() == nil {
			opt.Progress(int64(ref.Size), err != nil)
		}
	}
	// A store that batches is asked for maxBatch chunks a request; what
	// a batch does not bring is fetched on its own, with retries.
	batcher, batching := st.(store.Batcher)
	var noBatch atomic.Bool
	step := int64(1)
	if batching {
		step = maxBatch
	}
	for range min(opt.Workers, len(todo)) {
		wg.Go(func() {
			for ctx.Err() == nil {
				lo := next.Add(step) - step
				if lo >= int64(len(todo)) {
					return
				}
				refs := todo[lo:min(lo+step, int64(len(todo)))]
				got := make([]bool, len(refs))
				if len(refs) > 1 && !noBatch.Load() {
					ids := make([]digest.ID, len(refs))
					for i, ref := range refs {
						ids[i] = chunk.ID(ref.Sum)
					}
					fctx, cancel := context.WithTimeout(ctx, opt.FetchTimeout)
					err := batcher.GetBatch(fctx, ids, func(i int, blob []byte, err error) {
						if err == nil {
							_, err = store.Open(fctx, st, codec, refs[i], blob)
						}
						got[i] = err == nil
					})
					cancel()
					if errors.Is(err, errors.ErrUnsupported) {
						noBatch.Store(true)
					}
				}
				for i, ref := range refs {
					if got[i] {
						one(ref, nil)
						continue
					}
					fctx, cancel := context.WithTimeout(ctx, opt.FetchTimeout)
					_, err := retryFetch(fctx, st, codec, ref, hold, free, func(try int, wait time.Duration, err error) {
						stats.tries.Add(1)
						opt.Logger.Warn("chunk fetch failed, retrying", "id", chunk.ID(ref.Sum).String(), "try", try,
							"in", wait.Round(time.Millisecond), "store", st.String(), "err", err)
					})
					cancel()
					one(ref, err)
				}
			}
		})
	}
	wg.Wait()
	ws := WarmStats{Chunks: int64(len(todo)), Bytes: stats.bytes.Load(), Failed: stats.failed.Load(), Tries: stats.tries.Load()}
	if err := ctx.Err(); err != nil {
		return ws, err
	}
	if ws.Failed > 0 {
		return ws, fmt.Errorf("%d of %d chunks failed; first: %w", ws.Failed, ws.Chunks, first)
	}
	return ws, nil
}

// errTraceIndex reports a trace naming a chunk the flist does not have.
var errTraceIndex = errors.New("trace names a chunk the flist does not have")
