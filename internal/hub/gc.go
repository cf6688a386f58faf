package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/flist"
	"github.com/zosgrid/zos/internal/hub/hubclient"
	"github.com/zosgrid/zos/internal/hub/object"
)

// Garbage collection: mark and sweep, safe while pushes and chunk uploads
// run on any number of hubs sharing the backend.
//
// Mark (no lock): the chunks to keep are every chunk of every live flist
// file (one that a name refers to, or written within the grace period),
// every chunk written within the grace period, and, transitively, the
// delta bases of all of these. The rest are candidates, and so are dead
// flist files.
//
// Sweep (under the marker gc/sweep, created if absent, so one GC sweeps at
// a time): list pending pushes, then refs, then flist files again; keep
// (and mark the chunks of) every file that is new, named or pending; then
// delete dead files, then candidate chunks.
//
// Why a push cannot end up naming a deleted chunk: a push stores its flist
// file, then a pending marker, then waits while gc/sweep exists, then
// checks that every chunk (and base) is present, then writes its names.
// If its wait ended before the marker was created, the sweep's listings
// come after the file and the pending marker were written, so the sweep
// keeps the file and its chunks. If its wait ended after the sweep, the
// deletions are over, and its check sees the chunks as they are: a
// missing one refuses the push (409), it does not dangle. Chunks uploaded
// before the push but not yet named are protected by the grace period: a
// push that comes later than that after its upload may be refused, never
// accepted incomplete. Files are deleted before chunks so that a GC cut
// short never leaves a file whose chunks are gone. The argument needs
// read-after-write and list-after-write consistency (package object) and
// clocks within a few minutes of each other (the grace period is an hour).

// maxSweep is how old a sweep marker must be for pushes to ignore it; a
// sweep stops deleting after sweepBudget, well before, so that a marker
// is never ignored while its sweep still deletes.
const (
	maxSweep    = 30 * time.Minute
	sweepBudget = 20 * time.Minute
	// stalePending is when a push's pending marker is taken for a crashed
	// push's: pushes finish in minutes (FenceWait plus the chunk check).
	stalePending = time.Hour
)

// GCOptions configure GC.
type GCOptions struct {
	// Grace protects chunks and flist files younger than this; default 1h.
	Grace time.Duration
	// DryRun marks and reports without deleting.
	DryRun bool
	Logger *slog.Logger
	Now    func() time.Time
}

// ErrSweeping reports another GC's fresh sweep marker.
var ErrSweeping = errors.New("another garbage collection is sweeping")

