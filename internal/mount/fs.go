package mount

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/zosgrid/zos/internal/flist"
	"github.com/zosgrid/zos/internal/store"
)

// Options tune a filesystem. The zero value is usable.
type Options struct {
	Logger *slog.Logger // default: discard
	// MemoryBytes bounds the verified chunk plaintexts kept in memory;
	// default 64 MiB, at least 8 MiB.
	MemoryBytes int64
	// ReadAhead is how far past a sequential reader's position chunks are
	// fetched in the background; default 4 MiB, negative disables it.
	ReadAhead int64
	// FilePrefetch is how much of a regular file, from its start, is
	// fetched in the background once a read first needs one of its chunks,
	// at read-ahead's priority and within its fetches at once (a later
	// read of the file goes on where that bound stopped it); default
	// 64 MiB, negative disables it. A dynamic loader or an interpreter
	// reads scattered pieces of a file, each a round trip that waits for
	// the one before: fetching the file's chunks at once turns those into
	// hits. Measured on big at 100 Mbit/s and 20 ms (bench/mount.sh), the
	// cold start took 12.6 s without it, 10.5 s with 4 MiB, 7.2 s with
	// 16 MiB and 6.6 s with 64 MiB or 256 MiB, fetching 36.7, 41.7, 42.7
	// and 50.7 MB (4.4% to 6.1% of the image).
	FilePrefetch int64
	// FilePrefetchFetchers bounds the fetches in flight (read-ahead's
	// included) past which the file prefetch starts no more; default 16,
	// at most Fetchers. The file prefetch is a guess, and over a slow link
	// every byte it has in flight delays the reads behind it: measured on
	// big at 100 Mbit/s and 20 ms (bench/mount.sh), the cold start took
	// 7.0-7.2 s with one bound of 16 for everything, 7.5-7.7 s with 32, and
	// 6.7-6.9 s with 16 here and 32 for read-ahead.
	FilePrefetchFetchers int
	// KernelReadAhead is the kernel's read-ahead on the mount (read_ahead_kb
	// of its device): how much a page fault in a mapped file reads around
	// itself, and the most the kernel reads ahead of a sequential reader;
	// default 2 MiB, but the kernel's own (128 KiB) when prefetching by a
	// version-1 trace, and one page (4 KiB) when recording a trace or
	// while prefetching by a version-2 trace (PrefetchExact) or a bundle,
	// then 2 MiB once that prefetch is done; negative leaves the kernel's.
	// A trace recorded with one page lists only what reads asked for, and
	// a larger read-around would fault in pages it does not list, each
	// waiting for a whole chunk. A program
	// faulting its code and data in from a cold mount waits a round trip
	// per fault, and each fault reads this much: measured on big at
	// 100 Mbit/s and 20 ms (the four commands of bench/mount.sh, loader
	// prefetch on, one or two runs each), 128 KiB took 6.0-6.3 s and
	// fetched 47 MB, 512 KiB 6.0-6.1 s (46-47 MB), 1 MiB 5.7 s (45-46 MB),
	// 1.5 MiB 5.6 s (45 MB), 2 MiB 5.4-5.5 s (46 MB), 3 MiB 5.5 s (49 MB)
	// and 4 MiB 5.6 s (51 MB). With a trace, 128 KiB took 3.0-3.1 s
	// (36 MB), 512 KiB 3.4 s (38 MB) and 2 MiB 3.7 s (43 MB).
	KernelReadAhead int64
	// NoLoaderPrefetch turns off the loader prefetch (loader.go): on the
	// first read of an ELF file, fetching ahead what the dynamic loader
	// reads of it and of the libraries it needs.
	NoLoaderPrefetch bool
	// Fetchers bounds parallel store fetches; default 32. A sequential
	// reader keeps about bandwidth x round trip / blob size fetches busy:
	// at 100 Mbit/s and 20 ms with 64 KiB chunks (about 27 KB sealed),
	// measured on a cold 1 GiB read (bench/mount.sh), 16 used 85% of the
	// link and 32 used 96%.
	Fetchers int
	// FetchTimeout bounds one chunk fetch, retries of transient store
	// failures included; past it the read fails with EIO. Default 2 minutes.
	FetchTimeout time.Duration

	// Record keeps the order in which reads first need each chunk (see
	// FS.Trace).
	Record bool
	// Prefetch lists chunks (indexes into the flist's chunk table, a
	// Trace's) to fetch in the background from mount time on, in order.
	Prefetch []uint32
	// PrefetchExact says Prefetch comes from a version-2 trace, recorded
	// with one page of read-around (see KernelReadAhead).
	PrefetchExact bool
	// Bundle, if set, is a start bundle to stream from mount time on
	// (slices.go, docs/BUNDLE.md): reads inside what it brought are served
	// from it, and once it ends the chunks it lists are fetched whole, as
	// by Prefetch, which it replaces. What it holds in memory counts
	// against MemoryBytes of its own.
	Bundle *Bundle
	// PrefetchFetchers bounds the prefetch's fetches at once; default 16,
	// at most Fetchers. They take fetch slots (Fetchers) only when no read
	// waits for one. A link's latency, not its bandwidth, bounds a prefetch
	// with few fetchers: measured on big at 100 Mbit/s and 20 ms, a traced
	// cold start took 6.2 s with 4 and 3.1 s with 16 (the link's floor).
	PrefetchFetchers int
	// PrefetchLead bounds the bytes of prefetched chunks that no read has
	// used yet, held in memory; default a quarter of MemoryBytes (chunks
	// fetched ahead of reads, read-ahead's too, may hold half), negative
	// for no bound but that half.
	PrefetchLead int64
	// StoreKeeps says the store keeps what it serves on local disk (a
	// cache): the prefetch then goes on past PrefetchLead, leaving the
	// chunks it fetches in the store rather than in memory.
	StoreKeeps bool
	// Lease, if set, gives each chunk fetch a view of the store that pins
	// what the fetch reads (the chunk and its delta bases) in the local
	// cache, and a release called once the fetch is over: a bounded cache
	// (store/lru's Store.Lease) then never evicts a blob a fetch needs.
	Lease func(store.Store) (view store.Store, release func())

	// Files, if set, is the local cache's store of whole files: a regular
	// file of at least MinWhole bytes that it holds is opened in FUSE
	// passthrough mode (the kernel reads it from the cache's file system,
	// at that file system's speed), and a file that Read served is written
	// into it whole once its chunks are all in the local cache.
	Files FileCache
	// MinWhole is the size from which files are kept whole; default 1 MiB.
	// Smaller files share chunks and are served from the page cache once
	// read.
	MinWhole int64

	// Mount options (see Mount).

	// Name is the source shown in the mount table; default "zos".
	Name string
	// Upper, if set, makes the mount writable: the image is mounted
	// read-only under this directory and a kernel overlayfs, whose changes
	// live in this directory, at the mount point (see Mount).
	Upper string
	// Dev and Suid honour device nodes and setuid bits / file capabilities
	// in the image; without them the mount is nodev, nosuid.
	Dev, Suid bool
	// Private restricts access to the user who mounted; by default every
	// user may access the mount, subject to the image's permissions.
	Private bool
	// Debug logs every FUSE request.
	Debug bool

	readAheadAfter int64 // KernelReadAhead once the prefetch is done, if not 0
}

