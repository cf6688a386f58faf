package httpstore

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/zosgrid/zos/internal/chunk"
	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/store"
	"github.com/zosgrid/zos/internal/store/dir"
	"github.com/zosgrid/zos/internal/store/mem"
	"github.com/zosgrid/zos/internal/store/storetest"
)

// got is what GetBatch delivered for one index.
type got struct {
	blob  []byte
	err   error
	calls int
}

// getBatch runs s.GetBatch and returns what fn saw per index, failing on
// a second call for an index.
func getBatch(t *testing.T, s *Store, ids []digest.ID) ([]got, error) {
	t.Helper()
	out := make([]got, len(ids))
	err := s.GetBatch(context.Background(), ids, func(i int, blob []byte, err error) {
		out[i].blob, out[i].err = blob, err
		if out[i].calls++; out[i].calls > 1 {
			t.Errorf("index %d delivered %d times", i, out[i].calls)
		}
	})
	return out, err
}

// TestGetBatch reads present, absent, duplicate and rotten blobs in one
// batch from a dir store (files checked once, then sent from the file)
// and a memory store (read through Get), and checks that every index is
// answered once, as Get would answer it, in as few requests as the limits
// allow.
func TestGetBatch(t *testing.T) {
	ctx := context.Background()
	for _, backend := range []string{"dir", "mem"} {
		t.Run(backend, func(t *testing.T) {
			var back store.Store = mem.New()
			var d *dir.Store
			if backend == "dir" {
				var err error
				if d, err = dir.New(t.TempDir()); err != nil {
					t.Fatal(err)
				}
				back = d
			}
			var ids []digest.ID
			want := map[digest.ID][]byte{}
			for i := range 40 {
				_, id, blob := storetest.Blob(fmt.Sprint("batch ", i), 1000+i*997)
				if err := back.Put(ctx, id, blob); err != nil {
					t.Fatal(err)
				}
				if d != nil { // old enough to be remembered as checked
					old := time.Now().Add(-time.Hour)
					os.Chtimes(d.Path(id), old, old)
				}
				ids = append(ids, id)
				want[id] = blob
			}
			_, absent, _ := storetest.Blob("absent", 10)
			_, rotten, rottenBlob := storetest.Blob("rotten", 5000)
			bad := bytes.Clone(rottenBlob)
			bad[len(bad)/2] ^= 1
			if d != nil {
				if err := d.Put(ctx, rotten, rottenBlob); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(d.Path(rotten), bad, 0o644); err != nil {
					t.Fatal(err)
				}
			} else {
				back.(*mem.Store).Corrupt(rotten, bad)
			}
			ids = append(ids, absent, ids[3], rotten, ids[0])

			c := &counting{next: Handler(back, HandlerOptions{})}
			s := client(t, serve(t, c).URL, Options{})
			for round := range 2 { // the second from checked files on dir
				c.post.Store(0)
				c.n.Store(0)
				res, err := getBatch(t, s, ids)
				if err != nil {
					t.Fatalf("round %d: %v", round, err)
				}
				for i, id := range ids {
					r := res[i]
					switch {
					case r.calls != 1:
						t.Fatalf("round %d: index %d answered %d times", round, i, r.calls)
					case id == absent:
						if !errors.Is(r.err, store.ErrNotFound) {
							t.Fatalf("absent: %v", r.err)
						}
					case id == rotten && round == 1 && d != nil:
						// The dir store dropped the rotten copy it found.
						if !errors.Is(r.err, store.ErrNotFound) {
							t.Fatalf("rotten, dropped: %v", r.err)
						}
					case id == rotten:
						var inv *chunk.Invalid
						if !errors.As(r.err, &inv) || inv.ID != rotten || inv.Store != s.String() {
							t.Fatalf("rotten: %v, want *chunk.Invalid for it naming %s", r.err, s)
						}
					case r.err != nil || !bytes.Equal(r.blob, want[id]):
						t.Fatalf("round %d: index %d: %d bytes, %v", round, i, len(r.blob), r.err)
					}
				}
				if n := c.post.Load(); n != 1 {
					t.Fatalf("round %d: %d requests, want 1", round, n)
				}
				if c.n.Load() != c.post.Load() {
					t.Fatalf("round %d: %d requests besides the batch", round, c.n.Load()-c.post.Load())
				}
			}
		})
	}
}

