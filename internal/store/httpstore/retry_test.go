package httpstore

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zosgrid/zos/internal/chunk"
	"github.com/zosgrid/zos/internal/key"
	"github.com/zosgrid/zos/internal/store"
	"github.com/zosgrid/zos/internal/store/mem"
	"github.com/zosgrid/zos/internal/store/storetest"
)

// flaky fails the first n requests in the given way, then passes them on.
type flaky struct {
	next http.Handler
	n    int64
	fail func(w http.ResponseWriter)
	seen atomic.Int64
}

func (f *flaky) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if f.seen.Add(1) <= f.n {
		f.fail(w)
		return
	}
	f.next.ServeHTTP(w, r)
}

func status(code int) func(http.ResponseWriter) {
	return func(w http.ResponseWriter) { http.Error(w, "flaky", code) }
}

// hangUp closes the connection without an answer.
func hangUp(w http.ResponseWriter) {
	c, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(err)
	}
	c.Close()
}

// cutShort announces a 1000-byte body, sends 10 bytes of it and hangs up.
func cutShort(w http.ResponseWriter) {
	c, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(err)
	}
	c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789"))
	c.Close()
}

func TestRetries(t *testing.T) {
	ctx := context.Background()
	back := mem.New()
	ref, id, blob := storetest.Blob("flaky", 20000)
	back.Put(ctx, id, blob)
	for _, tc := range []struct {
		name string
		fail func(http.ResponseWriter)
	}{
		{"503", status(http.StatusServiceUnavailable)},
		{"500", status(http.StatusInternalServerError)},
		{"429", status(http.StatusTooManyRequests)},
		{"hang up", hangUp},
		{"body cut short", cutShort},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &flaky{next: Handler(back, HandlerOptions{Writers: []key.Public{writer.Public()}}), n: 3, fail: tc.fail}
			s := client(t, serve(t, f).URL, Options{})
			plain, err := store.Fetch(ctx, s, chunk.NewCodec(0), ref)
			if err != nil || len(plain) != 20000 {
				t.Fatalf("Get through 3 failures with 4 tries: %v", err)
			}
			if n := f.seen.Load(); n < 4 {
				t.Fatalf("server saw %d requests, want at least 4", n)
			}
			// Writes are retried too, each signed afresh.
			f.seen.Store(0)
			_, id2, blob2 := storetest.Blob("flaky put", 100)
			if err := s.Put(ctx, id2, blob2); err != nil {
				t.Fatalf("Put through 3 failures: %v", err)
			}
		})
	}
}

func TestRetriesBounded(t *testing.T) {
	f := &flaky{next: http.NotFoundHandler(), n: 1 << 30, fail: status(http.StatusServiceUnavailable)}
	s := client(t, serve(t, f).URL, Options{Tries: 3})
	_, id, _ := storetest.Blob("x", 10)
	_, err := s.Get(context.Background(), id)
	if err == nil || errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get from a dead server: %v", err)
	}
	if n := f.seen.Load(); n != 3 {
		t.Fatalf("%d requests, want 3 tries", n)
	}
}

func TestNotFoundNotRetried(t *testing.T) {
	for _, tc := range []struct {
		name string
		code int
	}{{"404", http.StatusNotFound}, {"403", http.StatusForbidden}, {"400", http.StatusBadRequest}} {
		t.Run(tc.name, func(t *testing.T) {
			f := &flaky{n: 1 << 30, fail: status(tc.code)}
			s := client(t, serve(t, f).URL, Options{})
			_, id, _ := storetest.Blob("x", 10)
			_, err := s.Get(context.Background(), id)
			if err == nil || errors.Is(err, store.ErrNotFound) != (tc.code == 404) {
				t.Fatalf("Get: %v", err)
			}
			if n := f.seen.Load(); n != 1 {
				t.Fatalf("%d requests, want 1", n)
			}
		})
	}
}

// TestCancelDuringBackoff checks that a cancelled context ends the wait
// for a long Retry-After at once.
func TestCancelDuringBackoff(t *testing.T) {
	f := &flaky{n: 1 << 30, fail: func(w http.ResponseWriter) {
		w.Header().Set("Retry-After", "3600")
		http.Error(w, "busy", http.StatusServiceUnavailable)
	}}
	s := client(t, serve(t, f).URL, Options{MinBackoff: time.Millisecond, MaxBackoff: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, id, _ := storetest.Blob("x", 10)
	start := time.Now()
	_, err := s.Get(ctx, id)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Get: %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %v", d)
	}
	if n := f.seen.Load(); n != 1 {
		t.Fatalf("%d requests, want 1", n)
	}
}

// TestTimeoutPerTry checks that a server that never answers costs one
// Timeout per try, not forever.
func TestTimeoutPerTry(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	var seen atomic.Int64
	srv := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if seen.Add(1) == 1 {
			select {
			case <-release:
			case <-r.Context().Done():
			}
			return
		}
		http.NotFound(w, r)
	}))
	s := client(t, srv.URL, Options{Timeout: 100 * time.Millisecond})
	_, id, _ := storetest.Blob("x", 10)
	if _, err := s.Get(context.Background(), id); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get after a hung try: %v", err)
	}
}
