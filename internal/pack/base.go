package pack

import (
	"context"
	"path/filepath"
	"strings"
	"sync"

	"github.com/zosgrid/zos/internal/chunk"
	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/flist"
	"github.com/zosgrid/zos/internal/store"
)

// span is a file's place in the content stream being packed.
type span struct {
	start, size uint64
	path        string // relative to the packed root
}

// track records a regular file just placed in the stream (with a base
// only): entry i of the tree, named by its path relative to the root
// (paths, for Layers) or its source file under root (Dir).
func (s *streamer) track(e *flist.Entry, i int, n *flist.Node) {
	if s.base == nil {
		return
	}
	var rel string
	if s.paths != nil {
		rel = s.paths[i]
	} else {
		r, err := filepath.Rel(s.root, n.Source)
		if err != nil {
			return
		}
		rel = filepath.ToSlash(r)
	}
	s.spans = append(s.spans, span{start: e.Offset, size: e.Size, path: rel})
}

// basesFor returns the delta base candidates of the chunk at stream range
// [pos, pos+n): the file holding most of the chunk is looked up by path in
// the base image, the chunk's position in the file is mapped proportionally
// into the base's copy of the file, and the (at most chunk.MaxBases) base
// chunks overlapping the window [p-n/2, p+n) there are the candidates.
// Proportional mapping follows a file that grew or shrank between versions;
// the half-chunk margin absorbs the drift (docs/FORMAT.md has the numbers).
func (s *streamer) basesFor(pos, n uint64) []chunk.Ref {
	end := pos + n
	// Drop spans that end before this chunk (chunks come in stream order).
	k := 0
	for k < len(s.spans) && s.spans[k].start+s.spans[k].size <= pos {
		k++
	}
	s.spans = s.spans[k:]
	var best *span
	var bestN uint64
	for i := range s.spans {
		sp := &s.spans[i]
		if sp.start >= end {
			break
		}
		lo, hi := max(sp.start, pos), min(sp.start+sp.size, end)
		if hi > lo && hi-lo > bestN {
			best, bestN = sp, hi-lo
		}
	}
	if best == nil {
		return nil
	}
	bf, ok := s.base.files[best.path]
	if !ok || bf.size == 0 {
		return nil
	}
	rel := max(pos, best.start) - best.start
	p := bf.start + uint64(float64(rel)*float64(bf.size)/float64(best.size))
	lo, hi := bf.start, bf.start+bf.size
	if p > lo+n/2 {
		lo = p - n/2
	}
	hi = min(hi, p+n)
	r := s.base.r
	var refs []chunk.Ref
	for i := r.ChunkAt(lo); i < len(r.Chunks()) && r.ChunkStart(i) < hi && len(refs) < chunk.MaxBases; i++ {
		refs = append(refs, r.Chunks()[i])
	}
	return refs
}

// baseIndex is the base image's regular files by path, and a small cache
// of base chunk plaintexts shared by the workers (neighbouring new chunks
// share bases).
type baseIndex struct {
	r     *flist.Reader
	files map[string]span

	mu    sync.Mutex
	cache map[digest.ID]*baseChunk
	fifo  []digest.ID
}

type baseChunk struct {
	once sync.Once
	b    chunk.Base
	ok   bool
}

// baseCacheChunks bounds the cache: 64 chunks of at most chunker.Default.Max.
const baseCacheChunks = 64

func newBaseIndex(r *flist.Reader) (*baseIndex, error) {
	bi := &baseIndex{r: r, files: map[string]span{}, cache: map[digest.ID]*baseChunk{}}
	err := r.Walk(func(p string, _ uint64, e *flist.Entry) error {
		t, err := r.Resolve(e)
		if err != nil {
			return err
		}
		if t.Kind() == flist.KindRegular {
			bi.files[strings.TrimPrefix(p, "/")] = span{start: t.Offset, size: t.Size}
		}
		return nil
	})
	return bi, err
}

// get returns base chunk ref's plaintext and depth from st. A base that
// cannot be read is no base (the chunk is stored whole): ok is false.
func (bi *baseIndex) get(ctx context.Context, st store.Store, c *chunk.Codec, ref chunk.Ref) (chunk.Base, bool) {
	bi.mu.Lock()
	e, hit := bi.cache[ref.Sum]
	if !hit {
		e = &baseChunk{}
		bi.cache[ref.Sum] = e
		bi.fifo = append(bi.fifo, ref.Sum)
		if len(bi.fifo) > baseCacheChunks {
			delete(bi.cache, bi.fifo[0])
			bi.fifo = bi.fifo[1:]
		}
	}
	bi.mu.Unlock()
	e.once.Do(func() {
		plain, depth, err := store.FetchDepth(ctx, st, c, ref)
		e.b, e.ok = chunk.Base{Ref: ref, Plain: plain, Depth: depth}, err == nil
	})
	return e.b, e.ok
}