// TestGetBatchSplits: more IDs than a request may hold, and more bytes
// than an answer holds, take several requests, and every blob arrives.
// Blobs a dir store's server has not checked yet are read into memory,
// which bounds an answer more tightly than blobs sent from checked files.
func TestGetBatchSplits(t *testing.T) {
	ctx := context.Background()
	d, err := dir.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var ids []digest.ID
	want := map[digest.ID][]byte{}
	codec := chunk.NewCodec(1)
	old := time.Now().Add(-time.Hour)
	for range 12 { // 12 x 2 MiB of noise
		plain := make([]byte, 2<<20)
		rand.Read(plain)
		_, id, blob := codec.Seal(plain)
		d.Put(ctx, id, blob)
		os.Chtimes(d.Path(id), old, old)
		ids = append(ids, id)
		want[id] = blob
	}
	for i := range MaxGetBatch + 100 { // absent: cheap frames
		ids = append(ids, digest.Sum(fmt.Append(nil, "absent ", i)))
	}
	c := &counting{next: Handler(d, HandlerOptions{})}
	s := client(t, serve(t, c).URL, Options{})
	// First read, in memory: two blobs an answer (4 MiB), six answers,
	// then the absent IDs left of the first 1024 and the last 100. Then
	// from checked files: eight blobs an answer (16 MiB), the other four
	// with those absent IDs, the last 100.
	for round, requests := range []int64{8, 3} {
		c.post.Store(0)
		res, err := getBatch(t, s, ids)
		if err != nil {
			t.Fatal(err)
		}
		for i, id := range ids {
			if b, ok := want[id]; ok && !bytes.Equal(res[i].blob, b) || !ok && !errors.Is(res[i].err, store.ErrNotFound) {
				t.Fatalf("round %d: index %d: %d bytes, %v", round, i, len(res[i].blob), res[i].err)
			}
		}
		if n := c.post.Load(); n != requests {
			t.Fatalf("round %d: %d requests, want %d", round, n, requests)
		}
	}
}

// TestGetBatchUnsupported: a static server and a zos server that does
// not know batched gets are both "unsupported", found out once.
func TestGetBatchUnsupported(t *testing.T) {
	d, err := dir.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	_, id, blob := storetest.Blob("static", 100)
	d.Put(context.Background(), id, blob)
	older := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(protoHeader, protoVersion)
		if r.URL.Path == getPath {
			http.Error(w, "not a blob path", http.StatusNotFound)
			return
		}
		Handler(d, HandlerOptions{}).ServeHTTP(w, r)
	})
	for name, h := range map[string]http.Handler{
		"static": http.FileServer(http.Dir(d.Root())),
		"older":  older,
	} {
		t.Run(name, func(t *testing.T) {
			c := &counting{next: h}
			s := client(t, serve(t, c).URL, Options{})
			for range 2 {
				res, err := getBatch(t, s, []digest.ID{id})
				if !errors.Is(err, errors.ErrUnsupported) || res[0].calls != 0 {
					t.Fatalf("GetBatch: %v, %d calls; want ErrUnsupported and none", err, res[0].calls)
				}
			}
			if n := c.post.Load(); n != 1 {
				t.Fatalf("%d batched gets sent, want 1 (then remembered)", n)
			}
			if b, err := s.Get(context.Background(), id); err != nil || !bytes.Equal(b, blob) {
				t.Fatalf("Get after: %v", err)
			}
		})
	}
}

// cutAfter lets n bytes of the first answer through, then drops the
// connection; later answers go through whole.
type cutAfter struct {
	next http.Handler
	n    int
	cuts int
}

type cutWriter struct {
	http.ResponseWriter
	left int
}

func (w *cutWriter) Write(b []byte) (int, error) {
	if len(b) > w.left {
		w.ResponseWriter.Write(b[:w.left])
		w.ResponseWriter.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}
	w.left -= len(b)
	return w.ResponseWriter.Write(b)
}

func (c *cutAfter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == getPath && c.cuts == 0 {
		c.cuts++
		w = &cutWriter{ResponseWriter: w, left: c.n}
	}
	c.next.ServeHTTP(w, r)
}

