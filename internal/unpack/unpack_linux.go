// Package unpack restores the tree an flist describes, fetching and
// verifying every chunk.
//
// # Order
//
// Directories, symlinks and special files are created first (breadth-first,
// so parents exist), then regular files are written in content-stream
// order, which reads each chunk once while workers fetch the chunks ahead.
// Hard links follow their targets; attributes are set last, directories
// deepest first so that creating children does not disturb their mtimes.
//
// # Safety
//
// The flist is fully validated first. Paths are joined from validated names
// only (no "/", "..", NUL), into a destination that must be empty, and
// files are created with O_EXCL|O_NOFOLLOW: a hostile flist cannot write
// outside the destination.
package unpack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/zosgrid/zos/internal/chunk"
	"github.com/zosgrid/zos/internal/flist"
	"github.com/zosgrid/zos/internal/store"
)

// Options tune an unpack.
type Options struct {
	Workers int // parallel chunk fetches; default 4*GOMAXPROCS
	// Owner restores uid/gid and device nodes; default: when running as root.
	Owner    *bool
	Progress func(done, total int64)
}

// Stats describe an unpack.
type Stats struct {
	Entries int
	Bytes   int64
	Chunks  int
}

type fileJob struct {
	idx  uint64
	path string
	e    *flist.Entry
}

// Unpack restores r's tree into dest.
func Unpack(ctx context.Context, r *flist.Reader, st store.Store, dest string, opt Options) (Stats, error) {
	var stats Stats
	if err := r.Validate(); err != nil {
		return stats, err
	}
	if opt.Workers <= 0 {
		opt.Workers = 4 * runtime.GOMAXPROCS(0)
	}
	owner := os.Geteuid() == 0
	if opt.Owner != nil {
		owner = *opt.Owner
	}
	if err := emptyDir(dest); err != nil {
		return stats, err
	}
	paths := make([]string, r.Len())
	var files []fileJob
	var links []fileJob
	var all []fileJob
	err := r.Walk(func(p string, i uint64, e *flist.Entry) error {
		full := filepath.Join(dest, filepath.FromSlash(p))
		paths[i] = full
		stats.Entries++
		j := fileJob{i, full, e}
		if e.IsLink() {
			links = append(links, j)
			return nil
		}
		all = append(all, j)
		switch e.Kind() {
		case flist.KindDir:
			if i == 0 {
				return os.MkdirAll(full, 0o700)
			}
			return os.Mkdir(full, 0o700)
		case flist.KindRegular:
			files = append(files, j)
			return nil
		case flist.KindSymlink:
			return os.Symlink(e.Target, full)
		case flist.KindFIFO:
			return unix.Mkfifo(full, 0o600)
		case flist.KindSocket, flist.KindChar, flist.KindBlock:
			if !owner && e.Kind() != flist.KindSocket {
				return nil // only root may create devices
			}
			return unix.Mknod(full, e.Mode, int(e.Rdev))
		}
		return nil
	})
	if err != nil {
		return stats, fmt.Errorf("unpack: %w", err)
	}
	n, err := writeFiles(ctx, r, st, files, opt)
	stats.Bytes, stats.Chunks = n.bytes, n.chunks
	if err != nil {
		return stats, err
	}
	for _, l := range links {
		if err := os.Link(paths[l.e.Link], l.path); err != nil {
			return stats, fmt.Errorf("unpack: hard link: %w", err)
		}
	}
	// Attributes: everything but directories, then directories deepest first.
	for _, j := range all {
		if j.e.Kind() != flist.KindDir {
			if err := setAttrs(j.path, j.e, owner); err != nil {
				return stats, err
			}
		}
	}
	for k := len(all) - 1; k >= 0; k-- {
		if j := all[k]; j.e.Kind() == flist.KindDir {
			if err := setAttrs(j.path, j.e, owner); err != nil {
				return stats, err
			}
		}
	}
	return stats, nil
}

func emptyDir(dest string) error {
	ents, err := os.ReadDir(dest)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if len(ents) > 0 {
		return fmt.Errorf("destination %s is not empty: unpack into a new or empty directory", dest)
	}
	return nil
}

func setAttrs(path string, e *flist.Entry, owner bool) error {
	isLink := e.Kind() == flist.KindSymlink
	if !owner && (e.Kind() == flist.KindChar || e.Kind() == flist.KindBlock) {
		return nil
	}
	if owner {
		if err := os.Lchown(path, int(e.UID), int(e.GID)); err != nil {
			return fmt.Errorf("unpack: %w", err)
		}
	}
	for _, x := range e.Xattrs {
		if err := unix.Lsetxattr(path, x.Name, x.Value, 0); err != nil {
			return fmt.Errorf("unpack: xattr %s on %s: %w", x.Name, path, err)
		}
	}
	if !isLink {
		// After chown, which clears setuid and setgid.
		if err := unix.Fchmodat(unix.AT_FDCWD, path, e.Perm(), 0); err != nil {
			return fmt.Errorf("unpack: chmod %s: %w", path, err)
		}
	}
	ts := []unix.Timespec{{Sec: e.Mtime, Nsec: int64(e.Nsec)}, {Sec: e.Mtime, Nsec: int64(e.Nsec)}}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, path, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("unpack: times of %s: %w", path, err)
	}
	return nil
}

