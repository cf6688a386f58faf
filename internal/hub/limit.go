package hub

import (
	"context"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/zosgrid/zos/internal/key"
)

// RateLimits bound what one key, or one client address, may cost the hub
// (docs/HUB.md, "Rate limits"). Each is a token bucket: Rate tokens a
// second, at most Burst at once. Limits are per hub instance: N hubs behind
// a load balancer allow N times as much.
type RateLimits struct {
	// Writes is the rate of signed writes one key may make (chunk
	// uploads, pushes, tags, registrations, conversions...); default 500
	// a second, bursts of 2000. A write over it is answered 429 before
	// its permission is looked up or its nonce recorded.
	Writes, WriteBurst float64
	// Failures is the rate of refusals a client may earn before its
	// requests are refused early (429, before the body is read): per key
	// for validly signed requests its key may not make (403, or 404 for
	// a private namespace), per address for everything that is not a
	// valid signature (missing, malformed, expired, misaddressed, forged,
	// replayed). Per address because a forged request's key proves
	// nothing: charging it would let anyone lock a key out. Default 1 a
	// second, bursts of 30.
	Failures, FailureBurst float64
	// TrustedProxies are the addresses of load balancers in front of the
	// hub: for a request from one of them, the client is the last address
	// in X-Forwarded-For that is not itself trusted. Without them every
	// client of a balanced hub shares the balancer's address.
	TrustedProxies []netip.Prefix
	// Off turns rate limiting off (benchmarks).
	Off bool
}

func (l RateLimits) withDefaults() RateLimits {
	if l.Writes <= 0 {
		l.Writes = 500
	}
	if l.WriteBurst <= 0 {
		l.WriteBurst = 2000
	}
	if l.Failures <= 0 {
		l.Failures = 1
	}
	if l.FailureBurst <= 0 {
		l.FailureBurst = 30
	}
	return l
}

// limiter holds the hub's token buckets.
type limiter struct {
	opt    RateLimits
	writes buckets // by key
	fails  buckets // by "k"+key or "a"+address
}

func newLimiter(opt RateLimits, now func() time.Time) *limiter {
	opt = opt.withDefaults()
	return &limiter{
		opt:    opt,
		writes: buckets{rate: opt.Writes, burst: opt.WriteBurst, now: now},
		fails:  buckets{rate: opt.Failures, burst: opt.FailureBurst, now: now},
	}
}

func keyBucket(k key.Public) string { return "k" + string(k[:]) }
func addrBucket(a string) string    { return "a" + a }

// write takes a write token for k; wait > 0 says how long until the next.
func (l *limiter) write(k key.Public) (wait time.Duration) {
	if l.opt.Off {
		return 0
	}
	return l.writes.take(string(k[:]))
}

// refused returns how long a client (keyBucket, addrBucket) must wait
// before its requests are looked at again, 0 if it may go on.
func (l *limiter) refused(who string) time.Duration {
	if l.opt.Off {
		return 0
	}
	return l.fails.wait(who)
}

// fail charges a refusal to a client.
func (l *limiter) fail(who string) {
	if !l.opt.Off {
		l.fails.take(who)
	}
}

// prune forgets full buckets (clients quiet long enough to have refilled).
func (l *limiter) prune() {
	l.writes.prune()
	l.fails.prune()
}

// client is the address a request's limits are charged to: the peer, or
// behind trusted proxies the last untrusted X-Forwarded-For address. An
// IPv6 client is its /64: one host usually holds all of it.
func (l *limiter) client(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	ip = ip.Unmap()
	if l.trusted(ip) {
		hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
		for i := len(hops) - 1; i >= 0; i-- {
			hop, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
			if err != nil {
				break // a garbled header: charge the last good address
			}
			ip = hop.Unmap()
			if !l.trusted(ip) {
				break
			}
		}
	}
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.String()
	}
	return ip.String()
}

