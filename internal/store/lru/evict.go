package lru

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zosgrid/zos/internal/digest"
)

// entry is one blob as a scan saw it.
type entry struct {
	id    digest.ID
	size  int64
	mtime int64 // unix ns: the blob's recency
	dev   uint64
	ino   uint64
	file  bool // a whole plaintext file (files.go), not a blob
}

// scanned is what a scan of the directory found.
type scanned struct {
	entries   []entry
	bytes     int64
	temps     int   // temporary files of live writers (or removal not asked for)
	tempBytes int64 //
	stale     int   // temporary files of crashed writers removed
}

// scan lists every blob with its size and recency; with removeStale it
// removes temporary files older than staleTemp.
func (s *Store) scan(ctx context.Context, removeStale bool) (scanned, error) {
	var r scanned
	cutoff := time.Now().Add(-staleTemp).UnixNano()
	err := s.walk(ctx, func(sh *os.File, name string) error {
		var st unix.Stat_t
		if strings.HasPrefix(name, ".tmp-") {
			if unix.Fstatat(int(sh.Fd()), name, &st, unix.AT_SYMLINK_NOFOLLOW) != nil {
				return nil
			}
			if removeStale && st.Mtim.Nano() < cutoff {
				if unix.Unlinkat(int(sh.Fd()), name, 0) == nil {
					r.stale++
				}
				return nil
			}
			r.temps++
			r.tempBytes += st.Size
			return nil
		}
		id, ok := blobID(sh, name)
		file := false
		if !ok {
			if id, ok = fileName(sh, name); !ok {
				return nil
			}
			file = true
		}
		if unix.Fstatat(int(sh.Fd()), name, &st, unix.AT_SYMLINK_NOFOLLOW) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
			return nil
		}
		r.entries = append(r.entries, entry{id: id, size: st.Size, mtime: st.Mtim.Nano(), dev: st.Dev, ino: st.Ino, file: file})
		r.bytes += st.Size
		return nil
	})
	return r, err
}

// sortLRU orders entries least recently used first (ties by ID, so the
// order is deterministic).
func sortLRU(entries []entry) {
	slices.SortFunc(entries, func(a, b entry) int {
		if c := cmp.Compare(a.mtime, b.mtime); c != 0 {
			return c
		}
		return bytes.Compare(a.id[:], b.id[:])
	})
}

// evictBatch is how many removals an eviction makes between updates of
// the shared count, so that writers waiting for room see it freed early.
const evictBatch = 256

// evictOldest walks entries in order, calling try on each until freed
// reaches need. try removes an entry and reports its bytes, or reports
// false if it must stay (pinned, or used since the scan). commit is called
// with what was removed every evictBatch removals and at the end.
func evictOldest(entries []entry, need int64, try func(entry) (int64, bool), commit func(n, bytes int64)) (n, freed int64, skipped int) {
	var bn, bb int64
	for _, e := range entries {
		if freed >= need {
			break
		}
		size, ok := try(e)
		if !ok {
			skipped++
			continue
		}
		n++
		freed += size
		bn++
		bb += size
		if bn == evictBatch {
			commit(bn, bb)
			bn, bb = 0, 0
		}
	}
	if bn > 0 {
		commit(bn, bb)
	}
	return n, freed, skipped
}

// tryEvict removes e unless it is pinned (here or in another process) or
// was used since the scan, and reports the bytes removed.
func (s *Store) tryEvict(e entry) (int64, bool) {
	p := s.FilePath(e.id)
	if !e.file {
		if s.pinnedHere(e.id) {
			return 0, false
		}
		p = s.Path(e.id)
	}
	f, err := openFile(p, unix.O_RDONLY, 0)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	if flock(f, unix.LOCK_EX|unix.LOCK_NB) != nil {
		return 0, false // a pin
	}
	var st unix.Stat_t
	if unix.Fstat(int(f.Fd()), &st) != nil || st.Nlink == 0 || st.Mtim.Nano() != e.mtime {
		return 0, false // gone, or read since the scan
	}
	if os.Remove(p) != nil {
		return 0, false
	}
	return st.Size, true
}

// tryEvictCtx is tryEvict until ctx ends.
func (s *Store) tryEvictCtx(ctx context.Context) func(entry) (int64, bool) {
	return func(e entry) (int64, bool) {
		if ctx.Err() != nil {
			return 0, false
		}
		return s.tryEvict(e)
	}
}

func (s *Store) commitEvicted(n, size int64) { s.uncount(n, size, true) }

func (s *Store) kickEviction() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// run is the background eviction; it also adds hits and misses to the
// state record every flushEvery, so that an idle mount's show up.
func (s *Store) run() {
	defer close(s.done)
	tick := time.NewTicker(flushEvery)
	defer tick.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-tick.C:
			if s.hits.Load() != 0 || s.misses.Load() != 0 {
				s.update(func(*state) error { return nil })
			}
			continue
		case <-s.kick:
		}
		if err := s.evictBackground(s.ctx); err != nil && s.ctx.Err() == nil {
			s.log.Warn("chunk cache: eviction failed", "dir", s.root, "err", err)
		}
	}
}

