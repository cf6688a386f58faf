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

	jobs    chan job
	results chan result
	wg      sync.WaitGroup // the workers that end last (sealers when batched)

	// With a store that answers batched membership queries: hashers send
	// hashed chunks to the batcher, which asks the store about many at
	// once and sends the missing ones to the sealers.
	hashed    chan job
	seals     chan job
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
	sum   digest.ID   // once hashed
}

// missinger is a store that answers "which of these do you lack?" for many
// chunks in one round trip (httpstore.Store: a hub or a zos store server).
// Asking one Has per chunk costs a round trip each.
type missinger interface {
	Missing(ctx context.Context, ids []digest.ID) ([]digest.ID, error)
}

// Batches of membership queries: at most batchMax chunks or batchBytes of
// chunk data held, and no chunk waits more than batchWait for its batch.
const (
	batchMax   = 1024
	batchBytes = 32 << 20
	batchWait  = 20 * time.Millisecond
)

// jobsPerWorker is how many chunks may wait for a worker, per worker. The
// one streamer that fills the queue shares the CPUs with the workers and
// is sometimes off one for a scheduler slice or blocked in a read; a deep
// queue keeps the workers busy meanwhile (big: with 4 per worker the
// workers waited 1.8 s in all on an empty queue, with 32 0.26 s). It
// costs up to 32 chunks of memory per worker (about 2.3 MB on average,
// 8 MiB at most).
const jobsPerWorker = 32

type result struct {
	idx int
	ref chunk.Ref
}

func newSealer(ctx context.Context, st store.Store, opt Options, base *baseIndex, start time.Time) *sealer {
	ctx, cancel := context.WithCancelCause(ctx)
	sl := &sealer{
		ctx: ctx, cancel: cancel, st: st, opt: opt, start: start,
		jobs:         make(chan job, opt.Workers*jobsPerWorker),
		results:      make(chan result, opt.Workers*4),
		collected:    make(chan struct{}),
		bufs:         &sync.Pool{New: func() any { return new([]byte) }},
		stopProgress: make(chan struct{}),
		progressDone: make(chan struct{}),
	}
	codec := chunk.NewCodec(opt.Level)
	if ms, ok := st.(missinger); ok {
		sl.hashed = make(chan job, opt.Workers*4)
		sl.seals = make(chan job, opt.Workers*4)
		var hashers sync.WaitGroup
		for w := 0; w < opt.Workers; w++ {
			hashers.Add(1)
			go sl.hash(&hashers)
			sl.wg.Add(1)
			go sl.sealMissing(codec, base)
		}
		go func() {
			hashers.Wait()
			close(sl.hashed)
		}()
		go sl.batch(ms)
	} else {
		for w := 0; w < opt.Workers; w++ {
			sl.wg.Add(1)
			go sl.work(codec, base)
		}
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
		j.sum = digest.Sum(*j.data)
		has, err := st.Has(ctx, chunk.ID(j.sum))
		if err != nil {
			sl.cancel(fmt.Errorf("store %s: %w", st, err))
			sl.bufs.Put(j.data)
			continue
		}
		if !has {
			if blob, err = sl.store(codec, base, j, blob); err != nil {
				sl.cancel(fmt.Errorf("store %s: %w", st, err))
				sl.bufs.Put(j.data)
				continue
			}
		}
		sl.done(j)
	}
}

// store seals j's chunk (as a delta against a base if one fits) and puts
// it; blob is scratch space, returned for reuse.
func (sl *sealer) store(codec *chunk.Codec, base *baseIndex, j job, blob []byte) ([]byte, error) {
	ctx, st := sl.ctx, sl.st
	delta := false
	if len(j.bases) > 0 {
		var bases []chunk.Base
		for _, ref := range j.bases {
			if b, ok := base.get(ctx, st, codec, ref); ok {
				bases = append(bases, b)
			}
		}
		var d []byte
		if d, delta = codec.SealDelta(blob, *j.data, j.sum, bases); delta {
			blob = d
			sl.deltaChunks.Add(1)
		}
	}
	if !delta {
		blob = codec.SealTo(blob, *j.data, j.sum)
	}
	if err := st.Put(ctx, chunk.ID(j.sum), blob); err != nil {
		return blob, err
	}
	sl.newChunks.Add(1)
	sl.stored.Add(int64(len(blob)))
	return blob, nil
}

