package lru

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/store"
)

// Pin keeps the blob under id from eviction, by this or any other process
// sharing the directory, until unpin is called (calling it again does
// nothing). Pinning an ID that is not cached yet is allowed: the pin takes
// hold when this process reads or writes the blob. Pins nest. Delete, and
// the removal of a blob that fails its check, ignore pins.
//
// A pin holds the blob's file open with a shared flock, which an evictor
// must take exclusively to remove it.
func (s *Store) Pin(id digest.ID) (unpin func()) {
	s.pmu.Lock()
	pn := s.pins[id]
	if pn == nil {
		pn = &pin{}
		s.pins[id] = pn
	}
	pn.n++
	if pn.f == nil {
		// An evictor holds its exclusive lock only to remove the file, so
		// waiting for the shared one under pmu is short.
		pn.f = s.lockShared(id)
	}
	s.pmu.Unlock()
	var once sync.Once
	return func() { once.Do(func() { s.release(id, pn) }) }
}

func (s *Store) release(id digest.ID, pn *pin) {
	s.pmu.Lock()
	defer s.pmu.Unlock()
	pn.n--
	if pn.n > 0 {
		return
	}
	if s.pins[id] == pn {
		delete(s.pins, id)
	}
	if pn.f != nil {
		pn.f.Close() // releases the flock
		pn.f = nil
	}
}

// lockShared opens the blob under id with a shared flock, or returns nil if
// it is not cached.
func (s *Store) lockShared(id digest.ID) *os.File {
	for range 2 {
		f, err := openFile(s.Path(id), unix.O_RDONLY, 0)
		if err != nil {
			return nil
		}
		if flock(f, unix.LOCK_SH) == nil && linked(f) {
			return f
		}
		// Removed while we waited for the lock: a new copy may be there.
		f.Close()
	}
	return nil
}

// linked reports whether f's file still has a name (an evictor that
// removed it while we waited for its lock leaves it with none).
func linked(f *os.File) bool {
	var st unix.Stat_t
	return unix.Fstat(int(f.Fd()), &st) == nil && st.Nlink > 0
}

// pinWaiting reports whether id is pinned in this process with no file yet.
func (s *Store) pinWaiting(id digest.ID) bool {
	s.pmu.Lock()
	defer s.pmu.Unlock()
	pn := s.pins[id]
	return pn != nil && pn.f == nil
}

// adopt makes f, open on id's blob, the file of id's pin if id is pinned
// with no file yet, and reports whether it did (then f is the pin's to
// close).
func (s *Store) adopt(id digest.ID, f *os.File) bool {
	s.pmu.Lock()
	defer s.pmu.Unlock()
	pn := s.pins[id]
	if pn == nil || pn.f != nil {
		return false
	}
	if flock(f, unix.LOCK_SH) != nil || !linked(f) {
		return false
	}
	pn.f = f
	return true
}

// pinnedHere reports whether id is pinned in this process.
func (s *Store) pinnedHere(id digest.ID) bool {
	s.pmu.Lock()
	defer s.pmu.Unlock()
	return s.pins[id] != nil
}

// Lease returns a view of through (typically the read-through cache whose
// local side is s) that pins in s every blob read or written through it,
// and release, which drops those pins. A chunk read with store.Fetch
// through the view keeps the chunk and its delta bases on disk until
// release. The view is safe for concurrent use; closing it does not close
// through.
func (s *Store) Lease(through store.Store) (view store.Store, release func()) {
	l := &lease{Store: through, c: s, held: map[digest.ID]func(){}}
	return l, l.release
}

type lease struct {
	store.Store
	c *Store

	mu       sync.Mutex
	held     map[digest.ID]func()
	released bool
}

func (l *lease) pin(id digest.ID) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.held[id]; !ok && !l.released {
		l.held[id] = l.c.Pin(id)
	}
}

func (l *lease) release() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, unpin := range l.held {
		unpin()
	}
	l.held = nil
	l.released = true
}

func (l *lease) Get(ctx context.Context, id digest.ID) ([]byte, error) {
	l.pin(id)
	return l.Store.Get(ctx, id)
}

// GetBatch pins every ID, then reads them through the store the lease
// views, when that store can batch.
func (l *lease) GetBatch(ctx context.Context, ids []digest.ID, fn func(i int, blob []byte, err error)) error {
	b, ok := l.Store.(store.Batcher)
	if !ok {
		return fmt.Errorf("lease of %s: %w", l.Store, errors.ErrUnsupported)
	}
	for _, id := range ids {
		l.pin(id)
	}
	return b.GetBatch(ctx, ids, fn)
}

// Drop passes on to the viewed store, when it keeps copies (a cache).
func (l *lease) Drop(ctx context.Context, id digest.ID) {
	if d, ok := l.Store.(store.Dropper); ok {
		d.Drop(ctx, id)
	}
}

func (l *lease) Put(ctx context.Context, id digest.ID, blob []byte) error {
	l.pin(id)
	return l.Store.Put(ctx, id, blob)
}

func (l *lease) Close() error { return nil }
