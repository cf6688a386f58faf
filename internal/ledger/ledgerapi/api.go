package ledgerapi

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/zosgrid/zos/internal/ledger"
	"github.com/zosgrid/zos/internal/ledger/engine"
	"github.com/zosgrid/zos/internal/ledger/ledgerclient"
)

// Chain is the validator the API serves: what *engine.Node gives. Its
// methods are called from many requests at once.
type Chain interface {
	// Broadcast submits tx and waits until its block commits (a
	// CheckTx refusal is an *engine.RefusedError).
	Broadcast(ctx context.Context, tx []byte) (engine.Result, error)
	// Query reads the committed ledger (ledger.App's paths); a missing
	// object wraps ledger.ErrNotFound.
	Query(ctx context.Context, path string, data []byte) ([]byte, error)
	// Status is the validator's view of the chain.
	Status(ctx context.Context) (engine.Status, error)
	// Tx finds a committed transaction by hash, or wraps
	// ledger.ErrNotFound.
	Tx(ctx context.Context, hash []byte) (engine.Result, error)
}

var _ Chain = (*engine.Node)(nil)

// DefaultCommitWait is how long POST /v1/tx waits for the block: many
// blocks at the engine's pace, and below the usual proxy timeouts (60 s),
// so that a slow commit ends in our 504 with the hash, not in a proxy's
// bare one.
const DefaultCommitWait = 30 * time.Second

// Options configures a Server.
type Options struct {
	// Logger receives a line per failed request that is the server's
	// fault. Nil discards.
	Logger *slog.Logger
	// CommitWait bounds POST /v1/tx's wait; 0 is DefaultCommitWait.
	CommitWait time.Duration
}

// Server is the chain API and page, an http.Handler. It is safe for
// concurrent use.
type Server struct {
	chain Chain
	log   *slog.Logger
	wait  time.Duration
	mux   *http.ServeMux
	web   *web
}

// New returns the API over chain.
func New(chain Chain, o Options) *Server {
	s := &Server{chain: chain, log: o.Logger, wait: o.CommitWait, mux: http.NewServeMux()}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.wait <= 0 {
		s.wait = DefaultCommitWait
	}
	s.mux.HandleFunc("GET "+ledgerclient.PathInfo, s.info)
	s.mux.HandleFunc("GET "+ledgerclient.PathTwins, s.twins)
	s.mux.HandleFunc("GET "+ledgerclient.PathTwins+"/{id}", s.twin)
	s.mux.HandleFunc("GET "+ledgerclient.PathNodes, s.nodes)
	s.mux.HandleFunc("GET "+ledgerclient.PathNodes+"/{id}", s.node)
	s.mux.HandleFunc("GET "+ledgerclient.PathContracts, s.contracts)
	s.mux.HandleFunc("GET "+ledgerclient.PathContracts+"/{id}", s.contract)
	s.mux.HandleFunc("POST "+ledgerclient.PathTx, s.submit)
	s.mux.HandleFunc("GET "+ledgerclient.PathTx+"/{hash}", s.tx)
	s.mux.HandleFunc("/v1/", func(w http.ResponseWriter, r *http.Request) {
		s.fail(w, r, http.StatusNotFound, fmt.Errorf("no such endpoint: %s %s", r.Method, r.URL.Path))
	})
	s.web = newWeb(s)
	s.web.routes(s.mux)
	return s
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	s.mux.ServeHTTP(w, r)
}

