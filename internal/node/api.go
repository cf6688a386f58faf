package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"

	"github.com/zosgrid/zos/internal/auth"
	"github.com/zosgrid/zos/internal/key"
	"github.com/zosgrid/zos/internal/node/nodeclient"
	"github.com/zosgrid/zos/internal/spec"
)

// Limits of the API.
const (
	MaxSpecSize = 1 << 20  // a deployment spec
	MaxLogTail  = 16 << 20 // bytes of a log returned at once
)

// httpError is a refusal with its status.
type httpError struct {
	code int
	err  error
}

func (e *httpError) Error() string { return e.err.Error() }

func refuse(code int, format string, args ...any) error {
	return &httpError{code, fmt.Errorf(format, args...)}
}

// Handler serves the node API (docs/NODE.md). Every request must be
// signed (package auth); refusals are logged with their reason.
func (a *Agent) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/node", a.serve(a.info))
	mux.HandleFunc("POST /v1/deployments", a.serve(a.deploy))
	mux.HandleFunc("GET /v1/deployments", a.serve(a.list))
	mux.HandleFunc("PUT /v1/deployments/{id}", a.serve(a.update))
	mux.HandleFunc("DELETE /v1/deployments/{id}", a.serve(a.remove))
	mux.HandleFunc("GET /v1/deployments/{id}", a.serve(a.get))
	mux.HandleFunc("GET /v1/deployments/{id}/events", a.serve(a.events))
	mux.HandleFunc("GET /v1/deployments/{id}/logs/{workload}", a.serve(a.logs))
	mux.HandleFunc("GET /v1/history", a.serve(a.history))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeErr(w, http.StatusNotFound, "no such endpoint: see docs/NODE.md")
	})
	return mux
}

// call is one authenticated request: who signed it, and its body.
type call struct {
	r      *http.Request
	signer key.Public
	hdr    auth.Header
	body   []byte
	twins  map[uint32]key.Public
}

// serve reads the body, checks the request's signature, host and time
// (not yet its nonce: handlers spend it once they know they will act, so
// a refused request costs no write), runs h and writes its answer.
func (a *Agent) serve(h func(c *call) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, err := a.authenticate(r)
		var out any
		if err == nil {
			out, err = h(c)
		}
		if err != nil {
			code := http.StatusInternalServerError
			var he *httpError
			switch {
			case errors.As(err, &he):
				code = he.code
			case errors.Is(err, auth.ErrUnauthorized):
				code = http.StatusUnauthorized
			}
			signer := ""
			if c != nil {
				signer = c.signer.String()
			}
			a.log.Warn("refused request", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr, "signer", signer, "status", code, "reason", err.Error())
			writeErr(w, code, err.Error())
			return
		}
		if b, ok := out.([]byte); ok {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Write(b)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if r.Method == http.MethodPost {
			w.WriteHeader(http.StatusAccepted)
		}
		json.NewEncoder(w).Encode(out)
	}
}

func writeErr(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(nodeclient.ErrorBody{Error: msg})
}

func (a *Agent) authenticate(r *http.Request) (*call, error) {
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, MaxSpecSize))
	if err != nil {
		return nil, refuse(http.StatusRequestEntityTooLarge, "request body: %v (limit %d bytes)", err, MaxSpecSize)
	}
	h, err := a.verifier.Check(r, body)
	if err != nil {
		return nil, err
	}
	twins, err := a.opts.Twins.Keys(r.Context())
	if err != nil {
		return nil, err
	}
	c := &call{r: r, signer: h.Key, hdr: h, body: body, twins: twins}
	if h.Key != a.opts.Key.Public() && len(c.twinsOf()) == 0 {
		return c, refuse(http.StatusForbidden, "key %s is not a registered twin's", h.Key)
	}
	return c, nil
}

