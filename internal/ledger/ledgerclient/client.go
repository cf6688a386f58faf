package ledgerclient

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/zosgrid/zos/internal/ledger"
)

// Client reads and writes the ledger through one chain API server. It is
// safe for concurrent use.
type Client struct {
	base *url.URL
	hc   *http.Client
}

// Bounds of the client's waits.
const (
	// maxBody bounds an answer: a page of contracts is at most
	// ledger.MaxContractsLimit views of up to two specs each.
	maxBody = 2*ledger.MaxContractsLimit*(ledger.MaxSpec+16<<10) + 1<<20
	// readAttempts is how often a read is tried; the pauses between
	// tries double from readBackoff.
	readAttempts = 5
	readBackoff  = 100 * time.Millisecond
	// attemptTimeout bounds one read when the caller's context does not.
	attemptTimeout = 30 * time.Second
	// submitWait bounds Submit's lookups after a failed post when the
	// caller's context has no deadline: longer than the server's own wait
	// for a commit, so a transaction stuck behind a slow block is found.
	submitWait = 2 * time.Minute
)

// New returns a client of the chain API at baseURL (http://host:port,
// optionally with a path prefix). hc nil uses a client of its own; Submit
// waits for blocks, so hc should have no overall Timeout shorter than a
// commit: contexts bound the calls.
func New(baseURL string, hc *http.Client) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, fmt.Errorf("chain url %q: %w", baseURL, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("chain url %q: want http(s)://host[:port][/path]", baseURL)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	if hc == nil {
		hc = &http.Client{}
	}
	return &Client{base: u, hc: hc}, nil
}

// URL returns the API's base URL.
func (c *Client) URL() string { return c.base.String() }

func (c *Client) url(path string, q url.Values) string {
	u := *c.base
	u.Path += path
	u.RawQuery = q.Encode()
	return u.String()
}

// Status returns GET /v1/info: the ledger's last block and the answering
// validator's view of the chain.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	_, err := c.get(ctx, c.url(PathInfo, nil), &s)
	return s, err
}

// Info returns the chain id, height, app hash and time of the ledger's
// last committed block.
func (c *Client) Info(ctx context.Context) (ledger.InfoView, error) {
	s, err := c.Status(ctx)
	return s.InfoView, err
}

// Twin returns twin id; a twin the ledger does not hold wraps
// ledger.ErrNotFound.
func (c *Client) Twin(ctx context.Context, id uint32) (ledger.TwinView, error) {
	var v ledger.TwinView
	_, err := c.get(ctx, c.url(PathTwins+"/"+strconv.FormatUint(uint64(id), 10), nil), &v)
	return v, err
}

// Twins returns every twin, by id, following the pages.
func (c *Client) Twins(ctx context.Context) ([]ledger.TwinView, error) {
	return list[ledger.TwinView](ctx, c, c.url(PathTwins, nil))
}

// Node returns node id; a node the ledger does not hold wraps
// ledger.ErrNotFound.
func (c *Client) Node(ctx context.Context, id uint32) (ledger.NodeView, error) {
	var v ledger.NodeView
	_, err := c.get(ctx, c.url(PathNodes+"/"+strconv.FormatUint(uint64(id), 10), nil), &v)
	return v, err
}

// Nodes returns every node, by id, following the pages.
func (c *Client) Nodes(ctx context.Context) ([]ledger.NodeView, error) {
	return list[ledger.NodeView](ctx, c, c.url(PathNodes, nil))
}

// Contract returns contract id; a contract the ledger does not hold wraps
// ledger.ErrNotFound.
func (c *Client) Contract(ctx context.Context, id uint64) (ledger.ContractView, error) {
	var v ledger.ContractView
	_, err := c.get(ctx, c.url(PathContracts+"/"+strconv.FormatUint(id, 10), nil), &v)
	return v, err
}

// Contracts returns the contracts f selects, by id, following the pages:
// f.After is where the first page starts, f.Limit the size of a page
// (0: the server's default), not a bound on the whole list. A node asks
// for {Node: itself, State: ledger.StateActive}.
func (c *Client) Contracts(ctx context.Context, f ledger.ContractFilter) ([]ledger.ContractView, error) {
	return list[ledger.ContractView](ctx, c, c.url(PathContracts, ContractQuery(f)))
}

