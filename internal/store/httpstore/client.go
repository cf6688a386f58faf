package httpstore

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/zosgrid/zos/internal/auth"
	"github.com/zosgrid/zos/internal/chunk"
	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/key"
	"github.com/zosgrid/zos/internal/store"
)

// Options configures a client store. The zero value is a read-only client
// with the defaults below.
type Options struct {
	// Key signs writes. Nil makes Put and Delete fail with store.ErrReadOnly.
	Key *key.Secret
	// Client, if set, replaces the store's own client and transport; Timeout
	// then still bounds each try, but the transport is the caller's.
	Client *http.Client
	// Timeout bounds one try of one request, body included (List's body
	// excepted: only its header is bounded). Default 60s.
	Timeout time.Duration
	// Tries bounds the attempts of one request. Default 4.
	Tries int
	// MinBackoff and MaxBackoff bound the sleep between tries: before try
	// n+1 a random duration up to min(MaxBackoff, MinBackoff<<(n-1)).
	// Defaults 100ms and 5s.
	MinBackoff, MaxBackoff time.Duration
}

// Store is a client of an HTTP chunk store. It is safe for concurrent use
// and keeps connections open between requests.
type Store struct {
	base   *url.URL // path without trailing slash
	name   string   // base without secrets, for String
	key    *key.Secret
	client *http.Client
	owned  *http.Transport // closed by Close; nil when Options.Client was given
	opts   Options

	noBatch atomic.Bool // the server answered a batched get as one that does not know it
}

var _ store.Store = (*Store)(nil)

// New returns a client for the store at baseURL (http or https).
func New(baseURL string, opts Options) (*Store, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, fmt.Errorf("http store: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("http store %q: want an http:// or https:// URL with a host", redact(u))
	}
	if u.Fragment != "" || u.Opaque != "" {
		return nil, fmt.Errorf("http store %q: unexpected fragment or opaque URL", redact(u))
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = strings.TrimRight(u.RawPath, "/")
	if opts.Timeout <= 0 {
		opts.Timeout = 60 * time.Second
	}
	if opts.Tries <= 0 {
		opts.Tries = 4
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = 100 * time.Millisecond
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = max(5*time.Second, opts.MinBackoff)
	}
	s := &Store{base: u, name: redact(u), key: opts.Key, client: opts.Client, opts: opts}
	if s.client == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
		t.MaxIdleConns = 256
		t.MaxIdleConnsPerHost = 64
		t.IdleConnTimeout = 90 * time.Second
		t.ResponseHeaderTimeout = opts.Timeout
		s.owned = t
		s.client = &http.Client{Transport: t}
	}
	return s, nil
}

// redact returns u without userinfo and without query parameters whose
// names suggest a secret (tokens, signatures, keys, passwords, credentials).
func redact(u *url.URL) string {
	c := *u
	c.User = nil
	if c.RawQuery != "" {
		q := c.Query()
		for name := range q {
			n := strings.ToLower(name)
			for _, w := range []string{"sig", "token", "key", "secret", "pass", "auth", "cred", "session"} {
				if strings.Contains(n, w) {
					q.Del(name)
					break
				}
			}
		}
		c.RawQuery = q.Encode()
	}
	return c.String()
}

// String returns the store URL without userinfo or secret query parameters.
func (s *Store) String() string { return s.name }

// Close drops idle connections of the store's own transport.
func (s *Store) Close() error {
	if s.owned != nil {
		s.owned.CloseIdleConnections()
	}
	return nil
}

func (s *Store) url(path string) string {
	u := *s.base
	u.Path += path
	if u.RawPath != "" {
		u.RawPath += path
	}
	return u.String()
}

// transient marks an error worth another try.
type transient struct {
	err   error
	after time.Duration // the server's Retry-After, if any
}

func (e *transient) Error() string { return e.err.Error() }
func (e *transient) Unwrap() error { return e.err }

// statusError is an HTTP answer that is neither success nor a mapped sentinel.
type statusError struct {
	code int
	msg  string
}

