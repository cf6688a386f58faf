package mount

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zosgrid/zos/internal/chunk"
	"github.com/zosgrid/zos/internal/flist"
)

// Bundle is a start bundle for a mount to stream (Options.Bundle,
// docs/BUNDLE.md).
type Bundle struct {
	// Trace is the version-2 trace the bundle was built from. The mount
	// checks it against the image, and the bundle against it.
	Trace *Trace
	// Open starts reading the bundle: one stream, read once, from mount
	// time on.
	Open func(ctx context.Context) (io.ReadCloser, error)
	// Source names where the bundle comes from, in logs.
	Source string
}

// waitAhead is how far ahead of the bundle's stream (in plaintext bytes of
// the entries before it) a read waits for an entry to arrive rather than
// fetching its chunk whole: about 0.2 s of a 100 Mbit/s link at the
// bundle's usual 3:1 ratio. Beyond it the read's order has left the
// trace's, and the stream would keep it waiting.
const waitAhead = 8 << 20

// waitMost bounds how long a read waits for the bundle's stream before it
// fetches the chunk whole (and no read waits again until the stream
// brings an entry), and streamIdle how long the stream may bring nothing
// before it is given up: a stalled stream never holds a read for long.
const (
	waitMost   = 2 * time.Second
	streamIdle = 30 * time.Second
)

// bundleSlices holds what a mount's bundle brought: for each chunk whose entry
// arrived, the verified plaintext of its ranges, until the chunks are
// fetched whole after the stream ends. It is safe for concurrent use.
type bundleSlices struct {
	t      *Trace
	refs   []flist.Chunk
	at     map[int]int // by chunk index: its entry (immutable)
	before []int64     // plaintext bytes of the entries before entry i (immutable)
	budget int64

	streaming atomic.Bool // the stream has not ended: what it lists is on its way
	over      atomic.Bool // cleared: nothing more to serve

	mu      sync.Mutex
	cond    sync.Cond
	got     map[int]*held
	used    list.List // of *held that reads used, least recently used at the front
	bytes   int64     // held
	pos     int       // entries the stream has handled
	done    bool      // the stream ended
	stalled bool      // the stream waits for reads to use what it brought, or a read waited for it in vain

	stats struct{ entries, bad, hits, waits, bytes atomic.Int64 }
}

type held struct {
	e    *bundleEntry
	size int64
	el   *list.Element // in used, once a read used it
}

func newSlices(t *Trace, refs []flist.Chunk, budget int64) *bundleSlices {
	s := &bundleSlices{t: t, refs: refs, at: make(map[int]int, len(t.Chunks)),
		before: make([]int64, len(t.Chunks)+1), budget: budget, got: map[int]*held{}}
	s.cond.L = &s.mu
	for i, k := range t.Chunks {
		s.at[int(k)] = i
		n := int64(refs[k].Size)
		if rs := t.Ranges[i]; len(rs) > 0 {
			n = 0
			for _, r := range rs {
				_, m := r.Bytes(uint64(refs[k].Size))
				n += int64(m)
			}
		}
		s.before[i+1] = s.before[i] + n
	}
	s.streaming.Store(true)
	return s
}

// coming reports that the bundle's stream lists chunk k and has not ended:
// no fetch of it should start ahead of readers.
func (s *bundleSlices) coming(k int) bool {
	_, ok := s.at[k]
	return ok && s.streaming.Load()
}