func (l *limiter) trusted(ip netip.Addr) bool {
	for _, p := range l.opt.TrustedProxies {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// buckets is a set of token buckets by name, created full when first used.
type buckets struct {
	rate, burst float64
	now         func() time.Time
	mu          sync.Mutex
	m           map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

// maxBuckets bounds the memory of a limiter under a flood of new clients:
// past it, full buckets are dropped at once (and every minute anyway).
const maxBuckets = 1 << 20

// refill brings b up to now; the caller holds mu.
func (s *buckets) refill(name string) *bucket {
	now := s.now()
	b := s.m[name]
	if b == nil {
		if s.m == nil {
			s.m = map[string]*bucket{}
		}
		if len(s.m) >= maxBuckets {
			s.pruneLocked()
		}
		b = &bucket{tokens: s.burst, last: now}
		s.m[name] = b
		return b
	}
	if d := now.Sub(b.last); d > 0 {
		b.tokens = math.Min(s.burst, b.tokens+d.Seconds()*s.rate)
		b.last = now
	}
	return b
}

// take takes a token if there is one (returning 0), else returns how
// long until there is.
func (s *buckets) take(name string) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.refill(name)
	if b.tokens >= 1 {
		b.tokens--
		return 0
	}
	return s.until(b)
}

// wait returns how long until name has a token, without taking it.
func (s *buckets) wait(name string) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m[name] == nil {
		return 0
	}
	b := s.refill(name)
	if b.tokens >= 1 {
		return 0
	}
	return s.until(b)
}

func (s *buckets) until(b *bucket) time.Duration {
	return time.Duration((1 - b.tokens) / s.rate * float64(time.Second))
}

func (s *buckets) prune() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pruneLocked()
}

func (s *buckets) pruneLocked() {
	now := s.now()
	for name, b := range s.m {
		if b.tokens+now.Sub(b.last).Seconds()*s.rate >= s.burst {
			delete(s.m, name)
		}
	}
}

// errTooMany is a 429 with the time to wait.
func errTooMany(wait time.Duration, what string) error {
	e := &httpError{code: http.StatusTooManyRequests, msg: fmt.Sprintf("too many %s: try again in %v", what, wait.Round(time.Millisecond)), retry: wait}
	return e
}

// retryAfter is the Retry-After of a wait: whole seconds, at least one.
func retryAfter(wait time.Duration) string {
	return strconv.Itoa(max(1, int(math.Ceil(wait.Seconds()))))
}

// chunkWrite carries, from the hub's wrapper around the chunk store's
// handler to allowChunkWriter (its Allow), what the wrapper must answer:
// the handler knows only 401 for a key it may not let write.
type chunkWrite struct {
	wait    time.Duration // over the write limit: 429
	refused bool          // validly signed by a key that may not write: charged to the key
}

type chunkWriteKey struct{}

// limitChunks wraps the chunk store's handler with the hub's limits on
// writes: an address refused too often is answered 429 before the body is
// read; a key over its write rate gets 429 instead of the handler's 401;
// a 401 for the signature is charged to the address.
func (h *Hub) limitChunks(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h.lim.opt.Off || r.Method != http.MethodPut && r.Method != http.MethodDelete {
			next.ServeHTTP(w, r)
			return
		}
		addr := addrBucket(h.lim.client(r))
		if wait := h.lim.refused(addr); wait > 0 {
			h.metrics.limited.WithLabelValues("failures").Inc()
			w.Header().Set("Retry-After", retryAfter(wait))
			http.Error(w, "too many refused requests from this address: try again later", http.StatusTooManyRequests)
			return
		}
		st := &chunkWrite{}
		lw := &limitWriter{ResponseWriter: w, st: st}
		next.ServeHTTP(lw, r.WithContext(context.WithValue(r.Context(), chunkWriteKey{}, st)))
		if lw.code == http.StatusUnauthorized && !st.refused && st.wait == 0 {
			h.lim.fail(addr)
		}
	})
}

// limitWriter turns the chunk handler's 401 into a 429 when the write
// limit, not the signature, refused the request.
type limitWriter struct {
	http.ResponseWriter
	st      *chunkWrite
	code    int
	swallow bool
}

func (w *limitWriter) WriteHeader(code int) {
	if w.code != 0 {
		return
	}
	w.code = code
	if code == http.StatusUnauthorized && w.st.wait > 0 {
		hd := w.Header()
		hd.Del("WWW-Authenticate")
		hd.Set("Retry-After", retryAfter(w.st.wait))
		w.ResponseWriter.WriteHeader(http.StatusTooManyRequests)
		fmt.Fprintf(w.ResponseWriter, "too many writes by this key: try again in %v\n", w.st.wait.Round(time.Millisecond))
		w.swallow = true
		return
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *limitWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if w.swallow {
		return len(b), nil
	}
	return w.ResponseWriter.Write(b)
}

func (w *limitWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
