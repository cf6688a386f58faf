package httpstore

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zosgrid/zos/internal/auth"
	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/key"
	"github.com/zosgrid/zos/internal/store/mem"
	"github.com/zosgrid/zos/internal/store/storetest"
)

// TestWriteRefusals sends hand-made writes and checks that the server
// refuses every kind of bad authorization with 401 and stores nothing.
func TestWriteRefusals(t *testing.T) {
	back := mem.New()
	v := &auth.Verifier{Nonces: &auth.MemoryNonces{}}
	srv := serve(t, Handler(back, HandlerOptions{Writers: []key.Public{writer.Public()}, Verifier: v}))
	host := strings.TrimPrefix(srv.URL, "http://")
	v.Hosts = []string{host, "other.example"}
	_, id, blob := storetest.Blob("w", 3000)
	path := blobPath(id)
	sign := func(sec key.Secret, method, path string, ts int64, nonce string, sum digest.ID) string {
		return auth.SignParts(sec, method, host, path, ts, nonce, sum).String()
	}
	sum := digest.Sum(blob)
	now := time.Now().Unix()
	stranger := key.FromSeed([]byte("zos httpstore test stranger  key"))

	put := func(t *testing.T, authz string, body []byte) int {
		t.Helper()
		req, err := http.NewRequest(http.MethodPut, srv.URL+path, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if authz != "" {
			req.Header.Set("Authorization", authz)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusUnauthorized && resp.Header.Get("WWW-Authenticate") != auth.Scheme {
			t.Errorf("401 without WWW-Authenticate")
		}
		return resp.StatusCode
	}
	valid := sign(writer, "PUT", path, now, auth.NewNonce(), sum)
	swap := func(s, param, val string) string { // replace one header parameter's value
		i := strings.Index(s, param+"=") + len(param) + 1
		j := strings.IndexAny(s[i:], ",")
		if j < 0 {
			j = len(s) - i
		}
		return s[:i] + val + s[i+j:]
	}
	for _, tc := range []struct {
		name  string
		authz string
		body  []byte
	}{
		{"missing", "", blob},
		{"wrong scheme", strings.Replace(valid, auth.Scheme, "Bearer", 1), blob},
		{"v1 scheme", strings.Replace(valid, auth.Scheme, "ZOS-Ed25519", 1), blob},
		{"malformed", auth.Scheme + " key=" + writer.Public().String(), blob},
		{"reordered", auth.Scheme + " ts=1, key=x, nonce=y, sig=z", blob},
		{"other host", auth.SignParts(writer, "PUT", "other.example", path, now, auth.NewNonce(), sum).String(), blob},
		{"unknown host", auth.SignParts(writer, "PUT", "evil.example", path, now, auth.NewNonce(), sum).String(), blob},
		{"with query", auth.SignParts(writer, "PUT", host, path+"?x=1", now, auth.NewNonce(), sum).String(), blob},
		{"unknown key", sign(stranger, "PUT", path, now, auth.NewNonce(), sum), blob},
		{"key swapped", swap(valid, "key", stranger.Public().String()), blob},
		{"bad signature", swap(valid, "sig", strings.Repeat("A", 86)), blob},
		{"other body", sign(writer, "PUT", path, now, auth.NewNonce(), sum), blob[:len(blob)-1]},
		{"other method", sign(writer, "DELETE", path, now, auth.NewNonce(), sum), blob},
		{"other path", sign(writer, "PUT", "/00/"+strings.Repeat("0", 62)+"00", now, auth.NewNonce(), sum), blob},
		{"ts changed", swap(sign(writer, "PUT", path, now, "0123456789abcdef0123456789abcdef", sum), "ts", itoa(now+1)), blob},
		{"too old", sign(writer, "PUT", path, now-6*60, auth.NewNonce(), sum), blob},
		{"too new", sign(writer, "PUT", path, now+6*60, auth.NewNonce(), sum), blob},
		{"bad nonce", sign(writer, "PUT", path, now, "xyz", sum), blob},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if code := put(t, tc.authz, tc.body); code != http.StatusUnauthorized {
				t.Fatalf("status %d, want 401", code)
			}
		})
	}
	if back.Len() != 0 {
		t.Fatalf("a refused write stored %d blobs", back.Len())
	}

	t.Run("replay", func(t *testing.T) {
		authz := sign(writer, "PUT", path, now, auth.NewNonce(), sum)
		if code := put(t, authz, blob); code != http.StatusNoContent {
			t.Fatalf("first use: status %d, want 204", code)
		}
		if code := put(t, authz, blob); code != http.StatusUnauthorized {
			t.Fatalf("replay: status %d, want 401", code)
		}
		if back.Len() != 1 {
			t.Fatal("valid write not stored")
		}
	})
	t.Run("within skew", func(t *testing.T) {
		for _, d := range []int64{-4 * 60, 4 * 60} {
			if code := put(t, sign(writer, "PUT", path, now+d, auth.NewNonce(), sum), blob); code != http.StatusNoContent {
				t.Fatalf("ts %+ds: status %d, want 204", d, code)
			}
		}
	})
	t.Run("corrupt body", func(t *testing.T) {
		bad := bytes.Clone(blob)
		bad[100] ^= 1
		_, id2, _ := storetest.Blob("w2", 100)
		path2 := blobPath(id2)
		req, _ := http.NewRequest(http.MethodPut, srv.URL+path2, bytes.NewReader(bad))
		req.Header.Set("Authorization", sign(writer, "PUT", path2, now, auth.NewNonce(), digest.Sum(bad)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("status %d, want 400", resp.StatusCode)
		}
		if ok, _ := back.Has(context.Background(), id2); ok {
			t.Fatal("corrupt blob stored")
		}
	})
	t.Run("too large", func(t *testing.T) {
		big := make([]byte, MaxBlobSize+1)
		if code := put(t, sign(writer, "PUT", path, now, auth.NewNonce(), digest.Sum(big)), big); code != http.StatusRequestEntityTooLarge {
			t.Fatalf("status %d, want 413", code)
		}
	})
}

// TestRetryResigns proves a retried write carries a fresh nonce: the first
// try reaches the store but its answer is lost behind a 502.
func TestRetryResigns(t *testing.T) {
	back := mem.New()
	h := Handler(back, HandlerOptions{Writers: []key.Public{writer.Public()}})
	var answered atomic.Bool
	srv := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut && !answered.Swap(true) {
			h.ServeHTTP(discard{header: http.Header{}}, r)
			http.Error(w, "gateway lost the answer", http.StatusBadGateway)
			return
		}
		h.ServeHTTP(w, r)
	}))
	s := client(t, srv.URL, Options{})
	_, id, blob := storetest.Blob("r", 100)
	if err := s.Put(context.Background(), id, blob); err != nil {
		t.Fatalf("Put after a lost answer: %v", err)
	}
	if !answered.Load() {
		t.Fatal("the first try was not lost")
	}
	if err := s.Delete(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	if ok, _ := back.Has(context.Background(), id); ok {
		t.Fatal("delete did not reach the store")
	}
}

type discard struct{ header http.Header }

func (d discard) Header() http.Header         { return d.header }
func (d discard) Write(b []byte) (int, error) { return len(b), nil }
func (d discard) WriteHeader(int)             {}

func TestUnauthorizedNotRetried(t *testing.T) {
	c := &counting{next: Handler(mem.New(), HandlerOptions{Writers: []key.Public{writer.Public()}})}
	other := key.FromSeed([]byte("zos httpstore test stranger  key"))
	s := client(t, serve(t, c).URL, Options{Key: &other})
	_, id, blob := storetest.Blob("n", 100)
	if err := s.Put(context.Background(), id, blob); !errors.Is(err, ErrUnauthorized) {
		t.Fatal(err)
	}
	if n := c.n.Load(); n != 1 {
		t.Fatalf("%d requests for a refused write, want 1", n)
	}
}

func FuzzParseBlobPath(f *testing.F) {
	f.Add(blobPath(digest.Sum(nil)))
	f.Add("/ab/ab")
	f.Fuzz(func(t *testing.T, p string) {
		id, ok := parseBlobPath(p)
		if ok && blobPath(id) != p {
			t.Fatalf("%q parses to %s", p, id)
		}
	})
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