// serve returns bytes [lo, hi) of chunk k if the bundle brought them,
// waiting for the stream when they are on their way and near; false says
// to fetch the chunk whole.
func (s *bundleSlices) serve(k int, lo, hi uint64) ([]byte, bool) {
	if s.over.Load() {
		return nil, false
	}
	i, ok := s.at[k]
	if !ok {
		return nil, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	waited := false
	var deadline time.Time
	for {
		if h := s.got[k]; h != nil {
			d := h.cover(s.refs[k].Size, lo, hi)
			if d != nil {
				s.stats.hits.Add(1)
				if h.el == nil {
					s.cond.Broadcast() // the stream may wait for a read
					h.el = s.used.PushBack(h)
				} else {
					s.used.MoveToBack(h.el)
				}
			}
			return d, d != nil
		}
		if waited && time.Now().After(deadline) {
			s.stalled = true // no read waits for it again until it brings an entry
			return nil, false
		}
		if s.done || i < s.pos || s.stalled || s.before[i]-s.before[s.pos] > waitAhead ||
			!inRanges(s.t.Ranges[i], s.refs[k].Size, lo, hi) {
			return nil, false
		}
		if !waited {
			waited = true
			s.stats.waits.Add(1)
			deadline = time.Now().Add(waitMost)
			t := time.AfterFunc(waitMost, func() {
				s.mu.Lock()
				s.cond.Broadcast()
				s.mu.Unlock()
			})
			defer t.Stop()
		}
		s.cond.Wait()
	}
}

// rangeOf returns which of rs (none: the whole chunk, one range from 0)
// holds bytes [lo, hi) of a chunk of size bytes, and where it starts.
func rangeOf(rs []Range, size uint32, lo, hi uint64) (j int, off uint64, ok bool) {
	if len(rs) == 0 {
		return 0, 0, true
	}
	for j, r := range rs {
		off, n := r.Bytes(uint64(size))
		if off <= lo && hi <= off+n {
			return j, off, true
		}
	}
	return 0, 0, false
}

func inRanges(rs []Range, size uint32, lo, hi uint64) bool {
	_, _, ok := rangeOf(rs, size, lo, hi)
	return ok
}

// cover returns bytes [lo, hi) of the chunk from the range holding them.
func (h *held) cover(size uint32, lo, hi uint64) []byte {
	j, off, ok := rangeOf(h.e.ranges, size, lo, hi)
	if !ok {
		return nil
	}
	return h.e.data[j][lo-off : hi-off]
}

// add keeps an entry the stream brought, evicting entries reads used
// (least recently first) to stay within the budget, and waiting for reads
// while only unread ones are left. It returns false when ctx ends.
func (s *bundleSlices) add(ctx context.Context, e *bundleEntry) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.cond.Broadcast()
	s.pos++
	if e.bad != nil {
		return true
	}
	h := &held{e: e}
	for _, d := range e.data {
		h.size += int64(len(d))
	}
	for s.bytes+h.size > s.budget && s.bytes > 0 {
		if el := s.used.Front(); el != nil {
			s.dropLocked(el.Value.(*held))
			continue
		}
		if ctx.Err() != nil {
			return false
		}
		s.stalled = true
		s.cond.Broadcast()
		s.cond.Wait()
	}
	s.stalled = false
	s.got[e.k] = h
	s.bytes += h.size
	s.stats.entries.Add(1)
	s.stats.bytes.Add(h.size)
	return true
}

func (s *bundleSlices) dropLocked(h *held) {
	if h.el != nil {
		s.used.Remove(h.el)
	}
	delete(s.got, h.e.k)
	s.bytes -= h.size
}

// end marks the stream ended: reads no longer wait for it.
func (s *bundleSlices) end() {
	s.streaming.Store(false)
	s.mu.Lock()
	s.done = true
	s.cond.Broadcast()
	s.mu.Unlock()
}

// clear drops every entry: the chunks are whole in the cache now.
func (s *bundleSlices) clear() {
	s.over.Store(true)
	s.mu.Lock()
	clear(s.got)
	s.used.Init()
	s.bytes = 0
	s.mu.Unlock()
}

// stream reads the bundle into s until it ends, fails or ctx ends, and
// reports how it ended. Entries that fail verification are logged and
// skipped; their chunks are fetched whole when read.
func (f *FS) streamBundle(ctx context.Context, b *Bundle, s *bundleSlices) {
	start := time.Now()
	log := f.log.With("bundle", b.Source)
	defer s.end()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	idle := time.AfterFunc(streamIdle, cancel)
	defer idle.Stop()
	rc, err := b.Open(ctx)
	if err != nil {
		if ctx.Err() == nil {
			log.Warn("start bundle unavailable; fetching its chunks whole", "err", err)
		}
		return
	}
	defer rc.Close()
	context.AfterFunc(ctx, func() { // idle for streamIdle, or the mount closing
		rc.Close()  // end a read of the stream
		s.mu.Lock() // and wake a stream waiting for reads
		s.cond.Broadcast()
		s.mu.Unlock()
	})
	d, err := newBundleDecoder(idleReader{rc, idle}, f.r, b.Trace)
	if err != nil {
		log.Warn("start bundle refused; fetching its chunks whole", "err", err)
		return
	}
	defer d.close()
	for {
		e, err := d.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if f.ctx.Err() == nil {
				if ctx.Err() != nil {
					err = fmt.Errorf("nothing came for %v", streamIdle)
				}
				log.Warn("start bundle ended early; fetching the rest whole", "entries", d.pos, "of", len(b.Trace.Chunks), "err", err)
			}
			return
		}
		if e.bad != nil {
			s.stats.bad.Add(1)
			log.Error("start bundle entry failed verification; its chunk is fetched whole when read",
				"id", chunk.ID(f.r.Chunks()[e.k].Sum).String(), "chunk", e.k, "err", e.bad)
		}
		idle.Stop() // waiting for reads is not idling
		if !s.add(ctx, e) {
			return
		}
		idle.Reset(streamIdle)
	}
	log.Info("start bundle streamed", "entries", s.stats.entries.Load(), "bad", s.stats.bad.Load(),
		"plain", s.stats.bytes.Load(), "elapsed", time.Since(start).Round(time.Millisecond))
}

// idleReader pushes back its timer on every read that brings something.
type idleReader struct {
	r io.Reader
	t *time.Timer
}

func (r idleReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if n > 0 {
		r.t.Reset(streamIdle)
	}
	return n, err
}
