package hub

import (
	"bytes"
	"context"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zosgrid/zos/internal/auth"
	"github.com/zosgrid/zos/internal/hub/object"
	"github.com/zosgrid/zos/internal/key"
)

// clock is a test clock that moves only when told, from the real now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Now()} }

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func countNonces(t *testing.T, o object.Store) int {
	t.Helper()
	n := 0
	if err := o.List(context.Background(), "nonces/", func(object.Info) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestNonceSpentLast: a validly signed request its key may not make is
// refused without recording its nonce; so is a signed read of public
// things (its signature opens nothing). A signed read that opens a private
// namespace does record it, and its replay is refused.
func TestNonceSpentLast(t *testing.T) {
	ctx := context.Background()
	b := dirBackend(t)
	h := startHub(t, b, nil)
	register(t, h.url, alice, "alice")
	register(t, h.url, bob, "bob")
	a := publish(t, h, alice, tree(t, 21, nil), "alice/app:v1")
	d := a.Digest().String()
	_, id, blob := sealed([]byte("a chunk nobody may write"))

	before := countNonces(t, b.Objects)
	for _, tc := range []struct {
		k            key.Secret
		method, path string
		body         []byte
		want         int
	}{
		{bob, "PUT", "/v1/flists/alice/x", a.Bytes(), 403},
		{bob, "PUT", "/v1/tags/alice/app/x", []byte(`{"digest":"` + d + `"}`), 403},
		{bob, "PUT", "/v1/links/alice/l", []byte(`{"target":"bob/y"}`), 403},
		{bob, "DELETE", "/v1/flists/alice/app", nil, 403},
		{bob, "POST", "/v1/users/alice", []byte(`{"private":true}`), 403},
		{bob, "POST", "/v1/promote/alice/p", []byte(`{"source":"alice/app:v1"}`), 403},
		{bob, "POST", "/v1/convert", []byte(`{"source":"docker://example.com/x","target":"alice/c"}`), 403},
		{bob, "POST", "/v1/gc", nil, 403},
		{bob, "POST", "/v1/users", []byte(`{"name":"carol","key":"` + stranger.Public().String() + `"}`), 403},
		{stranger, "PUT", "/chunks/" + id.String()[:2] + "/" + id.String(), blob, 401},
		{bob, "GET", "/v1/repos/alice", nil, 200},
		{bob, "GET", "/v1/flists/alice/app:v1", nil, 200},
		{bob, "GET", "/v1/users", nil, 200},
	} {
		if c, body := call(t, h, &tc.k, tc.method, tc.path, tc.body); c != tc.want {
			t.Errorf("%s %s: %d %s, want %d", tc.method, tc.path, c, body, tc.want)
		}
	}
	if n := countNonces(t, b.Objects) - before; n != 0 {
		t.Fatalf("refused writes and public reads recorded %d nonces", n)
	}

	// Alice's signature opens her private namespace: recorded once.
	if _, err := client(t, h.url, &alice).SetPrivate(ctx, "alice", true); err != nil {
		t.Fatal(err)
	}
	before = countNonces(t, b.Objects)
	req, _ := http.NewRequest(http.MethodGet, h.url+"/v1/flists/alice/app:v1", nil)
	auth.Sign(req, alice, nil)
	for i, want := range []int{200, 401} {
		resp, err := http.DefaultClient.Do(req.Clone(ctx))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("private read #%d: %d, want %d (a replay is refused)", i+1, resp.StatusCode, want)
		}
	}
	if n := countNonces(t, b.Objects) - before; n != 1 {
		t.Fatalf("a private read recorded %d nonces, want 1", n)
	}
}

// send signs (unless k is nil) and sends a request, returning the status
// and Retry-After.
func send(t *testing.T, h *testHub, k *key.Secret, method, path string, body []byte, mod func(*http.Request)) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, h.url+path, bytes.NewReader(body))
	if k != nil {
		auth.Sign(req, *k, body)
	}
	if mod != nil {
		mod(req)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("Retry-After")
}

