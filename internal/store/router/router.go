// Package router is a chunk store over several stores, chosen by the first
// byte of the chunk ID, with replication where ranges overlap.
//
// # Route
//
// A Route sends the IDs whose first byte lies in [Lo, Hi] to one store.
// Routes may overlap: an ID in several ranges is replicated to every store
// whose range holds it, and read from them in route order. The routes of a
// Router cover every first byte, so every ID has at least one home. On the
// command line a route is written "00-7f=URL" (ParseRoute); a bare URL
// means 00-ff.
//
// # Reads and failover
//
// Get asks the ID's stores in route order and returns the first good blob.
// Any failure of one replica (unreachable, erroring, or serving a blob that
// fails verification) moves on to the next. The error names every replica
// that failed; it is store.ErrNotFound only when every replica said so.
//
// A replica that failed (other than "not found") is held back for a while
// (DownFor): reads ask it after the others, so a dead replica costs its
// retries once, not on every chunk. It is still asked when the others fail,
// and the first success clears it.
//
// # Read repair
//
// A replica that answered "not found", or served a blob that failed
// verification, for an ID another replica then served is repaired: the
// verified blob is written back to it in the background (a corrupt copy is
// deleted first, since Put does not rewrite an ID that is present). So a
// replica that lost chunks, a disk that rotted or a store added empty heals
// by being read, without a scrub. Close waits for repairs under way;
// Repaired counts those that succeeded.
//
// Verified here means the store layer's keyed check, which a forgery
// passes (store.Dropper): only the reader, opening the blob, can tell. A
// reader that finds the blob forged calls Drop, and the router takes the
// blob back from the replicas a recent repair wrote it to, and stops
// writing it to the others.
//
// # Writes
//
// Put and Delete go to every store of the ID, concurrently, and succeed
// only when all do; a failure names the store. Put is idempotent, so the
// caller's retry repairs a partial write.
package router

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/zosgrid/zos/internal/chunk"
	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/store"
)

// Route sends IDs whose first byte is in [Lo, Hi] to Store.
type Route struct {
	Lo, Hi byte
	Store  store.Store
}

func (r Route) String() string {
	return fmt.Sprintf("%02x-%02x=%s", r.Lo, r.Hi, r.Store)
}

// Router is a store over routed stores. It is safe for concurrent use when
// its stores are.
type Router struct {
	routes []Route
	// byByte[b] are the indexes into stores of the stores for first byte b,
	// in route order, each store once.
	byByte [256][]int
	stores []store.Store // distinct stores, in order of first appearance
	// replicated is true when some byte has more than one store, so List
	// must drop duplicates.
	replicated bool
	// downUntil[i] is when store i's last failure stops holding it back
	// (unix nanoseconds; 0: healthy).
	downUntil []atomic.Int64
	// noBatch[i] says store i refused a batched get (a static server).
	noBatch  []atomic.Bool
	now      func() time.Time
	repairMu sync.Mutex // orders repairs.Add against Close's Wait; guards jobs, done
	repairs  sync.WaitGroup
	repaired atomic.Int64
	closing  bool
	// jobs are the running and the last keepRepairs finished read repairs,
	// by ID, so that Drop can undo one; done lists the finished, oldest first.
	jobs map[digest.ID]*repairJob
	done []*repairJob
}

// repairJob is one read repair of id: the replicas it has written the blob
// to, and whether a reader has since found the blob forged (Drop).
type repairJob struct {
	id      digest.ID
	written []int
	dropped bool
}

// keepRepairs is how many finished repairs Drop can still undo: a reader
// drops a forgery right after Get returns it, while or just after its
// repair runs.
const keepRepairs = 256

// RepairTimeout bounds one background read repair.
const RepairTimeout = 30 * time.Second

// DownFor is how long a replica that failed a read is asked last.
const DownFor = 30 * time.Second

var (
	_ store.Store   = (*Router)(nil)
	_ store.Batcher = (*Router)(nil)
	_ store.Dropper = (*Router)(nil)
	_ missinger     = (*Router)(nil)
)

