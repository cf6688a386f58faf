// Package cache is a read-through chunk cache: a local store in front of a
// remote one.
//
// # Reads
//
// Get serves from the local store when it can. On a miss it fetches from
// the remote store, which verifies the blob, writes it to the local store
// and returns it. Concurrent Gets of one ID share one remote fetch. Only
// verified blobs are ever cached: a remote blob that fails its check is an
// error and never reaches the local store.
//
// # Rot
//
// A local copy that fails verification (a torn write, a bad disk) is
// dropped and fetched again from the remote, so the cache heals itself.
//
// # Writes
//
// Put writes through: to the remote first, then to the local store. Delete
// removes from both. The remote is the truth: List lists it.
//
// # Cancellation
//
// A shared fetch runs until every Get waiting on it has returned; when the
// last one gives up, the fetch is cancelled. A Get whose own context ends
// returns at once.
//
// # Failures of the cache
//
// The local store is an optimization. A failure to read it is a miss, and
// a failure to fill it does not fail the read or write that caused it.
package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"

	"golang.org/x/sync/singleflight"

	"github.com/zosgrid/zos/internal/chunk"
	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/store"
)

// Store is a local store caching a remote one. It is safe for concurrent
// use when both stores are.
type Store struct {
	local, remote store.Store
	group         singleflight.Group

	mu      sync.Mutex
	flights map[digest.ID]*flight
}

// flight is the context of a shared remote fetch and how many Gets wait on it.
type flight struct {
	ctx     context.Context
	cancel  context.CancelFunc
	waiters int
}

var _ store.Store = (*Store)(nil)

// errAbandoned reports a shared fetch cancelled because every Get waiting
// on it left; a Get that joined it late tries again.
var errAbandoned = errors.New("shared fetch abandoned")

// New returns a cache of remote in local.
func New(local, remote store.Store) *Store {
	return &Store{local: local, remote: remote, flights: map[digest.ID]*flight{}}
}

// Get returns the blob under id from the local store, or from the remote,
// filling the local store.
func (s *Store) Get(ctx context.Context, id digest.ID) ([]byte, error) {
	blob, err := s.local.Get(ctx, id)
	if err == nil {
		return blob, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if _, ok := errors.AsType[*chunk.Invalid](err); ok {
		// Drop the rotten copy, or Put (idempotent) would keep it.
		s.local.Delete(ctx, id)
	}
	return s.fetch(ctx, id)
}

// fetch gets id from the remote once for all concurrent callers.
func (s *Store) fetch(ctx context.Context, id digest.ID) ([]byte, error) {
	for {
		f := s.join(ctx, id)
		ch := s.group.DoChan(string(id[:]), func() (any, error) { return s.fill(f.ctx, id) })
		var res singleflight.Result
		select {
		case <-ctx.Done():
			s.leave(id, f)
			return nil, ctx.Err()
		case res = <-ch:
			s.leave(id, f)
		}
		if errors.Is(res.Err, errAbandoned) {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			continue // we joined a fetch just as its last waiter left
		}
		if res.Err != nil {
			return nil, res.Err
		}
		blob := res.Val.([]byte)
		if res.Shared {
			blob = bytes.Clone(blob) // each caller owns what Get returns
		}
		return blob, nil
	}
}

// fill runs once per shared fetch.
func (s *Store) fill(ctx context.Context, id digest.ID) (any, error) {
	// A shared fetch that ended between the caller's miss and now has
	// cached the blob: do not fetch it again. Has first, so that the
	// common case (still missing) is one lstat and the caller's miss is
	// not counted twice in the local store's statistics.
	if ok, _ := s.local.Has(ctx, id); ok {
		if blob, err := s.local.Get(ctx, id); err == nil {
			return blob, nil
		}
	}
	blob, err := s.remote.Get(ctx, id)
	if err != nil {
		if ctx.Err() != nil {
			return nil, errAbandoned
		}
		return nil, err
	}
	s.local.Put(ctx, id, blob) // best effort: see "Failures of the cache"
	return blob, nil
}

func (s *Store) join(ctx context.Context, id digest.ID) *flight {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.flights[id]
	if f == nil {
		// The fetch keeps the caller's values but not its cancellation:
		// it ends when its last waiter leaves, not its first.
		fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		f = &flight{ctx: fctx, cancel: cancel}
		s.flights[id] = f
	}
	f.waiters++
	return f
}

func (s *Store) leave(id digest.ID, f *flight) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f.waiters--
	if f.waiters == 0 {
		f.cancel()
		if s.flights[id] == f {
			delete(s.flights, id)
		}
	}
}

var _ store.Batcher = (*Store)(nil)

// GetBatch serves what the local store holds, then asks the remote for
// the rest in one batch, filling the local store (store.Batcher). A
// remote that cannot batch fails it with errors.ErrUnsupported before
// anything is read. Unlike Get it does not share remote fetches with
// concurrent Gets of the same IDs: its caller batches chunks no one
// else is fetching.
func (s *Store) GetBatch(ctx context.Context, ids []digest.ID, fn func(i int, blob []byte, err error)) error {
	remote, ok := s.remote.(store.Batcher)
	if !ok {
		return fmt.Errorf("cache: remote %s: %w", s.remote, errors.ErrUnsupported)
	}
	var miss []int
	for i, id := range ids {
		blob, err := s.local.Get(ctx, id)
		if err == nil {
			fn(i, blob, nil)
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if _, ok := errors.AsType[*chunk.Invalid](err); ok {
			s.local.Delete(ctx, id) // as Get
		}
		miss = append(miss, i)
	}
	if len(miss) == 0 {
		return nil
	}
	mids := make([]digest.ID, len(miss))
	for j, i := range miss {
		mids[j] = ids[i]
	}
	return remote.GetBatch(ctx, mids, func(j int, blob []byte, err error) {
		if err == nil {
			s.local.Put(ctx, mids[j], blob) // best effort, as fill
		}
		fn(miss[j], blob, err)
	})
}

var _ store.Dropper = (*Store)(nil)

// Drop deletes the local copy of id (store.Dropper), leaving the remote's.
func (s *Store) Drop(ctx context.Context, id digest.ID) { s.local.Delete(ctx, id) }

// Has reports whether either store has id.
func (s *Store) Has(ctx context.Context, id digest.ID) (bool, error) {
	if ok, err := s.local.Has(ctx, id); ok && err == nil {
		return true, nil
	}
	return s.remote.Has(ctx, id)
}

// Put writes blob to the remote, then to the local store.
func (s *Store) Put(ctx context.Context, id digest.ID, blob []byte) error {
	if err := s.remote.Put(ctx, id, blob); err != nil {
		return err
	}
	s.local.Put(ctx, id, blob) // best effort
	return nil
}

// Delete removes id from the remote, then from the local store, which must
// succeed too or the cache would go on serving a deleted chunk.
func (s *Store) Delete(ctx context.Context, id digest.ID) error {
	if err := s.remote.Delete(ctx, id); err != nil {
		return err
	}
	if err := s.local.Delete(ctx, id); err != nil {
		return fmt.Errorf("cache %s: %w", s.local, err)
	}
	return nil
}

// List lists the remote store.
func (s *Store) List(ctx context.Context, fn func(digest.ID) error) error {
	return s.remote.List(ctx, fn)
}

func (s *Store) String() string {
	return "cache{local=" + s.local.String() + " remote=" + s.remote.String() + "}"
}

// Close closes both stores.
func (s *Store) Close() error {
	return errors.Join(s.remote.Close(), s.local.Close())
}
