package auth

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/key"
)

var signer = key.FromSeed([]byte("zos auth test signer key 0000001"))

// server verifies every request it gets and answers 204 or 401.
func server(t *testing.T, v *Verifier) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		k, err := v.Verify(r.Context(), r, body)
		switch {
		case errors.Is(err, ErrUnauthorized):
			http.Error(w, err.Error(), http.StatusUnauthorized)
		case err != nil:
			http.Error(w, err.Error(), http.StatusInternalServerError)
		case k != signer.Public():
			http.Error(w, "wrong key", http.StatusInternalServerError)
		default:
			w.WriteHeader(http.StatusNoContent)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func send(t *testing.T, req *http.Request) int {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestVerify(t *testing.T) {
	v := &Verifier{Nonces: &MemoryNonces{}}
	srv := server(t, v)
	host := strings.TrimPrefix(srv.URL, "http://")
	v.Hosts = []string{"other.example", strings.ToUpper(host)}
	body := []byte("hello")
	target := "/a/b?x=1&y=%2F"
	now := time.Now().Unix()

	// req builds a request to the test server with a header made from parts.
	req := func(method, signedHost, signedTarget string, ts int64, nonce string, signedBody []byte) *http.Request {
		r, err := http.NewRequest(method, srv.URL+target, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		h := SignParts(signer, method, signedHost, signedTarget, ts, nonce, digest.Sum(signedBody))
		r.Header.Set("Authorization", h.String())
		return r
	}
	for _, tc := range []struct {
		name string
		r    *http.Request
		want int
	}{
		{"valid", req("PUT", host, target, now, NewNonce(), body), 204},
		{"host case", req("PUT", strings.ToUpper(host), target, now, NewNonce(), body), 204},
		{"within skew", req("PUT", host, target, now-4*60, NewNonce(), body), 204},
		{"wrong host", req("PUT", "other.example", target, now, NewNonce(), body), 401},
		{"other path", req("PUT", host, "/a/c?x=1&y=%2F", now, NewNonce(), body), 401},
		{"other query", req("PUT", host, "/a/b?x=2&y=%2F", now, NewNonce(), body), 401},
		{"unescaped query", req("PUT", host, "/a/b?x=1&y=/", now, NewNonce(), body), 401},
		{"other method", req("POST", host, target, now, NewNonce(), body), 401},
		{"other body", req("PUT", host, target, now, NewNonce(), body[1:]), 401},
		{"expired", req("PUT", host, target, now-6*60, NewNonce(), body), 401},
		{"future", req("PUT", host, target, now+6*60, NewNonce(), body), 401},
		{"bad nonce", req("PUT", host, target, now, "XYZ", body), 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "other method" {
				tc.r.Method = "PUT" // signed as POST, sent as PUT
			}
			if got := send(t, tc.r); got != tc.want {
				t.Fatalf("status %d, want %d", got, tc.want)
			}
		})
	}
	t.Run("replay", func(t *testing.T) {
		r := req("PUT", host, target, now, NewNonce(), body)
		authz := r.Header.Get("Authorization")
		if got := send(t, r); got != 204 {
			t.Fatalf("first: %d", got)
		}
		r = req("PUT", host, target, now, NewNonce(), body)
		r.Header.Set("Authorization", authz)
		if got := send(t, r); got != 401 {
			t.Fatalf("replay: %d, want 401", got)
		}
	})
	t.Run("missing", func(t *testing.T) {
		r, _ := http.NewRequest("GET", srv.URL+"/", nil)
		if got := send(t, r); got != 401 {
			t.Fatalf("%d", got)
		}
	})
	t.Run("Sign", func(t *testing.T) {
		r, _ := http.NewRequest("DELETE", srv.URL+"/x%20y?q=a+b", nil)
		Sign(r, signer, nil)
		if got := send(t, r); got != 204 {
			t.Fatalf("%d", got)
		}
	})
}

func TestVerifyErrors(t *testing.T) {
	ctx := context.Background()
	failing := nonceFunc(func() error { return errors.New("backend down") })
	v := &Verifier{Nonces: failing}
	r := httptest.NewRequest("GET", "/x", nil)
	Sign(r, signer, nil)
	if _, err := v.Verify(ctx, r, nil); err == nil || errors.Is(err, ErrUnauthorized) {
		t.Fatalf("a nonce store failure is %v, want a non-authorization error", err)
	}
	r = httptest.NewRequest("GET", "/x", nil)
	if _, err := v.Verify(ctx, r, nil); !errors.Is(err, ErrMissing) || !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("no header: %v", err)
	}
}

type nonceFunc func() error

func (f nonceFunc) Use(context.Context, key.Public, string, time.Time) error { return f() }

func FuzzParse(f *testing.F) {
	f.Add(SignParts(signer, "PUT", "h", "/p", 1767225600, NewNonce(), digest.Sum(nil)).String())
	f.Add(Scheme + " key=ed25519:x, ts=1, nonce=00, sig=AA")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		h, err := Parse(s)
		if err != nil {
			return
		}
		if re := h.String(); re != s {
			t.Fatalf("parsed %q re-encodes as %q", s, re)
		}
	})
}
