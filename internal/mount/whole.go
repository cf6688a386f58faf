package mount

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/zosgrid/zos/internal/chunk"
	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/flist"
	"github.com/zosgrid/zos/internal/store"
	"github.com/zosgrid/zos/internal/store/lru"
)

// FileCache keeps whole plaintext files on local disk, beside the sealed
// blobs of a local chunk cache (store/lru's Store). Its methods are safe
// for concurrent use.
type FileCache interface {
	// Has reports whether the local cache holds the blob id.
	Has(ctx context.Context, id digest.ID) (bool, error)
	// OpenFile opens the whole file id, pinned until closed, or fails with
	// an error wrapping store.ErrNotFound.
	OpenFile(id digest.ID) (*os.File, error)
	// PutFile keeps a whole file of size bytes written by fill under id;
	// a file the cache will not hold fails with an error wrapping
	// lru.ErrFull.
	PutFile(ctx context.Context, id digest.ID, size int64, fill func(io.Writer) error) error
}

// defaultMinWhole is Options.MinWhole's default.
const defaultMinWhole = 1 << 20

// fileID names a regular file's content by what the flist says of it: its
// size, where it starts in its first chunk, and the fingerprints of the
// chunks it spans. Equal files of any images get the same ID, and the ID
// covers the fingerprints every byte of the content was verified against.
func fileID(r *flist.Reader, e *flist.Entry) digest.ID {
	first, last := r.ChunkAt(e.Offset), r.ChunkAt(e.Offset+e.Size-1)
	b := make([]byte, 16, 16+(last-first+1)*digest.Size)
	binary.LittleEndian.PutUint64(b, e.Size)
	binary.LittleEndian.PutUint64(b[8:], e.Offset-r.ChunkStart(first))
	for _, c := range r.Chunks()[first : last+1] {
		b = append(b, c.Sum[:]...)
	}
	return digest.Derive("zos 2026-11 whole file id v1", b)
}

// File handles: which way a file was opened, for Release.
const (
	fhCached = 1 // reads come to Read; FOPEN_KEEP_CACHE
	fhPass   = 2 // the kernel reads a whole file in the cache (passthrough)
)

// opened is the open handles of one inode. The kernel lets an inode have
// one backing file at a time, and refuses a passthrough open while cached
// opens of the inode are live (and the other way round), so a new open
// takes the mode of those still open.
type opened struct {
	pass, cached int
	backing      int32    // the kernel's ID of file, while pass > 0
	file         *os.File // the whole file, pinned in the cache while open
	read         bool     // Read served this inode since it was opened cached
}

// Init keeps the server, which registers backing files for passthrough.
func (f *FS) Init(s *fuse.Server) { f.srv = s }

// Open answers ENOSYS without a file cache (see OpenDir). With one, a
// regular file of at least Options.MinWhole bytes that the cache holds
// whole is opened in passthrough mode: the kernel reads and maps it from
// the cache's file system directly, at that file system's speed, and no
// read reaches this server. Any other open is served by Read, with
// FOPEN_KEEP_CACHE.
func (f *FS) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	if f.opt.Files == nil {
		return fuse.ENOSYS
	}
	_, e, err := f.node(in.NodeId)
	if err != nil {
		return f.status("open", in.NodeId, err)
	}
	f.omu.Lock()
	defer f.omu.Unlock()
	o := f.opens[in.NodeId]
	if o == nil {
		o = &opened{}
		f.opens[in.NodeId] = o
	}
	if o.file == nil && o.cached == 0 && e.Kind() == flist.KindRegular && e.Size >= uint64(f.opt.MinWhole) {
		f.attach(o, e)
	}
	if o.file != nil {
		o.pass++
		out.Fh, out.OpenFlags, out.BackingID = fhPass, fuse.FOPEN_PASSTHROUGH, o.backing
		f.passOpens.Add(1)
		return fuse.OK
	}
	o.cached++
	out.Fh, out.OpenFlags = fhCached, fuse.FOPEN_KEEP_CACHE
	return fuse.OK
}

// attach gives o the whole file of e as its backing file, if the cache
// holds it and the kernel takes it. Called with omu held.
func (f *FS) attach(o *opened, e *flist.Entry) {
	if f.srv == nil || f.passOff.Load() {
		return
	}
	file, err := f.opt.Files.OpenFile(fileID(f.r, e))
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			f.log.Warn("whole file cache", "err", err)
		}
		return
	}
	id, errno := f.srv.RegisterBackingFd(&fuse.BackingMap{Fd: int32(file.Fd())})
	if errno != 0 {
		file.Close()
		if f.passOff.CompareAndSwap(false, true) {
			f.log.Warn("kernel refused a passthrough file; files are served through FUSE reads from now on", "err", syscall.Errno(errno))
		}
		return
	}
	o.backing, o.file = id, file
}

