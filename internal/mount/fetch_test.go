package mount

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/zosgrid/zos/internal/chunk"
	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/store"
)

// TestSlotsForegroundFirst: a freed slot goes to a waiting read before a
// waiting background fetch, whatever the order they queued in, and a
// background acquire does not take a free slot a read waits for.
func TestSlotsForegroundFirst(t *testing.T) {
	s := newSlots(1)
	ctx := context.Background()
	if err := s.acquire(ctx, false); err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 2)
	go func() { s.acquire(ctx, true); got <- "background"; s.release() }()
	time.Sleep(20 * time.Millisecond) // queued first
	go func() { s.acquire(ctx, false); got <- "foreground"; s.release() }()
	time.Sleep(20 * time.Millisecond)
	s.release()
	if a, b := <-got, <-got; a != "foreground" || b != "background" {
		t.Fatalf("served %s then %s", a, b)
	}
	// A waiter that gives up leaves the queue; a slot handed to it as it
	// gave up is passed on.
	if err := s.acquire(ctx, false); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	if err := s.acquire(cctx, true); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("acquire past its deadline: %v", err)
	}
	s.release()
	if s.free != 1 || s.fg.Len()+s.bg.Len() != 0 {
		t.Fatalf("after release: %d free, %d+%d waiting", s.free, s.fg.Len(), s.bg.Len())
	}
}

func TestPermanent(t *testing.T) {
	var id digest.ID
	inv := &chunk.Invalid{ID: id, Err: chunk.ErrCorrupt}
	transient := errors.New("connection refused")
	for _, c := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("x in y: %w", store.ErrNotFound), true},
		{inv, true},
		{fmt.Errorf("wrapped: %w", inv), true},
		{transient, false},
		{context.DeadlineExceeded, false},
		// A router's replicas: one down, one without the chunk: the first may come back.
		{fmt.Errorf("router: %w", errors.Join(fmt.Errorf("a: %w", transient), fmt.Errorf("b: %w", store.ErrNotFound))), false},
		{fmt.Errorf("router: %w", errors.Join(inv, fmt.Errorf("b: %w", store.ErrNotFound))), true},
	} {
		if got := permanent(c.err); got != c.want {
			t.Errorf("permanent(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

func TestBackoffGrowsAndIsBounded(t *testing.T) {
	for try := 1; try < 40; try++ {
		d := backoff(try)
		ceil := maxBackoff
		if try < 10 {
			ceil = min(maxBackoff, minBackoff<<(try-1))
		}
		if d < ceil/2 || d > ceil {
			t.Fatalf("try %d: %v, want within [%v, %v]", try, d, ceil/2, ceil)
		}
	}
}
