// Package auth signs and verifies zos HTTP requests: the one scheme shared
// by chunk-store writes (docs/STORE-HTTP.md) and the hub (docs/HUB.md).
//
// # Signed request
//
// A request carries
//
//	Authorization: ZOS-Request key=<public key>, ts=<unix s>, nonce=<32 hex>, sig=<86 base64url>
//
// where sig is the ed25519 signature, in the domain "zos request v1"
// (package key), of the six lines
//
//	METHOD\nHOST\nTARGET\nTS\nNONCE\nBODY-HASH
//
// with no trailing newline: the method, the Host as the client addressed
// it (lower case, with the port if the URL had one), the request target as
// sent (path and query, escaped as on the wire), ts and nonce as in the
// header, and the BLAKE3-256 of the body in hex (of nothing for a request
// without a body). Covering the host means a request captured on one hub
// cannot be replayed on another; covering the query means the parameters
// a server acts on are the ones signed.
//
// # Verifier
//
// A Verifier checks, cheapest first: the header's syntax, the host against
// the names the server answers to, the timestamp against its clock (a
// window of MaxSkew either way), the signature, and last the nonce, which
// it records in a NonceStore so that it is accepted once. The nonce is
// checked last so that only validly signed requests cost a write.
//
// # Nonce stores
//
// MemoryNonces serves one process. Several servers behind a load balancer
// share a NonceStore over their common backend (the hub keeps one in its
// object store, with create-if-absent), so that two of them cannot both
// accept one nonce.
package auth

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/key"
)

const (
	// Scheme is the Authorization scheme.
	Scheme = "ZOS-Request"
	// Domain is the signing domain of a request.
	Domain = "zos request v1"
	// DefaultSkew is how far a request's timestamp may be from the
	// verifier's clock, either way, unless Verifier.MaxSkew says otherwise.
	DefaultSkew = 5 * time.Minute
	// NonceLen is the length of a nonce in hex digits (16 random bytes).
	NonceLen = 32
)

// ErrUnauthorized is wrapped by every refusal of Verify: a missing,
// malformed, expired, misaddressed, wrongly signed or replayed request.
var ErrUnauthorized = errors.New("request not authorized")

// ErrMissing is wrapped (with ErrUnauthorized) when a request carries no
// Authorization header at all, for servers that treat anonymous requests
// differently from bad ones.
var ErrMissing = errors.New("no authorization")

// ErrReplay is returned by a NonceStore for a nonce it already holds.
var ErrReplay = errors.New("nonce already used (replay)")

// Header is a parsed Authorization header.
type Header struct {
	Key   key.Public
	TS    int64 // unix seconds
	Nonce string
	Sig   []byte
}

// String is the header's one spelling.
func (h Header) String() string {
	return fmt.Sprintf("%s key=%s, ts=%d, nonce=%s, sig=%s",
		Scheme, h.Key, h.TS, h.Nonce, base64.RawURLEncoding.EncodeToString(h.Sig))
}

// Message returns the signed message of a request (see the package comment).
func Message(method, host, target string, ts int64, nonce string, bodySum digest.ID) []byte {
	return fmt.Appendf(nil, "%s\n%s\n%s\n%d\n%s\n%s", method, strings.ToLower(host), target, ts, nonce, bodySum)
}

// SignParts signs a request given by its parts and returns the header.
func SignParts(sec key.Secret, method, host, target string, ts int64, nonce string, bodySum digest.ID) Header {
	return Header{
		Key: sec.Public(), TS: ts, Nonce: nonce,
		Sig: sec.Sign(Domain, Message(method, host, target, ts, nonce, bodySum)),
	}
}

// Sign sets r's Authorization header for the request as it will be sent,
// with body as its body, the current time and a fresh nonce. Sign every
// try of a retried request afresh: a reused nonce is refused as a replay.
func Sign(r *http.Request, sec key.Secret, body []byte) {
	host := r.Host
	if host == "" {
		host = r.URL.Host
	}
	h := SignParts(sec, r.Method, host, r.URL.RequestURI(), time.Now().Unix(), NewNonce(), digest.Sum(body))
	r.Header.Set("Authorization", h.String())
}

