package hub

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zosgrid/zos/internal/chunk"
	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/flist"
	"github.com/zosgrid/zos/internal/hub/object"
	"github.com/zosgrid/zos/internal/store"
)

// Recompression (docs/HUB.md): packers seal chunks at a fast zstd level
// (1 by default, for pack speed), and every node then fetches those
// blobs. The hub holds each flist it serves, so it knows every chunk's
// fingerprint, and with it the chunk's key: in the background it opens
// each whole blob of a pushed flist, seals the plaintext again at a high
// level and, when that is smaller, puts it in place of the old blob under
// the same ID. IDs, fingerprints and flists do not change; a reader gets
// the old blob or the new one and both open to the same verified
// plaintext. Delta blobs are left as they are.

// DefaultRecompressLevel is the level `zos hub serve` re-seals at: on
// 64 KiB chunks of big it gives 83% of level 1's bytes, level 19's
// ratio within 0.2%, at twice level 19's speed (docs/BENCHMARKS.md).
const DefaultRecompressLevel = 16

const recompressedPrefix = "recompressed/"

// recompressedObj records how far the recompression of flist d got.
func recompressedObj(d digest.ID) string { return recompressedPrefix + d.String() }

// recompressMark is the record of one flist's recompression: Next is the
// first chunk not yet done, Done says all are.
type recompressMark struct {
	Level  int   `json:"level"`
	Next   int   `json:"next"`
	Done   bool  `json:"done"`
	Chunks int   `json:"chunks_replaced"`
	Before int64 `json:"bytes_before"`
	After  int64 `json:"bytes_after"`
}

// minGain is the least a re-sealed blob must save, as a share of the old
// one (1/minGain), to be put in its place.
const minGain = 100

// markEvery is how many chunks pass between progress records.
const markEvery = 512

// retryRecompress is how long a flist whose recompression a store fault
// stopped waits before it is queued again.
var retryRecompress = time.Minute

// rescanRecompress is how often the recompressor lists the stored flists
// again, for those pushed through another hub over the same backend: a
// flist older than this with no record is queued (a younger one is left
// to the hub that took its push, which queued it at once).
var rescanRecompress = 10 * time.Minute

// recompressor re-seals the chunks of flists, one flist at a time, in
// one goroutine (Run) at the lowest CPU priority.
type recompressor struct {
	h     *Hub
	level int
	codec *chunk.Codec
	rep   store.Replacer

	mu      sync.Mutex
	queue   []digest.ID
	queued  map[digest.ID]bool
	wake    chan struct{}
	seen    map[digest.ID]bool // chunks this process already re-sealed or kept
	working bool               // run is listing flists or recompressing one
}

// newRecompressor returns nil when level is 0 or the chunk store cannot
// replace blobs.
func newRecompressor(h *Hub, level int) *recompressor {
	if level == 0 {
		return nil
	}
	rep, ok := h.b.Chunks.(store.Replacer)
	if !ok {
		h.log.Warn("chunks are not recompressed: the chunk store cannot replace blobs", "store", h.b.Chunks.String())
		return nil
	}
	level = min(max(level, chunk.MinLevel), chunk.MaxLevel)
	return &recompressor{h: h, level: level, codec: chunk.NewCodec(level), rep: rep,
		queued: map[digest.ID]bool{}, wake: make(chan struct{}, 1), seen: map[digest.ID]bool{},
		working: true} // until run has listed the stored flists
}

// add queues flist d.
func (rc *recompressor) add(d digest.ID) {
	if rc == nil {
		return
	}
	rc.mu.Lock()
	if !rc.queued[d] {
		rc.queued[d] = true
		rc.queue = append(rc.queue, d)
		rc.gaugeLocked()
	}
	rc.mu.Unlock()
	select {
	case rc.wake <- struct{}{}:
	default:
	}
}

func (rc *recompressor) gaugeLocked() {
	n := len(rc.queue)
	if rc.working {
		n++
	}
	rc.h.metrics.recompressQueue.Set(float64(n))
}

// idle reports that no flist is queued or being recompressed.
func (rc *recompressor) idle() bool {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.queue) == 0 && !rc.working
}

// run queues every stored flist not yet recompressed at rc's level, then
// recompresses queued flists until ctx ends, listing the stored flists
// again every rescanRecompress. It holds its goroutine on one
// OS thread niced to 19, so zstd's CPU goes to serving first.
func (rc *recompressor) run(ctx context.Context) {
	runtime.LockOSThread() // never unlocked: the niced thread exits with the goroutine
	if err := unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), 19); err != nil {
		rc.h.log.Warn("recompression runs at normal priority", "err", err)
	}
	rc.scan(ctx, false)
	rc.mu.Lock()
	rc.working = false
	rc.gaugeLocked()
	rc.mu.Unlock()
	rescan := time.NewTicker(rescanRecompress)
	defer rescan.Stop()
	for {
		rc.mu.Lock()
		var d digest.ID
		next := len(rc.queue) > 0
		if next {
			d = rc.queue[0]
			rc.queue = rc.queue[1:]
			delete(rc.queued, d)
			rc.working = true
			rc.gaugeLocked()
		}
		rc.mu.Unlock()
		if next {
			if err := rc.flist(ctx, d); err != nil && ctx.Err() == nil {
				// A store fault: try again later, from the last record.
				rc.h.log.Warn("recompressing flist; trying again in a minute", "flist", d, "err", err)
				time.AfterFunc(retryRecompress, func() { rc.add(d) })
			}
			rc.mu.Lock()
			rc.working = false
			rc.gaugeLocked()
			rc.mu.Unlock()
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-rc.wake:
		case <-rescan.C:
			rc.scan(ctx, true)
		}
	}
}