// ContractQuery is f as the query of GET /v1/contracts.
func ContractQuery(f ledger.ContractFilter) url.Values {
	q := url.Values{}
	if f.Node != 0 {
		q.Set("node", strconv.FormatUint(uint64(f.Node), 10))
	}
	if f.Owner != 0 {
		q.Set("owner", strconv.FormatUint(uint64(f.Owner), 10))
	}
	if f.State != "" {
		q.Set("state", f.State)
	}
	if f.After != 0 {
		q.Set("after", strconv.FormatUint(f.After, 10))
	}
	if f.Limit != 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	return q
}

// list reads a list from u and the pages its Link headers name.
func list[T any](ctx context.Context, c *Client, u string) ([]T, error) {
	out := []T{}
	for u != "" {
		var page []T
		h, err := c.get(ctx, u, &page)
		if err != nil {
			return nil, err
		}
		out = append(out, page...)
		next := nextLink(h.Get("Link"))
		if next == "" || len(page) == 0 {
			break
		}
		// The server names the next page relative to the request; a
		// link elsewhere would make the client a proxy for whoever
		// answered, so only the same origin is followed.
		ref, err := url.Parse(next)
		if err != nil {
			return nil, fmt.Errorf("next page %q: %w", next, err)
		}
		cur, _ := url.Parse(u)
		nu := cur.ResolveReference(ref)
		if nu.Scheme != c.base.Scheme || nu.Host != c.base.Host {
			return nil, fmt.Errorf("next page %q: not on %s", next, c.base.Host)
		}
		u = nu.String()
	}
	return out, nil
}

// nextLink returns the target of the rel="next" link of a Link header.
func nextLink(h string) string {
	for _, part := range strings.Split(h, ",") {
		target, params, ok := strings.Cut(strings.TrimSpace(part), ";")
		if !ok || !strings.HasPrefix(target, "<") || !strings.HasSuffix(target, ">") {
			continue
		}
		for _, p := range strings.Split(params, ";") {
			if k, v, _ := strings.Cut(strings.TrimSpace(p), "="); k == "rel" && strings.Trim(v, `"`) == "next" {
				return target[1 : len(target)-1]
			}
		}
	}
	return ""
}

// get reads u into v, trying again with backoff after a connection error
// or a 5xx.
func (c *Client) get(ctx context.Context, u string, v any) (http.Header, error) {
	pause := readBackoff
	var err error
	for attempt := 1; ; attempt++ {
		var h http.Header
		h, err = c.getOnce(ctx, u, v)
		if err == nil {
			return h, nil
		}
		var se *StatusError
		if ctx.Err() != nil || attempt == readAttempts || errors.As(err, &se) && !se.retryable() || errors.Is(err, errDecode) {
			return nil, err
		}
		select {
		case <-time.After(pause):
		case <-ctx.Done():
			return nil, err
		}
		pause *= 2
	}
}

var errDecode = errors.New("bad answer")

func (c *Client) getOnce(ctx context.Context, u string, v any) (http.Header, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, attemptTimeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, statusError(resp.StatusCode, b)
	}
	if len(b) > maxBody {
		return nil, fmt.Errorf("GET %s: %w: answer larger than %d bytes", u, errDecode, maxBody)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return nil, fmt.Errorf("GET %s: %w: %v", u, errDecode, err)
	}
	return resp.Header, nil
}

func statusError(code int, b []byte) *StatusError {
	e := &StatusError{Status: code}
	if json.Unmarshal(b, &e.Body) != nil || e.Body.Error == "" {
		e.Body.Error = strings.TrimSpace(string(b))
		if len(e.Body.Error) > 200 {
			e.Body.Error = e.Body.Error[:200] + "..."
		}
		if e.Body.Error == "" {
			e.Body.Error = http.StatusText(code)
		}
	}
	return e
}

// Tx returns the committed transaction with the given hash (TxHash), its
// Code as the block recorded it; one the ledger does not know (yet) wraps
// ledger.ErrNotFound.
func (c *Client) Tx(ctx context.Context, hash []byte) (Result, error) {
	var r Result
	_, err := c.get(ctx, c.url(PathTx+"/"+hex.EncodeToString(hash), nil), &r)
	return r, err
}