// NewNonce returns 16 random bytes in hex.
func NewNonce() string {
	var b [NonceLen / 2]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Parse parses an Authorization header value strictly: one spelling per
// header, so that what is verified is what was sent.
func Parse(v string) (Header, error) {
	var a Header
	rest, ok := strings.CutPrefix(v, Scheme+" ")
	if !ok {
		return a, fmt.Errorf("want scheme %s", Scheme)
	}
	parts := strings.Split(rest, ", ")
	names := [...]string{"key", "ts", "nonce", "sig"}
	if len(parts) != len(names) {
		return a, errors.New("want key, ts, nonce, sig")
	}
	var vals [len(names)]string
	for i, p := range parts {
		name, val, ok := strings.Cut(p, "=")
		if !ok || name != names[i] {
			return a, fmt.Errorf("want parameter %s", names[i])
		}
		vals[i] = val
	}
	var err error
	if a.Key, err = key.ParsePublic(vals[0]); err != nil {
		return a, err
	}
	ts := vals[1]
	if len(ts) == 0 || len(ts) > 19 || ts[0] == '0' || strings.Trim(ts, "0123456789") != "" {
		return a, errors.New("bad ts")
	}
	if a.TS, err = strconv.ParseInt(ts, 10, 64); err != nil {
		return a, errors.New("bad ts")
	}
	a.Nonce = vals[2]
	if len(a.Nonce) != NonceLen || strings.Trim(a.Nonce, "0123456789abcdef") != "" {
		return a, errors.New("bad nonce")
	}
	if len(vals[3]) != 86 {
		return a, errors.New("bad sig")
	}
	if a.Sig, err = base64.RawURLEncoding.Strict().DecodeString(vals[3]); err != nil {
		return a, errors.New("bad sig")
	}
	return a, nil
}

// NonceStore remembers the nonces a verifier accepted.
type NonceStore interface {
	// Use records that k signed a request with nonce, to be remembered at
	// least until until (after which the verifier's clock check refuses the
	// request anyway). It returns an error wrapping ErrReplay if the pair
	// is already recorded, and any other error for a failure to record.
	// Of two concurrent Uses of one pair, at most one succeeds. Safe for
	// concurrent use.
	Use(ctx context.Context, k key.Public, nonce string, until time.Time) error
}

// Verifier checks signed requests. Its fields are read-only once in use.
type Verifier struct {
	// Hosts are the names the server answers to, as clients address it
	// ("hub.example", "hub.example:8443"), compared without case. A request
	// signed for another host is refused. Empty accepts any Host: only for
	// servers that cannot know their name, as it gives up the protection
	// against requests replayed from another server.
	Hosts []string
	// MaxSkew bounds the distance between a request's ts and the clock;
	// default DefaultSkew.
	MaxSkew time.Duration
	// Nonces records accepted nonces; required.
	Nonces NonceStore
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Verify checks r, whose body the caller has read into body, and returns
// the key that signed it: Check, then Use. A refusal wraps ErrUnauthorized
// (and ErrMissing when there is no Authorization header); any other error
// is the nonce store's failure, not the client's.
func (v *Verifier) Verify(ctx context.Context, r *http.Request, body []byte) (key.Public, error) {
	h, err := v.Check(r, body)
	if err != nil {
		return key.Public{}, err
	}
	return h.Key, v.Use(ctx, h)
}

// Check verifies everything but the nonce: a server that authorizes only
// some keys calls Check, then its own test of the key, then Use, so that
// requests it would refuse anyway cost no nonce write.
func (v *Verifier) Check(r *http.Request, body []byte) (Header, error) {
	return v.CheckSum(r, digest.Sum(body))
}

// CheckSum is Check for a request whose body is not read yet (a large
// upload): the signature is checked against bodySum, the body hash the
// client announces, and the caller must check the body against it as it
// reads it.
func (v *Verifier) CheckSum(r *http.Request, bodySum digest.ID) (Header, error) {
	raw := r.Header.Get("Authorization")
	if raw == "" {
		return Header{}, fmt.Errorf("%w: %w", ErrUnauthorized, ErrMissing)
	}
	h, err := Parse(raw)
	if err != nil {
		return Header{}, fmt.Errorf("%w: malformed authorization: %v", ErrUnauthorized, err)
	}
	if !v.hostOK(r.Host) {
		return Header{}, fmt.Errorf("%w: signed for host %q, which is not this server", ErrUnauthorized, r.Host)
	}
	t := v.now()
	ts := time.Unix(h.TS, 0)
	if skew := v.skew(); ts.Before(t.Add(-skew)) || ts.After(t.Add(skew)) {
		return Header{}, fmt.Errorf("%w: timestamp %d is more than %v from the server's clock", ErrUnauthorized, h.TS, skew)
	}
	msg := Message(r.Method, r.Host, r.RequestURI, h.TS, h.Nonce, bodySum)
	if !h.Key.Verify(Domain, msg, h.Sig) {
		return Header{}, fmt.Errorf("%w: signature does not verify", ErrUnauthorized)
	}
	return h, nil
}

// Use records h's nonce; a replay wraps ErrUnauthorized and ErrReplay.
func (v *Verifier) Use(ctx context.Context, h Header) error {
	if err := v.Nonces.Use(ctx, h.Key, h.Nonce, time.Unix(h.TS, 0).Add(v.skew())); err != nil {
		if errors.Is(err, ErrReplay) {
			return fmt.Errorf("%w: %w", ErrUnauthorized, err)
		}
		return fmt.Errorf("recording nonce: %w", err)
	}
	return nil
}

func (v *Verifier) now() time.Time {
	if v.Now != nil {
		return v.Now()
	}
	return time.Now()
}

func (v *Verifier) skew() time.Duration {
	if v.MaxSkew > 0 {
		return v.MaxSkew
	}
	return DefaultSkew
}

func (v *Verifier) hostOK(host string) bool {
	if len(v.Hosts) == 0 {
		return true
	}
	for _, h := range v.Hosts {
		if strings.EqualFold(h, host) {
			return true
		}
	}
	return false
}

// MemoryNonces is a NonceStore for one process. The zero value is ready.
type MemoryNonces struct {
	mu        sync.Mutex
	seen      map[memKey]time.Time
	lastPrune time.Time
}

type memKey struct {
	k     key.Public
	nonce string
}

var _ NonceStore = (*MemoryNonces)(nil)

// Use implements NonceStore.
func (m *MemoryNonces) Use(_ context.Context, k key.Public, nonce string, until time.Time) error {
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.seen == nil {
		m.seen = map[memKey]time.Time{}
	}
	if now.Sub(m.lastPrune) >= time.Minute {
		for n, exp := range m.seen {
			if exp.Before(now) {
				delete(m.seen, n)
			}
		}
		m.lastPrune = now
	}
	mk := memKey{k, nonce}
	if _, ok := m.seen[mk]; ok {
		return ErrReplay
	}
	m.seen[mk] = until
	return nil
}

// Len returns how many nonces are remembered (for tests and metrics).
func (m *MemoryNonces) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.seen)
}
