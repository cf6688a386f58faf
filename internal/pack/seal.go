package pack

import (
	"context"
	"fmt"
	"maps"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/zosgrid/zos/internal/chunk"
	"github.com/zosgrid/zos/internal/chunker"
	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/flist"
	"github.com/zosgrid/zos/internal/store"
)

func (opt Options) withDefaults() (Options, *chunker.Chunker, error) {
	if opt.Workers <= 0 {
		opt.Workers = 2 * runtime.GOMAXPROCS(0)
	}
	if opt.Chunking == (chunker.Params{}) {
		opt.Chunking = chunker.Default
	}
	if opt.Level == 0 {
		opt.Level = zstd.SpeedFastest
	}
	for k := range opt.Meta {
		if k == MetaChunker || k == MetaStores {
			return opt, nil, fmt.Errorf("pack: Options.Meta may not set %s", k)
		}
	}
	ck, err := chunker.New(opt.Chunking)
	return opt, ck, err
}

// sealer seals chunks (BLAKE3, zstd, AES-GCM) and writes the new ones to
// the store with a pool of workers. Chunks are handed to it by one
// goroutine at a time; each gets a slot, and its ref lands at that slot
// whatever the completion order. It also reports progress.
type sealer struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	st     store.Store
	opt    Options
	start  time.Time

	jobs      chan job
	results   chan result
	wg        sync.WaitGroup
	collected chan struct{}
	refs      []chunk.Ref // written by the collector until finish
	bufs      *sync.Pool  // *[]byte chunk copies handed to workers
	next      int         // slots handed out

	// The tree's totals, known up front for a directory, at the end for
	// layers; the progress goroutine reads them.
	entries, files, totalBytes atomic.Int64
	layer, layers              atomic.Int64
	bytesRead, stored          atomic.Int64
	newChunks, doneChunks      atomic.Int64
	deltaChunks                atomic.Int64

	stopProgress, progressDone chan struct{}
}

type job struct {
	idx   int
	data  *[]byte     // from the pool; the worker returns it
	bases []chunk.Ref // with Options.Base: candidate delta bases
}

type result struct {
	idx int
	ref chunk.Ref
}

func newSealer(ctx context.Context, st store.Store, opt Options, base *baseIndex, start time.Time) *sealer {
	ctx, cancel := context.WithCancelCause(ctx)
	sl := &sealer{
		ctx: ctx, cancel: cancel, st: st, opt: opt, start: start,
		jobs:         make(chan job, opt.Workers*4),
		results:      make(chan result, opt.Workers*4),
		collected:    make(chan struct{}),
		bufs:         &sync.Pool{New: func() any { return new([]byte) }},
		stopProgress: make(chan struct{}),
		progressDone: make(chan struct{}),
	}
	codec := chunk.NewCodec(opt.Level)
	for w := 0; w < opt.Workers; w++ {
		sl.wg.Add(1)
		go sl.work(codec, base)
	}
	go func() {
		defer close(sl.collected)
		for r := range sl.results {
			for len(sl.refs) <= r.idx {
				sl.refs = append(sl.refs, chunk.Ref{})
			}
			sl.refs[r.idx] = r.ref
		}
	}()
	go func() {
		defer close(sl.progressDone)
		if opt.Progress == nil {
			return
		}
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				opt.Progress(sl.snapshot())
			case <-sl.stopProgress:
				return
			}
		}
	}()
	return sl
}

func (sl *sealer) work(codec *chunk.Codec, base *baseIndex) {
	defer sl.wg.Done()
	ctx, st := sl.ctx, sl.st
	var blob []byte // reused for every chunk this worker seals
	for j := range sl.jobs {
		sum := digest.Sum(*j.data)
		id := chunk.ID(sum)
		r := result{idx: j.idx, ref: chunk.Ref{Sum: sum, Size: uint32(len(*j.data))}}
		has, err := st.Has(ctx, id)
		if err != nil {
			sl.cancel(fmt.Errorf("store %s: %w", st, err))
			continue
		}
		if !has {
			delta := false
			if len(j.bases) > 0 {
				var bases []chunk.Base
				for _, ref := range j.bases {
					if b, ok := base.get(ctx, st, codec, ref); ok {
						bases = append(bases, b)
					}
				}
				var d []byte
				if d, delta = codec.SealDelta(blob, *j.data, sum, bases); delta {
					blob = d
					sl.deltaChunks.Add(1)
				}
			}
			if !delta {
				blob = codec.SealTo(blob, *j.data, sum)
			}
			if err := st.Put(ctx, id, blob); err != nil {
				sl.cancel(fmt.Errorf("store %s: %w", st, err))
				continue
			}
			sl.newChunks.Add(1)
			sl.stored.Add(int64(len(blob)))
		}
		sl.bufs.Put(j.data)
		sl.doneChunks.Add(1)
		select {
		case sl.results <- r:
		case <-ctx.Done():
		}
	}
}

