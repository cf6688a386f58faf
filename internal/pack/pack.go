// Package pack turns a directory tree into an flist and chunks in a store.
//
// # Pipeline
//
// A walk reads the tree (never following symlinks) and lays it out in the
// flist's order. One streamer goroutine then reads regular files in that
// order into the content stream and cuts it with the chunker: files smaller
// than the chunker's average are concatenated (small files share chunks:
// it halves the chunk count of a Debian root filesystem), larger files start
// and end on a cut, so the same large file chunks the same way in any image.
// Small files with equal content are stored once. Workers seal chunks
// (BLAKE3, zstd, AES-GCM) and write the new ones to the store in parallel.
//
// # Determinism
//
// Cut points come from one sequential pass and chunks are placed by their
// index, never by completion order, so the flist is byte-identical whatever
// the worker count or machine.
package pack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
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

// Options tune a pack. The zero value is usable.
type Options struct {
	Workers  int               // sealing and upload workers; default 2 x GOMAXPROCS (hides store write latency)
	Chunking chunker.Params    // default chunker.Default
	Level    zstd.EncoderLevel // default zstd.SpeedFastest (docs/FORMAT.md: why)
	// Stores are the store URLs recorded in the flist (without secrets).
	Stores []string
	// Progress, if set, is called about every 200ms and once at the end.
	Progress func(Stats)
	// Base, if set, is an earlier image whose chunks are in the target store
	// (typically the previous version of this one). A new chunk is then
	// stored as a delta against the base chunks at the same place in the
	// same file, when that is at least a quarter smaller (package chunk).
	// The flist does not change; only how new chunks are stored.
	Base *flist.Reader
}

// Stats describe a pack, during and after it.
type Stats struct {
	Entries     int
	Files       int
	Bytes       int64 // content bytes read
	TotalBytes  int64 // content bytes the tree holds
	DupFiles    int   // small files stored once for several names
	Chunks      int
	NewChunks   int
	StoredBytes int64 // blob bytes written to the store
	DeltaChunks int   // new chunks stored as deltas against Base
	MetaBytes   int
	Elapsed     time.Duration
}

// MetaChunker is the metadata key that records the chunking parameters.
const (
	MetaChunker = "zos.chunker"
	MetaStores  = "zos.stores"
)

type job struct {
	idx   int
	data  *[]byte     // from the streamer's pool; the worker returns it
	bases []chunk.Ref // with Options.Base: candidate delta bases
}

type result struct {
	idx  int
	ref  chunk.Ref
	neu  bool
	blob int
}