// GC deletes the chunks no stored flist needs and the flist files no name
// refers to, older than the grace period (see the comment above).
func GC(ctx context.Context, b *Backend, opt GCOptions) (hubclient.GCStats, error) {
	if opt.Grace <= 0 {
		opt.Grace = time.Hour
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	log := opt.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	start := time.Now()
	cutoff := opt.Now().Add(-opt.Grace)
	st := hubclient.GCStats{DryRun: opt.DryRun}
	g := &gc{b: b, marked: map[digest.ID]bool{}}

	// Mark.
	refs, err := listDigests(ctx, b.Objects, refsPrefix)
	if err != nil {
		return st, err
	}
	files := map[digest.ID]time.Time{}
	if err := b.Objects.List(ctx, flistsPrefix, func(fi object.Info) error {
		if d, err := digest.Parse(strings.TrimPrefix(fi.Name, flistsPrefix)); err == nil {
			files[d] = fi.ModTime
		}
		return nil
	}); err != nil {
		return st, err
	}
	dead := map[digest.ID]bool{}
	var live []digest.ID
	for d, mt := range files {
		if refs[d] || mt.After(cutoff) {
			live = append(live, d)
		} else {
			dead[d] = true
		}
	}
	if err := g.markFlists(ctx, live); err != nil {
		return st, err
	}
	type cand struct {
		id   digest.ID
		size int64
	}
	var young []digest.ID
	var candidates []cand
	if err := b.chunks.listAged(ctx, func(bi blobInfo) error {
		st.Chunks++
		if bi.mtime.After(cutoff) {
			young = append(young, bi.id)
		} else {
			candidates = append(candidates, cand{bi.id, bi.size})
		}
		return nil
	}); err != nil {
		return st, err
	}
	// Young chunks are kept; their bases must be too.
	if err := g.closure(ctx, young); err != nil {
		return st, err
	}
	st.Young = len(young)
	log.Info("gc: marked", "flists", len(files), "named", len(refs), "chunks", st.Chunks, "young", len(young), "dead flists", len(dead))

	finish := func() hubclient.GCStats {
		st.Flists, st.Referenced = len(files), len(refs)
		n := 0
		for _, c := range candidates {
			if g.marked[c.id] {
				n++
			}
		}
		st.Marked = n
		st.Elapsed = time.Since(start)
		return st
	}
	if opt.DryRun {
		for _, c := range candidates {
			if !g.marked[c.id] {
				st.Deleted++
				st.DeletedBytes += c.size
			}
		}
		st.DeletedFlists = len(dead)
		return finish(), nil
	}

	// Sweep.
	if err := takeSweep(ctx, b.Objects, opt.Now()); err != nil {
		return st, err
	}
	defer b.Objects.Delete(context.WithoutCancel(ctx), sweepName)
	deadline := time.Now().Add(sweepBudget)
	pending := map[digest.ID]bool{}
	var stale []string
	if err := b.Objects.List(ctx, pendingPrefix, func(fi object.Info) error {
		ds, _, _ := strings.Cut(strings.TrimPrefix(fi.Name, pendingPrefix), ".")
		if d, err := digest.Parse(ds); err == nil {
			pending[d] = true
		}
		if opt.Now().Sub(fi.ModTime) > stalePending {
			stale = append(stale, fi.Name)
		}
		return nil
	}); err != nil {
		return st, err
	}
	refs2, err := listDigests(ctx, b.Objects, refsPrefix)
	if err != nil {
		return st, err
	}
	var revive []digest.ID
	if err := b.Objects.List(ctx, flistsPrefix, func(fi object.Info) error {
		d, err := digest.Parse(strings.TrimPrefix(fi.Name, flistsPrefix))
		if err != nil {
			return nil
		}
		if _, seen := files[d]; !seen || dead[d] && (refs2[d] || pending[d] || fi.ModTime.After(cutoff)) {
			delete(dead, d)
			revive = append(revive, d)
		}
		return nil
	}); err != nil {
		return st, err
	}
	if err := g.markFlists(ctx, revive); err != nil {
		return st, err
	}
	for d := range dead {
		if time.Now().After(deadline) {
			return finish(), fmt.Errorf("gc: sweep budget of %v spent; run it again", sweepBudget)
		}
		if err := b.Objects.Delete(ctx, flistObj(d)); err != nil {
			return finish(), err
		}
		for _, o := range []string{traceObj(d), bundleObj(d), recompressedObj(d)} {
			if err := b.Objects.Delete(ctx, o); err != nil && !isNotFound(err) {
				return finish(), err
			}
		}
		st.DeletedFlists++
	}
	var mu sync.Mutex
	eg, ectx := errgroup.WithContext(ctx)
	eg.SetLimit(16)
	for _, c := range candidates {
		if g.marked[c.id] {
			continue
		}
		if time.Now().After(deadline) {
			eg.Wait()
			return finish(), fmt.Errorf("gc: sweep budget of %v spent; run it again", sweepBudget)
		}
		eg.Go(func() error {
			if err := b.Chunks.Delete(ectx, c.id); err != nil {
				return err
			}
			mu.Lock()
			st.Deleted++
			st.DeletedBytes += c.size
			mu.Unlock()
			return nil
		})
	}
	if err := eg.Wait(); err != nil {
		return finish(), err
	}
	for _, n := range stale {
		b.Objects.Delete(ctx, n)
	}
	if err := pruneNonces(ctx, b.Objects, opt.Now(), true); err != nil {
		log.Warn("gc: pruning nonces", "err", err)
	}
	finish()
	log.Info("gc: swept", "deleted chunks", st.Deleted, "bytes", st.DeletedBytes, "deleted flists", st.DeletedFlists, "elapsed", st.Elapsed)
	return st, nil
}

// takeSweep creates the sweep marker, taking over a stale one.
func takeSweep(ctx context.Context, o object.Store, now time.Time) error {
	body := []byte(now.UTC().Format(time.RFC3339))
	err := o.Create(ctx, sweepName, body)
	if !errors.Is(err, object.ErrExist) {
		return err
	}
	fi, serr := o.Stat(ctx, sweepName)
	if serr != nil {
		return serr
	}
	if now.Sub(fi.ModTime) <= maxSweep {
		return fmt.Errorf("%w (since %s)", ErrSweeping, fi.ModTime.UTC().Format(time.RFC3339))
	}
	return o.Put(ctx, sweepName, body)
}

// listDigests returns the digests that open names under prefix (refs/D/...).
func listDigests(ctx context.Context, o object.Store, prefix string) (map[digest.ID]bool, error) {
	out := map[digest.ID]bool{}
	err := o.List(ctx, prefix, func(fi object.Info) error {
		ds, _, _ := strings.Cut(strings.TrimPrefix(fi.Name, prefix), "/")
		if d, err := digest.Parse(ds); err == nil {
			out[d] = true
		}
		return nil
	})
	return out, err
}

type gc struct {
	b      *Backend
	mu     sync.Mutex
	marked map[digest.ID]bool
}

// markFlists marks the chunks of the stored flists ds, with their bases.
func (g *gc) markFlists(ctx context.Context, ds []digest.ID) error {
	var roots []digest.ID
	for _, d := range ds {
		raw, err := g.b.Objects.Get(ctx, flistObj(d))
		if isNotFound(err) {
			continue // deleted meanwhile: nothing to keep
		}
		if err != nil {
			return err
		}
		fl, err := flist.Open(raw)
		if err != nil {
			// Keeping nothing for it would delete chunks an image may
			// need; stop instead and let an operator look.
			return fmt.Errorf("gc: stored flist %s: %w", d, err)
		}
		for _, c := range fl.Chunks() {
			roots = append(roots, chunkID(c))
		}
	}
	return g.closure(ctx, roots)
}

// closure marks ids and, transitively, their delta bases.
func (g *gc) closure(ctx context.Context, ids []digest.ID) error {
	frontier := ids
	for len(frontier) > 0 {
		var todo []digest.ID
		g.mu.Lock()
		for _, id := range frontier {
			if !g.marked[id] {
				g.marked[id] = true
				todo = append(todo, id)
			}
		}
		g.mu.Unlock()
		var next []digest.ID
		var nmu sync.Mutex
		eg, ectx := errgroup.WithContext(ctx)
		eg.SetLimit(32)
		for _, id := range todo {
			eg.Go(func() error {
				bases, err := g.b.chunks.bases(ectx, id)
				if isNotFound(err) {
					return nil // missing: nothing to follow
				}
				if err != nil {
					return err
				}
				nmu.Lock()
				next = append(next, bases...)
				nmu.Unlock()
				return nil
			})
		}
		if err := eg.Wait(); err != nil {
			return err
		}
		frontier = next
	}
	return nil
}