// done records j's ref at its slot and gives its buffer back.
func (sl *sealer) done(j job) {
	r := result{idx: j.idx, ref: chunk.Ref{Sum: j.sum, Size: uint32(len(*j.data))}}
	sl.bufs.Put(j.data)
	sl.doneChunks.Add(1)
	select {
	case sl.results <- r:
	case <-sl.ctx.Done():
	}
}

// hash fingerprints chunks for the batcher.
func (sl *sealer) hash(wg *sync.WaitGroup) {
	defer wg.Done()
	for j := range sl.jobs {
		if sl.ctx.Err() != nil {
			sl.bufs.Put(j.data)
			continue
		}
		j.sum = digest.Sum(*j.data)
		select {
		case sl.hashed <- j:
		case <-sl.ctx.Done():
			sl.bufs.Put(j.data)
		}
	}
}

// sealMissing seals and stores the chunks the batcher found missing.
func (sl *sealer) sealMissing(codec *chunk.Codec, base *baseIndex) {
	defer sl.wg.Done()
	var blob []byte
	for j := range sl.seals {
		if sl.ctx.Err() != nil {
			sl.bufs.Put(j.data)
			continue
		}
		var err error
		if blob, err = sl.store(codec, base, j, blob); err != nil {
			sl.cancel(fmt.Errorf("store %s: %w", sl.st, err))
			sl.bufs.Put(j.data)
			continue
		}
		sl.done(j)
	}
}

// batch gathers hashed chunks and asks the store which it lacks, one
// request per batch. A chunk this pack has already found present, or sent
// to be stored, is not asked about again. The order of slots, and so the
// flist, does not depend on how chunks fall into batches.
func (sl *sealer) batch(ms missinger) {
	defer close(sl.seals)
	ctx := sl.ctx
	known := map[digest.ID]bool{}
	var pending []job
	var held int
	var ids []digest.ID
	flush := func() {
		defer func() { pending, held = pending[:0], 0 }()
		if ctx.Err() == nil {
			ids = ids[:0]
			asked := map[digest.ID]bool{}
			for _, j := range pending {
				if id := chunk.ID(j.sum); !known[id] && !asked[id] {
					asked[id] = true
					ids = append(ids, id)
				}
			}
			var missing []digest.ID
			var err error
			if len(ids) > 0 {
				missing, err = ms.Missing(ctx, ids)
			}
			if err == nil {
				lack := make(map[digest.ID]bool, len(missing))
				for _, id := range missing {
					lack[id] = true
				}
				for _, j := range pending {
					id := chunk.ID(j.sum)
					if lack[id] {
						delete(lack, id) // the first of equal chunks is stored
						known[id] = true
						select {
						case sl.seals <- j:
							continue
						case <-ctx.Done():
							sl.bufs.Put(j.data)
							continue
						}
					}
					known[id] = true
					sl.done(j)
				}
				return
			}
			sl.cancel(fmt.Errorf("store %s: %w", sl.st, err))
		}
		for _, j := range pending {
			sl.bufs.Put(j.data)
		}
	}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case j, ok := <-sl.hashed:
			if !ok {
				flush()
				return
			}
			pending = append(pending, j)
			held += len(*j.data)
			if len(pending) == 1 {
				timer.Reset(batchWait)
			}
			if len(pending) >= batchMax || held >= batchBytes {
				timer.Stop()
				flush()
			}
		case <-timer.C:
			flush()
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