func (e *statusError) Error() string {
	if e.msg == "" {
		return fmt.Sprintf("HTTP %d %s", e.code, http.StatusText(e.code))
	}
	return fmt.Sprintf("HTTP %d %s: %s", e.code, http.StatusText(e.code), e.msg)
}

// newStatusError reads a short explanation from the body.
func newStatusError(resp *http.Response) *statusError {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
	return &statusError{code: resp.StatusCode, msg: strings.TrimSpace(string(b))}
}

// request describes one logical request, tried up to Tries times.
type request struct {
	method string
	path   string // store path
	body   []byte
	signed bool
	stream bool // the body outlives the try's timeout (List)
	// handle consumes a response that is not a transient failure. It
	// returns a *transient error for failures worth another try.
	handle func(*http.Response) error
}

// do runs r with retries. The error names the method and path; Store
// methods add the store.
func (s *Store) do(ctx context.Context, r request) error {
	var err error
	for try := 1; ; try++ {
		err = s.try(ctx, r)
		var t *transient
		if err == nil || !errors.As(err, &t) || ctx.Err() != nil {
			break
		}
		if try >= s.opts.Tries {
			err = fmt.Errorf("%w (gave up after %d tries)", err, try)
			break
		}
		if werr := s.backoff(ctx, try, t.after); werr != nil {
			err = fmt.Errorf("%w (while retrying after: %v)", werr, err)
			break
		}
	}
	if err != nil {
		return fmt.Errorf("%s %s: %w", r.method, r.path, err)
	}
	return nil
}

// backoff sleeps before try n+1: full jitter over an exponential ceiling,
// no less than the server's Retry-After (itself capped at MaxBackoff).
func (s *Store) backoff(ctx context.Context, n int, after time.Duration) error {
	ceil := s.opts.MaxBackoff
	if n-1 < 30 {
		ceil = min(ceil, s.opts.MinBackoff<<(n-1))
	}
	d := rand.N(ceil + 1)
	d = max(d, min(after, s.opts.MaxBackoff))
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func (s *Store) try(ctx context.Context, r request) error {
	if !r.stream {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.opts.Timeout)
		defer cancel()
	}
	var body io.Reader
	if r.body != nil {
		body = bytes.NewReader(r.body)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, s.url(r.path), body)
	if err != nil {
		return err
	}
	if r.signed {
		// Fresh timestamp and nonce on every try: a server that saw the
		// previous one would refuse it as a replay.
		auth.Sign(req, *s.key, r.body)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return &transient{err: err}
	}
	defer func() {
		// Drain a little so the connection can be reused.
		io.CopyN(io.Discard, resp.Body, 4<<10)
		resp.Body.Close()
	}()
	if resp.StatusCode >= 500 && resp.Header.Get(errorHeader) != errCorrupt || resp.StatusCode == http.StatusTooManyRequests {
		var after time.Duration
		if n, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && n > 0 {
			after = time.Duration(n) * time.Second
		}
		return &transient{err: newStatusError(resp), after: after}
	}
	return r.handle(resp)
}

// zos reports whether resp comes from a server that speaks the protocol.
func zos(resp *http.Response) bool { return resp.Header.Get(protoHeader) == protoVersion }

// drain reads what is left of an answer's body, up to maxDrain bytes, and
// returns the error of a body that ended before its announced length.
func drain(resp *http.Response) error {
	_, err := io.Copy(io.Discard, io.LimitReader(resp.Body, maxDrain))
	return err
}

// helperAnswer checks the answer to a helper request (missing, batched
// get): nil for a zos server's 200, unsupported for a server that does not
// speak the protocol (a static server answering as if to a GET, or a 404,
// 405 or 501), a transient error for a static-looking answer cut short.
func helperAnswer(resp *http.Response, unsupported error) error {
	switch {
	case resp.StatusCode/100 == 2 && !zos(resp):
		if err := drain(resp); err != nil {
			return &transient{err: err} // cut short: not proof of a static server
		}
		return unsupported
	case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusMethodNotAllowed ||
		resp.StatusCode == http.StatusNotImplemented:
		return unsupported
	case resp.StatusCode != http.StatusOK:
		return newStatusError(resp)
	}
	return nil
}