// seal queues a chunk and returns its slot. One goroutine at a time.
func (sl *sealer) seal(data *[]byte, bases []chunk.Ref) (int, error) {
	select {
	case sl.jobs <- job{idx: sl.next, data: data, bases: bases}:
	case <-sl.ctx.Done():
		return 0, context.Cause(sl.ctx)
	}
	sl.next++
	return sl.next - 1, nil
}

// setTree records the totals of the final tree, for Stats.
func (sl *sealer) setTree(entries []flist.Entry) {
	var files, bytes int64
	for i := range entries {
		if !entries[i].IsLink() && entries[i].Kind() == flist.KindRegular {
			files++
			bytes += int64(entries[i].Size)
		}
	}
	sl.entries.Store(int64(len(entries)))
	sl.files.Store(files)
	sl.totalBytes.Store(bytes)
}

func (sl *sealer) snapshot() Stats {
	return Stats{
		Entries:     int(sl.entries.Load()),
		Files:       int(sl.files.Load()),
		TotalBytes:  sl.totalBytes.Load(),
		Bytes:       sl.bytesRead.Load(),
		Chunks:      int(sl.doneChunks.Load()),
		NewChunks:   int(sl.newChunks.Load()),
		DeltaChunks: int(sl.deltaChunks.Load()),
		StoredBytes: sl.stored.Load(),
		Layer:       int(sl.layer.Load()),
		Layers:      int(sl.layers.Load()),
		Elapsed:     time.Since(sl.start),
	}
}

// finish waits for every queued chunk and returns the refs by slot. serr
// is the producer's error, which wins.
func (sl *sealer) finish(serr error) ([]chunk.Ref, error) {
	close(sl.jobs)
	sl.wg.Wait()
	close(sl.results)
	<-sl.collected
	close(sl.stopProgress)
	<-sl.progressDone
	defer sl.cancel(nil)
	if serr != nil {
		return nil, serr
	}
	if err := context.Cause(sl.ctx); err != nil {
		return nil, err
	}
	if len(sl.refs) != sl.next {
		return nil, fmt.Errorf("pack: %d chunks sealed of %d", len(sl.refs), sl.next)
	}
	return sl.refs, nil
}

// encode writes the flist of entries, whose content stream s laid out.
func (sl *sealer) encode(entries []flist.Entry, s *streamer, refs []chunk.Ref, opt Options, final func(*Stats)) ([]byte, Stats, error) {
	chunks := make([]chunk.Ref, len(s.order))
	for i, slot := range s.order {
		chunks[i] = refs[slot]
	}
	meta := map[string][]byte{
		MetaChunker: fmt.Appendf(nil, "fastcdc %d %d %d", opt.Chunking.Min, opt.Chunking.Avg, opt.Chunking.Max),
	}
	if len(opt.Stores) > 0 {
		meta[MetaStores] = []byte(strings.Join(opt.Stores, "\n"))
	}
	maps.Copy(meta, opt.Meta)
	fl, err := flist.Encode(&flist.Image{Entries: entries, Chunks: chunks, Meta: meta})
	if err != nil {
		return nil, Stats{}, fmt.Errorf("pack: %w", err)
	}
	stats := sl.snapshot()
	stats.DupFiles = s.dups
	stats.MetaBytes = len(fl)
	if final != nil {
		final(&stats)
	}
	if opt.Progress != nil {
		opt.Progress(stats)
	}
	return fl, stats, nil
}
