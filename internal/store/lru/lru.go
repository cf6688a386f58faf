package lru

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zosgrid/zos/internal/chunk"
	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/store"
)

// DefaultBudget is the budget of a cache for which none was ever set.
const DefaultBudget = 10 << 30

// DefaultDir is where the machine's chunk cache lives unless told otherwise.
const DefaultDir = "/var/cache/zos/chunks"

const (
	metaDir    = ".zos-cache"
	touchEvery = time.Minute      // recency resolution: the most a read updates a blob's mtime
	staleTemp  = time.Hour        // a temporary file this old belongs to a crashed writer
	flushEvery = 10 * time.Second // how long hits and misses stay in memory
	highWater  = 95               // percent of the budget that starts a background eviction
	lowWater   = 90               // percent of the budget an eviction brings the cache down to
)

// ErrFull reports a blob that does not fit in the budget even after
// eviction (everything else is pinned, or the blob is larger than the
// budget). The blob is not cached; a read-through cache ignores the error.
var ErrFull = errors.New("chunk cache full")

// Options configure Open.
type Options struct {
	// Budget is the cache's size in bytes. A positive value becomes the
	// budget of the directory for every process sharing it (the last one
	// set wins); 0 keeps the budget set before, or DefaultBudget.
	Budget int64
	// Logger receives what the background eviction cannot return; nil
	// discards it.
	Logger *slog.Logger
	// NoBackground turns the background eviction off in this Store (for
	// tools that inspect the cache): only GC, Prune and a write that would
	// pass the budget evict.
	NoBackground bool
}

// Store is a bounded chunk cache in a directory. It is safe for concurrent
// use, and several Stores (in one process or several) may share a directory.
type Store struct {
	root string
	log  *slog.Logger

	smu   sync.Mutex // the state record, in this process; see stateFile
	state stateFile
	emu   sync.Mutex // eviction, in this process
	evict *os.File   // evict.lock, for other processes

	pmu  sync.Mutex
	pins map[digest.ID]*pin

	hits, misses atomic.Int64 // not yet added to the state record
	flushed      atomic.Int64 // unix ns of the last flush

	ctx    context.Context // the background evictor's lifetime
	cancel context.CancelFunc
	kick   chan struct{}
	done   chan struct{}
	closed atomic.Bool
}

// pin is this process's hold on one blob: n users, and the open file whose
// shared flock keeps other processes' evictors off (nil until the blob is
// on disk).
type pin struct {
	n int
	f *os.File
}

var _ store.Store = (*Store)(nil)