// New returns a router over routes, which must cover every first byte.
func New(routes []Route) (*Router, error) {
	r := &Router{routes: append([]Route(nil), routes...)}
	for i, rt := range routes {
		if rt.Lo > rt.Hi {
			return nil, fmt.Errorf("router: route %d: range %02x-%02x is empty", i, rt.Lo, rt.Hi)
		}
		if rt.Store == nil {
			return nil, fmt.Errorf("router: route %d (%02x-%02x): no store", i, rt.Lo, rt.Hi)
		}
		si := r.index(rt.Store)
		for b := int(rt.Lo); b <= int(rt.Hi); b++ {
			if !contains(r.byByte[b], si) {
				r.byByte[b] = append(r.byByte[b], si)
			}
		}
	}
	var gaps []string
	for b := 0; b < 256; b++ {
		if len(r.byByte[b]) == 0 {
			lo := b
			for b+1 < 256 && len(r.byByte[b+1]) == 0 {
				b++
			}
			gaps = append(gaps, fmt.Sprintf("%02x-%02x", lo, b))
		}
		if len(r.byByte[b]) > 1 {
			r.replicated = true
		}
	}
	if len(gaps) > 0 {
		return nil, fmt.Errorf("router: no route for IDs starting %s", strings.Join(gaps, ", "))
	}
	r.downUntil = make([]atomic.Int64, len(r.stores))
	r.noBatch = make([]atomic.Bool, len(r.stores))
	r.now = time.Now
	r.jobs = map[digest.ID]*repairJob{}
	return r, nil
}

// readOrder returns id's stores for a read: healthy ones in route order,
// then those held back after a failure.
func (r *Router) readOrder(id digest.ID) []int {
	all := r.of(id)
	if len(all) == 1 {
		return all
	}
	now := r.now().UnixNano()
	order := make([]int, 0, len(all))
	for _, si := range all {
		if r.downUntil[si].Load() <= now {
			order = append(order, si)
		}
	}
	for _, si := range all {
		if r.downUntil[si].Load() > now {
			order = append(order, si)
		}
	}
	return order
}

// health records the outcome of a read from store si.
func (r *Router) health(si int, err error) {
	switch {
	case err == nil || errors.Is(err, store.ErrNotFound):
		r.downUntil[si].Store(0)
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		// the caller gave up: says nothing of the store
	default:
		r.downUntil[si].Store(r.now().Add(DownFor).UnixNano())
	}
}

// index returns the index of s in r.stores, adding it if new. Stores are
// the same when they are the same value (the same pointer, in practice).
func (r *Router) index(s store.Store) int {
	for i, t := range r.stores {
		if same(s, t) {
			return i
		}
	}
	r.stores = append(r.stores, s)
	return len(r.stores) - 1
}

// same compares two stores without panicking on uncomparable dynamic types.
func same(a, b store.Store) bool {
	ta := reflect.TypeOf(a)
	return ta == reflect.TypeOf(b) && ta.Comparable() && a == b
}