// scan queues the stored flists: all of them at start-up (flist skips
// those done at rc's level), and on a rescan those older than
// rescanRecompress that have no record.
func (rc *recompressor) scan(ctx context.Context, rescan bool) {
	marked := map[string]bool{}
	var err error
	if rescan {
		err = rc.h.b.Objects.List(ctx, recompressedPrefix, func(o object.Info) error {
			marked[strings.TrimPrefix(o.Name, recompressedPrefix)] = true
			return nil
		})
	}
	if err == nil {
		old := rc.h.opt.Now().Add(-rescanRecompress)
		err = rc.h.b.Objects.List(ctx, flistsPrefix, func(o object.Info) error {
			name := strings.TrimPrefix(o.Name, flistsPrefix)
			if rescan && (marked[name] || o.ModTime.After(old)) {
				return nil
			}
			if d, err := digest.Parse(name); err == nil {
				rc.add(d)
			}
			return nil
		})
	}
	if err != nil && ctx.Err() == nil {
		rc.h.log.Warn("listing flists to recompress", "err", err)
	}
}

// flist recompresses the chunks of flist d from where its record says the
// last run stopped, recording its progress every markEvery chunks.
func (rc *recompressor) flist(ctx context.Context, d digest.ID) error {
	var m recompressMark
	switch err := rc.h.getJSON(ctx, recompressedObj(d), &m); {
	case err == nil && m.Level >= rc.level && m.Done:
		return nil
	case err == nil && m.Level == rc.level:
	case err == nil || isNotFound(err):
		m = recompressMark{Level: rc.level}
	default:
		return err
	}
	fl, err := rc.h.storedFlist(ctx, d)
	switch {
	case isNotFound(err):
		return nil // collected since it was queued
	case errors.Is(err, errBadFlist): // trying again would not help
		rc.h.log.Warn("stored flist not recompressed", "flist", d, "err", err)
		return nil
	case err != nil:
		return err
	}
	refs := fl.Chunks()
	start, saved := time.Now(), m.Before-m.After
	for k := m.Next; k < len(refs); k++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		before, after, err := rc.chunk(ctx, refs[k])
		if err != nil {
			return err
		}
		if after < before {
			m.Chunks++
			m.Before += int64(before)
			m.After += int64(after)
		}
		if m.Next = k + 1; m.Next%markEvery == 0 {
			if err := rc.h.putJSON(ctx, recompressedObj(d), m); err != nil {
				return err
			}
		}
	}
	m.Done = true
	if err := rc.h.putJSON(ctx, recompressedObj(d), m); err != nil {
		return err
	}
	rc.h.log.Info("flist recompressed", "flist", d, "level", rc.level, "chunks", len(refs),
		"replaced", m.Chunks, "saved_bytes", m.Before-m.After-saved, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// chunk re-seals one chunk, putting the new blob in place of the old when
// it saves at least 1/minGain. It returns the old and new sizes (equal
// when the blob is kept). A chunk missing or damaged in the store, or a
// delta, is left for readers and the GC to find: recompression only
// rewrites blobs it has opened and verified.
func (rc *recompressor) chunk(ctx context.Context, ref flist.Chunk) (int, int, error) {
	id := chunk.ID(ref.Sum)
	rc.mu.Lock()
	done := rc.seen[id]
	rc.mu.Unlock()
	if done {
		return 0, 0, nil
	}
	blob, err := rc.h.b.Chunks.Get(ctx, id)
	var inv *chunk.Invalid
	if errors.Is(err, store.ErrNotFound) || errors.As(err, &inv) {
		rc.h.log.Warn("chunk not recompressed", "chunk", id.Short(), "err", err)
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, err
	}
	old := len(blob)
	if depth, _, err := chunk.Deps(blob); err != nil || depth > 0 {
		rc.remember(id)
		return old, old, nil
	}
	plain, err := rc.codec.Open(ref, blob)
	if err != nil {
		rc.h.log.Warn("chunk not recompressed", "chunk", id.Short(), "err", err)
		return old, old, nil
	}
	sealed := rc.codec.SealSum(plain, ref.Sum)
	if len(sealed)+len(sealed)/minGain >= old {
		rc.remember(id)
		return old, old, nil
	}
	if _, err := rc.codec.Open(ref, sealed); err != nil {
		return 0, 0, err // a fault of this process (memory, the library): stop
	}
	if err := rc.rep.Replace(ctx, id, sealed); err != nil {
		return 0, 0, err
	}
	rc.remember(id)
	rc.h.metrics.recompressed.Inc()
	rc.h.metrics.recompressSaved.Add(float64(old - len(sealed)))
	return old, len(sealed), nil
}

// remember notes a chunk done, so flists sharing it do not open it again;
// the set is dropped when it grows past a million IDs (32 MiB).
func (rc *recompressor) remember(id digest.ID) {
	rc.mu.Lock()
	if len(rc.seen) >= 1<<20 {
		rc.seen = map[digest.ID]bool{}
	}
	rc.seen[id] = true
	rc.mu.Unlock()
}