// Open opens (creating if needed) the cache in root. A directory of blobs
// without a state record (a dir store, a cache from an older zos) is
// adopted: its blobs are counted before Open returns.
func Open(ctx context.Context, root string, opt Options) (*Store, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(abs, metaDir), 0o755); err != nil {
		return nil, fmt.Errorf("chunk cache: %w", err)
	}
	sf, err := os.OpenFile(filepath.Join(abs, metaDir, "state"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("chunk cache: %w", err)
	}
	ef, err := os.OpenFile(filepath.Join(abs, metaDir, "evict.lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		sf.Close()
		return nil, fmt.Errorf("chunk cache: %w", err)
	}
	log := opt.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Store{
		root: abs, log: log, state: stateFile{sf}, evict: ef,
		pins: map[digest.ID]*pin{},
		kick: make(chan struct{}, 1), done: make(chan struct{}),
	}
	s.flushed.Store(time.Now().UnixNano())
	setBudget := func(st *state) error {
		if opt.Budget > 0 {
			st.budget = opt.Budget
		}
		return nil
	}
	err = s.update(setBudget)
	if errors.Is(err, errNoState) {
		err = s.rebuild(ctx, setBudget)
	}
	if err != nil {
		sf.Close()
		ef.Close()
		return nil, err
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if opt.NoBackground {
		close(s.done)
		return s, nil
	}
	go s.run()
	if st, err := s.Stats(); err == nil && st.Used > st.Budget {
		s.kickEviction() // a smaller budget than before: no need to wait for a write
	}
	return s, nil
}

// Root returns the cache's directory.
func (s *Store) Root() string { return s.root }

// Path returns the file that holds id.
func (s *Store) Path(id digest.ID) string {
	h := id.String()
	return filepath.Join(s.root, h[:2], h)
}

// update runs fn on the state record under its lock and writes the record
// back if fn succeeds. Hits and misses counted since the last update are
// added to it.
func (s *Store) update(fn func(st *state) error) error {
	s.smu.Lock()
	defer s.smu.Unlock()
	if err := flock(s.state.f, unix.LOCK_EX); err != nil {
		return fmt.Errorf("chunk cache: lock state: %w", err)
	}
	defer funlock(s.state.f)
	return s.updateLocked(fn)
}

func (s *Store) updateLocked(fn func(st *state) error) error {
	st, err := s.state.read()
	if err != nil {
		return err
	}
	hits, misses := s.hits.Swap(0), s.misses.Swap(0)
	st.hits += hits
	st.misses += misses
	if err := fn(&st); err != nil {
		s.hits.Add(hits)
		s.misses.Add(misses)
		return err
	}
	if err := s.state.write(st); err != nil {
		s.hits.Add(hits)
		s.misses.Add(misses)
		return err
	}
	s.flushed.Store(time.Now().UnixNano())
	return nil
}

// Get returns the blob under id. A blob that fails chunk.Check is removed
// and reported as a *chunk.Invalid; the next Put of it writes it again.
func (s *Store) Get(ctx context.Context, id digest.ID) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p := s.Path(id)
	b, st, err := s.readPinned(id)
	if b == nil && err == nil {
		b, st, err = s.readPath(id, p)
	}
	if errors.Is(err, fs.ErrNotExist) {
		s.misses.Add(1)
		s.maybeFlush()
		return nil, fmt.Errorf("%s in %s: %w", id.Short(), s, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("chunk cache: %w", err)
	}
	if err := store.Verify(s, id, b); err != nil {
		if errors.Is(err, chunk.ErrCorrupt) {
			s.drop(p, st)
		}
		s.misses.Add(1)
		return nil, err
	}
	s.touch(p, st.Mtim)
	s.hits.Add(1)
	s.maybeFlush()
	return b, nil
}

// readPath reads the blob file at p. If id is pinned in this process but
// its pin has no file yet, the file read becomes the pin's.
func (s *Store) readPath(id digest.ID, p string) ([]byte, unix.Stat_t, error) {
	f, err := openFile(p, unix.O_RDONLY, 0)
	if err != nil {
		return nil, unix.Stat_t{}, err
	}
	b, st, err := readAll(f)
	if err == nil && s.adopt(id, f) {
		return b, st, nil
	}
	f.Close()
	return b, st, err
}

// readPinned reads id through the file its pin holds, if it is pinned in
// this process; it returns nil, nil if not (or if the pinned file was
// removed since).
func (s *Store) readPinned(id digest.ID) ([]byte, unix.Stat_t, error) {
	s.pmu.Lock()
	pn := s.pins[id]
	if pn == nil || pn.f == nil {
		s.pmu.Unlock()
		return nil, unix.Stat_t{}, nil
	}
	pn.n++ // keeps pn.f open while we read
	f := pn.f
	s.pmu.Unlock()
	defer s.release(id, pn)
	b, st, err := readAll(f)
	if err != nil || st.Nlink == 0 {
		return nil, unix.Stat_t{}, nil // read by path instead
	}
	return b, st, nil
}

func readAll(f *os.File) ([]byte, unix.Stat_t, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return nil, st, err
	}
	if st.Size > chunk.MaxSize*2 {
		// No blob is this large: do not read it into memory.
		return make([]byte, 0), st, nil
	}
	b := make([]byte, st.Size)
	n, err := f.ReadAt(b, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, st, err
	}
	return b[:n], st, nil
}

// touch records a use of the blob at p: its mtime becomes now if it is
// more than touchEvery old.
func (s *Store) touch(p string, mtime unix.Timespec) {
	now := time.Now()
	if now.Sub(time.Unix(mtime.Unix())) > touchEvery {
		os.Chtimes(p, now, now) // best effort: recency is advice
	}
}

// drop removes a blob that failed its check, if p still names the file
// that was read, and uncounts it.
func (s *Store) drop(p string, read unix.Stat_t) {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil || st.Ino != read.Ino || st.Dev != read.Dev {
		return
	}
	if os.Remove(p) == nil {
		s.uncount(1, st.Size, false)
	}
}

// uncount subtracts n blobs of size bytes that this process removed.
func (s *Store) uncount(n, size int64, evicted bool) {
	err := s.update(func(st *state) error {
		st.used = max(st.used-size, 0)
		st.blobs = max(st.blobs-n, 0)
		if evicted {
			st.evictions += n
			st.evicted += size
		}
		return nil
	})
	if err != nil {
		s.log.Warn("chunk cache: uncount removed blobs", "dir", s.root, "blobs", n, "bytes", size, "err", err)
	}
}

func (s *Store) maybeFlush() {
	if time.Now().UnixNano()-s.flushed.Load() > int64(flushEvery) {
		s.update(func(*state) error { return nil })
	}
}

// Has reports whether a blob is cached under id, without reading it.
func (s *Store) Has(ctx context.Context, id digest.ID) (bool, error) {
	var st unix.Stat_t
	err := unix.Lstat(s.Path(id), &st)
	if err == nil {
		return true, nil
	}
	if err == unix.ENOENT {
		return false, nil
	}
	return false, fmt.Errorf("chunk cache: %w", err)
}

// Put caches blob under id, unless it is present. A blob that does not fit
// in the budget, even after a synchronous eviction, is an error wrapping
// ErrFull.
func (s *Store) Put(ctx context.Context, id digest.ID, blob []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p := s.Path(id)
	var pst unix.Stat_t
	if err := unix.Lstat(p, &pst); err == nil {
		s.touch(p, pst.Mtim)
		return nil
	}
	size := int64(len(blob))
	tmp, f, err := s.writeTemp(p, blob)
	if err != nil {
		return fmt.Errorf("chunk cache: put %s: %w", id.Short(), err)
	}
	defer os.Remove(tmp)
	keep := false
	defer func() {
		if !keep {
			f.Close()
		}
	}()
	pinned := s.pinWaiting(id)
	if pinned {
		// Lock before the link: the blob is pinned from its first instant.
		flock(f, unix.LOCK_SH)
	}
	linked, err := s.place(ctx, tmp, p, size)
	if err != nil {
		return fmt.Errorf("chunk cache: put %s (%d bytes): %w", id.Short(), size, err)
	}
	if linked && pinned {
		keep = s.adopt(id, f)
	}
	return nil
}

// place links the temporary file tmp of size bytes to p within the budget,
// evicting to make room if needed; linked is false if p was present.
func (s *Store) place(ctx context.Context, tmp, p string, size int64) (linked bool, err error) {
	used, budget, linked, err := s.commit(tmp, p, size)
	if errors.Is(err, errNoState) {
		// The record was removed or torn under us: recount, and go on.
		if err = s.rebuild(ctx, func(*state) error { return nil }); err == nil {
			used, budget, linked, err = s.commit(tmp, p, size)
		}
	}
	if errors.Is(err, ErrFull) && size <= budget {
		if err = s.makeRoom(ctx, size); err == nil {
			used, budget, linked, err = s.commit(tmp, p, size)
		}
	}
	if err != nil {
		return false, err
	}
	if used > budget*highWater/100 {
		s.kickEviction()
	}
	return linked, nil
}

// writeTemp writes blob to a new temporary file in p's shard and returns
// its name and the open file.
func (s *Store) writeTemp(p string, blob []byte) (string, *os.File, error) {
	return s.writeTempFunc(p, func(f *os.File) error {
		_, err := f.Write(blob)
		return err
	})
}

// writeTempFunc is writeTemp with the content written by fill.
func (s *Store) writeTempFunc(p string, fill func(*os.File) error) (string, *os.File, error) {
	dir := filepath.Dir(p)
	var tmp string
	var f *os.File
	var err error
	for range 4 {
		// Unique among live writers (this process's ID and a counter); a
		// leftover of a crashed process with the same ID is skipped.
		tmp = filepath.Join(dir, fmt.Sprintf(".tmp-%d-%d", pid, tmpSeq.Add(1)))
		f, err = openFile(tmp, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL, 0o644)
		if errors.Is(err, fs.ErrNotExist) {
			if err = os.MkdirAll(dir, 0o755); err == nil {
				f, err = openFile(tmp, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL, 0o644)
			}
		}
		if !errors.Is(err, fs.ErrExist) {
			break
		}
	}
	if err != nil {
		return "", nil, err
	}
	if err := fill(f); err != nil {
		f.Close()
		os.Remove(tmp)
		return "", nil, err
	}
	return tmp, f, nil
}

var tmpSeq atomic.Uint64

// pid names this process's temporary files (os.Getpid is a system call).
var pid = os.Getpid()

// openFile is os.OpenFile without the runtime's network poller: os.OpenFile
// offers every file to the poller, which costs a regular file four fcntl
// calls and a failing epoll_ctl; os.NewFile of a blocking descriptor makes
// one fcntl. A cold read opens two files per chunk (the pin's probe and the
// temporary blob).
func openFile(name string, flag int, perm uint32) (*os.File, error) {
	for {
		fd, err := unix.Open(name, flag|unix.O_CLOEXEC, perm)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, &fs.PathError{Op: "open", Path: name, Err: err}
		}
		return os.NewFile(uintptr(fd), name), nil
	}
}

