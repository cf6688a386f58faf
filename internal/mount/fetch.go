package mount

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/zosgrid/zos/internal/chunk"
	"github.com/zosgrid/zos/internal/store"
)

// slots bounds the store fetches in progress. Waiters of the foreground
// class (reads, read-ahead) are served before those of the background
// class (trace prefetch, warm): a freed slot goes to a background waiter
// only when no foreground one waits, and a background acquire never takes
// a free slot from under a waiting foreground one. It is safe for
// concurrent use.
type slots struct {
	mu     sync.Mutex
	free   int
	fg, bg list.List // of chan struct{}, closed when handed a slot
}

func newSlots(n int) *slots { return &slots{free: n} }

// acquire takes a slot, waiting for one if need be, or returns ctx's error.
func (s *slots) acquire(ctx context.Context, background bool) error {
	s.mu.Lock()
	if s.free > 0 && (!background || s.fg.Len() == 0) {
		s.free--
		s.mu.Unlock()
		return nil
	}
	q := &s.fg
	if background {
		q = &s.bg
	}
	ch := make(chan struct{})
	el := q.PushBack(ch)
	s.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
	}
	s.mu.Lock()
	select {
	case <-ch: // handed a slot as we gave up: give it on
		s.mu.Unlock()
		s.release()
	default:
		q.Remove(el)
		s.mu.Unlock()
	}
	return ctx.Err()
}

// release returns a slot, handing it to the first foreground waiter, else
// to the first background one.
func (s *slots) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, q := range []*list.List{&s.fg, &s.bg} {
		if el := q.Front(); el != nil {
			q.Remove(el)
			close(el.Value.(chan struct{}))
			return
		}
	}
	s.free++
}

// Backoff between tries of a chunk fetch: the first wait is about
// minBackoff, each next one doubles, up to maxBackoff; each is jittered
// down by up to half so that the fetches a store outage failed together do
// not come back together.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
)

func backoff(try int) time.Duration {
	d := maxBackoff
	if try < 16 {
		d = min(maxBackoff, minBackoff<<(try-1))
	}
	return d/2 + rand.N(d/2+1)
}

// permanent reports a fetch failure that another try would not mend: the
// chunk is missing from every store that was asked, or what was served is
// corrupt. A failure joined from several stores (a router's replicas) is
// permanent only when every part is: a replica that was down may come back.
func permanent(err error) bool {
	for e := err; e != nil; e = errors.Unwrap(e) {
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, x := range j.Unwrap() {
				if !permanent(x) {
					return false
				}
			}
			return true
		}
		if _, ok := e.(*chunk.Invalid); ok {
			return true
		}
		switch e {
		case store.ErrNotFound, chunk.ErrCorrupt, chunk.ErrMismatch, chunk.ErrNeedBases, store.ErrReadOnly:
			return true
		}
	}
	return false
}

// retryFetch fetches the chunk ref names from st, verified, trying again
// after transient failures with exponential backoff until ctx ends. Each
// try holds a slot from acquire, released before any wait, so a chunk
// waiting out an outage does not hold back others. retry, if not nil, is
// told of each failed try that will be retried. The error of a fetch that
// gave up says how many tries it made over how long, and wraps the last
// store error.
func retryFetch(ctx context.Context, st store.Store, codec *chunk.Codec, ref chunk.Ref,
	acquire func(context.Context) error, release func(),
	retry func(try int, wait time.Duration, err error)) ([]byte, error) {
	start := time.Now()
	var last error
	for try := 1; ; try++ {
		if err := acquire(ctx); err != nil {
			return nil, giveUp(err, last, try-1, start)
		}
		data, err := store.Fetch(ctx, st, codec, ref)
		release()
		if err == nil {
			return data, nil
		}
		if ctx.Err() != nil {
			if last == nil || !errors.Is(err, ctx.Err()) {
				last = err
			}
			return nil, giveUp(ctx.Err(), last, try, start)
		}
		if permanent(err) {
			if try == 1 {
				return nil, err
			}
			return nil, fmt.Errorf("%w (try %d)", err, try)
		}
		last = err
		wait := backoff(try)
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < 2*wait {
			// Near the bound: leave the last try half the time left.
			if wait = time.Until(dl) / 2; wait < 10*time.Millisecond {
				return nil, giveUp(context.DeadlineExceeded, last, try, start)
			}
		}
		if retry != nil {
			retry(try, wait, err)
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, giveUp(ctx.Err(), last, try, start)
		}
	}
}

// giveUp explains a fetch that ctx ended: a timeout names the tries and
// the last store error, a cancellation (unmount) is just that.
func giveUp(why, last error, tries int, start time.Time) error {
	if !errors.Is(why, context.DeadlineExceeded) {
		return why
	}
	return &timeoutError{tries: tries, took: time.Since(start), last: last}
}

// timeoutError is a fetch that gave up on its time bound.
type timeoutError struct {
	tries int
	took  time.Duration
	last  error // nil if no try could start
}

func (e *timeoutError) Error() string {
	took := e.took.Round(time.Millisecond)
	if e.last == nil {
		return fmt.Sprintf("gave up after %v waiting for a fetch slot", took)
	}
	return fmt.Sprintf("gave up after %d tries in %v: %v", e.tries, took, e.last)
}

func (e *timeoutError) Unwrap() error {
	if e.last == nil {
		return context.DeadlineExceeded
	}
	return e.last
}
