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
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zosgrid/zos/internal/chunk"
	"github.com/zosgrid/zos/internal/chunker"
	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/flist"
	"github.com/zosgrid/zos/internal/store"
)

// Options tune a pack. The zero value is usable.
type Options struct {
	Workers  int            // sealing and upload workers; default 2 x GOMAXPROCS (hides store write latency)
	Chunking chunker.Params // default chunker.Default
	Level    int            // zstd level, default chunk.DefaultLevel (docs/FORMAT.md: why)
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
	// Meta holds more META keys to record (zos.oci.config for an image);
	// not MetaChunker or MetaStores.
	Meta map[string][]byte
	// TempDir is where Layers spools small files' content once it
	// outgrows memory (default os.TempDir()).
	TempDir string

	spoolMemory int64 // tests: default spoolMemory
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
	Layer       int // layers: the one being applied (1-based)
	Layers      int // layers: how many the image has
	Orphans     int // layers: chunks of content a later layer replaced (left for the GC)
	Elapsed     time.Duration
}

// MetaChunker is the metadata key that records the chunking parameters.
const (
	MetaChunker = "zos.chunker"
	MetaStores  = "zos.stores"
)

// Dir packs the tree at root into st and returns the encoded flist.
func Dir(ctx context.Context, root string, st store.Store, opt Options) ([]byte, Stats, error) {
	start := time.Now()
	opt, ck, err := opt.withDefaults()
	if err != nil {
		return nil, Stats{}, err
	}
	tree, _, err := walk(root)
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
	sl := newSealer(ctx, st, opt, base, start)
	sl.setTree(entries)
	s := &streamer{ck: ck, sl: sl, read: &sl.bytesRead, root: root, base: base}
	serr := s.run(entries, nodes, dirSource(nodes))
	refs, err := sl.finish(serr)
	if err != nil {
		return nil, Stats{}, err
	}
	return sl.encode(entries, s, refs, opt, nil)
}

// dirSource reads regular files' content from the walked tree.
type dirSource []*flist.Node

func (d dirSource) small(i int, b []byte) (int, error) { return readSmall(d[i].Source, b) }
func (d dirSource) large(s *streamer, i int) (uint64, error) {
	return s.readLarge(d[i].Source)
}
func (d dirSource) name(i int) string { return d[i].Source }

// streamer cuts the content stream. It owns the pending bytes and the
// offset bookkeeping; it sets each regular entry's Offset.
//
// Its buffer is allocated once and reused: chunks are copied out into
// pooled buffers that the workers give back, so packing allocates no
// memory per file or per chunk once it is warm.
type streamer struct {
	ck   *chunker.Chunker
	sl   *sealer
	read *atomic.Int64 // content bytes read, for progress
	root string
	// paths name entries relative to the root where no source file does
	// (Layers; with a base only).
	paths []string
	base  *baseIndex // nil without Options.Base
	// spans are the files in the stream not yet wholly emitted, in stream
	// order (kept only with a base, to find each chunk's delta bases).
	spans []span

	arena []byte // the backing array, reused
	buf   []byte // pending bytes, not yet cut: a window of base
	pos   uint64 // stream offset of buf[0]
	// order holds the sealer's slot of each chunk of the stream, in stream
	// order: the image's chunk table is refs[order[i]].
	order []int
	dups  int
}

// source gives the streamer the content of entry i (a regular file).
type source interface {
	// small reads the whole content into b, which has room for one byte
	// more than the expected size (to notice growth).
	small(i int, b []byte) (int, error)
	// large appends the content to the stream; the streamer has cut
	// before and cuts after.
	large(s *streamer, i int) (uint64, error)
	// name names the content in errors.
	name(i int) string
}

// readPiece is how much of a large file the streamer reads at once.
const readPiece = 4 << 20

func (s *streamer) emit(n int) error {
	data := s.sl.bufs.Get().(*[]byte)
	*data = append((*data)[:0], s.buf[:n]...)
	var bases []chunk.Ref
	if s.base != nil {
		bases = s.basesFor(s.pos, uint64(n))
	}
	slot, err := s.sl.seal(data, bases)
	if err != nil {
		return err
	}
	s.order = append(s.order, slot)
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

// run lays the regular files of entries out in the content stream, in
// entry order, and cuts it.
func (s *streamer) run(entries []flist.Entry, nodes []*flist.Node, src source) error {
	small := uint64(s.ck.Params().Avg)
	seen := map[digest.ID]uint64{} // content of small files -> stream offset
	s.room(readPiece)
	for i := range entries {
		e := &entries[i]
		if e.IsLink() || e.Kind() != flist.KindRegular || e.Size == 0 {
			continue
		}
		if e.Size < small {
			// Read straight into the pending buffer; drop it again if the
			// content is already in the stream.
			s.room(int(e.Size) + 1)
			at := len(s.buf)
			n, err := src.small(i, s.buf[at:at+int(e.Size)+1])
			if err != nil {
				return err
			}
			if uint64(n) != e.Size {
				return fmt.Errorf("%s changed while packing (%d bytes, was %d): pack a quiescent tree or a snapshot", src.name(i), n, e.Size)
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
			s.track(e, i, nodes[i])
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
		s.track(e, i, nodes[i])
		n, err := src.large(s, i)
		if err != nil {
			return err
		}
		if n != e.Size {
			return fmt.Errorf("%s changed while packing (%d bytes, was %d): pack a quiescent tree or a snapshot", src.name(i), n, e.Size)
		}
		if err := s.cut(true); err != nil {
			return err
		}
	}
	return s.cut(true)
}

// readSmall reads the whole file at path into b, which has room for one
// byte more than the file's expected size (to notice growth). Usually
// with three system calls (package os would add an fstat, a read to see
// EOF and a finalizer): a local file system returns less than asked only
// at the end of the file, so a read that stops at the expected size has
// read it all.
func readSmall(path string, b []byte) (int, error) {
	fd, err := openRead(path)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", path, err)
	}
	defer unix.Close(fd)
	n := 0
	for n < len(b) {
		m, err := unix.Read(fd, b[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return n, fmt.Errorf("read %s: %w", path, err)
		}
		if m == 0 {
			break
		}
		n += m
		if n == len(b)-1 {
			break // the expected size, and no more
		}
	}
	return n, nil
}

func openRead(path string) (int, error) {
	for {
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
		if err != unix.EINTR {
			return fd, err
		}
	}
}

func (s *streamer) readLarge(path string) (uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	n, err := s.readFrom(f)
	if err != nil {
		return n, fmt.Errorf("read %s: %w", path, err)
	}
	return n, nil
}

// readFrom appends everything r holds to the stream, cutting as it goes
// (but not after the last byte: the caller decides).
func (s *streamer) readFrom(r io.Reader) (uint64, error) {
	var total uint64
	for {
		s.room(readPiece)
		n, err := r.Read(s.buf[len(s.buf):cap(s.buf)])
		s.buf = s.buf[:len(s.buf)+n]
		total += uint64(n)
		s.read.Add(int64(n))
		if errors.Is(err, io.EOF) || (n == 0 && err == nil) {
			return total, nil
		}
		if err != nil {
			return total, err
		}
		if err := s.cut(false); err != nil {
			return total, err
		}
	}
}
