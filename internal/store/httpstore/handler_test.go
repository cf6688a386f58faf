package httpstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zosgrid/zos/internal/chunk"
	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/key"
	"github.com/zosgrid/zos/internal/store"
	"github.com/zosgrid/zos/internal/store/dir"
	"github.com/zosgrid/zos/internal/store/mem"
	"github.com/zosgrid/zos/internal/store/storetest"
)

// writer is the key the test servers allow.
var writer = key.FromSeed([]byte("zos httpstore test writer key 01"))

// serve runs h on loopback until the test ends.
func serve(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// client returns a client of url with the test writer's key and fast retries.
func client(t *testing.T, url string, opts Options) *Store {
	t.Helper()
	if opts.Key == nil {
		k := writer
		opts.Key = &k
	}
	if opts.MinBackoff == 0 {
		opts.MinBackoff = time.Millisecond
		opts.MaxBackoff = 10 * time.Millisecond
	}
	s, err := New(url, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// backed pairs a client with the store behind its server.
type backed struct {
	*Store
	back store.Store
}

func TestConformance(t *testing.T) {
	backends := []struct {
		name    string
		new     func(t *testing.T) store.Store
		corrupt func(t *testing.T, s store.Store, id digest.ID, blob []byte)
	}{
		{"mem", func(t *testing.T) store.Store { return mem.New() },
			func(t *testing.T, s store.Store, id digest.ID, blob []byte) { s.(*mem.Store).Corrupt(id, blob) }},
		{"dir", func(t *testing.T) store.Store {
			d, err := dir.New(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			return d
		}, func(t *testing.T, s store.Store, id digest.ID, blob []byte) {
			if err := os.WriteFile(s.(*dir.Store).Path(id), blob, 0o644); err != nil {
				t.Fatal(err)
			}
		}},
	}
	mounts := []struct {
		name  string
		mount func(http.Handler) http.Handler
		base  string
	}{
		{"root", func(h http.Handler) http.Handler { return h }, ""},
		{"prefix", func(h http.Handler) http.Handler {
			mux := http.NewServeMux()
			mux.Handle("/v1/chunks/", http.StripPrefix("/v1/chunks", h))
			return mux
		}, "/v1/chunks/"},
	}
	for _, b := range backends {
		for _, m := range mounts {
			t.Run(b.name+"/"+m.name, func(t *testing.T) {
				storetest.Run(t, storetest.Harness{
					Remote: true,
					New: func(t *testing.T) store.Store {
						back := b.new(t)
						srv := serve(t, m.mount(Handler(back, HandlerOptions{Writers: []key.Public{writer.Public()}})))
						return backed{client(t, srv.URL+m.base, Options{}), back}
					},
					Corrupt: func(t *testing.T, s store.Store, id digest.ID, blob []byte) {
						b.corrupt(t, s.(backed).back, id, blob)
					},
				})
			})
		}
	}
}

// TestStaticServer reads a dir store through a plain file server: the
// read side of the protocol is static files.
func TestStaticServer(t *testing.T) {
	ctx := context.Background()
	d, err := dir.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ref, id, blob := storetest.Blob("static", 70000)
	if err := d.Put(ctx, id, blob); err != nil {
		t.Fatal(err)
	}
	_, absent, _ := storetest.Blob("absent", 10)
	srv := serve(t, http.FileServer(http.Dir(d.Root())))
	s := client(t, srv.URL, Options{})

	plain, err := store.Fetch(ctx, s, chunk.NewCodec(0), ref)
	if err != nil || len(plain) != 70000 {
		t.Fatalf("Fetch: %d bytes, %v", len(plain), err)
	}
	if ok, err := s.Has(ctx, id); !ok || err != nil {
		t.Fatalf("Has present = %v, %v", ok, err)
	}
	if ok, err := s.Has(ctx, absent); ok || err != nil {
		t.Fatalf("Has absent = %v, %v", ok, err)
	}
	if _, err := s.Get(ctx, absent); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get absent: %v", err)
	}
	lack, err := s.Missing(ctx, []digest.ID{id, absent})
	if err != nil || len(lack) != 1 || lack[0] != absent {
		t.Fatalf("Missing (HEAD fallback) = %v, %v", lack, err)
	}
	// A static server answers writes as reads (200 or 404): read-only.
	_, id2, blob2 := storetest.Blob("new", 100)
	for _, try := range []struct {
		name string
		err  error
	}{
		{"put new", s.Put(ctx, id2, blob2)},
		{"put present", s.Put(ctx, id, blob)},
		{"delete", s.Delete(ctx, id)},
	} {
		if !errors.Is(try.err, store.ErrReadOnly) {
			t.Errorf("%s: %v, want ErrReadOnly", try.name, try.err)
		}
	}
	if err := s.List(ctx, func(digest.ID) error { return nil }); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("List: %v, want ErrUnsupported", err)
	}
	// Rot on the server's disk is caught by the client.
	bad := []byte(strings.Repeat("x", 500))
	if err := os.WriteFile(d.Path(id), bad, 0o644); err != nil {
		t.Fatal(err)
	}
	var inv *chunk.Invalid
	if _, err := s.Get(ctx, id); !errors.As(err, &inv) || inv.Store != s.String() {
		t.Fatalf("Get rotten: %v, want *chunk.Invalid naming %s", err, s)
	}
}

func TestNoKeyIsReadOnly(t *testing.T) {
	srv := serve(t, Handler(mem.New(), HandlerOptions{Writers: []key.Public{writer.Public()}}))
	s, err := New(srv.URL, Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, id, blob := storetest.Blob("k", 10)
	if err := s.Put(context.Background(), id, blob); !errors.Is(err, store.ErrReadOnly) {
		t.Fatalf("Put without key: %v", err)
	}
}

func TestReadOnlyHandler(t *testing.T) {
	srv := serve(t, Handler(mem.New(), HandlerOptions{}))
	s := client(t, srv.URL, Options{})
	_, id, blob := storetest.Blob("ro", 10)
	if err := s.Put(context.Background(), id, blob); !errors.Is(err, store.ErrReadOnly) {
		t.Fatalf("Put to handler without writers: %v", err)
	}
}

func TestUnknownKeyRefused(t *testing.T) {
	srv := serve(t, Handler(mem.New(), HandlerOptions{Writers: []key.Public{writer.Public()}}))
	other, err := key.Generate()
	if err != nil {
		t.Fatal(err)
	}
	s := client(t, srv.URL, Options{Key: &other})
	_, id, blob := storetest.Blob("u", 10)
	if err := s.Put(context.Background(), id, blob); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("Put with unknown key: %v", err)
	}
}

// counting counts requests per method and path before passing them on.
type counting struct {
	next http.Handler
	n    atomic.Int64
	post atomic.Int64
}

func (c *counting) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.n.Add(1)
	if r.Method == http.MethodPost {
		c.post.Add(1)
	}
	c.next.ServeHTTP(w, r)
}

func TestMissingBatches(t *testing.T) {
	ctx := context.Background()
	back := mem.New()
	var ids, want []digest.ID
	for i := range 2*MaxMissingBatch + 500 {
		id := digest.Sum(fmt.Appendf(nil, "id %d", i))
		ids = append(ids, id)
		if i%7 == 0 {
			back.Corrupt(id, []byte("present")) // Has only looks at presence
		} else {
			want = append(want, id)
		}
	}
	c := &counting{next: Handler(back, HandlerOptions{})}
	s := client(t, serve(t, c).URL, Options{})
	got, err := s.Missing(ctx, ids)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("Missing: %d ids, want %d", len(got), len(want))
	}
	if n := c.post.Load(); n != 3 {
		t.Fatalf("%d missing requests, want 3 batches", n)
	}
	if got, err := s.Missing(ctx, nil); err != nil || len(got) != 0 {
		t.Fatalf("Missing(nil) = %v, %v", got, err)
	}
}