func (s *Server) writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code, b = http.StatusInternalServerError, []byte(`{"error":"encoding the answer failed"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}

// writeRaw writes JSON the ledger made.
func writeRaw(w http.ResponseWriter, b []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Write(append(b, '\n'))
}

func (s *Server) fail(w http.ResponseWriter, r *http.Request, code int, err error) {
	if code >= 500 {
		s.log.Warn("chain api", "method", r.Method, "path", r.URL.Path, "status", code, "err", err)
	}
	s.writeJSON(w, code, ledgerclient.ErrorBody{Error: err.Error()})
}

// failChain answers an error of the chain: missing is 404, a stopped
// validator 503, anything else 502 (the validator, behind us, failed).
func (s *Server) failChain(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, ledger.ErrNotFound):
		s.fail(w, r, http.StatusNotFound, err)
	case errors.Is(err, engine.ErrStopped):
		s.fail(w, r, http.StatusServiceUnavailable, err)
	case r.Context().Err() != nil:
		s.fail(w, r, http.StatusServiceUnavailable, err) // the client left
	default:
		s.fail(w, r, http.StatusBadGateway, err)
	}
}

// badParam is a 400.
type badParam struct{ msg string }

func (e *badParam) Error() string { return e.msg }

func badParamf(format string, args ...any) error { return &badParam{fmt.Sprintf(format, args...)} }

// params reads a list's query: only the names allowed, each once, numbers
// as plain decimals within max.
type params struct {
	q   url.Values
	err error
}

func readParams(r *http.Request, allowed ...string) *params {
	p := &params{q: r.URL.Query()}
	for k, vs := range p.q {
		ok := false
		for _, a := range allowed {
			ok = ok || k == a
		}
		switch {
		case !ok:
			p.err = badParamf("unknown parameter %.40q (want %v)", k, allowed)
		case len(vs) != 1:
			p.err = badParamf("parameter %.40q given %d times", k, len(vs))
		}
	}
	return p
}

func (p *params) uint(name string, lo, hi uint64) uint64 {
	v := p.q.Get(name)
	if v == "" || p.err != nil {
		return 0
	}
	n, err := parseUint(v, hi)
	if err != nil || n < lo {
		p.err = badParamf("%s=%.40q: want a whole number %d..%d", name, v, lo, hi)
		return 0
	}
	return n
}

// parseUint reads a plain decimal up to hi: no sign, no leading zero, so
// that a number has one spelling.
func parseUint(s string, hi uint64) (uint64, error) {
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || strconv.FormatUint(n, 10) != s || n > hi {
		return 0, errors.New("not a number in range")
	}
	return n, nil
}

func (p *params) page(maxLimit int) ledger.Page {
	return ledger.Page{
		After: p.uint("after", 0, 1<<64-1),
		Limit: int(p.uint("limit", 1, uint64(maxLimit))),
	}
}

func (s *Server) info(w http.ResponseWriter, r *http.Request) {
	if p := readParams(r); p.err != nil {
		s.fail(w, r, http.StatusBadRequest, p.err)
		return
	}
	st, err := s.status(r.Context())
	if err != nil {
		s.failChain(w, r, err)
		return
	}
	s.writeJSON(w, http.StatusOK, st)
}

// status is the ledger's info and the validator's view of the chain.
func (s *Server) status(ctx context.Context) (ledgerclient.Status, error) {
	var st ledgerclient.Status
	b, err := s.chain.Query(ctx, "info", nil)
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(b, &st.InfoView); err != nil {
		return st, fmt.Errorf("info: %w", err)
	}
	es, err := s.chain.Status(ctx)
	if err != nil {
		return st, err
	}
	st.Node, st.Peers, st.CatchingUp = es.NodeID, es.Peers, es.CatchingUp
	st.Validators = []ledgerclient.Validator{}
	for _, v := range es.Validators {
		st.Validators = append(st.Validators, ledgerclient.Validator{Address: v.Address, Power: v.Power})
	}
	return st, nil
}

func (s *Server) twins(w http.ResponseWriter, r *http.Request) {
	s.list(w, r, "twins", ledger.MaxLimit)
}
func (s *Server) nodes(w http.ResponseWriter, r *http.Request) {
	s.list(w, r, "nodes", ledger.MaxLimit)
}

func (s *Server) list(w http.ResponseWriter, r *http.Request, path string, maxLimit int) {
	p := readParams(r, "after", "limit")
	pg := p.page(maxLimit)
	if p.err != nil {
		s.fail(w, r, http.StatusBadRequest, p.err)
		return
	}
	data, _ := json.Marshal(pg)
	s.answerList(w, r, path, data, pg.Limit, p.q)
}

func (s *Server) contracts(w http.ResponseWriter, r *http.Request) {
	p := readParams(r, "node", "owner", "state", "after", "limit")
	f := ledger.ContractFilter{
		Node:  uint32(p.uint("node", 1, 1<<32-1)),
		Owner: uint32(p.uint("owner", 1, 1<<32-1)),
		State: p.q.Get("state"),
		Page:  p.page(ledger.MaxContractsLimit),
	}
	switch f.State {
	case "", ledger.StatePending, ledger.StateActive, ledger.StateCancelled:
	default:
		p.err = badParamf("state=%.40q: want pending, active or cancelled", f.State)
	}
	if p.err != nil {
		s.fail(w, r, http.StatusBadRequest, p.err)
		return
	}
	data, _ := json.Marshal(f)
	s.answerList(w, r, "contracts", data, f.Limit, p.q)
}

// answerList queries a list and answers it as the ledger wrote it, with a
// link to the next page when this one is full: a page shorter than its
// limit is the last, a full one may be followed by more (one request too
// many at the end, rather than counting every list).
func (s *Server) answerList(w http.ResponseWriter, r *http.Request, path string, data []byte, limit int, q url.Values) {
	b, err := s.chain.Query(r.Context(), path, data)
	if err != nil {
		s.failChain(w, r, err)
		return
	}
	var ids []struct {
		ID uint64 `json:"id"`
	}
	if err := json.Unmarshal(b, &ids); err != nil {
		s.failChain(w, r, fmt.Errorf("%s: %w", path, err))
		return
	}
	if limit == 0 {
		limit = ledger.DefaultLimit
	}
	if len(ids) >= limit && len(ids) > 0 {
		next := url.Values{}
		for k, v := range q {
			next[k] = v
		}
		next.Set("after", strconv.FormatUint(ids[len(ids)-1].ID, 10))
		next.Set("limit", strconv.Itoa(limit))
		w.Header().Set("Link", fmt.Sprintf(`<%s?%s>; rel="next"`, r.URL.Path, next.Encode()))
	}
	writeRaw(w, b)
}

func (s *Server) twin(w http.ResponseWriter, r *http.Request) { s.object(w, r, "twin", 1<<32-1) }
func (s *Server) node(w http.ResponseWriter, r *http.Request) { s.object(w, r, "node", 1<<32-1) }
func (s *Server) contract(w http.ResponseWriter, r *http.Request) {
	s.object(w, r, "contract", 1<<64-1)
}

func (s *Server) object(w http.ResponseWriter, r *http.Request, kind string, max uint64) {
	id, err := parseUint(r.PathValue("id"), max)
	if p := readParams(r); p.err != nil || err != nil || id == 0 {
		if p.err == nil {
			p.err = badParamf("%s id %.40q: want a whole number 1..%d", kind, r.PathValue("id"), max)
		}
		s.fail(w, r, http.StatusBadRequest, p.err)
		return
	}
	b, err := s.chain.Query(r.Context(), kind+"/"+strconv.FormatUint(id, 10), nil)
	if err != nil {
		s.failChain(w, r, err)
		return
	}
	writeRaw(w, b)
}

func (s *Server) tx(w http.ResponseWriter, r *http.Request) {
	h := r.PathValue("hash")
	hash, err := hex.DecodeString(h)
	if err != nil || len(hash) != 32 {
		s.fail(w, r, http.StatusBadRequest, badParamf("tx hash %.80q: want 64 hex digits", h))
		return
	}
	res, err := s.chain.Tx(r.Context(), hash)
	if err != nil {
		s.failChain(w, r, err)
		return
	}
	s.writeJSON(w, http.StatusOK, result(res))
}

func result(r engine.Result) ledgerclient.Result {
	return ledgerclient.Result{Hash: r.Hash, Height: r.Height, Code: r.Code, Log: r.Log, Events: r.Events}
}

func (s *Server) submit(w http.ResponseWriter, r *http.Request) {
	if r.ContentLength > ledger.MaxTx {
		s.fail(w, r, http.StatusRequestEntityTooLarge, fmt.Errorf("transaction of %d bytes: at most %d", r.ContentLength, ledger.MaxTx))
		return
	}
	tx, err := io.ReadAll(io.LimitReader(r.Body, ledger.MaxTx+1))
	switch {
	case err != nil:
		s.fail(w, r, http.StatusBadRequest, fmt.Errorf("reading the transaction: %w", err))
		return
	case len(tx) > ledger.MaxTx:
		s.fail(w, r, http.StatusRequestEntityTooLarge, fmt.Errorf("transaction larger than %d bytes", ledger.MaxTx))
		return
	case len(tx) == 0:
		s.fail(w, r, http.StatusBadRequest, errors.New("no transaction in the body"))
		return
	}
	hash := hex.EncodeToString(ledgerclient.TxHash(tx))
	ctx, cancel := context.WithTimeout(r.Context(), s.wait)
	defer cancel()
	res, err := s.chain.Broadcast(ctx, tx)
	var refused *engine.RefusedError
	switch {
	case errors.As(err, &refused):
		s.writeJSON(w, http.StatusUnprocessableEntity, ledgerclient.ErrorBody{
			Error: "transaction refused: " + refused.Log, Hash: hash, Code: refused.Code, Log: refused.Log})
	case err != nil && errors.Is(err, context.DeadlineExceeded) && r.Context().Err() == nil:
		s.writeJSON(w, http.StatusGatewayTimeout, ledgerclient.ErrorBody{
			Error: fmt.Sprintf("not committed within %v: look the transaction up by its hash", s.wait), Hash: hash})
	case err != nil:
		s.failChain(w, r, err)
	case res.Code != 0:
		s.writeJSON(w, http.StatusUnprocessableEntity, ledgerclient.ErrorBody{
			Error: "transaction refused in its block: " + res.Log, Hash: hash, Height: res.Height, Code: res.Code, Log: res.Log})
	default:
		s.writeJSON(w, http.StatusOK, result(res))
	}
}