const (
	onePage                = 4 << 10
	defaultKernelReadAhead = 2 << 20

	// bundleSettle is how long no read may have come before the chunks of
	// an ended bundle are fetched whole, and bundleSettleMost the longest
	// that waits. Measured on big at 100 Mbit/s and 20 ms (bench/mount.sh,
	// zosbundle, hub on the same 2 cores), fetching them as soon as the
	// stream ended made java -version, which runs then, take 0.58-1.07 s.
	bundleSettle     = time.Second
	bundleSettleMost = 30 * time.Second
)

func (o *Options) setDefaults() {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.MemoryBytes == 0 {
		o.MemoryBytes = 64 << 20
	}
	o.MemoryBytes = max(o.MemoryBytes, 8<<20) // two of the largest chunks
	if o.ReadAhead == 0 {
		o.ReadAhead = 4 << 20
	}
	if o.FilePrefetch == 0 {
		o.FilePrefetch = defaultFilePrefetch
	}
	if o.KernelReadAhead == 0 {
		switch {
		case o.Record:
			// Read-around would put bytes in the trace that the program
			// never read.
			o.KernelReadAhead = onePage
		case o.Bundle != nil || len(o.Prefetch) > 0 && o.PrefetchExact:
			// The trace says what to fetch; read-around asks for more.
			o.KernelReadAhead, o.readAheadAfter = onePage, defaultKernelReadAhead
		case len(o.Prefetch) > 0:
			// A version-1 trace, recorded with the kernel's own.
		default:
			o.KernelReadAhead = defaultKernelReadAhead
		}
	}
	if o.Fetchers <= 0 {
		o.Fetchers = 32
	}
	if o.FetchTimeout <= 0 {
		o.FetchTimeout = 2 * time.Minute
	}
	if o.FilePrefetchFetchers <= 0 {
		o.FilePrefetchFetchers = 16
	}
	o.FilePrefetchFetchers = min(o.FilePrefetchFetchers, o.Fetchers)
	if o.PrefetchFetchers <= 0 {
		o.PrefetchFetchers = 16
	}
	o.PrefetchFetchers = min(o.PrefetchFetchers, o.Fetchers)
	if o.PrefetchLead == 0 {
		o.PrefetchLead = o.MemoryBytes / 4
	}
	if o.MinWhole <= 0 {
		o.MinWhole = defaultMinWhole
	}
	if o.Name == "" {
		o.Name = "zos"
	}
}