func TestMissingRefusesBadInput(t *testing.T) {
	srv := serve(t, Handler(mem.New(), HandlerOptions{}))
	id := digest.Sum([]byte("x")).String()
	for _, tc := range []struct {
		name string
		body string
		code int
	}{
		{"empty", "", 200},
		{"one", id + "\n", 200},
		{"no final newline", id, 200},
		{"upper case", strings.ToUpper(id) + "\n", 400},
		{"blank line", id + "\n\n", 400},
		{"short", id[:10] + "\n", 400},
		{"too many", strings.Repeat(id+"\n", MaxMissingBatch+1), 400},
		{"too large", strings.Repeat("x", maxMissingLen+1), 413},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := http.Post(srv.URL+missingPath, "text/plain", strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.code {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.code)
			}
		})
	}
}

// TestListFailures checks that a listing cut short is an error, not a
// silently shorter list.
func TestListFailures(t *testing.T) {
	id := digest.Sum([]byte("x")).String()
	for _, tc := range []struct{ name, body string }{
		{"no end", id + "\n"},
		{"server error", id + "\nerror disk on fire\n"},
		{"garbage", "hello\nend\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set(protoHeader, protoVersion)
				fmt.Fprint(w, tc.body)
			}))
			s := client(t, srv.URL, Options{})
			n := 0
			err := s.List(context.Background(), func(digest.ID) error { n++; return nil })
			if err == nil {
				t.Fatalf("List succeeded after %d ids", n)
			}
		})
	}
}

