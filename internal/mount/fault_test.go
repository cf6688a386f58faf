package mount_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/flist"
	"github.com/zosgrid/zos/internal/mount"
	"github.com/zosgrid/zos/internal/store"
	"github.com/zosgrid/zos/internal/store/dir"
	"github.com/zosgrid/zos/internal/store/httpstore"
	"github.com/zosgrid/zos/internal/store/mem"
	"github.com/zosgrid/zos/internal/store/router"
)

// flakyStore fails Gets with a transient error: the first fails Gets of
// each ID, or every Get while down is set.
type flakyStore struct {
	store.Store
	fails int
	down  atomic.Bool
	mu    sync.Mutex
	seen  map[digest.ID]int
}

var errFlaky = errors.New("connection reset by peer (test)")

func (f *flakyStore) Get(ctx context.Context, id digest.ID) ([]byte, error) {
	if f.down.Load() {
		return nil, errFlaky
	}
	f.mu.Lock()
	f.seen[id]++
	n := f.seen[id]
	f.mu.Unlock()
	if n <= f.fails {
		return nil, errFlaky
	}
	return f.Store.Get(ctx, id)
}

// randomFiles writes n files of size bytes of random content (each its
// own chunks) into a new source tree.
func randomFiles(t *testing.T, n, size int) string {
	t.Helper()
	src := filepath.Join(t.TempDir(), "src")
	must(t, os.Mkdir(src, 0o755))
	rng := rand.New(rand.NewPCG(uint64(n), uint64(size)))
	for i := range n {
		b := make([]byte, size)
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		must(t, os.WriteFile(filepath.Join(src, fmt.Sprintf("f%02d", i)), b, 0o644))
	}
	return src
}

// packRandom packs randomFiles(n, size) into a new dir store, for a
// test that mounts it (it skips without FUSE).
func packRandom(t *testing.T, n, size int) (string, *dir.Store, *flist.Reader) {
	t.Helper()
	needFUSE(t)
	src := randomFiles(t, n, size)
	d, err := dir.New(t.TempDir())
	must(t, err)
	return src, d, packTree(t, src, d)
}

// checkFile reads p from the mount and fails the test unless it is the
// source's p.
func checkFile(t *testing.T, mnt, src, p string) {
	t.Helper()
	got, err := os.ReadFile(filepath.Join(mnt, p))
	must(t, err)
	if want, _ := os.ReadFile(filepath.Join(src, p)); !bytes.Equal(got, want) {
		t.Fatalf("%s differs", p)
	}
}