// Dir packs the tree at root into st and returns the encoded flist.
func Dir(ctx context.Context, root string, st store.Store, opt Options) ([]byte, Stats, error) {
	start := time.Now()
	if opt.Workers <= 0 {
		opt.Workers = 2 * runtime.GOMAXPROCS(0)
	}
	if opt.Chunking == (chunker.Params{}) {
		opt.Chunking = chunker.Default
	}
	if opt.Level == 0 {
		opt.Level = zstd.SpeedFastest
	}
	ck, err := chunker.New(opt.Chunking)
	if err != nil {
		return nil, Stats{}, err
	}
	tree, count, err := walk(root)
	if err != nil {
		return nil, Stats{}, err
	}
	var base *baseIndex
	if opt.Base != nil {
		if base, err = newBaseIndex(opt.Base); err != nil {
			return nil, Stats{}, fmt.Errorf("pack: base image: %w", err)
		}
	}
	entries, nodes := flist.Flatten(tree)

	var stats Stats
	stats.Entries = count
	var bytesRead, stored atomic.Int64
	var newChunks, doneChunks, deltaChunks atomic.Int64
	for i := range entries {
		if !entries[i].IsLink() && entries[i].Kind() == flist.KindRegular {
			stats.Files++
			stats.TotalBytes += int64(entries[i].Size)
		}
	}

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	jobs := make(chan job, opt.Workers*4)
	results := make(chan result, opt.Workers*4)
	codec := chunk.NewCodec(opt.Level)
	bufs := &sync.Pool{New: func() any { return new([]byte) }}

	var wg sync.WaitGroup
	for w := 0; w < opt.Workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var blob []byte // reused for every chunk this worker seals
			for j := range jobs {
				sum := digest.Sum(*j.data)
				id := chunk.ID(sum)
				r := result{idx: j.idx, ref: chunk.Ref{Sum: sum, Size: uint32(len(*j.data))}}
				has, err := st.Has(ctx, id)
				if err != nil {
					cancel(fmt.Errorf("store %s: %w", st, err))
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
							deltaChunks.Add(1)
						}
					}
					if !delta {
						blob = codec.SealTo(blob, *j.data, sum)
					}
					if err := st.Put(ctx, id, blob); err != nil {
						cancel(fmt.Errorf("store %s: %w", st, err))
						continue
					}
					r.neu, r.blob = true, len(blob)
					newChunks.Add(1)
					stored.Add(int64(len(blob)))
				}
				bufs.Put(j.data)
				doneChunks.Add(1)
				select {
				case results <- r:
				case <-ctx.Done():
				}
			}
		}()
	}

	var refs []chunk.Ref
	collected := make(chan struct{})
	go func() {
		defer close(collected)
		for r := range results {
			for len(refs) <= r.idx {
				refs = append(refs, chunk.Ref{})
			}
			refs[r.idx] = r.ref
		}
	}()

	stopProgress := make(chan struct{})
	progressDone := make(chan struct{})
	snapshot := func() Stats {
		s := stats
		s.Bytes = bytesRead.Load()
		s.Chunks = int(doneChunks.Load())
		s.NewChunks = int(newChunks.Load())
		s.DeltaChunks = int(deltaChunks.Load())
		s.StoredBytes = stored.Load()
		s.Elapsed = time.Since(start)
		return s
	}
	go func() {
		defer close(progressDone)
		if opt.Progress == nil {
			return
		}
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				opt.Progress(snapshot())
			case <-stopProgress:
				return
			}
		}
	}()

	s := streamer{ck: ck, jobs: jobs, ctx: ctx, read: &bytesRead, bufs: bufs, root: root, base: base}
	serr := s.run(entries, nodes)
	close(jobs)
	wg.Wait()
	close(results)
	<-collected
	close(stopProgress)
	<-progressDone
	if serr != nil {
		return nil, Stats{}, serr
	}
	if err := context.Cause(ctx); err != nil {
		return nil, Stats{}, err
	}
	if len(refs) != s.next {
		return nil, Stats{}, fmt.Errorf("pack: %d chunks sealed of %d", len(refs), s.next)
	}
	stats.DupFiles = s.dups
	meta := map[string][]byte{
		MetaChunker: fmt.Appendf(nil, "fastcdc %d %d %d", opt.Chunking.Min, opt.Chunking.Avg, opt.Chunking.Max),
	}
	if len(opt.Stores) > 0 {
		meta[MetaStores] = []byte(strings.Join(opt.Stores, "\n"))
	}
	fl, err := flist.Encode(&flist.Image{Entries: entries, Chunks: refs, Meta: meta})
	if err != nil {
		return nil, Stats{}, fmt.Errorf("pack: %w", err)
	}
	stats = snapshot()
	stats.DupFiles = s.dups
	stats.MetaBytes = len(fl)
	if opt.Progress != nil {
		opt.Progress(stats)
	}
	return fl, stats, nil
}

// streamer cuts the content stream. It owns the pending bytes and the
// offset bookkeeping; it sets each regular entry's Offset.
//
// Its buffer is allocated once and reused: chunks are copied out into
// pooled buffers that the workers give back, so packing allocates no
// memory per file or per chunk once it is warm.
type streamer struct {
	ck   *chunker.Chunker
	jobs chan<- job
	ctx  context.Context
	read *atomic.Int64
	bufs *sync.Pool // *[]byte chunk copies handed to workers
	root string
	base *baseIndex // nil without Options.Base
	// spans are the files in the stream not yet wholly emitted, in stream
	// order (kept only with a base, to find each chunk's delta bases).
	spans []span

	arena []byte // the backing array, reused
	buf   []byte // pending bytes, not yet cut: a window of base
	pos   uint64 // stream offset of buf[0]
	next  int    // index of the next chunk
	dups  int
}

// readPiece is how much of a large file the streamer reads at once.
const readPiece = 4 << 20

