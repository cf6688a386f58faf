// Package nodeclient is the node API's wire types and client
// (docs/NODE.md): what `zos deploy`, `zos status`, `zos logs` and the
// ledger's watchers need, without importing the agent.
package nodeclient

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
	"github.com/zosgrid/zos/internal/key"
)

// ErrNotFound is wrapped by a *StatusError of a 404.
var ErrNotFound = errors.New("not found")

// Info describes a node.
type Info struct {
	Key         key.Public `json:"key"`         // the node's identity
	Deployments int        `json:"deployments"` // accepted, not deleted
	Gateway     string     `json:"gateway"`     // address of the HTTP gateway, "" when off
	Time        time.Time  `json:"time"`        // the node's clock, to diagnose skew
	Build       string     `json:"build,omitempty"`
}

// Deployed is the answer to a deploy or an update.
type Deployed struct {
	ID        uint64 `json:"id"`
	Version   uint64 `json:"version"`
	Challenge string `json:"challenge"` // of the accepted spec
}

// Deployment states.
const (
	StateActive   = "active"   // accepted; the node drives it to running
	StateDeleting = "deleting" // delete accepted; tearing down
	StateDeleted  = "deleted"  // gone; kept in the history
)

// Workload states.
const (
	WorkloadPending    = "pending"    // not yet created
	WorkloadRunning    = "running"    // a container runs; other kinds exist
	WorkloadOK         = "ok"         // volume, network, gateway in place
	WorkloadRestarting = "restarting" // exited; restart scheduled (backoff)
	WorkloadFailed     = "failed"     // cannot be created as specified (Detail says why); retried
)

// Status is a deployment as the node sees it.
type Status struct {
	ID        uint64           `json:"id"`
	Owner     uint32           `json:"owner"`
	Version   uint64           `json:"version"`
	State     string           `json:"state"`
	Accepted  time.Time        `json:"accepted"`
	Challenge string           `json:"challenge"`
	Workloads []WorkloadStatus `json:"workloads"`
}

// WorkloadStatus is one workload's state.
type WorkloadStatus struct {
	Name      string    `json:"name"`
	Kind      string    `json:"kind"`
	State     string    `json:"state"`
	Detail    string    `json:"detail,omitempty"`
	Since     time.Time `json:"since"`
	IPs       []string  `json:"ips,omitempty"`       // container: NETWORK=IP
	Restarts  int       `json:"restarts,omitempty"`  // container: since the node started
	ExitCode  *int      `json:"exit_code,omitempty"` // container: of the last exit, if known
	OOMKilled bool      `json:"oom_killed,omitempty"`
	Pid       int       `json:"pid,omitempty"`
}

// Event is one record of the node's hash-chained history.
type Event struct {
	Seq        uint64    `json:"seq"`
	Time       time.Time `json:"time"`
	Deployment uint64    `json:"deployment,omitempty"`
	Workload   string    `json:"workload,omitempty"`
	Kind       string    `json:"event"`
	Detail     string    `json:"detail,omitempty"`
	Prev       string    `json:"prev"`
	Hash       string    `json:"hash"`
	Sig        string    `json:"sig"`
}

// ErrorBody is the JSON of every error answer.
type ErrorBody struct {
	Error string `json:"error"`
}

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
	return fmt.Sprintf("node: %s (HTTP %d)", msg, e.Code)
}

// Unwrap gives ErrNotFound for a 404.
func (e *StatusError) Unwrap() error {
	if e.Code == http.StatusNotFound {
		return ErrNotFound
	}
	return nil
}

// Client talks to one node, signing every request with its key. Safe for
// concurrent use.
type Client struct {
	base *url.URL
	key  key.Secret
	http *http.Client
}

// New returns a client of the node at baseURL ("http://node:8070").
func New(baseURL string, k key.Secret) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil {
		return nil, fmt.Errorf("node URL: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("node URL %q: want http(s)://HOST[:PORT]", baseURL)
	}
	return &Client{base: u, key: k, http: &http.Client{Timeout: 2 * time.Minute}}, nil
}

func (c *Client) do(ctx context.Context, method, path string, query url.Values, body []byte) (*http.Response, error) {
	u := *c.base
	u.Path += path
	u.RawQuery = query.Encode()
	req, err := http.NewRequestWithContext(ctx, method, u.String(), bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	auth.Sign(req, c.key, body)
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", c.base, err)
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	serr := &StatusError{Code: resp.StatusCode}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if json.Unmarshal(b, &serr.Body) != nil || serr.Body.Error == "" {
		serr.Body.Error = strings.TrimSpace(string(b))
	}
	return nil, serr
}

func (c *Client) call(ctx context.Context, method, path string, body []byte, out any) error {
	resp, err := c.do(ctx, method, path, nil, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(out); err != nil {
		return fmt.Errorf("node %s: bad answer to %s %s: %w", c.base, method, path, err)
	}
	return nil
}

// Info returns the node's identity and counts.
func (c *Client) Info(ctx context.Context) (Info, error) {
	var i Info
	return i, c.call(ctx, http.MethodGet, "/v1/node", nil, &i)
}

// Deploy submits a signed deployment spec (YAML or JSON, as `zos sign`
// wrote it). The node verifies it and answers at once; it then works in
// the background (see Status).
func (c *Client) Deploy(ctx context.Context, spec []byte) (Deployed, error) {
	var d Deployed
	return d, c.call(ctx, http.MethodPost, "/v1/deployments", spec, &d)
}

// Update replaces deployment id with a higher version of its spec.
func (c *Client) Update(ctx context.Context, id uint64, spec []byte) (Deployed, error) {
	var d Deployed
	return d, c.call(ctx, http.MethodPut, "/v1/deployments/"+strconv.FormatUint(id, 10), spec, &d)
}

// Delete tears deployment id down.
func (c *Client) Delete(ctx context.Context, id uint64) error {
	return c.call(ctx, http.MethodDelete, "/v1/deployments/"+strconv.FormatUint(id, 10), nil, nil)
}

// Get returns deployment id's status.
func (c *Client) Get(ctx context.Context, id uint64) (Status, error) {
	var s Status
	return s, c.call(ctx, http.MethodGet, "/v1/deployments/"+strconv.FormatUint(id, 10), nil, &s)
}

// List returns the statuses of the caller's deployments.
func (c *Client) List(ctx context.Context) ([]Status, error) {
	var s []Status
	return s, c.call(ctx, http.MethodGet, "/v1/deployments", nil, &s)
}

// Events returns deployment id's records of the node's history.
func (c *Client) Events(ctx context.Context, id uint64) ([]Event, error) {
	var e []Event
	return e, c.call(ctx, http.MethodGet, "/v1/deployments/"+strconv.FormatUint(id, 10)+"/events", nil, &e)
}

// History returns the node's whole history (the node's own key only).
func (c *Client) History(ctx context.Context) ([]Event, error) {
	var e []Event
	return e, c.call(ctx, http.MethodGet, "/v1/history", nil, &e)
}

// Logs returns up to tail bytes (0: all, within the node's limit) of the
// end of a container's stdout and stderr.
func (c *Client) Logs(ctx context.Context, id uint64, workload string, tail int64) ([]byte, error) {
	q := url.Values{}
	if tail > 0 {
		q.Set("tail", strconv.FormatInt(tail, 10))
	}
	resp, err := c.do(ctx, http.MethodGet, "/v1/deployments/"+strconv.FormatUint(id, 10)+"/logs/"+url.PathEscape(workload), q, nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(io.LimitReader(resp.Body, 64<<20))
}
