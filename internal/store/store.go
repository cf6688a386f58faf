// Package store defines the contract every chunk store meets and the
// functions that read chunks through it verified.
//
// # Store
//
// A Store maps chunk IDs (digest.ID) to sealed blobs (package chunk). It
// knows nothing of keys or plaintext. Backends live in subpackages (dir,
// http, s3, zdb, mem) and are opened by URL with Open; decorators (router,
// cache) compose them. Every backend passes the conformance suite in
// storetest.
//
// # Verification
//
// Get returns only blobs that pass chunk.Check for the ID asked for; a blob
// that fails is reported as a *chunk.Invalid naming the store, never
// returned. Fetch goes further and opens the blob against the fingerprint
// the caller holds, so no unverified plaintext ever leaves this package.
package store

import (
	"context"
	"errors"
	"fmt"

	"golang.org/x/sync/errgroup"

	"github.com/zosgrid/zos/internal/chunk"
	"github.com/zosgrid/zos/internal/digest"
)

// ErrNotFound is returned by Get when the store has no blob under the ID.
var ErrNotFound = errors.New("chunk not found")

// ErrReadOnly is returned by Put and Delete on a store that cannot be written.
var ErrReadOnly = errors.New("store is read-only")

// Store is the contract of a chunk store. Implementations are safe for
// concurrent use.
type Store interface {
	// Get returns the blob stored under id. A missing blob is an error
	// wrapping ErrNotFound; a blob that fails chunk.Check is a
	// *chunk.Invalid and is not returned.
	Get(ctx context.Context, id digest.ID) ([]byte, error)
	// Has reports whether a blob is stored under id, without reading it.
	Has(ctx context.Context, id digest.ID) (bool, error)
	// Put stores blob under id. It is idempotent: putting an ID that is
	// already present succeeds without rewriting it. A reader never sees a
	// partially written blob. Put does not keep blob after it returns:
	// callers reuse the buffer.
	Put(ctx context.Context, id digest.ID, blob []byte) error
	// Delete removes the blob under id; deleting a missing ID succeeds.
	Delete(ctx context.Context, id digest.ID) error
	// List calls fn for every stored ID, in no particular order, stopping at
	// the first error fn returns.
	List(ctx context.Context, fn func(digest.ID) error) error
	// String returns the store's URL with any secret removed.
	String() string
	// Close releases connections and files.
	Close() error
}

// Batcher is a Store that can read several blobs in one round trip (the
// HTTP store's batched get). Decorators (cache, a cache's lease, the
// router) offer it when the stores they wrap do.
type Batcher interface {
	// GetBatch reads the blobs of ids. It calls fn, from one goroutine at
	// a time, at most once per index of ids, with what Get would return
	// for that ID: a verified blob the callee owns from then on, or an
	// error wrapping ErrNotFound, or a *chunk.Invalid. It returns nil once
	// fn was called for every index; otherwise the error that stopped it,
	// and the caller reads the IDs fn was not called for some other way.
	// An error wrapping errors.ErrUnsupported says the store cannot batch
	// (a static HTTP server): asking again will not help.
	GetBatch(ctx context.Context, ids []digest.ID, fn func(i int, blob []byte, err error)) error
}

// Replacer is a Store that can put a blob in place of the one stored
// under its ID (Put keeps the first): the hub re-seals chunks at a higher
// compression level this way (docs/HUB.md). A reader sees the old blob or
// the new one, whole, never neither; both open to the same plaintext.
type Replacer interface {
	Replace(ctx context.Context, id digest.ID, blob []byte) error
}