// commit reserves size bytes and links tmp to p in one critical section
// under the state lock. linked is false if p was present (another writer
// won: nothing is counted). It fails with ErrFull, linking nothing, if
// the blob does not fit.
func (s *Store) commit(tmp, p string, size int64) (used, budget int64, linked bool, err error) {
	err = s.update(func(st *state) error {
		used, budget = st.used, st.effectiveBudget()
		if st.used+size > budget {
			return ErrFull
		}
		// The record is written after the link: a crash in between leaves
		// the blob uncounted, which a scan repairs; the other order would
		// leave a count with no blob, which is safe but only a reconcile
		// repairs. Both are at most one blob.
		if err := os.Link(tmp, p); err != nil {
			if errors.Is(err, fs.ErrExist) {
				return errPresent
			}
			return err
		}
		linked = true
		st.used += size
		st.blobs++
		used = st.used
		return nil
	})
	if errors.Is(err, errPresent) {
		return used, budget, false, nil
	}
	return used, budget, linked, err
}

// errPresent aborts a commit whose blob another writer linked first.
var errPresent = errors.New("present")

// Delete removes the blob under id, pinned or not.
func (s *Store) Delete(ctx context.Context, id digest.ID) error {
	p := s.Path(id)
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		if err == unix.ENOENT {
			return nil
		}
		return fmt.Errorf("chunk cache: %w", err)
	}
	if err := os.Remove(p); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("chunk cache: %w", err)
	}
	s.uncount(1, st.Size, false)
	return nil
}