// TestTransientErrorsRetry: a store that fails each chunk's first two
// Gets costs retries, not errors.
func TestTransientErrorsRetry(t *testing.T) {
	needFUSE(t)
	src := randomFiles(t, 4, 300<<10)
	base := mem.New()
	r := packTree(t, src, base)
	fl := &flakyStore{Store: base, fails: 2, seen: map[digest.ID]int{}}
	var logs logBuffer
	m, mnt := mountImage(t, r, fl, mount.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	for i := range 4 {
		checkFile(t, mnt, src, fmt.Sprintf("f%02d", i))
	}
	s := m.FS().Stats()
	if s.Errors != 0 || s.Retries < 2*int64(len(r.Chunks())) {
		t.Errorf("stats %+v: want no error and 2 retries per chunk (%d chunks)", s, len(r.Chunks()))
	}
	if !strings.Contains(logs.String(), "retrying") {
		t.Errorf("retries not logged:\n%s", logs.String())
	}
}

// TestFetchTimeoutIsEIO: a store that never recovers makes a read fail
// with EIO once the fetch timeout has passed, never hang, and the log
// says why.
func TestFetchTimeoutIsEIO(t *testing.T) {
	needFUSE(t)
	src := randomFiles(t, 1, 10<<10)
	base := mem.New()
	r := packTree(t, src, base)
	fl := &flakyStore{Store: base, seen: map[digest.ID]int{}}
	fl.down.Store(true)
	var logs logBuffer
	const bound = 1500 * time.Millisecond
	m, mnt := mountImage(t, r, fl, mount.Options{FetchTimeout: bound, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	start := time.Now()
	_, err := os.ReadFile(filepath.Join(mnt, "f00"))
	took := time.Since(start)
	if !errors.Is(err, unix.EIO) {
		t.Fatalf("read from a store that is down: %v, want EIO", err)
	}
	if took < bound/2 || took > bound+time.Second {
		t.Errorf("gave up after %v; the bound is %v", took, bound)
	}
	l := logs.String()
	if !strings.Contains(l, "chunk fetch failed") || !strings.Contains(l, "gave up after") || !strings.Contains(l, errFlaky.Error()) {
		t.Errorf("log does not give the reason:\n%s", l)
	}
	t.Logf("EIO after %v, %d tries: %+v", took.Round(time.Millisecond), m.FS().Stats().Retries+1, m.FS().Stats())
	// For a moment the chunk fails at once (the kernel's retry of a failed
	// read-ahead must not wait the bound again); then, the store back, the
	// same read succeeds: failures are not cached.
	fl.down.Store(false)
	start = time.Now()
	if _, err := os.ReadFile(filepath.Join(mnt, "f00")); !errors.Is(err, unix.EIO) || time.Since(start) > 100*time.Millisecond {
		t.Errorf("read right after a timeout: %v after %v, want EIO at once", err, time.Since(start))
	}
	time.Sleep(2 * time.Second)
	if _, err := os.ReadFile(filepath.Join(mnt, "f00")); err != nil {
		t.Fatalf("after the store came back: %v", err)
	}
}

// hub is a real HTTP chunk store on loopback that can be stopped and
// started again on the same address.
type hub struct {
	t    *testing.T
	addr string
	h    http.Handler
	mu   sync.Mutex
	srv  *http.Server
}

func startHub(t *testing.T, st store.Store) *hub {
	t.Helper()
	h := &hub{t: t, h: httpstore.Handler(st, httpstore.HandlerOptions{})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	h.addr = ln.Addr().String()
	h.serve(ln)
	t.Cleanup(h.stop)
	return h
}

func (h *hub) serve(ln net.Listener) {
	srv := &http.Server{Handler: h.h}
	h.mu.Lock()
	h.srv = srv
	h.mu.Unlock()
	go srv.Serve(ln)
}

func (h *hub) url() string { return "http://" + h.addr }

// stop closes the listener and every connection: clients see refused
// connections and resets.
func (h *hub) stop() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.srv != nil {
		h.srv.Close()
		h.srv = nil
	}
}

func (h *hub) restart() {
	h.t.Helper()
	ln, err := net.Listen("tcp", h.addr)
	if err != nil {
		h.t.Errorf("restart on %s: %v", h.addr, err)
		return
	}
	h.serve(ln)
}

// TestFailoverToReplica mounts over two replicas served by real HTTP
// servers and stops the first mid-test: reads go on from the second.
func TestFailoverToReplica(t *testing.T) {
	needFUSE(t)
	src := randomFiles(t, 6, 200<<10)
	d1, err := dir.New(t.TempDir())
	must(t, err)
	d2, err := dir.New(t.TempDir())
	must(t, err)
	both, err := router.New([]router.Route{{Lo: 0, Hi: 0xff, Store: d1}, {Lo: 0, Hi: 0xff, Store: d2}})
	must(t, err)
	r := packTree(t, src, both) // every chunk in both replicas
	h1, h2 := startHub(t, d1), startHub(t, d2)
	c1, err := httpstore.New(h1.url(), httpstore.Options{})
	must(t, err)
	c2, err := httpstore.New(h2.url(), httpstore.Options{})
	must(t, err)
	rt, err := router.New([]router.Route{{Lo: 0, Hi: 0xff, Store: c1}, {Lo: 0, Hi: 0xff, Store: c2}})
	must(t, err)
	m, mnt := mountImage(t, r, rt, mount.Options{})

	read := func(i int) time.Duration {
		t.Helper()
		start := time.Now()
		checkFile(t, mnt, src, fmt.Sprintf("f%02d", i))
		return time.Since(start)
	}
	t.Logf("both replicas up: f00 in %v", read(0).Round(time.Millisecond))
	h1.stop()
	for i := 1; i < 6; i++ {
		took := read(i)
		t.Logf("first replica down: f%02d in %v", i, took.Round(time.Millisecond))
		if took > 10*time.Second {
			t.Errorf("failover took %v", took)
		}
	}
	if s := m.FS().Stats(); s.Errors != 0 {
		t.Errorf("stats %+v: errors with a replica up", s)
	}
}

// TestHubRestartMidRead stops the only store server, starts a read, and
// brings the server back on the same port within a second: the read
// succeeds, having cost retries.
func TestHubRestartMidRead(t *testing.T) {
	src, d, r := packRandom(t, 2, 500<<10)
	h := startHub(t, d)
	c, err := httpstore.New(h.url(), httpstore.Options{})
	must(t, err)
	var logs logBuffer
	m, mnt := mountImage(t, r, c, mount.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if _, err := os.ReadFile(filepath.Join(mnt, "f00")); err != nil { // a live connection to break
		t.Fatal(err)
	}

	h.stop()
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		got, err := os.ReadFile(filepath.Join(mnt, "f01"))
		if want, _ := os.ReadFile(filepath.Join(src, "f01")); err == nil && !bytes.Equal(got, want) {
			err = errors.New("content differs")
		}
		done <- err
	}()
	time.Sleep(900 * time.Millisecond)
	h.restart()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("read across a hub restart: %v\n%s", err, logs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("read across a hub restart hangs")
	}
	s := m.FS().Stats()
	t.Logf("read across a restart in %v: %+v", time.Since(start).Round(time.Millisecond), s)
	if s.Errors != 0 || s.Retries == 0 {
		t.Errorf("stats %+v: want retries and no error", s)
	}
}