// evictBackground brings the cache down to the low-water mark if it is past
// the high-water mark, unless another process is evicting.
func (s *Store) evictBackground(ctx context.Context) error {
	if !s.emu.TryLock() {
		return nil
	}
	defer s.emu.Unlock()
	if flock(s.evict, unix.LOCK_EX|unix.LOCK_NB) != nil {
		return nil // another process evicts; its writes will kick us again if needed
	}
	defer funlock(s.evict)
	return s.evictLocked(ctx,
		func(used, budget int64) bool { return used > budget*highWater/100 },
		func(budget int64) int64 { return budget * lowWater / 100 })
}

// makeRoom evicts, waiting for any other eviction, until a blob of size
// bytes fits.
func (s *Store) makeRoom(ctx context.Context, size int64) error {
	s.emu.Lock()
	defer s.emu.Unlock()
	if err := s.lockEvict(ctx); err != nil {
		return err
	}
	defer funlock(s.evict)
	return s.evictLocked(ctx,
		func(used, budget int64) bool { return used+size > budget },
		func(budget int64) int64 { return min(budget*lowWater/100, budget-size) })
}

// lockEvict takes the eviction lock, waiting for other processes as long
// as ctx allows (flock itself cannot be cancelled).
func (s *Store) lockEvict(ctx context.Context) error {
	for {
		err := flock(s.evict, unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return nil
		}
		if err != unix.EWOULDBLOCK {
			return fmt.Errorf("chunk cache: lock eviction: %w", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// evictLocked runs one eviction, the eviction lock held: if needed says
// so, it scans and removes the least recently used blobs until the count
// is down to target. It reconciles the count with the scan when they
// disagree by more than a twentieth of the budget.
func (s *Store) evictLocked(ctx context.Context, needed func(used, budget int64) bool, target func(budget int64) int64) error {
	st, err := s.read()
	if err != nil {
		return err
	}
	budget := st.effectiveBudget()
	if !needed(st.used, budget) {
		return nil // someone made room while we waited
	}
	sc, err := s.scan(ctx, true)
	if err != nil {
		return err
	}
	sortLRU(sc.entries)
	_, freed, _ := evictOldest(sc.entries, st.used-target(budget), s.tryEvictCtx(ctx), s.commitEvicted)
	end, err := s.read()
	if err != nil {
		return err
	}
	// The count is read before the scan, so writes during the scan make
	// the scan larger, never the count: a count above the scan is a leak
	// (a crashed writer, blobs removed behind our back). The count read
	// after includes every write the scan saw: a scan above it means blobs
	// counted nowhere.
	slack := max(budget/20, 1<<20)
	if st.used-sc.bytes > slack || sc.bytes-freed-end.used > slack {
		s.log.Info("chunk cache: recounting", "dir", s.root, "counted", st.used, "scanned", sc.bytes)
		if _, err := s.reconcile(ctx); err != nil {
			return err
		}
	}
	return nil
}

// read returns the state record, with this process's unflushed counters.
func (s *Store) read() (state, error) {
	var out state
	err := s.update(func(st *state) error { out = *st; return nil })
	return out, err
}

// reconcile sets the count from a scan made under the state lock (writers
// wait meanwhile, so the scan is exact).
func (s *Store) reconcile(ctx context.Context) (state, error) {
	var out state
	err := s.update(func(st *state) error {
		sc, err := s.scan(ctx, false)
		if err != nil {
			return err
		}
		st.used, st.blobs, st.reconciled = sc.bytes, int64(len(sc.entries)), time.Now().UnixNano()
		out = *st
		return nil
	})
	return out, err
}

// rebuild creates the state record from a scan, unless another process
// did while we waited for the locks, then applies fn.
func (s *Store) rebuild(ctx context.Context, fn func(*state) error) error {
	s.emu.Lock()
	defer s.emu.Unlock()
	if err := s.lockEvict(ctx); err != nil {
		return err
	}
	defer funlock(s.evict)
	s.smu.Lock()
	defer s.smu.Unlock()
	if err := flock(s.state.f, unix.LOCK_EX); err != nil {
		return fmt.Errorf("chunk cache: lock state: %w", err)
	}
	defer funlock(s.state.f)
	if _, err := s.state.read(); !errors.Is(err, errNoState) {
		if err != nil {
			return err
		}
		return s.updateLocked(fn)
	}
	sc, err := s.scan(ctx, true)
	if err != nil {
		return err
	}
	st := state{used: sc.bytes, blobs: int64(len(sc.entries)), reconciled: time.Now().UnixNano()}
	if err := fn(&st); err != nil {
		return err
	}
	return s.state.write(st)
}

// SetBudget sets the budget of the cache, for every process sharing it.
// A cache past its new budget is brought down by the next write past the
// high-water mark, by any process, or by GC.
func (s *Store) SetBudget(budget int64) error {
	if budget <= 0 {
		return fmt.Errorf("chunk cache: budget %d", budget)
	}
	return s.update(func(st *state) error { st.budget = budget; return nil })
}

// Stats is what the state record counts, machine-wide.
type Stats struct {
	Budget       int64     // bytes
	Used         int64     // bytes counted (an upper bound of the blobs' sizes)
	Blobs        int64     // blobs counted
	Hits         int64     // Gets answered from the cache, by every process
	Misses       int64     // Gets of a blob the cache did not have (or had rotten)
	Evictions    int64     // blobs removed by eviction, GC and Prune
	EvictedBytes int64     //
	Reconciled   time.Time // when the count was last set from a full scan
}

// Stats returns the counters of the state record.
func (s *Store) Stats() (Stats, error) {
	st, err := s.read()
	if err != nil {
		return Stats{}, err
	}
	return Stats{
		Budget: st.effectiveBudget(), Used: st.used, Blobs: st.blobs, Hits: st.hits, Misses: st.misses,
		Evictions: st.evictions, EvictedBytes: st.evicted, Reconciled: time.Unix(0, st.reconciled),
	}, nil
}

// Usage is what a scan of the directory finds.
type Usage struct {
	Blobs       int64 // blob files
	Bytes       int64 // their sizes
	Pinned      int64 // blobs some process holds a pin on (-1: unknown on this system)
	PinnedBytes int64 //
	Temps       int64 // temporary files (writes in progress, or left by a crash less than an hour ago)
	TempBytes   int64 //
	Files       int64 // whole files (files.go), counted in Blobs too
	FileBytes   int64 // their sizes, counted in Bytes too
}

// Usage scans the directory. Pins are read from the kernel's table of
// locks, so pins of every process are counted.
func (s *Store) Usage(ctx context.Context) (Usage, error) {
	sc, err := s.scan(ctx, false)
	if err != nil {
		return Usage{}, err
	}
	u := Usage{Blobs: int64(len(sc.entries)), Bytes: sc.bytes, Temps: int64(sc.temps), TempBytes: sc.tempBytes}
	for _, e := range sc.entries {
		if e.file {
			u.Files++
			u.FileBytes += e.size
		}
	}
	shared, err := sharedFlocks()
	if err != nil {
		u.Pinned, u.PinnedBytes = -1, -1
		return u, nil
	}
	for _, e := range sc.entries {
		if shared[devIno{unix.Major(e.dev), unix.Minor(e.dev), e.ino}] {
			u.Pinned++
			u.PinnedBytes += e.size
		}
	}
	return u, nil
}

// Result is what GC or Prune did.
type Result struct {
	Removed int64 // blobs removed
	Freed   int64 // bytes removed
	Skipped int   // blobs that had to go but were pinned or in use
	Stale   int   // temporary files of crashed writers removed
	Blobs   int64 // blobs left (exact: counted under the state lock)
	Bytes   int64 // bytes left
	Budget  int64
}

// GC removes least recently used unpinned blobs until the cache holds at
// most target bytes (its budget if target is 0 or less), removes temporary
// files of crashed writers and recounts the cache. It waits for an
// eviction in progress in another process.
func (s *Store) GC(ctx context.Context, target int64) (Result, error) {
	return s.sweep(ctx, func(sc scanned, budget int64) ([]entry, int64) {
		if target <= 0 {
			target = budget
		}
		sortLRU(sc.entries)
		return sc.entries, sc.bytes - target
	})
}

// Prune removes every unpinned blob not used for olderThan, or every
// unpinned blob if olderThan is 0 or less, then recounts the cache.
// Recency has a resolution of a minute (docs/CACHE.md).
func (s *Store) Prune(ctx context.Context, olderThan time.Duration) (Result, error) {
	cutoff := time.Now().Add(-olderThan).UnixNano()
	return s.sweep(ctx, func(sc scanned, _ int64) ([]entry, int64) {
		var old []entry
		for _, e := range sc.entries {
			if olderThan <= 0 || e.mtime < cutoff {
				old = append(old, e)
			}
		}
		sortLRU(old)
		return old, math.MaxInt64
	})
}

// sweep removes blobs from those pick chooses from a scan, in order, until
// it has removed as many bytes as pick asks, then reconciles.
func (s *Store) sweep(ctx context.Context, pick func(sc scanned, budget int64) (victims []entry, need int64)) (Result, error) {
	s.emu.Lock()
	defer s.emu.Unlock()
	if err := s.lockEvict(ctx); err != nil {
		return Result{}, err
	}
	defer funlock(s.evict)
	st, err := s.read()
	if err != nil {
		return Result{}, err
	}
	sc, err := s.scan(ctx, true)
	if err != nil {
		return Result{}, err
	}
	victims, need := pick(sc, st.effectiveBudget())
	var r Result
	r.Removed, r.Freed, r.Skipped = evictOldest(victims, need, s.tryEvictCtx(ctx), s.commitEvicted)
	if err := ctx.Err(); err != nil {
		return r, err
	}
	r.Stale = sc.stale
	end, err := s.reconcile(ctx)
	if err != nil {
		return r, err
	}
	r.Blobs, r.Bytes, r.Budget = end.blobs, end.used, end.effectiveBudget()
	return r, nil
}