// TestGetBatchFaults: an answer cut short keeps what it delivered and
// asks again for the rest; a server answering frames for other IDs is
// retried, then given up on, without delivering them.
func TestGetBatchFaults(t *testing.T) {
	ctx := context.Background()
	back := mem.New()
	var ids []digest.ID
	cut := 0 // two frames and part of a third
	for i := range 10 {
		_, id, blob := storetest.Blob(fmt.Sprint("fault ", i), 20000)
		back.Put(ctx, id, blob)
		ids = append(ids, id)
		if i < 2 {
			cut += len(fmt.Sprintf("%s %d\n", id, len(blob))) + len(blob)
		} else if i == 2 {
			cut += 70 + len(blob)/2
		}
	}
	t.Run("cut short", func(t *testing.T) {
		h := &cutAfter{next: Handler(back, HandlerOptions{}), n: cut}
		c := &counting{next: h}
		s := client(t, serve(t, c).URL, Options{})
		res, err := getBatch(t, s, ids)
		if err != nil {
			t.Fatal(err)
		}
		for i, id := range ids {
			if res[i].err != nil || chunk.Check(id, res[i].blob) != nil {
				t.Fatalf("index %d: %v", i, res[i].err)
			}
		}
		if n := c.post.Load(); n != 2 {
			t.Fatalf("%d requests, want 2", n)
		}
	})
	t.Run("wrong frames", func(t *testing.T) {
		liar := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set(protoHeader, protoVersion)
			fmt.Fprintf(w, "%s missing\nend\n", ids[9]) // not the first ID asked
		})
		c := &counting{next: liar}
		s := client(t, serve(t, c).URL, Options{Tries: 3})
		res, err := getBatch(t, s, ids[:2])
		if err == nil || !strings.Contains(err.Error(), "not for the ID asked") || res[0].calls+res[1].calls != 0 {
			t.Fatalf("GetBatch: %v, %d calls", err, res[0].calls+res[1].calls)
		}
		if n := c.post.Load(); n != 3 {
			t.Fatalf("%d tries, want 3", n)
		}
	})
}

func TestGetBatchRefusesBadInput(t *testing.T) {
	srv := serve(t, Handler(mem.New(), HandlerOptions{}))
	id := digest.Sum([]byte("x")).String()
	for _, tc := range []struct {
		name, method, body string
		code               int
	}{
		{"empty", http.MethodPost, "", 400},
		{"bad line", http.MethodPost, id + "\nnot an id\n", 400},
		{"upper case", http.MethodPost, strings.ToUpper(id), 400},
		{"too many", http.MethodPost, strings.Repeat(id+"\n", MaxGetBatch+1), 400},
		{"too large", http.MethodPost, strings.Repeat("x", maxGetLen+1), 413},
		{"get", http.MethodGet, "", 405},
	} {
		req, _ := http.NewRequest(tc.method, srv.URL+getPath, strings.NewReader(tc.body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.code {
			t.Errorf("%s: %d, want %d", tc.name, resp.StatusCode, tc.code)
		}
	}
}

// FuzzReadFrames feeds arbitrary answers to the client's parser: it must
// not panic, must answer the IDs asked in order, at most once each, and
// must deliver only blobs that pass their check.
func FuzzReadFrames(f *testing.F) {
	var ids []digest.ID
	var blobs [][]byte
	for i := range 3 {
		_, id, blob := storetest.Blob(fmt.Sprint("fuzz ", i), 300)
		ids, blobs = append(ids, id), append(blobs, blob)
	}
	frame := func(i int) string { return fmt.Sprintf("%s %d\n%s", ids[i], len(blobs[i]), blobs[i]) }
	f.Add([]byte(frame(0) + frame(1) + frame(2) + "end\n"))
	f.Add([]byte(frame(0) + ids[1].String() + " missing\n" + ids[2].String() + " corrupt\nend\n"))
	f.Add([]byte(frame(0) + "end\n"))
	f.Add([]byte(frame(0) + "end\nx"))
	f.Add([]byte("end\n"))
	f.Add([]byte(ids[0].String() + " 0300\n"))
	f.Add([]byte(ids[0].String() + " 99999999999\n"))
	f.Add([]byte(frame(1)))
	s := &Store{name: "http://fuzz"}
	f.Fuzz(func(t *testing.T, answer []byte) {
		next := 0
		s.readFrames(bytes.NewReader(answer), ids, func(j int, blob []byte, err error) {
			if j != next {
				t.Fatalf("frame for index %d, want %d", j, next)
			}
			next++
			if (blob == nil) == (err == nil) {
				t.Fatalf("index %d: blob %d bytes and err %v", j, len(blob), err)
			}
			if blob != nil && chunk.Check(ids[j], blob) != nil {
				t.Fatalf("index %d: delivered a blob that fails its check", j)
			}
		})
	})
}