type counts struct {
	bytes  int64
	chunks int
}

// writeFiles writes regular files in stream order with chunks fetched ahead.
func writeFiles(ctx context.Context, r *flist.Reader, st store.Store, files []fileJob, opt Options) (counts, error) {
	var c counts
	sort.SliceStable(files, func(a, b int) bool { return files[a].e.Offset < files[b].e.Offset })
	// The chunks in the order they are first needed.
	var order []int
	last := -1
	var total int64
	for _, f := range files {
		total += int64(f.e.Size)
		if f.e.Size == 0 {
			continue
		}
		lo, hi := r.ChunkAt(f.e.Offset), r.ChunkAt(f.e.Offset+f.e.Size-1)
		for k := max(lo, last+1); k <= hi; k++ {
			order = append(order, k)
		}
		last = max(last, hi)
	}
	f := newFetcher(ctx, r, st, order, opt.Workers)
	defer f.stop()
	var done atomic.Int64
	var prev *fileJob
	for i := range files {
		fj := &files[i]
		if prev != nil && prev.e.Offset == fj.e.Offset && prev.e.Size == fj.e.Size && fj.e.Size > 0 {
			// Equal content stored once: copy the file just written.
			if err := copyFile(prev.path, fj.path); err != nil {
				return c, err
			}
			done.Add(int64(fj.e.Size))
			continue
		}
		out, err := os.OpenFile(fj.path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
		if err != nil {
			return c, fmt.Errorf("unpack: %w", err)
		}
		off, end := fj.e.Offset, fj.e.Offset+fj.e.Size
		for off < end {
			k := r.ChunkAt(off)
			data, err := f.get(k)
			if err != nil {
				out.Close()
				return c, fmt.Errorf("unpack %s: %w", fj.path, err)
			}
			s := r.ChunkStart(k)
			piece := data[off-s : min(uint64(len(data)), end-s)]
			if _, err := out.Write(piece); err != nil {
				out.Close()
				return c, fmt.Errorf("unpack: %w", err)
			}
			off += uint64(len(piece))
			c.bytes += int64(len(piece))
		}
		if err := out.Close(); err != nil {
			return c, fmt.Errorf("unpack: %w", err)
		}
		done.Add(int64(fj.e.Size))
		if opt.Progress != nil {
			opt.Progress(done.Load(), total)
		}
		prev = fj
	}
	c.chunks = len(order)
	return c, nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("unpack: %w", err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("unpack: %w", err)
	}
	_, err = io.Copy(out, in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}

// fetcher fetches chunks in a known order with bounded look-ahead. get(k)
// for the chunk at the head of the order waits for the prefetch; any other
// chunk (an flist whose files overlap oddly) is fetched directly.
type fetcher struct {
	ctx    context.Context
	cancel context.CancelFunc
	r      *flist.Reader
	st     store.Store
	codec  *chunk.Codec
	order  []int
	slots  []chan res
	pos    int // next position in order the consumer takes
	window chan struct{}
	cur    struct {
		k    int
		data []byte
	}
	wg sync.WaitGroup
}

type res struct {
	data []byte
	err  error
}

func newFetcher(ctx context.Context, r *flist.Reader, st store.Store, order []int, workers int) *fetcher {
	ctx, cancel := context.WithCancel(ctx)
	f := &fetcher{ctx: ctx, cancel: cancel, r: r, st: st, codec: chunk.NewCodec(0), order: order,
		slots: make([]chan res, len(order)), window: make(chan struct{}, 2*workers)}
	f.cur.k = -1
	for i := range f.slots {
		f.slots[i] = make(chan res, 1)
	}
	var next atomic.Int64
	for w := 0; w < workers; w++ {
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			for {
				select {
				case f.window <- struct{}{}:
				case <-ctx.Done():
					return
				}
				p := int(next.Add(1) - 1)
				if p >= len(order) {
					return
				}
				data, err := f.fetch(order[p])
				f.slots[p] <- res{data, err}
			}
		}()
	}
	return f
}

func (f *fetcher) fetch(k int) ([]byte, error) {
	return store.Fetch(f.ctx, f.st, f.codec, f.r.Chunks()[k])
}

func (f *fetcher) get(k int) ([]byte, error) {
	if f.cur.k == k {
		return f.cur.data, nil
	}
	if f.pos < len(f.order) && f.order[f.pos] == k {
		var r res
		select {
		case r = <-f.slots[f.pos]:
		case <-f.ctx.Done():
			return nil, f.ctx.Err()
		}
		f.pos++
		<-f.window
		if r.err != nil {
			return nil, r.err
		}
		f.cur.k, f.cur.data = k, r.data
		return r.data, nil
	}
	data, err := f.fetch(k)
	if err != nil {
		return nil, err
	}
	f.cur.k, f.cur.data = k, data
	return data, nil
}

func (f *fetcher) stop() {
	f.cancel() // workers waiting for a window slot return; slots are buffered
	f.wg.Wait()
}