func (s *streamer) emit(n int) error {
	data := s.bufs.Get().(*[]byte)
	*data = append((*data)[:0], s.buf[:n]...)
	var bases []chunk.Ref
	if s.base != nil {
		bases = s.basesFor(s.pos, uint64(n))
	}
	select {
	case s.jobs <- job{idx: s.next, data: data, bases: bases}:
	case <-s.ctx.Done():
		return context.Cause(s.ctx)
	}
	s.next++
	s.pos += uint64(n)
	s.buf = s.buf[n:]
	return nil
}

// cut emits chunks while at least Max bytes are pending, or all of them
// when final.
func (s *streamer) cut(final bool) error {
	max := s.ck.Params().Max
	for len(s.buf) >= max || (final && len(s.buf) > 0) {
		if err := s.emit(s.ck.Cut(s.buf)); err != nil {
			return err
		}
	}
	return nil
}

// compact moves the pending bytes to the start of the backing array.
func (s *streamer) compact() {
	n := copy(s.arena, s.buf)
	s.buf = s.arena[:n]
}

// room makes sure at least n bytes can be appended to buf without moving it.
func (s *streamer) room(n int) {
	if cap(s.buf)-len(s.buf) >= n {
		return
	}
	s.compact()
	if cap(s.buf)-len(s.buf) >= n {
		return
	}
	nb := make([]byte, len(s.buf), len(s.buf)+n+s.ck.Params().Max)
	copy(nb, s.buf)
	s.arena = nb[:cap(nb)]
	s.buf = nb
}

func (s *streamer) run(entries []flist.Entry, nodes []*flist.Node) error {
	small := uint64(s.ck.Params().Avg)
	seen := map[digest.ID]uint64{} // content of small files -> stream offset
	s.room(readPiece)
	for i := range entries {
		e := &entries[i]
		if e.IsLink() || e.Kind() != flist.KindRegular || e.Size == 0 {
			continue
		}
		path := nodes[i].Source
		if e.Size < small {
			// Read straight into the pending buffer; drop it again if the
			// content is already in the stream.
			s.room(int(e.Size) + 1)
			at := len(s.buf)
			n, err := readSmall(path, s.buf[at:at+int(e.Size)+1])
			if err != nil {
				return err
			}
			if uint64(n) != e.Size {
				return fmt.Errorf("%s changed while packing (%d bytes, was %d): pack a quiescent tree or a snapshot", path, n, e.Size)
			}
			s.read.Add(int64(n))
			sum := digest.Sum(s.buf[at : at+n])
			if off, ok := seen[sum]; ok {
				e.Offset = off
				s.dups++
				continue
			}
			e.Offset = s.pos + uint64(at)
			seen[sum] = e.Offset
			s.track(e, nodes[i])
			s.buf = s.buf[:at+n]
			if err := s.cut(false); err != nil {
				return err
			}
			continue
		}
		// A large file: cut before and after it.
		if err := s.cut(true); err != nil {
			return err
		}
		e.Offset = s.pos
		s.track(e, nodes[i])
		n, err := s.readLarge(path)
		if err != nil {
			return err
		}
		if n != e.Size {
			return fmt.Errorf("%s changed while packing (%d bytes, was %d): pack a quiescent tree or a snapshot", path, n, e.Size)
		}
		if err := s.cut(true); err != nil {
			return err
		}
	}
	return s.cut(true)
}

// readSmall reads the whole file at path into b, which has room for one
// byte more than the file's expected size (to notice growth).
func readSmall(path string, b []byte) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	n, err := io.ReadFull(f, b)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return n, fmt.Errorf("read %s: %w", path, err)
	}
	return n, nil
}

func (s *streamer) readLarge(path string) (uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	var total uint64
	for {
		s.room(readPiece)
		n, err := f.Read(s.buf[len(s.buf):cap(s.buf)])
		s.buf = s.buf[:len(s.buf)+n]
		total += uint64(n)
		s.read.Add(int64(n))
		if errors.Is(err, io.EOF) || (n == 0 && err == nil) {
			return total, nil
		}
		if err != nil {
			return total, fmt.Errorf("read %s: %w", path, err)
		}
		if err := s.cut(false); err != nil {
			return total, err
		}
	}
}