// ttl is how long the kernel may trust entries and attributes: the image
// is immutable, so for as long as it likes.
const ttl = 365 * 24 * 3600

// blockSize is the st_blksize reported and the unit of statfs.
const blockSize = 4096

// FS is the read-only FUSE filesystem of one image. It implements
// fuse.RawFileSystem; create it with New and serve it with Mount (or any
// fuse.Server).
type FS struct {
	fuse.RawFileSystem // ENOSYS for everything an immutable image does not do

	r      *flist.Reader
	chunks *chunks
	log    *slog.Logger
	opt    Options
	stop   context.CancelFunc

	dirs  []dirInfo  // every directory, by index
	links []linkInfo // files with hard links, by index

	prefetchOnce  sync.Once
	slices        *bundleSlices // the bundle's, or nil
	prefetchEnded func()        // called once the trace's or bundle's prefetch is done (mount_linux.go)
	prefetchDone  atomic.Bool

	mu         sync.Mutex
	streams    map[uint64]*stream // read-ahead state of files being read, by node ID
	loaderSeen map[uint64]bool    // files the loader prefetch has handled (loader.go), by node ID

	// Whole files (whole.go).
	ctx       context.Context // the mount's lifetime
	srv       *fuse.Server
	omu       sync.Mutex
	opens     map[uint64]*opened // open handles, by node ID
	building  map[uint64]bool    // files being written whole
	buildSlot chan struct{}      // one file written at a time
	passOff   atomic.Bool        // the kernel refused passthrough: do not try again
	passOpens atomic.Int64
	wholeKept atomic.Int64
}

type dirInfo struct {
	idx, parent uint64
	nlink       uint32
}

type linkInfo struct {
	idx   uint64
	nlink uint32
}

// maxStreams bounds the read-ahead states kept; past it they are dropped
// (a reader that was sequential starts again from the first window).
const maxStreams = 4096

// stream is the read-ahead state of a regular file being read.
type stream struct {
	off, size uint64 // the file's span of the content stream

	mu     sync.Mutex
	next   uint64 // file offset a sequential reader reads next
	ahead  uint64 // stream offset up to which read-ahead has been started
	window uint64 // current read-ahead distance; 0 until the reader looks sequential
	filled uint64 // stream offset up to which the file prefetch has been started
}

// defaultFilePrefetch is Options.FilePrefetch's default.
const defaultFilePrefetch = 64 << 20