func contains(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// ParseRoute splits a command-line route "LO-HI=URL" (two hex digits each,
// either case, LO <= HI) into its range and URL. A string that does not
// start with a range is a URL for the whole range 00-ff.
func ParseRoute(s string) (lo, hi byte, url string, err error) {
	if len(s) >= 6 && s[2] == '-' && s[5] == '=' && isHex(s[:2]) && isHex(s[3:5]) {
		l, _ := strconv.ParseUint(s[:2], 16, 8)
		h, _ := strconv.ParseUint(s[3:5], 16, 8)
		lo, hi, url = byte(l), byte(h), s[6:]
		if lo > hi {
			return 0, 0, "", fmt.Errorf("route %q: range %02x-%02x is empty", s, lo, hi)
		}
	} else {
		lo, hi, url = 0x00, 0xff, s
	}
	if url == "" {
		return 0, 0, "", fmt.Errorf("route %q: no store URL", s)
	}
	return lo, hi, url, nil
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i] | 0x20 // lower-case letters; digits are unchanged
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// Routes returns the router's routes.
func (r *Router) Routes() []Route { return append([]Route(nil), r.routes...) }

// of returns the stores for id, in route order.
func (r *Router) of(id digest.ID) []int { return r.byByte[id[0]] }

func (r *Router) Get(ctx context.Context, id digest.ID) ([]byte, error) {
	var errs []error
	notFound := 0
	var invalid *chunk.Invalid
	var lacking, rotten []int // replicas to repair once another serves the blob
	for _, si := range r.readOrder(id) {
		blob, err := r.stores[si].Get(ctx, id)
		if ctx.Err() != nil && err != nil {
			return nil, err
		}
		r.health(si, err)
		if err == nil {
			r.repair(id, blob, lacking, rotten)
			return blob, nil
		}
		var inv *chunk.Invalid
		switch {
		case errors.Is(err, store.ErrNotFound):
			notFound++
			lacking = append(lacking, si)
			continue
		case errors.As(err, &inv):
			rotten = append(rotten, si)
			if invalid == nil {
				invalid = inv
			}
		}
		errs = append(errs, fmt.Errorf("%s: %w", r.stores[si], err))
	}
	switch {
	case len(errs) == 0:
		return nil, fmt.Errorf("%s in %s: %w", id.Short(), r, store.ErrNotFound)
	case len(errs) == 1 && invalid != nil:
		return nil, invalid // it names its store
	}
	return nil, fmt.Errorf("router: chunk %s: no replica served it (%d not found): %w",
		id.Short(), notFound, errors.Join(errs...))
}

// batcher returns store si as a Batcher, unless it cannot batch.
func (r *Router) batcher(si int) (store.Batcher, bool) {
	b, ok := r.stores[si].(store.Batcher)
	return b, ok && !r.noBatch[si].Load()
}

// GetBatch reads each ID from the first store of its read order (a
// healthy replica before one held back), the IDs of one store in one
// batch, the stores' batches at once. It delivers what the batches bring
// and leaves the rest (absent from that store, corrupt there, a failed
// request, a store that cannot batch) to the caller's Get, which fails
// over to the other replicas and repairs; it then returns an error saying
// how many it left. It returns an error wrapping errors.ErrUnsupported
// when no store can batch.
func (r *Router) GetBatch(ctx context.Context, ids []digest.ID, fn func(i int, blob []byte, err error)) error {
	groups := map[int][]int{} // store -> indexes of ids
	var sis []int
	for i, id := range ids {
		si := r.readOrder(id)[0]
		if _, ok := r.batcher(si); !ok {
			continue
		}
		if groups[si] == nil {
			sis = append(sis, si)
		}
		groups[si] = append(groups[si], i)
	}
	if len(sis) == 0 && !r.canBatch() {
		return fmt.Errorf("router: %w", errors.ErrUnsupported)
	}
	var mu sync.Mutex // fn is called from one goroutine at a time
	delivered := 0
	var wg sync.WaitGroup
	for _, si := range sis {
		b, _ := r.batcher(si)
		at := groups[si]
		wg.Go(func() {
			sub := make([]digest.ID, len(at))
			for j, i := range at {
				sub[j] = ids[i]
			}
			err := b.GetBatch(ctx, sub, func(j int, blob []byte, err error) {
				if err != nil {
					return // Get fails over
				}
				mu.Lock()
				defer mu.Unlock()
				delivered++
				fn(at[j], blob, nil)
			})
			switch {
			case errors.Is(err, errors.ErrUnsupported):
				r.noBatch[si].Store(true)
			case err != nil && ctx.Err() == nil:
				r.health(si, err)
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	switch left := len(ids) - delivered; {
	case left == 0:
		return nil
	case !r.canBatch(): // the last stores that could have just refused
		return fmt.Errorf("router: %w", errors.ErrUnsupported)
	default:
		return fmt.Errorf("router: %d of %d blobs left to single reads", left, len(ids))
	}
}

// canBatch says whether some store can batch, as far as the router knows.
func (r *Router) canBatch() bool {
	for si := range r.stores {
		if _, ok := r.batcher(si); ok {
			return true
		}
	}
	return false
}

// repair writes blob, verified by the store that served it, back to the
// replicas that lacked it or held a corrupt copy, in the background.
func (r *Router) repair(id digest.ID, blob []byte, lacking, rotten []int) {
	if len(lacking)+len(rotten) == 0 {
		return
	}
	r.repairMu.Lock()
	defer r.repairMu.Unlock()
	if r.closing {
		return
	}
	b := append([]byte(nil), blob...) // the caller owns blob
	job := &repairJob{id: id}
	r.jobs[id] = job
	r.repairs.Add(1)
	go func() {
		defer r.repairs.Done()
		ctx, cancel := context.WithTimeout(context.Background(), RepairTimeout)
		defer cancel()
		for _, si := range rotten {
			r.write(ctx, job, si, b, true)
		}
		for _, si := range lacking {
			r.write(ctx, job, si, b, false)
		}
		r.repairMu.Lock()
		defer r.repairMu.Unlock()
		r.done = append(r.done, job)
		if len(r.done) > keepRepairs {
			old := r.done[0]
			r.done = r.done[1:]
			if r.jobs[old.id] == old {
				delete(r.jobs, old.id)
			}
		}
	}()
}

// write puts a repair's blob to store si (deleting its rotten copy first)
// and records it, unless the blob was dropped before, and takes it back if
// it was dropped meanwhile.
func (r *Router) write(ctx context.Context, job *repairJob, si int, b []byte, rotten bool) {
	r.repairMu.Lock()
	dropped := job.dropped
	r.repairMu.Unlock()
	if dropped || rotten && r.stores[si].Delete(ctx, job.id) != nil {
		return
	}
	if r.stores[si].Put(ctx, job.id, b) != nil {
		return
	}
	r.repairMu.Lock()
	dropped = job.dropped
	if !dropped {
		job.written = append(job.written, si)
	}
	r.repairMu.Unlock()
	if dropped {
		r.stores[si].Delete(ctx, job.id)
		return
	}
	r.repaired.Add(1)
}

// Repaired returns how many replica copies read repair has written.
func (r *Router) Repaired() int64 { return r.repaired.Load() }

func (r *Router) Has(ctx context.Context, id digest.ID) (bool, error) {
	var errs []error
	for _, si := range r.readOrder(id) {
		ok, err := r.stores[si].Has(ctx, id)
		if ctx.Err() == nil {
			r.health(si, err)
		}
		if ok {
			return true, nil
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", r.stores[si], err))
		}
	}
	if len(errs) > 0 {
		return false, fmt.Errorf("router: has %s: %w", id.Short(), errors.Join(errs...))
	}
	return false, nil
}

// each runs op on every store of id at once and joins the failures, each
// naming its store.
func (r *Router) each(id digest.ID, op func(store.Store) error) error {
	sis := r.of(id)
	if len(sis) == 1 {
		s := r.stores[sis[0]]
		if err := op(s); err != nil {
			return fmt.Errorf("router: %s: %w", s, err)
		}
		return nil
	}
	errs := make([]error, len(sis))
	var wg sync.WaitGroup
	for i, si := range sis {
		wg.Go(func() {
			if err := op(r.stores[si]); err != nil {
				errs[i] = fmt.Errorf("%s: %w", r.stores[si], err)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("router: %w", err)
	}
	return nil
}

// Put writes blob to every store whose range holds id.
func (r *Router) Put(ctx context.Context, id digest.ID, blob []byte) error {
	return r.each(id, func(s store.Store) error { return s.Put(ctx, id, blob) })
}

// Delete removes id from every store whose range holds it.
func (r *Router) Delete(ctx context.Context, id digest.ID) error {
	return r.each(id, func(s store.Store) error { return s.Delete(ctx, id) })
}

// Drop passes on to every store of id that keeps copies (store.Dropper: a
// cache in a route), so that a forgery a cache took in is not served again
// once its origin is repaired. The router cannot tell which replica served
// the blob, so each drops its copy; origins, which are not Droppers, keep
// theirs. It also undoes a recent read repair of id (the blob it wrote was
// the one the reader found forged): what the repair wrote is deleted, and
// what it has not written yet is not. Undoing a repair of a good blob (a
// drop for another reason, or of another Get's blob) only leaves those
// replicas lacking the chunk, as before the repair, for the next read to
// repair again.
func (r *Router) Drop(ctx context.Context, id digest.ID) {
	r.repairMu.Lock()
	var undo []int
	if job := r.jobs[id]; job != nil {
		job.dropped = true
		undo, job.written = job.written, nil
	}
	r.repairMu.Unlock()
	for _, si := range undo {
		r.stores[si].Delete(ctx, id)
	}
	for _, si := range r.of(id) {
		if d, ok := r.stores[si].(store.Dropper); ok {
			d.Drop(ctx, id)
		}
	}
}

// List lists every store once and reports each ID once. An ID a store holds
// outside its ranges is not reported: Get would not look for it there.
// With replicas, List remembers every ID it reported (32 bytes each).
func (r *Router) List(ctx context.Context, fn func(digest.ID) error) error {
	var seen map[digest.ID]struct{}
	if r.replicated {
		seen = map[digest.ID]struct{}{}
	}
	var fnErr error
	for si, s := range r.stores {
		err := s.List(ctx, func(id digest.ID) error {
			if !contains(r.of(id), si) {
				return nil
			}
			if seen != nil {
				if _, dup := seen[id]; dup {
					return nil
				}
				seen[id] = struct{}{}
			}
			fnErr = fn(id)
			return fnErr
		})
		if fnErr != nil {
			return fnErr
		}
		if err != nil {
			return fmt.Errorf("router: %s: %w", s, err)
		}
	}
	return nil
}

// missinger is a store that answers a batch of membership questions at
// once (httpstore, s3, a router).
type missinger interface {
	Missing(ctx context.Context, ids []digest.ID) ([]digest.ID, error)
}

// Missing returns the IDs among ids, in the order given, that some store
// of theirs lacks: what a writer must Put, since Put writes every store of
// an ID (so it repairs a replica that lost a chunk). That is stricter than
// Has, which answers for reads: one replica holding the chunk is enough.
// Every store is asked once, for the IDs it holds, all stores at once,
// each with its own batch (Missing) if it has one, else Has 16 at a time;
// a store that fails fails the whole answer, naming the store.
func (r *Router) Missing(ctx context.Context, ids []digest.ID) ([]digest.ID, error) {
	per := make([][]digest.ID, len(r.stores))
	for _, id := range ids {
		for _, si := range r.of(id) {
			per[si] = append(per[si], id)
		}
	}
	lack := make([][]digest.ID, len(r.stores))
	g, gctx := errgroup.WithContext(ctx)
	for si, sids := range per {
		if len(sids) == 0 {
			continue
		}
		g.Go(func() error {
			s := r.stores[si]
			var err error
			if m, ok := s.(missinger); ok {
				lack[si], err = m.Missing(gctx, sids)
			} else {
				lack[si], err = store.MissingByHas(gctx, s, sids, 16)
			}
			if err != nil {
				return fmt.Errorf("router: %s: %w", s, err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	missing := map[digest.ID]bool{}
	for _, l := range lack {
		for _, id := range l {
			missing[id] = true
		}
	}
	var out []digest.ID
	for _, id := range ids {
		if missing[id] {
			out = append(out, id)
		}
	}
	return out, nil
}

// String lists the routes in ParseRoute syntax.
func (r *Router) String() string {
	parts := make([]string, len(r.routes))
	for i, rt := range r.routes {
		parts[i] = rt.String()
	}
	return "router{" + strings.Join(parts, " ") + "}"
}

// Close waits for read repairs under way, then closes every store once.
func (r *Router) Close() error {
	r.repairMu.Lock()
	r.closing = true
	r.repairMu.Unlock()
	r.repairs.Wait()
	var errs []error
	for _, s := range r.stores {
		if err := s.Close(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s, err))
		}
	}
	return errors.Join(errs...)
}