// Dropper is a Store that keeps copies of the blobs it serves (a cache,
// or a cache's lease) and drops its copy of one on request; a router
// passes the request on to the caches in its routes and takes back what
// its read repair wrote from the blob. A reader asks
// it when a blob passed the store layer's check but not the chunk layer's:
// a forgery does (the keyed check and the cipher's tag are both keyed by
// the fingerprint, which an flist publishes, so only the plaintext's
// fingerprint tells), and so does a delta stored deeper than the reader
// allows, whose dropped copy only costs a fetch. Without the drop, the
// copy would serve a forgery after its origin is repaired.
type Dropper interface {
	// Drop removes the local copy of id, if any; the origin keeps its own
	// (a router's origins only lose the copies its repair wrote).
	Drop(ctx context.Context, id digest.ID)
}

// Verify runs chunk.Check on a blob that s served under id, naming s in the
// error. Backends call it in Get before returning a blob.
func Verify(s fmt.Stringer, id digest.ID, blob []byte) error {
	if err := chunk.Check(id, blob); err != nil {
		var inv *chunk.Invalid
		if errors.As(err, &inv) && inv.Store == "" {
			inv.Store = s.String()
		}
		return err
	}
	return nil
}

// Fetch reads the chunk ref names from s and returns its verified plaintext.
// A chunk stored as a delta is rebuilt from its bases, read from s the same
// way (at most chunk.MaxDepth levels; docs/FORMAT.md).
func Fetch(ctx context.Context, s Store, c *chunk.Codec, ref chunk.Ref) ([]byte, error) {
	plain, _, err := fetch(ctx, s, c, ref, chunk.MaxDepth)
	return plain, err
}

// FetchDepth is Fetch that also returns how the chunk is stored: 0 whole,
// or its delta depth.
func FetchDepth(ctx context.Context, s Store, c *chunk.Codec, ref chunk.Ref) ([]byte, int, error) {
	return fetch(ctx, s, c, ref, chunk.MaxDepth)
}

// Open returns the verified plaintext of blob, the blob of chunk ref that
// s served (by a Batcher's GetBatch): the rest of Fetch. The bases of a
// delta blob are read from s.
func Open(ctx context.Context, s Store, c *chunk.Codec, ref chunk.Ref, blob []byte) ([]byte, error) {
	plain, _, err := open(ctx, s, c, ref, blob, chunk.MaxDepth)
	return plain, err
}

func fetch(ctx context.Context, s Store, c *chunk.Codec, ref chunk.Ref, maxDepth int) ([]byte, int, error) {
	blob, err := s.Get(ctx, chunk.ID(ref.Sum))
	if err != nil {
		return nil, 0, err
	}
	return open(ctx, s, c, ref, blob, maxDepth)
}

func open(ctx context.Context, s Store, c *chunk.Codec, ref chunk.Ref, blob []byte, maxDepth int) ([]byte, int, error) {
	depth, _, _ := chunk.Deps(blob) // a bad header fails in OpenWith
	plain, err := c.OpenWith(ref, blob, maxDepth, func(base chunk.Ref, max int) ([]byte, error) {
		p, _, err := fetch(ctx, s, c, base, max)
		return p, err
	})
	if err != nil {
		var inv *chunk.Invalid
		if errors.As(err, &inv) {
			if inv.Store == "" {
				inv.Store = s.String()
			}
			if d, ok := s.(Dropper); ok && inv.ID == chunk.ID(ref.Sum) {
				d.Drop(ctx, inv.ID) // not a base's failure: that one dropped its own
			}
		}
		return nil, 0, err
	}
	return plain, depth, nil
}

// MissingByHas returns the IDs of ids that s does not hold, in order,
// asking Has at most parallel at a time: the fallback for stores that
// cannot answer a batch at once.
func MissingByHas(ctx context.Context, s Store, ids []digest.ID, parallel int) ([]digest.ID, error) {
	have := make([]bool, len(ids))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(parallel)
	for i, id := range ids {
		g.Go(func() error {
			ok, err := s.Has(gctx, id)
			have[i] = ok
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	var out []digest.ID
	for i, id := range ids {
		if !have[i] {
			out = append(out, id)
		}
	}
	return out, nil
}
