package hubclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/zosgrid/zos/internal/auth"
	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/flist"
	"github.com/zosgrid/zos/internal/key"
)

// Client talks to one hub. Safe for concurrent use.
type Client struct {
	base *url.URL
	key  *key.Secret
	http *http.Client
}

// New returns a client of the hub at baseURL ("https://hub.example"). With
// a key every request is signed (needed for writes and private reads).
func New(baseURL string, k *key.Secret) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil {
		return nil, fmt.Errorf("hub URL: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("hub URL %q: want http(s)://HOST[:PORT]", baseURL)
	}
	return &Client{base: u, key: k, http: &http.Client{Timeout: 10 * time.Minute}}, nil
}

// ChunksURL is the hub's chunk store, for --store.
func (c *Client) ChunksURL() string { return c.base.String() + "/chunks" }

// BundleURL is where the hub serves flist d's start bundle, for a mount's
// --bundle (an unsigned GET: images in public namespaces).
func (c *Client) BundleURL(d digest.ID) string { return c.base.String() + "/v1/bundles/" + d.String() }

// StatusError is an answer the client did not expect.
type StatusError struct {
	Code int
	Body ErrorBody
}

func (e *StatusError) Error() string {
	msg := e.Body.Error
	if msg == "" {
		msg = http.StatusText(e.Code)
	}
	return fmt.Sprintf("hub: %s (HTTP %d)", msg, e.Code)
}

func (e *StatusError) Unwrap() error {
	if e.Code == http.StatusNotFound {
		return ErrNotFound
	}
	return nil
}

// do sends a request, signing it when the client has a key (afresh for
// every try), retrying a 503 (the hub waits out a garbage collection's
// sweep) and a 429 that asks for a wait of at most 5 s a few times, and
// returns the response of a 2xx; anything else is a *StatusError.
func (c *Client) do(ctx context.Context, method, path string, query url.Values, ctype string, body []byte) (*http.Response, error) {
	return c.send(ctx, c.http, method, path, query, ctype, reqBody{
		open: func() io.Reader { return bytes.NewReader(body) },
		size: int64(len(body)),
		sum:  digest.Sum(body),
	})
}

// reqBody is a request body that can be read again for every try, and the
// hash its signature covers.
type reqBody struct {
	open func() io.Reader
	size int64
	sum  digest.ID
	// announce sends sum in HeaderBodyHash and asks the hub to accept the
	// request (Expect: 100-continue) before sending the body.
	announce bool
}

// send is do with any body, through hc.
func (c *Client) send(ctx context.Context, hc *http.Client, method, path string, query url.Values, ctype string, body reqBody) (*http.Response, error) {
	u := *c.base
	u.Path += path
	u.RawQuery = query.Encode()
	for try := 1; ; try++ {
		req, err := http.NewRequestWithContext(ctx, method, u.String(), body.open())
		if err != nil {
			return nil, err
		}
		req.ContentLength = body.size
		if body.size == 0 {
			req.Body = http.NoBody
		}
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		if body.announce {
			req.Header.Set(HeaderBodyHash, body.sum.String())
			req.Header.Set("Expect", "100-continue")
		}
		if c.key != nil {
			hd := auth.SignParts(*c.key, method, req.URL.Host, req.URL.RequestURI(), time.Now().Unix(), auth.NewNonce(), body.sum)
			req.Header.Set("Authorization", hd.String())
		}
		resp, err := hc.Do(req)
		if err != nil {
			return nil, fmt.Errorf("hub %s: %w", c.base, err)
		}
		if resp.StatusCode/100 == 2 {
			return resp, nil
		}
		serr := &StatusError{Code: resp.StatusCode}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		if json.Unmarshal(b, &serr.Body) != nil || serr.Body.Error == "" {
			serr.Body.Error = strings.TrimSpace(string(b))
		}
		wait := time.Second
		if n, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && n > 0 {
			wait = min(time.Duration(n)*time.Second, 30*time.Second)
		}
		// 503: a garbage collection sweeps; 429 for a short while: a rate
		// limit (a long one, such as a full conversion queue, is reported).
		retry := resp.StatusCode == http.StatusServiceUnavailable ||
			resp.StatusCode == http.StatusTooManyRequests && wait <= 5*time.Second
		if !retry || try >= 4 {
			return nil, serr
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
	}
}

// call sends in as JSON (if not nil) and decodes the answer into out (if not nil).
func (c *Client) call(ctx context.Context, method, path string, in, out any) error {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return err
		}
	}
	ctype := ""
	if body != nil {
		ctype = "application/json"
	}
	resp, err := c.do(ctx, method, path, nil, ctype, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(out); err != nil {
		return fmt.Errorf("hub %s: bad answer to %s %s: %w", c.base, method, path, err)
	}
	return nil
}

// Register registers name for the client's key (or, for an admin, for reg.Key).
func (c *Client) Register(ctx context.Context, reg Register) (User, error) {
	var u User
	return u, c.call(ctx, http.MethodPost, "/v1/users", reg, &u)
}