// Submit sends a signed transaction (ledger.NewTx) and waits until its
// block commits. It returns the Result of an applied transaction; one the
// ledger refused, at CheckTx or in its block, is a *RefusedError. When the
// outcome cannot be learnt (the server unreachable, the context ending)
// the error wraps ErrPending and names the hash: the transaction may still
// commit. See the package doc for why a post is never simply repeated.
func (c *Client) Submit(ctx context.Context, tx []byte) (Result, error) {
	hash := TxHash(tx)
	r, err := c.post(ctx, tx)
	if err == nil || !unknownFate(err) || ctx.Err() != nil {
		return r, c.pending(hash, err)
	}
	return c.await(ctx, tx, hash, err)
}

// unknownFate reports a failed post after which the transaction may or
// may not be on its way to a block.
func unknownFate(err error) bool {
	var se *StatusError
	if errors.As(err, &se) {
		return se.retryable()
	}
	var re *RefusedError
	return !errors.As(err, &re) && !errors.Is(err, errDecode)
}

func (c *Client) pending(hash []byte, err error) error {
	if err == nil {
		return nil
	}
	var re *RefusedError
	if errors.As(err, &re) || !unknownFate(err) {
		return err
	}
	return fmt.Errorf("transaction %X: %w: %v", hash, ErrPending, err)
}

// await learns the fate of a transaction whose post failed with first:
// it looks the hash up, with backoff, and posts the same bytes again only
// when lookups found nothing and the failure says the server may not have
// taken it (not its own 504, which says it did and is waiting).
func (c *Client) await(ctx context.Context, tx, hash []byte, first error) (Result, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, submitWait)
		defer cancel()
	}
	var se *StatusError
	mayResend := !(errors.As(first, &se) && se.Status == http.StatusGatewayTimeout)
	last, misses, pause := first, 0, 200*time.Millisecond
	for {
		select {
		case <-time.After(pause):
		case <-ctx.Done():
			return Result{}, fmt.Errorf("transaction %X: %w: %v", hash, ErrPending, last)
		}
		pause = min(2*pause, 2*time.Second)
		r, err := c.Tx(ctx, hash)
		switch {
		case err == nil:
			return r, refusedInBlock(r)
		case errors.Is(err, ledger.ErrNotFound):
			misses++
		default:
			last = err
			continue
		}
		if !mayResend || misses < 3 {
			continue
		}
		// Nobody has the transaction in a block after a few looks: post
		// the same bytes again. A nonce refusal now may mean the first
		// post did commit in between: look once more before believing it.
		misses = 0
		r, err = c.post(ctx, tx)
		var re *RefusedError
		switch {
		case err == nil:
			return r, nil
		case errors.As(err, &re) && re.Code == ledger.CodeNonce:
			if r, lerr := c.Tx(ctx, hash); lerr == nil {
				return r, refusedInBlock(r)
			}
			return Result{}, err
		case !unknownFate(err):
			return Result{}, err
		}
		last = err
		mayResend = !(errors.As(err, &se) && se.Status == http.StatusGatewayTimeout)
	}
}

func refusedInBlock(r Result) error {
	if r.Code == 0 {
		return nil
	}
	return &RefusedError{Code: r.Code, Log: r.Log, Hash: r.Hash, Height: r.Height}
}

// post sends tx once.
func (c *Client) post(ctx context.Context, tx []byte) (Result, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url(PathTx, nil), bytes.NewReader(tx))
	if err != nil {
		return Result{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return Result{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return Result{}, fmt.Errorf("POST %s: %w", PathTx, err)
	}
	switch resp.StatusCode {
	case http.StatusOK:
		var r Result
		if err := json.Unmarshal(b, &r); err != nil {
			return Result{}, fmt.Errorf("POST %s: %w: %v", PathTx, errDecode, err)
		}
		return r, refusedInBlock(r)
	case http.StatusUnprocessableEntity:
		var e ErrorBody
		if err := json.Unmarshal(b, &e); err != nil || e.Code == 0 {
			return Result{}, statusError(resp.StatusCode, b)
		}
		h, _ := hex.DecodeString(e.Hash)
		return Result{}, &RefusedError{Code: e.Code, Log: e.Log, Hash: h, Height: e.Height}
	}
	return Result{}, statusError(resp.StatusCode, b)
}