// New checks the image's structure and indexes what FUSE needs that the
// flist does not store (link counts, parents). It reads no chunk. Fetches
// run under ctx's values until Close.
func New(ctx context.Context, r *flist.Reader, st store.Store, opt Options) (*FS, error) {
	opt.setDefaults()
	if err := r.Validate(); err != nil {
		return nil, fmt.Errorf("flist %s: %w", r.Digest().Short(), err)
	}
	ctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	f := &FS{
		RawFileSystem: fuse.NewDefaultRawFileSystem(),
		r:             r,
		chunks:        newChunks(ctx, r.Chunks(), st, &opt),
		log:           opt.Logger,
		opt:           opt,
		stop:          stop,
		streams:       map[uint64]*stream{},
		loaderSeen:    map[uint64]bool{},
		ctx:           ctx,
		opens:         map[uint64]*opened{},
		building:      map[uint64]bool{},
		buildSlot:     make(chan struct{}, 1),
	}
	if err := f.index(); err != nil {
		stop()
		return nil, fmt.Errorf("flist %s: %w", r.Digest().Short(), err)
	}
	for i, k := range opt.Prefetch {
		if int(k) >= len(r.Chunks()) {
			stop()
			return nil, fmt.Errorf("prefetch entry %d: chunk %d of %d: %w", i, k, len(r.Chunks()), errTraceIndex)
		}
	}
	if b := opt.Bundle; b != nil {
		if b.Trace == nil || b.Trace.Ranges == nil {
			stop()
			return nil, fmt.Errorf("%w: its trace has no ranges (version 1)", ErrBundle)
		}
		if err := b.Trace.Check(r); err != nil {
			stop()
			return nil, fmt.Errorf("bundle %s: %w", b.Source, err)
		}
		f.slices = newSlices(b.Trace, r.Chunks(), opt.MemoryBytes)
		f.chunks.bundle = f.slices
	}
	return f, nil
}

// StartPrefetch starts fetching Options.Prefetch in the background; Mount
// calls it once the mount is up. Only the first call does anything.
// With a bundle, it streams the bundle first, then fetches the chunks it
// lists whole.
func (f *FS) StartPrefetch() {
	f.prefetchOnce.Do(func() {
		ended := func() {
			f.prefetchDone.Store(true)
			if f.prefetchEnded != nil && f.ctx.Err() == nil {
				f.prefetchEnded()
			}
		}
		switch {
		case f.slices != nil:
			go func() {
				b := f.opt.Bundle
				f.streamBundle(f.ctx, b, f.slices)
				// The whole chunks are for later starts (the cache): they
				// wait for this one's reads to settle.
				f.chunks.settle(bundleSettle, bundleSettleMost)
				<-f.chunks.prefetchTrace(b.Trace.Chunks, f.opt.PrefetchFetchers)
				f.slices.clear()
				ended()
			}()
		case len(f.opt.Prefetch) > 0:
			done := f.chunks.prefetchTrace(f.opt.Prefetch, f.opt.PrefetchFetchers)
			go func() {
				<-done
				ended()
			}()
		}
	})
}

// Trace returns the chunks reads have needed so far, in the order they
// first needed them, with the parts of each they read (see Trace.Ranges),
// or nil unless Options.Record is set.
func (f *FS) Trace() ([]uint32, [][]Range) {
	if f.chunks.rec == nil {
		return nil, nil
	}
	return f.chunks.rec.snapshot()
}

// index computes link counts and directory parents in one pass. Entries
// are breadth-first, so the directory owning entry i is the first of the
// directories met so far whose child range has not ended before i.
func (f *FS) index() error {
	type span struct {
		pos int // in f.dirs
		end uint64
	}
	var open []span
	counts := map[uint64]uint32{}
	for i := uint64(0); i < f.r.Len(); i++ {
		e, err := f.r.Entry(i)
		if err != nil {
			return err
		}
		parent := -1
		if i > 0 {
			for len(open) > 0 && open[0].end <= i {
				open = open[1:]
			}
			if len(open) == 0 {
				return fmt.Errorf("%w: entry %d is in no directory", flist.ErrCorrupt, i)
			}
			parent = open[0].pos
		}
		if e.IsLink() {
			counts[uint64(e.Link)]++
			continue
		}
		if e.Kind() != flist.KindDir {
			continue
		}
		d := dirInfo{idx: i, nlink: 2}
		if parent >= 0 {
			d.parent = f.dirs[parent].idx
			f.dirs[parent].nlink++
		}
		f.dirs = append(f.dirs, d)
		if e.NumChildren > 0 {
			open = append(open, span{len(f.dirs) - 1, e.FirstChild + e.NumChildren})
		}
	}
	for idx, n := range counts {
		f.links = append(f.links, linkInfo{idx, n + 1})
	}
	sort.Slice(f.links, func(a, b int) bool { return f.links[a].idx < f.links[b].idx })
	return nil
}