func TestRateLimits(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	b := dirBackend(t)
	h := startHub(t, b, func(o *Options) {
		o.Now = clk.Now
		o.Limits = RateLimits{Writes: 1, WriteBurst: 3, Failures: 0.5, FailureBurst: 2}
	})
	register(t, h.url, alice, "alice") // alice's first write
	register(t, h.url, bob, "bob")
	nonces := countNonces(t, b.Objects)

	// Writes: alice has 2 left of her burst, then 429 with Retry-After,
	// without a nonce; a second later, one more.
	up := []byte(`{"private":false}`)
	for i, want := range []int{200, 200, 429} {
		c, ra := send(t, h, &alice, "POST", "/v1/users/alice", up, nil)
		if c != want || c == 429 && ra != "1" {
			t.Fatalf("write %d: %d (Retry-After %q), want %d", i+1, c, ra, want)
		}
	}
	if n := countNonces(t, b.Objects) - nonces; n != 2 {
		t.Fatalf("%d nonces for 2 writes served and one refused", n)
	}
	// Chunk uploads count as writes, and are answered 429 too.
	_, id, blob := sealed([]byte("rate-limited chunk"))
	chunkPath := "/chunks/" + id.String()[:2] + "/" + id.String()
	if c, ra := send(t, h, &alice, "PUT", chunkPath, blob, nil); c != 429 || ra != "1" {
		t.Fatalf("chunk PUT over the write rate: %d (Retry-After %q)", c, ra)
	}
	clk.add(time.Second)
	if c, _ := send(t, h, &alice, "PUT", chunkPath, blob, nil); c != 204 {
		t.Fatalf("chunk PUT a second later: %d", c)
	}
	// The client waits a short Retry-After out.
	go func() { time.Sleep(300 * time.Millisecond); clk.add(time.Second) }()
	if _, err := client(t, h.url, &alice).SetPrivate(ctx, "alice", false); err != nil {
		t.Fatalf("client over the write rate: %v", err)
	}

	// Failures by key: bob's forbidden writes (403) exhaust his refusals;
	// then even his own namespace's writes wait. Alice, at the same
	// address, is not held back.
	clk.add(10 * time.Second)
	for i, want := range []int{403, 403, 429} {
		if c, _ := send(t, h, &bob, "POST", "/v1/users/alice", up, nil); c != want {
			t.Fatalf("bob's forbidden write %d: %d, want %d", i+1, c, want)
		}
	}
	if c, _ := send(t, h, &bob, "POST", "/v1/users/bob", up, nil); c != 429 {
		t.Fatalf("bob's own write after his refusals: %d", c)
	}
	if c, _ := send(t, h, &alice, "POST", "/v1/users/alice", up, nil); c != 200 {
		t.Fatalf("alice's write while bob is held back: %d", c)
	}

	// Failures by address: forged and unsigned requests are charged to
	// the address, whose signed requests are then refused before their
	// body is read, valid or not. Forgeries in alice's name are not
	// charged to her key (anyone could lock it out).
	forge := func(r *http.Request) {
		hd, _ := auth.Parse(r.Header.Get("Authorization"))
		hd.Sig[0] ^= 1
		r.Header.Set("Authorization", hd.String())
	}
	for i, want := range []int{401, 401, 429} {
		if c, _ := send(t, h, &alice, "POST", "/v1/users/alice", up, forge); c != want {
			t.Fatalf("forged request %d: %d, want %d", i+1, c, want)
		}
	}
	if c, ra := send(t, h, &alice, "POST", "/v1/users/alice", up, nil); c != 429 || ra != "2" {
		t.Fatalf("valid request from a refused address: %d (Retry-After %q)", c, ra)
	}
	if c, _ := send(t, h, &alice, "PUT", chunkPath, blob, nil); c != 429 {
		t.Fatalf("chunk write from a refused address: %d", c)
	}
	if w := h.lim.refused(keyBucket(alice.Public())); w != 0 {
		t.Fatalf("forgeries in alice's name held her key back %v", w)
	}
	if c, _ := send(t, h, nil, "GET", "/v1/users", nil, nil); c != 200 {
		t.Fatalf("an anonymous read from a refused address: %d", c)
	}
	clk.add(2 * time.Second)
	if c, _ := send(t, h, &alice, "POST", "/v1/users/alice", up, nil); c != 200 {
		t.Fatalf("valid request once the address refilled: %d", c)
	}
	m := getText(t, h.url+"/metrics")
	for _, what := range []string{"writes", "failures"} {
		if !strings.Contains(m, `zos_hub_rate_limited_total{what="`+what+`"}`) {
			t.Fatalf("metrics lack rate_limited %s", what)
		}
	}
}

func TestLimiterClient(t *testing.T) {
	l := newLimiter(RateLimits{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}, time.Now)
	for _, tc := range []struct{ remote, xff, want string }{
		{"192.0.2.1:1234", "", "192.0.2.1"},
		{"192.0.2.1:1234", "198.51.100.7", "192.0.2.1"}, // not a trusted proxy: the header is the client's word
		{"10.1.2.3:1234", "198.51.100.7", "198.51.100.7"},
		{"10.1.2.3:1234", "203.0.113.9, 198.51.100.7, 10.9.9.9", "198.51.100.7"},
		{"10.1.2.3:1234", "garbage", "10.1.2.3"},
		{"[2001:db8:1:2:3:4:5:6]:1234", "", "2001:db8:1:2::/64"},
		{"[::ffff:192.0.2.1]:1234", "", "192.0.2.1"},
	} {
		r, _ := http.NewRequest("GET", "/", nil)
		r.RemoteAddr = tc.remote
		if tc.xff != "" {
			r.Header.Set("X-Forwarded-For", tc.xff)
		}
		if got := l.client(r); got != tc.want {
			t.Errorf("%s, X-Forwarded-For %q: %s, want %s", tc.remote, tc.xff, got, tc.want)
		}
	}
	// Buckets refill at their rate and are forgotten once full.
	clk := newClock()
	s := buckets{rate: 2, burst: 2, now: clk.Now}
	if s.take("x") != 0 || s.take("x") != 0 {
		t.Fatal("a new bucket is not full")
	}
	if w := s.take("x"); w != 500*time.Millisecond {
		t.Fatalf("empty bucket: wait %v", w)
	}
	clk.add(time.Second)
	s.prune()
	if len(s.m) != 0 {
		t.Fatalf("a refilled bucket is kept")
	}
}