func TestString(t *testing.T) {
	for in, want := range map[string]string{
		"https://user:pw@hub.example/chunks/":                "https://hub.example/chunks",
		"http://h/x?token=abc&region=eu&X-Amz-Signature=zzz": "http://h/x?region=eu",
		"http://h:8080": "http://h:8080",
	} {
		s, err := New(in, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if got := s.String(); got != want {
			t.Errorf("String(%q) = %q, want %q", in, got, want)
		}
	}
	for _, bad := range []string{"ftp://h/x", "http:///x", "/just/a/path", "http://h/x#frag"} {
		if _, err := New(bad, Options{}); err == nil {
			t.Errorf("New(%q) accepted", bad)
		}
	}
}

// TestFileFastPath: over a dir store the handler checks a blob file once,
// then sends it from the file; a file that changes (size or modification
// time) is checked again, so a torn or replaced blob is still refused.
func TestFileFastPath(t *testing.T) {
	ctx := context.Background()
	d, err := dir.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	_, id, blob := storetest.Blob("fast", 100000)
	if err := d.Put(ctx, id, blob); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(d.Path(id), old, old); err != nil { // not a file still being written
		t.Fatal(err)
	}
	srv := serve(t, Handler(d, HandlerOptions{}))
	h := srv.Config.Handler.(*handler)
	get := func() (int, []byte) {
		t.Helper()
		resp, err := http.Get(srv.URL + blobPath(id))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode == http.StatusOK && (resp.Header.Get("Content-Length") != fmt.Sprint(len(b)) ||
			resp.Header.Get("Cache-Control") == "" || resp.Header.Get(protoHeader) != protoVersion) {
			t.Fatalf("headers %v", resp.Header)
		}
		return resp.StatusCode, b
	}
	fi, _ := os.Stat(d.Path(id))
	for i := range 3 {
		if code, b := get(); code != http.StatusOK || !bytes.Equal(b, blob) {
			t.Fatalf("get %d: %d, %d bytes", i, code, len(b))
		}
		if !h.verified.has(id, fi) {
			t.Fatalf("get %d: the file is not recorded as checked", i)
		}
	}
	// Truncated (a torn write): checked again, refused, removed by the store.
	if err := os.WriteFile(d.Path(id), blob[:len(blob)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _ := get(); code != http.StatusInternalServerError {
		t.Fatalf("torn blob: %d", code)
	}
	if code, _ := get(); code != http.StatusNotFound {
		t.Fatalf("torn blob after its refusal: %d, want 404 (removed)", code)
	}
	// Rewritten with the same size and a new time: checked again.
	bad := bytes.Clone(blob)
	bad[100] ^= 1
	if err := os.WriteFile(d.Path(id), bad, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(d.Path(id), old.Add(time.Minute), old.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if code, _ := get(); code != http.StatusInternalServerError {
		t.Fatalf("rewritten rotten blob: %d", code)
	}
}

// BenchmarkGet reads one 30 KB blob over loopback per op (a cold read of
// a mount does this per chunk): see the allocations per op.
func BenchmarkGet(b *testing.B) {
	ctx := context.Background()
	back := mem.New()
	_, id, blob := storetest.Blob("bench", 80000)
	back.Put(ctx, id, blob)
	srv := httptest.NewServer(Handler(back, HandlerOptions{}))
	b.Cleanup(srv.Close)
	k := writer
	s, err := New(srv.URL, Options{Key: &k})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(blob)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Get(ctx, id); err != nil {
			b.Fatal(err)
		}
	}
}