func (f *FS) dir(idx uint64) *dirInfo {
	k := sort.Search(len(f.dirs), func(j int) bool { return f.dirs[j].idx >= idx })
	if k < len(f.dirs) && f.dirs[k].idx == idx {
		return &f.dirs[k]
	}
	return nil
}

func (f *FS) nlink(idx uint64, e *flist.Entry) uint32 {
	if e.Kind() == flist.KindDir {
		if d := f.dir(idx); d != nil {
			return d.nlink
		}
		return 2
	}
	k := sort.Search(len(f.links), func(j int) bool { return f.links[j].idx >= idx })
	if k < len(f.links) && f.links[k].idx == idx {
		return f.links[k].nlink
	}
	return 1
}

// Stats returns the chunk layer's counters.
func (f *FS) Stats() Stats {
	s := f.chunks.snapshot()
	s.PassthroughOpens, s.WholeKept = f.passOpens.Load(), f.wholeKept.Load()
	s.PrefetchDone = f.prefetchDone.Load()
	if b := f.slices; b != nil {
		s.BundleEntries, s.BundleBad, s.BundleBytes = b.stats.entries.Load(), b.stats.bad.Load(), b.stats.bytes.Load()
		s.BundleHits, s.BundleWaits = b.stats.hits.Load(), b.stats.waits.Load()
		s.BundleStreaming = b.streaming.Load()
	}
	return s
}

// Close cancels the fetches in flight. The filesystem must not be served
// afterwards.
func (f *FS) Close() { f.stop() }

func (f *FS) String() string { return f.opt.Name }

// status turns an error into the errno FUSE returns, logging what is not
// an expected answer.
func (f *FS) status(op string, ino uint64, err error) fuse.Status {
	switch {
	case err == nil:
		return fuse.OK
	case errors.Is(err, flist.ErrNotExist):
		return fuse.Status(syscall.ENOENT)
	}
	if _, ok := errors.AsType[*fetchError](err); ok {
		return fuse.Status(syscall.EIO) // the fetch logged it, once for all its readers
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return fuse.Status(errno)
	}
	f.log.Error("fuse "+op+" failed", "inode", ino, "err", err)
	return fuse.Status(syscall.EIO)
}

// node returns the entry behind a node ID. Node IDs name only entries that
// hold their attributes (hard links resolve to their target).
func (f *FS) node(id uint64) (uint64, *flist.Entry, error) {
	if id == 0 || id > f.r.Len() {
		return 0, nil, syscall.ESTALE
	}
	e, err := f.r.Entry(id - 1)
	if err != nil {
		return 0, nil, err
	}
	if e.IsLink() {
		return 0, nil, syscall.ESTALE // never handed out
	}
	return id - 1, e, nil
}

// resolve follows a hard link to the entry holding the inode.
func (f *FS) resolve(idx uint64, e *flist.Entry) (uint64, *flist.Entry, error) {
	if !e.IsLink() {
		return idx, e, nil
	}
	t, err := f.r.Resolve(e)
	if err != nil {
		return 0, nil, err
	}
	return uint64(e.Link), t, nil
}

func (f *FS) fillAttr(idx uint64, e *flist.Entry, a *fuse.Attr) {
	*a = fuse.Attr{
		Ino:     idx + 1,
		Mode:    e.Mode,
		Nlink:   f.nlink(idx, e),
		Owner:   fuse.Owner{Uid: e.UID, Gid: e.GID},
		Blksize: blockSize,
	}
	switch e.Kind() {
	case flist.KindRegular:
		a.Size = e.Size
	case flist.KindSymlink:
		a.Size = uint64(len(e.Target))
	case flist.KindDir:
		a.Size = blockSize
	case flist.KindChar, flist.KindBlock:
		a.Rdev = rdev32(e.Rdev)
	}
	a.Blocks = (a.Size + 511) / 512
	sec, nsec := uint64(e.Mtime), e.Nsec
	a.Atime, a.Mtime, a.Ctime = sec, sec, sec // the image records no atime or ctime
	a.Atimensec, a.Mtimensec, a.Ctimensec = nsec, nsec, nsec
}