// Users lists the registered users the client may see (the public ones,
// and its own private one), following the hub's pages.
func (c *Client) Users(ctx context.Context) ([]User, error) {
	return listAll[User](ctx, c, "/v1/users")
}

// listAll reads every page of a listing (docs/HUB.md: ?after and
// ?limit, Link: <...>; rel="next").
func listAll[T any](ctx context.Context, c *Client, path string) ([]T, error) {
	var all []T
	q := url.Values{}
	for pages := 0; ; pages++ {
		if pages > 100000 {
			return nil, fmt.Errorf("hub %s: %s: the listing does not end", c.base, path)
		}
		resp, err := c.do(ctx, http.MethodGet, path, q, "", nil)
		if err != nil {
			return nil, err
		}
		var page []T
		err = json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&page)
		resp.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("hub %s: bad answer to GET %s: %w", c.base, path, err)
		}
		all = append(all, page...)
		next, ok := NextPage(resp.Header.Get("Link"))
		if !ok {
			return all, nil
		}
		if q, err = url.ParseQuery(next); err != nil || q.Get("after") == "" {
			return nil, fmt.Errorf("hub %s: %s: bad next page %q", c.base, path, next)
		}
	}
}

// NextPage returns the query of a Link header's rel="next" target.
func NextPage(link string) (string, bool) {
	for part := range strings.SplitSeq(link, ",") {
		target, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.TrimSpace(params) != `rel="next"` {
			continue
		}
		target = strings.TrimSuffix(strings.TrimPrefix(target, "<"), ">")
		_, q, _ := strings.Cut(target, "?")
		return q, true
	}
	return "", false
}

// SetPrivate makes a namespace private or public.
func (c *Client) SetPrivate(ctx context.Context, ns string, private bool) (User, error) {
	var u User
	return u, c.call(ctx, http.MethodPost, "/v1/users/"+ns, UserUpdate{Private: private}, &u)
}

// Push uploads an flist under ref (NS/NAME, with a tag or "latest"). Its
// chunks must be in the hub already: a refusal lists the missing ones.
func (c *Client) Push(ctx context.Context, ref Ref, fl []byte) (Pushed, error) {
	if !ref.Digest.IsZero() {
		return Pushed{}, errors.New("push to NS/NAME[:TAG], not to a digest")
	}
	resp, err := c.do(ctx, http.MethodPut, "/v1/flists/"+ref.String(), nil, ContentType, fl)
	if err != nil {
		return Pushed{}, err
	}
	defer resp.Body.Close()
	var p Pushed
	return p, json.NewDecoder(resp.Body).Decode(&p)
}

// Pulled is a downloaded flist.
type Pulled struct {
	Flist    []byte // the file, signatures included
	Digest   digest.ID
	Resolved string // NS/NAME@DIGEST the reference resolved to
	Signers  []key.Public
}

// Pull downloads the flist ref names, checking that it is an flist with
// the digest the hub announced (and ref's digest, if it has one).
func (c *Client) Pull(ctx context.Context, ref Ref) (Pulled, error) {
	return c.pull(ctx, "/v1/flists/"+ref.String(), ref.Digest)
}

// PullDigest downloads an flist by digest alone.
func (c *Client) PullDigest(ctx context.Context, d digest.ID) (Pulled, error) {
	return c.pull(ctx, "/v1/digests/"+d.String(), d)
}

func (c *Client) pull(ctx context.Context, path string, want digest.ID) (Pulled, error) {
	resp, err := c.do(ctx, http.MethodGet, path, nil, "", nil)
	if err != nil {
		return Pulled{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxFlistSize+1))
	if err != nil {
		return Pulled{}, fmt.Errorf("hub %s: %s: %w", c.base, path, err)
	}
	r, err := flist.Open(b)
	if err != nil {
		return Pulled{}, fmt.Errorf("hub %s: %s: %w", c.base, path, err)
	}
	announced, err := digest.Parse(resp.Header.Get(HeaderDigest))
	if err != nil || announced != r.Digest() {
		return Pulled{}, fmt.Errorf("hub %s: %s: %w: served digest %s, header says %q", c.base, path, flist.ErrCorrupt, r.Digest(), resp.Header.Get(HeaderDigest))
	}
	if !want.IsZero() && want != r.Digest() {
		return Pulled{}, fmt.Errorf("hub %s: %s: %w: asked for %s, got %s", c.base, path, flist.ErrCorrupt, want, r.Digest())
	}
	p := Pulled{Flist: b, Digest: r.Digest(), Resolved: resp.Header.Get(HeaderRef)}
	if len(r.Signatures()) > 0 {
		if p.Signers, err = r.VerifySignatures(); err != nil {
			return Pulled{}, fmt.Errorf("hub %s: %s: %w", c.base, path, err)
		}
	}
	return p, nil
}