// maxDrain bounds what drain reads: a static server's answer to a write is
// a blob or an error page.
const maxDrain = 8 << 20

func (s *Store) Get(ctx context.Context, id digest.ID) ([]byte, error) {
	var blob []byte
	err := s.do(ctx, request{method: http.MethodGet, path: blobPath(id), handle: func(resp *http.Response) error {
		switch {
		case resp.StatusCode == http.StatusNotFound:
			return store.ErrNotFound
		case resp.StatusCode == http.StatusInternalServerError: // with the corrupt marker
			return &chunk.Invalid{ID: id, Store: s.name,
				Err: fmt.Errorf("%w: the server's copy fails its integrity check", chunk.ErrCorrupt)}
		case resp.StatusCode != http.StatusOK:
			return newStatusError(resp)
		case resp.ContentLength > MaxBlobSize:
			return &chunk.Invalid{ID: id, Store: s.name,
				Err: fmt.Errorf("%w: %d bytes is larger than any blob", chunk.ErrCorrupt, resp.ContentLength)}
		}
		b, err := readBody(resp.Body, resp.ContentLength, MaxBlobSize)
		if err != nil {
			return &transient{err: err}
		}
		if len(b) > MaxBlobSize {
			return &chunk.Invalid{ID: id, Store: s.name,
				Err: fmt.Errorf("%w: larger than any blob", chunk.ErrCorrupt)}
		}
		blob = b
		return nil
	}})
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("%s in %s: %w", id.Short(), s, store.ErrNotFound)
	}
	var inv *chunk.Invalid
	if errors.As(err, &inv) {
		return nil, inv
	}
	if err != nil {
		return nil, fmt.Errorf("http store %s: %w", s, err)
	}
	if err := store.Verify(s, id, blob); err != nil {
		return nil, err
	}
	return blob, nil
}

func (s *Store) Has(ctx context.Context, id digest.ID) (bool, error) {
	var ok bool
	err := s.do(ctx, request{method: http.MethodHead, path: blobPath(id), handle: func(resp *http.Response) error {
		switch resp.StatusCode {
		case http.StatusOK:
			ok = true
		case http.StatusNotFound:
		default:
			return newStatusError(resp)
		}
		return nil
	}})
	if err != nil {
		return false, fmt.Errorf("http store %s: %w", s, err)
	}
	return ok, nil
}

// write sends a signed PUT or DELETE and maps the answer.
func (s *Store) write(ctx context.Context, method string, id digest.ID, body []byte) error {
	if s.key == nil {
		return fmt.Errorf("http store %s: no signing key: %w", s, store.ErrReadOnly)
	}
	err := s.do(ctx, request{method: method, path: blobPath(id), body: body, signed: true,
		handle: func(resp *http.Response) error {
			switch {
			case resp.StatusCode == http.StatusUnauthorized:
				return fmt.Errorf("%w: %v", ErrUnauthorized, newStatusError(resp))
			case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusMethodNotAllowed ||
				resp.StatusCode == http.StatusNotImplemented:
				return store.ErrReadOnly
			case resp.StatusCode/100 != 2:
				return newStatusError(resp)
			case !zos(resp):
				// A static server answered the write as if it were a GET,
				// unless the answer was cut short: then a fault on the way
				// lost its headers, and another try may reach the server.
				if err := drain(resp); err != nil {
					return &transient{err: err}
				}
				return fmt.Errorf("%w (server does not speak zos store protocol %s)", store.ErrReadOnly, protoVersion)
			}
			return nil
		}})
	if err != nil {
		return fmt.Errorf("http store %s: %w", s, err)
	}
	return nil
}

// Put uploads blob under id. The server verifies it against id.
func (s *Store) Put(ctx context.Context, id digest.ID, blob []byte) error {
	if blob == nil {
		blob = []byte{}
	}
	return s.write(ctx, http.MethodPut, id, blob)
}