// rdev32 re-encodes a device number (glibc's 64-bit dev_t) in the kernel's
// 32-bit form that FUSE carries.
func rdev32(d uint64) uint32 {
	major, minor := unix.Major(d), unix.Minor(d)
	return minor&0xff | major<<8 | (minor&^0xff)<<12
}

func (f *FS) fillEntry(idx uint64, e *flist.Entry, out *fuse.EntryOut) {
	out.NodeId = idx + 1
	out.Generation = 1
	out.EntryValid, out.AttrValid = ttl, ttl
	f.fillAttr(idx, e, &out.Attr)
}

// Lookup finds a name in a directory. A name that does not exist is
// answered with node ID 0 and a timeout, which the kernel caches as a
// negative entry (PATH and import searches ask for many such names).
func (f *FS) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	_, dir, err := f.node(h.NodeId)
	if err != nil {
		return f.status("lookup", h.NodeId, err)
	}
	if dir.Kind() != flist.KindDir {
		return fuse.Status(syscall.ENOTDIR)
	}
	idx, e, err := f.r.LookupChild(dir, name)
	if errors.Is(err, flist.ErrNotExist) {
		*out = fuse.EntryOut{EntryValid: ttl}
		return fuse.OK
	}
	if err == nil {
		idx, e, err = f.resolve(idx, e)
	}
	if err != nil {
		return f.status("lookup", h.NodeId, err)
	}
	f.fillEntry(idx, e, out)
	return fuse.OK
}

func (f *FS) Forget(nodeid, nlookup uint64) {} // node IDs are entry indices: nothing to free

func (f *FS) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	idx, e, err := f.node(in.NodeId)
	if err != nil {
		return f.status("getattr", in.NodeId, err)
	}
	out.AttrValid = ttl
	f.fillAttr(idx, e, &out.Attr)
	return fuse.OK
}

func (f *FS) Readlink(cancel <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	_, e, err := f.node(h.NodeId)
	if err != nil {
		return nil, f.status("readlink", h.NodeId, err)
	}
	if e.Kind() != flist.KindSymlink {
		return nil, fuse.Status(syscall.EINVAL)
	}
	return []byte(e.Target), fuse.OK
}

func (f *FS) GetXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	_, e, err := f.node(h.NodeId)
	if err != nil {
		return 0, f.status("getxattr", h.NodeId, err)
	}
	k := sort.Search(len(e.Xattrs), func(j int) bool { return e.Xattrs[j].Name >= attr })
	if k == len(e.Xattrs) || e.Xattrs[k].Name != attr {
		return 0, fuse.ENOATTR
	}
	v := e.Xattrs[k].Value
	if len(dest) < len(v) {
		return uint32(len(v)), fuse.Status(syscall.ERANGE)
	}
	return uint32(copy(dest, v)), fuse.OK
}

func (f *FS) ListXAttr(cancel <-chan struct{}, h *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	_, e, err := f.node(h.NodeId)
	if err != nil {
		return 0, f.status("listxattr", h.NodeId, err)
	}
	n := 0
	for _, x := range e.Xattrs {
		n += len(x.Name) + 1
	}
	if len(dest) < n {
		return uint32(n), fuse.Status(syscall.ERANGE)
	}
	dest = dest[:0]
	for _, x := range e.Xattrs {
		dest = append(append(dest, x.Name...), 0)
	}
	return uint32(n), fuse.OK
}

func (f *FS) StatFs(cancel <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	*out = fuse.StatfsOut{
		Blocks:  (f.r.StreamSize() + blockSize - 1) / blockSize,
		Files:   f.r.Len(),
		Bsize:   blockSize,
		Frsize:  blockSize,
		NameLen: flist.MaxName,
	}
	return fuse.OK
}