// twinsOf lists the twins whose registered key signed the call.
func (c *call) twinsOf() []uint32 {
	var ids []uint32
	for id, k := range c.twins {
		if k == c.signer {
			ids = append(ids, id)
		}
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids
}

// spend records the call's nonce: the last check before acting.
func (a *Agent) spend(c *call) error {
	return a.verifier.Use(c.r.Context(), c.hdr)
}

func (a *Agent) info(c *call) (any, error) {
	if err := a.spend(c); err != nil {
		return nil, err
	}
	recs, err := a.db.list()
	if err != nil {
		return nil, err
	}
	n := 0
	for _, r := range recs {
		if r.State != nodeclient.StateDeleted {
			n++
		}
	}
	return nodeclient.Info{Key: a.opts.Key.Public(), Deployments: n, Time: a.opts.Now().UTC()}, nil
}

// accept parses and checks a spec for deployment by the call's signer:
// valid, signed by its owner's key, signature requirement met.
func (a *Agent) accept(c *call) (*spec.Deployment, error) {
	d, err := spec.Parse(c.body)
	if err != nil {
		return nil, refuse(http.StatusBadRequest, "%v", err)
	}
	if k, ok := c.twins[d.Owner]; !ok || k != c.signer {
		return nil, refuse(http.StatusForbidden, "request not signed by the key of the deployment's owner, twin %d", d.Owner)
	}
	res, err := spec.Verify(d, c.twins)
	if err != nil {
		a.event(0, "", "refused", fmt.Sprintf("owner %d version %d challenge %s: %v", d.Owner, d.Version, res.Challenge, err))
		return nil, refuse(http.StatusForbidden, "%v", err)
	}
	return d, nil
}

// hostsTaken refuses a deployment whose gateway host names another live
// deployment (other than self) already serves: one name, one backend.
func (a *Agent) hostsTaken(d *spec.Deployment, self uint64) error {
	recs, err := a.db.list()
	if err != nil {
		return err
	}
	for _, r := range recs {
		if r.ID == self || r.State == nodeclient.StateDeleted {
			continue
		}
		o, err := spec.Parse(r.Spec)
		if err != nil {
			continue
		}
		for _, w := range d.Workloads {
			if w.Kind != spec.KindGateway {
				continue
			}
			for _, ow := range o.Workloads {
				if ow.Kind == spec.KindGateway && ow.Gateway.Host == w.Gateway.Host {
					return refuse(http.StatusConflict, "gateway host %s is served by another deployment on this node", w.Gateway.Host)
				}
			}
		}
	}
	return nil
}

func (a *Agent) deploy(c *call) (any, error) {
	d, err := a.accept(c)
	if err != nil {
		return nil, err
	}
	if err := a.spend(c); err != nil {
		return nil, err
	}
	if err := a.hostsTaken(d, 0); err != nil {
		return nil, err
	}
	canon, err := d.Canonical()
	if err != nil {
		return nil, err
	}
	ch, _ := d.Challenge()
	r, err := a.db.create(record{Owner: d.Owner, Version: d.Version, State: nodeclient.StateActive, Accepted: a.opts.Now().UTC(), Spec: canon},
		nodeclient.Event{Kind: "requested", Detail: fmt.Sprintf("owner %d version %d", d.Owner, d.Version)},
		nodeclient.Event{Kind: "verified", Detail: "challenge " + ch.String() + ", signature requirement met"})
	if err != nil {
		return nil, err
	}
	a.Kick()
	return nodeclient.Deployed{ID: r.ID, Version: r.Version, Challenge: ch.String()}, nil
}

// owned returns deployment id if the call's signer is its owner's key.
func (a *Agent) owned(c *call) (record, error) {
	id, err := strconv.ParseUint(c.r.PathValue("id"), 10, 64)
	if err != nil {
		return record{}, refuse(http.StatusBadRequest, "deployment id %q: want a number", c.r.PathValue("id"))
	}
	r, err := a.db.get(id)
	if errors.Is(err, errNoDeployment) {
		return r, refuse(http.StatusNotFound, "no deployment %d", id)
	}
	if err != nil {
		return r, err
	}
	if k, ok := c.twins[r.Owner]; !ok || k != c.signer {
		// The same answer as for a deployment that does not exist: ids
		// of others' deployments are not for probing.
		return r, refuse(http.StatusNotFound, "no deployment %d", id)
	}
	return r, nil
}

func (a *Agent) update(c *call) (any, error) {
	r, err := a.owned(c)
	if err != nil {
		return nil, err
	}
	if err := fromLedger(r); err != nil {
		return nil, err
	}
	d, err := a.accept(c)
	if err != nil {
		return nil, err
	}
	if d.Owner != r.Owner {
		return nil, refuse(http.StatusForbidden, "the owner of deployment %d is twin %d, not %d", r.ID, r.Owner, d.Owner)
	}
	if err := a.spend(c); err != nil {
		return nil, err
	}
	if err := a.hostsTaken(d, r.ID); err != nil {
		return nil, err
	}
	canon, err := d.Canonical()
	if err != nil {
		return nil, err
	}
	ch, _ := d.Challenge()
	r, err = a.db.update(r.ID, func(r *record) ([]nodeclient.Event, error) {
		if r.State != nodeclient.StateActive {
			return nil, refuse(http.StatusConflict, "deployment %d is %s", r.ID, r.State)
		}
		if d.Version <= r.Version {
			return nil, refuse(http.StatusConflict, "version %d is not above the deployed version %d", d.Version, r.Version)
		}
		old := r.Version
		r.Version, r.Spec = d.Version, canon
		return []nodeclient.Event{{Kind: "updated", Detail: fmt.Sprintf("version %d -> %d, challenge %s, signature requirement met", old, d.Version, ch)}}, nil
	})
	if err != nil {
		return nil, err
	}
	a.Kick()
	return nodeclient.Deployed{ID: r.ID, Version: r.Version, Challenge: ch.String()}, nil
}

func (a *Agent) remove(c *call) (any, error) {
	r, err := a.owned(c)
	if err != nil {
		return nil, err
	}
	if err := fromLedger(r); err != nil {
		return nil, err
	}
	if err := a.spend(c); err != nil {
		return nil, err
	}
	_, err = a.db.update(r.ID, func(r *record) ([]nodeclient.Event, error) {
		if r.State != nodeclient.StateActive {
			return nil, nil // deleting or deleted already: idempotent
		}
		r.State = nodeclient.StateDeleting
		return []nodeclient.Event{{Kind: "delete-requested"}}, nil
	})
	if err != nil {
		return nil, err
	}
	a.Kick()
	return struct{}{}, nil
}

// fromLedger refuses to change a deployment made from a ledger contract
// through the API: the contract's signers update or cancel it on the
// ledger, where no single one of them can act alone.
func fromLedger(r record) error {
	if r.Contract != 0 {
		return refuse(http.StatusConflict, "deployment %d is ledger contract %d: update or cancel it on the ledger", r.ID, r.Contract)
	}
	return nil
}

func (a *Agent) get(c *call) (any, error) {
	r, err := a.owned(c)
	if err != nil {
		return nil, err
	}
	if err := a.spend(c); err != nil {
		return nil, err
	}
	return a.statusOf(r), nil
}

func (a *Agent) list(c *call) (any, error) {
	if err := a.spend(c); err != nil {
		return nil, err
	}
	recs, err := a.db.list()
	if err != nil {
		return nil, err
	}
	mine := map[uint32]bool{}
	for _, t := range c.twinsOf() {
		mine[t] = true
	}
	out := []nodeclient.Status{}
	for _, r := range recs {
		if mine[r.Owner] {
			out = append(out, a.statusOf(r))
		}
	}
	return out, nil
}

func (a *Agent) events(c *call) (any, error) {
	r, err := a.owned(c)
	if err != nil {
		return nil, err
	}
	if err := a.spend(c); err != nil {
		return nil, err
	}
	return a.db.History(r.ID)
}

func (a *Agent) history(c *call) (any, error) {
	if c.signer != a.opts.Key.Public() {
		return nil, refuse(http.StatusForbidden, "the node's history is for the node's own key")
	}
	if err := a.spend(c); err != nil {
		return nil, err
	}
	return a.db.History(0)
}

func (a *Agent) logs(c *call) (any, error) {
	r, err := a.owned(c)
	if err != nil {
		return nil, err
	}
	tail := int64(MaxLogTail)
	if s := c.r.URL.Query().Get("tail"); s != "" {
		if tail, err = strconv.ParseInt(s, 10, 64); err != nil || tail <= 0 {
			return nil, refuse(http.StatusBadRequest, "tail %q: want a positive number of bytes", s)
		}
		tail = min(tail, MaxLogTail)
	}
	name := c.r.PathValue("workload")
	d, err := spec.Parse(r.Spec)
	if err != nil {
		return nil, err
	}
	if w := d.Workload(name); w == nil || w.Kind != spec.KindContainer {
		return nil, refuse(http.StatusNotFound, "deployment %d has no container %q", r.ID, name)
	}
	if err := a.spend(c); err != nil {
		return nil, err
	}
	// The current log, preceded by the rotated one when tail reaches into it.
	base := filepath.Join(a.workDir(r.ID, name), "log")
	cur, err := readTail(base, tail)
	if err != nil {
		return nil, err
	}
	if rest := tail - int64(len(cur)); rest > 0 {
		old, err := readTail(base+".1", rest)
		if err != nil {
			return nil, err
		}
		cur = append(old, cur...)
	}
	return cur, nil
}

// readTail returns the last n bytes of path (nothing if it is absent).
func readTail(path string, n int64) ([]byte, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return []byte{}, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	off := max(st.Size()-n, 0)
	b := make([]byte, st.Size()-off)
	k, err := f.ReadAt(b, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return b[:k], nil
}