// PushTrace stores b, a prefetch trace (docs/TRACE.md) recorded on flist
// d, beside it on the hub; nodes mounting d then prefetch by it.
func (c *Client) PushTrace(ctx context.Context, d digest.ID, b []byte) (TraceInfo, error) {
	resp, err := c.do(ctx, http.MethodPut, "/v1/traces/"+d.String(), nil, "application/octet-stream", b)
	if err != nil {
		return TraceInfo{}, err
	}
	defer resp.Body.Close()
	var ti TraceInfo
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&ti); err != nil {
		return TraceInfo{}, fmt.Errorf("hub %s: trace of %s: %w", c.base, d, err)
	}
	return ti, nil
}

// RemoveTrace deletes the trace the hub keeps for flist d.
func (c *Client) RemoveTrace(ctx context.Context, d digest.ID) error {
	return c.call(ctx, http.MethodDelete, "/v1/traces/"+d.String(), nil, nil)
}

// PullTrace returns the prefetch trace the hub keeps for flist d, still
// to be checked against it (mount.ParseTrace, Trace.Check); an error
// wrapping ErrNotFound when it keeps none.
func (c *Client) PullTrace(ctx context.Context, d digest.ID) ([]byte, error) {
	resp, err := c.do(ctx, http.MethodGet, "/v1/traces/"+d.String(), nil, "", nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxTraceSize+1))
	if err == nil && len(b) > MaxTraceSize {
		err = fmt.Errorf("more than %d bytes", MaxTraceSize)
	}
	if err != nil {
		return nil, fmt.Errorf("hub %s: trace of %s: %w", c.base, d, err)
	}
	return b, nil
}

// PullBundle returns a stream of the start bundle (docs/BUNDLE.md) the
// hub keeps for flist d and its size, or an error wrapping ErrNotFound
// when it keeps none. The stream is cut at MaxBundleSize (a cut bundle
// loses the entries past the cut, no more); its entries are still to be
// verified against the flist (a mount does, as they arrive).
func (c *Client) PullBundle(ctx context.Context, d digest.ID) (io.ReadCloser, int64, error) {
	resp, err := c.do(ctx, http.MethodGet, "/v1/bundles/"+d.String(), nil, "", nil)
	if err != nil {
		return nil, 0, err
	}
	if resp.ContentLength > MaxBundleSize {
		resp.Body.Close()
		return nil, 0, fmt.Errorf("hub %s: start bundle of %s: %d bytes, more than %d", c.base, d, resp.ContentLength, MaxBundleSize)
	}
	return struct {
		io.Reader
		io.Closer
	}{io.LimitReader(resp.Body, MaxBundleSize), resp.Body}, resp.ContentLength, nil
}

// Repos lists the names in a namespace, following the hub's pages.
func (c *Client) Repos(ctx context.Context, ns string) ([]Repo, error) {
	return listAll[Repo](ctx, c, "/v1/repos/"+ns)
}

// Repo describes one name.
func (c *Client) Repo(ctx context.Context, ns, name string) (Repo, error) {
	var r Repo
	return r, c.call(ctx, http.MethodGet, "/v1/repos/"+ns+"/"+name, nil, &r)
}

// Tag points NS/NAME:TAG at d, a version of NS/NAME.
func (c *Client) Tag(ctx context.Context, ns, name, tag string, d digest.ID) error {
	return c.call(ctx, http.MethodPut, "/v1/tags/"+ns+"/"+name+"/"+tag, TagRequest{Digest: d}, nil)
}

// Link makes NS/NAME a link to target, followed on every read.
func (c *Client) Link(ctx context.Context, ns, name string, target Ref) error {
	return c.call(ctx, http.MethodPut, "/v1/links/"+ns+"/"+name, LinkRequest{Target: target.String()}, nil)
}

// Promote copies the flist src resolves to into dst (NS/NAME[:TAG]).
func (c *Client) Promote(ctx context.Context, dst, src Ref) (Pushed, error) {
	var p Pushed
	return p, c.call(ctx, http.MethodPost, "/v1/promote/"+dst.String(), PromoteRequest{Source: src.String()}, &p)
}

// Remove deletes a name (all its versions and tags, or the link), a tag
// (NS/NAME:TAG) or a version and the tags on it (NS/NAME@DIGEST).
func (c *Client) Remove(ctx context.Context, ref Ref) error {
	return c.call(ctx, http.MethodDelete, "/v1/flists/"+ref.String(), nil, nil)
}

// GC asks the hub to collect garbage (admins only); with dryRun it
// reports what it would delete.
func (c *Client) GC(ctx context.Context, dryRun bool) (GCStats, error) {
	var s GCStats
	q := url.Values{}
	if dryRun {
		q.Set("dry_run", "1") // signed with the rest of the request
	}
	resp, err := c.do(ctx, http.MethodPost, "/v1/gc", q, "", nil)
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	return s, json.NewDecoder(resp.Body).Decode(&s)
}