// OpenDir answers ENOSYS, and so does Open without a file cache
// (whole.go): the kernel then stops sending OPEN, OPENDIR and their
// RELEASEs for good, and treats every open as if we had answered
// FOPEN_KEEP_CACHE (and FOPEN_CACHE_DIR for directories), which is what an
// immutable image wants: pages and listings stay cached across opens, and
// opening costs no round trip. Read-ahead state is therefore kept per
// inode, not per open file.
func (f *FS) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	return fuse.ENOSYS
}

// stream returns the read-ahead state of a file.
func (f *FS) stream(id uint64, e *flist.Entry) *stream {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.streams[id]
	if s == nil {
		if len(f.streams) >= maxStreams {
			clear(f.streams)
		}
		s = &stream{off: e.Offset, size: e.Size, ahead: e.Offset}
		f.streams[id] = s
	}
	return s
}

// Read serves a read from the chunks under the range, fetching the missing
// ones in parallel, then starts read-ahead if the file is read sequentially.
func (f *FS) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	_, e, err := f.node(in.NodeId)
	if err != nil {
		return nil, f.status("read", in.NodeId, err)
	}
	if e.Kind() != flist.KindRegular {
		return nil, fuse.Status(syscall.EINVAL)
	}
	if in.Offset >= e.Size || in.Size == 0 {
		return fuse.ReadResultData(nil), fuse.OK
	}
	if f.slices != nil {
		f.chunks.lastRead.Store(time.Now().UnixNano()) // for settle
	}
	h := f.stream(in.NodeId, e)
	f.readCached(in.NodeId)
	end := min(in.Offset+uint64(in.Size), h.size)
	f.prefetchFile(h, in.NodeId, in.Offset, end)
	vecs, err := f.read(h, in.NodeId, in.Offset, end)
	if err != nil {
		return nil, f.status("read", in.NodeId, err)
	}
	if in.Offset == 0 && (f.slices == nil || !f.slices.streaming.Load()) {
		// While a bundle streams, it brings what the loader would read.
		// The first piece: loaderStart only looks at the magic, and one
		// shorter than it leaves the check to the prefetch's own reads.
		f.loaderStart(in.NodeId, e, "", vecs[0])
	}
	if f.slices == nil || !f.slices.streaming.Load() {
		// While a bundle streams, it is the read-ahead: a reader it serves
		// looks sequential, and what lies past its slices was not read.
		f.readAhead(h, in.NodeId, in.Offset, end)
	}
	return fuse.ReadResultVector(vecs), fuse.OK
}

// read returns bytes [off, end) of a file as the pieces of the chunks
// under them, in order: the reply is written from them with one writev,
// never copied into one buffer first.
func (f *FS) read(h *stream, ino, off, end uint64) ([][]byte, error) {
	lo, hi := h.off+off, h.off+end // the span of the content stream
	first, last := f.r.ChunkAt(lo), f.r.ChunkAt(hi-1)
	if first == last {
		s := f.r.ChunkStart(first)
		data, err := f.piece(first, ino, lo-s, hi-s)
		return [][]byte{data}, err
	}
	f.chunks.start(first, last+1, ino)
	vecs := make([][]byte, 0, last-first+1)
	for k := first; k <= last; k++ {
		s, e := f.r.ChunkStart(k), f.r.ChunkStart(k)+uint64(f.r.Chunks()[k].Size)
		data, err := f.piece(k, ino, max(lo, s)-s, min(hi, e)-s)
		if err != nil {
			return nil, err
		}
		vecs = append(vecs, data)
	}
	return vecs, nil
}

// piece returns bytes [lo, hi) of chunk k: from the bundle's slices if
// they hold them, else from the whole chunk.
func (f *FS) piece(k int, ino, lo, hi uint64) ([]byte, error) {
	if f.slices != nil {
		if data, ok := f.slices.serve(k, lo, hi); ok {
			return data, nil
		}
	}
	data, err := f.chunks.get(k, ino, lo, hi)
	if err != nil {
		return nil, err
	}
	return data[lo:hi], nil
}

// seqSlack is how far from the expected position a read may start and
// still count as sequential: the kernel's own read-ahead sends several
// reads at once, and they may arrive out of order.
const seqSlack = 2 << 20