// Release closes a handle. When the last cached handle of a file that was
// read closes, and every chunk of the file is in the local cache, the file
// is written whole into the cache in the background (one at a time), so
// that later opens, by this mount or any other, are passthrough.
func (f *FS) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) {
	if f.opt.Files == nil {
		return
	}
	f.omu.Lock()
	defer f.omu.Unlock()
	o := f.opens[in.NodeId]
	if o == nil {
		return
	}
	switch in.Fh {
	case fhPass:
		o.pass--
		if o.pass == 0 {
			if errno := f.srv.UnregisterBackingFd(o.backing); errno != 0 {
				f.log.Warn("unregister passthrough file", "inode", in.NodeId, "err", syscall.Errno(errno))
			}
			o.file.Close()
			o.file = nil
		}
	case fhCached:
		o.cached--
		if o.cached == 0 && o.read {
			o.read = false
			f.keepWhole(in.NodeId)
		}
	}
	if o.pass == 0 && o.cached == 0 && o.file == nil {
		delete(f.opens, in.NodeId)
	}
}

// readCached notes that Read served node id (see Release).
func (f *FS) readCached(id uint64) {
	if f.opt.Files == nil {
		return
	}
	f.omu.Lock()
	if o := f.opens[id]; o != nil {
		o.read = true
	}
	f.omu.Unlock()
}

// keepWhole starts writing node id's file whole into the cache, unless it
// is being written already. Called with omu held.
func (f *FS) keepWhole(id uint64) {
	_, e, err := f.node(id)
	if err != nil || e.Size < uint64(f.opt.MinWhole) || f.building[id] {
		return
	}
	f.building[id] = true
	go func() {
		defer func() {
			f.omu.Lock()
			delete(f.building, id)
			f.omu.Unlock()
		}()
		select {
		case f.buildSlot <- struct{}{}:
			defer func() { <-f.buildSlot }()
		case <-f.ctx.Done():
			return
		}
		if err := f.writeWhole(f.ctx, e); err != nil && f.ctx.Err() == nil {
			f.log.Info("file not kept whole", "inode", id, "size", e.Size, "err", err)
		}
	}()
}

// errNotLocal stops writing a file whole: a chunk is not in the local
// cache, and fetching it from afar is not worth a background write.
var errNotLocal = errors.New("not every chunk is in the local cache")

// writeWhole writes e's content into the file cache from the local chunk
// cache, verified as every chunk is (store.Fetch).
func (f *FS) writeWhole(ctx context.Context, e *flist.Entry) error {
	if err := writeWhole(ctx, f.r, e, f.chunks.st, f.chunks.codec, f.opt.Files); err != nil {
		return err
	}
	f.wholeKept.Add(1)
	return nil
}

func writeWhole(ctx context.Context, r *flist.Reader, e *flist.Entry, st store.Store, codec *chunk.Codec, files FileCache) error {
	first, last := r.ChunkAt(e.Offset), r.ChunkAt(e.Offset+e.Size-1)
	refs := r.Chunks()[first : last+1]
	for _, c := range refs {
		ok, err := files.Has(ctx, chunk.ID(c.Sum))
		if err != nil {
			return err
		}
		if !ok {
			return errNotLocal
		}
	}
	lo, hi := e.Offset, e.Offset+e.Size
	err := files.PutFile(ctx, fileID(r, e), int64(e.Size), func(w io.Writer) error {
		for i, c := range refs {
			data, err := store.Fetch(ctx, st, codec, c)
			if err != nil {
				return err
			}
			s := r.ChunkStart(first + i)
			if _, err := w.Write(data[max(lo, s)-s : min(hi-s, uint64(len(data)))]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("keep file whole: %w", err)
	}
	return nil
}

// KeepWhole writes every distinct regular file of r of at least minSize
// bytes (Options.MinWhole's default if 0) whole into files, from chunks
// the local cache holds (read through st, which should be that cache, or
// a cache in front of the stores), so that mounts open them in passthrough
// mode from the first open. It returns the files and bytes written or
// already there; files the cache refuses (larger than a quarter of its
// budget) or whose chunks are not all local are counted in skipped.
func KeepWhole(ctx context.Context, r *flist.Reader, st store.Store, files FileCache, minSize int64) (kept, bytes int64, skipped int, err error) {
	if minSize <= 0 {
		minSize = defaultMinWhole
	}
	codec := chunk.NewCodec(0)
	seen := map[digest.ID]bool{}
	err = r.Walk(func(_ string, _ uint64, e *flist.Entry) error {
		if e.IsLink() || e.Kind() != flist.KindRegular || e.Size < uint64(minSize) {
			return nil
		}
		id := fileID(r, e)
		if seen[id] {
			return nil
		}
		seen[id] = true
		switch err := writeWhole(ctx, r, e, st, codec, files); {
		case err == nil:
			kept++
			bytes += int64(e.Size)
		case errors.Is(err, errNotLocal) || errors.Is(err, lru.ErrFull):
			skipped++
		default:
			return err
		}
		return nil
	})
	return kept, bytes, skipped, err
}