func (s *Store) Delete(ctx context.Context, id digest.ID) error {
	return s.write(ctx, http.MethodDelete, id, nil)
}

// Missing returns the IDs among ids that the store lacks, in the order
// given, asking in batches of MaxMissingBatch. Against a server that does
// not speak the protocol it asks with one HEAD per ID.
func (s *Store) Missing(ctx context.Context, ids []digest.ID) ([]digest.ID, error) {
	var out []digest.ID
	for len(ids) > 0 {
		n := min(len(ids), MaxMissingBatch)
		got, err := s.missing(ctx, ids[:n])
		if err != nil {
			return nil, fmt.Errorf("http store %s: %w", s, err)
		}
		out = append(out, got...)
		ids = ids[n:]
	}
	return out, nil
}

var errNoProtocol = errors.New("server does not speak the zos store protocol")

func (s *Store) missing(ctx context.Context, ids []digest.ID) ([]digest.ID, error) {
	body := idLines(ids)
	asked := make(map[digest.ID]bool, len(ids))
	for _, id := range ids {
		asked[id] = true
	}
	var out []digest.ID
	err := s.do(ctx, request{method: http.MethodPost, path: missingPath, body: body, handle: func(resp *http.Response) error {
		if err := helperAnswer(resp, errNoProtocol); err != nil {
			return err
		}
		b, err := io.ReadAll(io.LimitReader(resp.Body, int64(len(body))+1))
		if err != nil {
			return &transient{err: err}
		}
		out = out[:0]
		for line := range strings.Lines(string(b)) {
			id, err := digest.Parse(strings.TrimSuffix(line, "\n"))
			if err != nil || !strings.HasSuffix(line, "\n") || !asked[id] {
				return fmt.Errorf("bad missing answer line %q", line)
			}
			out = append(out, id)
		}
		return nil
	}})
	if errors.Is(err, errNoProtocol) {
		return store.MissingByHas(ctx, s, ids, 8) // a static server: HEADs, a few at a time
	}
	return out, err
}

// List streams the server's listing. A static server cannot list; that is
// an error wrapping errors.ErrUnsupported.
func (s *Store) List(ctx context.Context, fn func(digest.ID) error) error {
	// Only the request is retried; once IDs reach fn, a failure is final,
	// or fn would see them twice.
	var fnErr error
	err := s.do(ctx, request{method: http.MethodGet, path: listPath, stream: true, handle: func(resp *http.Response) error {
		switch {
		case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusMethodNotAllowed ||
			resp.StatusCode == http.StatusNotImplemented || resp.StatusCode/100 == 2 && !zos(resp):
			return fmt.Errorf("%w: %w", errNoProtocol, errors.ErrUnsupported)
		case resp.StatusCode != http.StatusOK:
			return newStatusError(resp)
		}
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			line := sc.Text()
			if line == listEnd {
				return nil
			}
			if msg, ok := strings.CutPrefix(line, listErrPrefix); ok {
				return fmt.Errorf("server failed listing: %s", msg)
			}
			id, err := digest.Parse(line)
			if err != nil {
				return fmt.Errorf("bad list line: %w", err)
			}
			if err := fn(id); err != nil {
				fnErr = err
				return err
			}
		}
		if err := sc.Err(); err != nil {
			return fmt.Errorf("list truncated: %w", err)
		}
		return errors.New("list truncated: no end line")
	}})
	if fnErr != nil {
		return fnErr
	}
	if err != nil {
		return fmt.Errorf("http store %s: %w", s, err)
	}
	return nil
}

// readBody reads a response body of at most limit bytes (one more shows
// it is larger). With a length announced, within the limit, it reads into
// one buffer of that size: io.ReadAll would grow its buffer and copy about
// ten times for a 30 KB blob, a measurable part of a cold read's CPU. The
// transport fails a body shorter than its announced length.
func readBody(r io.Reader, length, limit int64) ([]byte, error) {
	if length < 0 || length > limit {
		return io.ReadAll(io.LimitReader(r, limit+1))
	}
	b := make([]byte, length)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, err
	}
	return b, nil
}