// List calls fn for every cached ID.
func (s *Store) List(ctx context.Context, fn func(digest.ID) error) error {
	return s.walk(ctx, func(sh *os.File, name string) error {
		id, ok := blobID(sh, name)
		if !ok {
			return nil
		}
		return fn(id)
	})
}

// walk calls fn for every name in every shard directory, with the shard
// open (for *at system calls).
func (s *Store) walk(ctx context.Context, fn func(shard *os.File, name string) error) error {
	shards, err := os.ReadDir(s.root)
	if err != nil {
		return fmt.Errorf("chunk cache: %w", err)
	}
	for _, sh := range shards {
		if !sh.IsDir() || len(sh.Name()) != 2 || !isHex(sh.Name()) {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := s.walkShard(filepath.Join(s.root, sh.Name()), fn); err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) walkShard(dir string, fn func(*os.File, string) error) error {
	d, err := os.Open(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("chunk cache: %w", err)
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return fmt.Errorf("chunk cache: %w", err)
	}
	for _, n := range names {
		if err := fn(d, n); err != nil {
			return err
		}
	}
	return nil
}

// blobID parses a blob's file name in shard.
func blobID(shard *os.File, name string) (digest.ID, bool) {
	if len(name) != 2*digest.Size || !strings.HasPrefix(name, filepath.Base(shard.Name())) {
		return digest.ID{}, false
	}
	id, err := digest.Parse(name)
	return id, err == nil
}

func isHex(s string) bool {
	for _, c := range []byte(s) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// String returns the cache's directory as a dir store URL (the layout is
// the same, so it opens as one).
func (s *Store) String() string { return "dir://" + s.root }

// Close stops the background eviction and writes the counters. Pins still
// held stay valid until released.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.cancel()
	<-s.done
	err := s.update(func(*state) error { return nil })
	return errors.Join(err, s.state.f.Close(), s.evict.Close())
}