// firstWindow is the read-ahead of a reader just found sequential; each
// further sequential read doubles it, up to Options.ReadAhead. Starting
// small keeps a program that reads a header and then seeks (a dynamic
// loader, a database) from fetching megabytes it will not read.
const firstWindow = 256 << 10

func (f *FS) readAhead(h *stream, ino, off, end uint64) {
	if f.opt.ReadAhead < 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	seq := off == 0 || (off+seqSlack >= h.next && off <= h.next+seqSlack)
	h.next = max(h.next, end)
	if !seq {
		h.window = 0
		return
	}
	h.window = min(max(2*h.window, firstWindow), uint64(f.opt.ReadAhead))
	from := max(h.ahead, h.off+end)
	to := min(h.off+end+h.window, h.off+h.size)
	if from >= to {
		return
	}
	lo, hi := f.r.ChunkAt(from), f.r.ChunkAt(to-1)+1
	if stopped := f.chunks.prefetch(lo, hi, ino, f.opt.Fetchers); stopped == hi {
		h.ahead = to
	} else {
		h.ahead = max(h.ahead, f.r.ChunkStart(stopped))
	}
}

// prefetchFile starts fetching the first Options.FilePrefetch bytes of a
// file in the background, after the chunks of the read [off, end) that
// called it, so that the read's own fetches take the first slots. Fetches
// the read-ahead bound stopped are started by a later read.
func (f *FS) prefetchFile(h *stream, ino, off, end uint64) {
	if f.opt.FilePrefetch < 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	to := h.off + min(h.size, uint64(f.opt.FilePrefetch))
	from := max(h.filled, h.off)
	if from >= to {
		return
	}
	f.chunks.start(f.r.ChunkAt(h.off+off), f.r.ChunkAt(h.off+end-1)+1, ino)
	lo, hi := f.r.ChunkAt(from), f.r.ChunkAt(to-1)+1
	if stopped := f.chunks.prefetch(lo, hi, ino, f.opt.FilePrefetchFetchers); stopped == hi {
		h.filled = to
	} else {
		h.filled = max(h.filled, f.r.ChunkStart(stopped))
	}
}

func (f *FS) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return f.readDir(in, out, false)
}

func (f *FS) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return f.readDir(in, out, true)
}

// readDir lists a directory from offset in.Offset: 0 is ".", 1 is "..",
// 2+k is child k. With plus, each child carries its entry and attributes.
func (f *FS) readDir(in *fuse.ReadIn, out *fuse.DirEntryList, plus bool) fuse.Status {
	idx, dir, err := f.node(in.NodeId)
	if err != nil {
		return f.status("readdir", in.NodeId, err)
	}
	if dir.Kind() != flist.KindDir {
		return fuse.Status(syscall.ENOTDIR)
	}
	add := func(de fuse.DirEntry) bool {
		if plus {
			return out.AddDirLookupEntry(de) != nil // zero node ID: the kernel makes no entry for . and ..
		}
		return out.AddDirEntry(de)
	}
	pos := in.Offset
	if pos == 0 {
		if !add(fuse.DirEntry{Name: ".", Mode: syscall.S_IFDIR, Ino: idx + 1, Off: 1}) {
			return fuse.OK
		}
		pos = 1
	}
	if pos == 1 {
		parent := idx
		if d := f.dir(idx); d != nil {
			parent = d.parent
		}
		if !add(fuse.DirEntry{Name: "..", Mode: syscall.S_IFDIR, Ino: parent + 1, Off: 2}) {
			return fuse.OK
		}
		pos = 2
	}
	for k := pos - 2; k < dir.NumChildren; k++ {
		ci := dir.FirstChild + k
		c, err := f.r.Entry(ci)
		if err != nil {
			return f.status("readdir", in.NodeId, err)
		}
		ti, t, err := f.resolve(ci, c)
		if err != nil {
			return f.status("readdir", in.NodeId, err)
		}
		de := fuse.DirEntry{Name: c.Name, Mode: t.Mode, Ino: ti + 1, Off: k + 3}
		if !plus {
			if !out.AddDirEntry(de) {
				break
			}
			continue
		}
		eo := out.AddDirLookupEntry(de)
		if eo == nil {
			break
		}
		f.fillEntry(ti, t, eo)
	}
	return fuse.OK
}
