package ledgerapi

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zosgrid/zos/internal/key"
	"github.com/zosgrid/zos/internal/ledger"
	"github.com/zosgrid/zos/internal/ledger/engine"
	"github.com/zosgrid/zos/internal/ledger/ledgerclient"
	"github.com/zosgrid/zos/internal/spec"
)

const testChain = "zos-api-test"

// testKey is a fixed key per name, so failures are reproducible.
func testKey(name string) key.Secret {
	seed := make([]byte, 32)
	copy(seed, name)
	return key.FromSeed(seed)
}

// chainEnv is one validator over a real ledger.App, the API in front of
// it on loopback, and a client.
type chainEnv struct {
	node   *engine.Node
	srv    *httptest.Server
	cl     *ledgerclient.Client
	nonces map[string]uint64
	mu     sync.Mutex
}

func startChain(t *testing.T, o Options) *chainEnv {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := t.TempDir()
	timing := engine.Timing{BlockTime: 100 * time.Millisecond, RoundTimeout: 400 * time.Millisecond, EmptyBlockInterval: -1}
	if err := engine.Init(dir, engine.InitOptions{ChainID: testChain, P2PListen: "tcp://127.0.0.1:0", RPCListen: "none", Timing: timing}); err != nil {
		t.Fatal(err)
	}
	app, err := ledger.Open(filepath.Join(dir, "ledger.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { app.Close() })
	n, err := engine.Start(ctx, dir, app, engine.Options{Logger: quietLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Stop() })
	if app.ChainID() != testChain {
		t.Fatalf("the engine did not hand the chain id to the ledger: %q", app.ChainID())
	}
	if o.Logger == nil {
		o.Logger = quietLogger(t)
	}
	srv := httptest.NewServer(New(n, o))
	t.Cleanup(srv.Close)
	cl, err := ledgerclient.New(srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &chainEnv{node: n, srv: srv, cl: cl, nonces: map[string]uint64{}}
}

func quietLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelError}))
}

// nonce gives each signer increasing nonces.
func (e *chainEnv) nonce(who string) uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.nonces[who]++
	return e.nonces[who]
}

func (e *chainEnv) tx(t *testing.T, name string, s ledger.Signer, body ledger.Body) []byte {
	t.Helper()
	b, err := ledger.NewTx(testChain, s, e.nonce(name), body)
	if err != nil {
		t.Fatalf("NewTx %s: %v", body.Type(), err)
	}
	return b
}

func (e *chainEnv) submit(t *testing.T, tx []byte) ledgerclient.Result {
	t.Helper()
	r, err := e.cl.Submit(context.Background(), tx)
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	if r.Code != 0 || r.Height == 0 || !bytes.Equal(r.Hash, ledgerclient.TxHash(tx)) {
		t.Fatalf("submit: result %+v", r)
	}
	return r
}

// twin creates the twin of name's key and returns its id.
func (e *chainEnv) twin(t *testing.T, name string) uint32 {
	t.Helper()
	r := e.submit(t, e.tx(t, name, ledger.Signer{Secret: testKey(name)}, &ledger.TwinCreate{}))
	id, err := strconv.ParseUint(r.Event("twin.created"), 10, 32)
	if err != nil {
		t.Fatalf("twin.create events %+v", r.Events)
	}
	return uint32(id)
}

// register registers node key nodeName, owned by twin owner (ownerName's key).
func (e *chainEnv) register(t *testing.T, ownerName string, owner uint32, nodeName, endpoint string) uint32 {
	t.Helper()
	n := e.nonce(ownerName)
	b, err := ledger.NewTx(testChain, ledger.Signer{Secret: testKey(ownerName), Twin: owner}, n, &ledger.NodeRegister{
		Key: testKey(nodeName).Public(), Proof: ledger.KeyProof(testKey(nodeName), testChain, ledger.TypeNodeRegister, owner, n),
		Capacity: ledger.Capacity{CPU: 4000, Memory: 8 << 30, Disk: 100 << 30}, Endpoint: endpoint,
	})
	if err != nil {
		t.Fatal(err)
	}
	r := e.submit(t, b)
	id, err := strconv.ParseUint(r.Event("node.registered"), 10, 32)
	if err != nil {
		t.Fatalf("node.register events %+v", r.Events)
	}
	return uint32(id)
}

// twoSigners is a deployment of owner that needs owner's and other's
// approvals (both required, weight 2 of 2).
func twoSigners(t *testing.T, owner, other uint32, desc string) *spec.Deployment {
	t.Helper()
	y := fmt.Sprintf(`version: 1
owner: %d
description: %q
workloads:
  - {name: app, kind: container, container: {image: {digest: "1111111111111111111111111111111111111111111111111111111111111111", url: "https://example.org/app.fl"}}}
signature_requirement:
  requests: [{twin: %d, weight: 1, required: true}, {twin: %d, weight: 1, required: true}]
  weight_required: 2
`, owner, desc, owner, other)
	d, err := spec.Parse([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func sign(t *testing.T, d *spec.Deployment, name string, twin uint32) spec.Signature {
	t.Helper()
	s, err := spec.Sign(d, testKey(name), twin)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestAPI drives the API through the client, over a real validator and
// ledger: twins, a node, a contract that needs two signers going from
// pending to active, refusals with the ledger's codes, pages and 404s.
func TestAPI(t *testing.T) {
	ctx := context.Background()
	e := startChain(t, Options{})
	cl := e.cl

	info, err := cl.Info(ctx)
	if err != nil || info.Chain != testChain {
		t.Fatalf("info %+v %v", info, err)
	}
	st, err := cl.Status(ctx)
	if err != nil || len(st.Validators) != 1 || st.Validators[0].Power == 0 || st.Node == "" {
		t.Fatalf("status %+v %v", st, err)
	}

	alice, bob := e.twin(t, "alice"), e.twin(t, "bob")
	if alice != 1 || bob != 2 {
		t.Fatalf("twins %d %d", alice, bob)
	}
	node := e.register(t, "alice", alice, "n1", "http://n1.example.org:8070")
	aliceS := ledger.Signer{Secret: testKey("alice"), Twin: alice}
	bobS := ledger.Signer{Secret: testKey("bob"), Twin: bob}

	// A contract needing alice and bob, created with alice's signature:
	// pending, bob missing.
	d := twoSigners(t, alice, bob, "two signers")
	d.Signatures = []spec.Signature{sign(t, d, "alice", alice)}
	r := e.submit(t, e.tx(t, "alice", aliceS, &ledger.ContractCreate{Node: node, Spec: d}))
	cid, _ := strconv.ParseUint(r.Event("contract.created"), 10, 64)
	c, err := cl.Contract(ctx, cid)
	if err != nil || c.State != ledger.StatePending || len(c.Approvals) != 1 || c.Node != node || c.Owner != alice {
		t.Fatalf("contract %d after create: %+v %v", cid, c, err)
	}
	chk, err := ledgerclient.Approvals(ctx, cl, &c)
	if err != nil || chk.Met || chk.Weight != 1 || chk.WeightRequired != 2 || len(chk.Missing) != 1 || chk.Missing[0] != bob {
		t.Fatalf("approvals before bob: %+v %v", chk, err)
	}

	// Bob approves: active in that block.
	approve := e.tx(t, "bob", bobS, &ledger.ContractApprove{Contract: cid, Approval: sign(t, d, "bob", bob)})
	r = e.submit(t, approve)
	if r.Event("contract.activated") != strconv.FormatUint(cid, 10) {
		t.Fatalf("approve events %+v", r.Events)
	}
	c, err = cl.Contract(ctx, cid)
	if err != nil || c.State != ledger.StateActive || c.Since != r.Height {
		t.Fatalf("contract after approval: %+v %v", c, err)
	}
	if chk, err := ledgerclient.Approvals(ctx, cl, &c); err != nil || !chk.Met || chk.Weight != 2 {
		t.Fatalf("approvals after bob: %+v %v", chk, err)
	}
	// The node finds it, and verifies it itself.
	mine, err := cl.Contracts(ctx, ledger.ContractFilter{Node: node, State: ledger.StateActive})
	if err != nil || len(mine) != 1 || mine[0].ID != cid {
		t.Fatalf("node's active contracts: %+v %v", mine, err)
	}

	// The same approval again: the lookup by hash finds the committed one
	// (it is in the mempool's cache), so resending is harmless.
	if r2, err := cl.Submit(ctx, approve); err != nil || r2.Height != r.Height {
		t.Fatalf("the same approval again: %+v %v", r2, err)
	}

	// Refusals carry the ledger's code.
	for _, tc := range []struct {
		name string
		tx   []byte
		code uint32
		is   error
		// inBlock: CheckTx admits it, its block refuses it (CheckTx
		// judges the signer and the body's own rules, not the state
		// the body names).
		inBlock bool
	}{
		{"stale nonce", mustTx(t, bobS, 1, &ledger.ContractCancel{Contract: cid}), ledger.CodeNonce, ledger.ErrNonce, false},
		{"forged signer", mustTx(t, ledger.Signer{Secret: testKey("mallory"), Twin: alice}, 1<<40, &ledger.ContractCancel{Contract: cid}), ledger.CodeSignature, ledger.ErrSignature, false},
		{"not a transaction", []byte(`{"hello":1}`), ledger.CodeMalformed, ledger.ErrMalformed, false},
		{"unknown contract", e.tx(t, "bob", bobS, &ledger.ContractCancel{Contract: 999}), ledger.CodeNotFound, ledger.ErrNotFound, true},
		{"update by a co-signer", e.tx(t, "bob", bobS, &ledger.ContractUpdate{Contract: cid, Spec: d}), ledger.CodeDenied, ledger.ErrDenied, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := cl.Submit(ctx, tc.tx)
			var re *ledgerclient.RefusedError
			if !errors.As(err, &re) || re.Code != tc.code || !errors.Is(err, ledgerclient.ErrRefused) || !errors.Is(err, tc.is) || re.Log == "" {
				t.Fatalf("got %v, want code %d", err, tc.code)
			}
			if !bytes.Equal(re.Hash, ledgerclient.TxHash(tc.tx)) || (re.Height != 0) != tc.inBlock {
				t.Fatalf("refusal %+v", re)
			}
		})
	}

	// Missing objects wrap ledger.ErrNotFound.
	if _, err := cl.Twin(ctx, 99); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("twin 99: %v", err)
	}
	if _, err := cl.Node(ctx, 99); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("node 99: %v", err)
	}
	if _, err := cl.Contract(ctx, 99); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("contract 99: %v", err)
	}
	if _, err := cl.Tx(ctx, make([]byte, 32)); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("tx 00..: %v", err)
	}
	if res, err := cl.Tx(ctx, ledgerclient.TxHash(approve)); err != nil || res.Height != r.Height || res.Event("contract.activated") == "" {
		t.Fatalf("tx lookup: %+v %v", res, err)
	}

	// Pages: more twins and contracts, listed in small pages.
	for _, n := range []string{"carol", "dave", "erin"} {
		e.twin(t, n)
	}
	for i := range 3 {
		d := twoSigners(t, alice, bob, fmt.Sprint("contract ", i))
		e.submit(t, e.tx(t, "alice", aliceS, &ledger.ContractCreate{Node: node, Spec: d}))
	}
	twins, err := cl.Twins(ctx)
	if err != nil || len(twins) != 5 || twins[4].ID != 5 || twins[4].Key != testKey("erin").Public() {
		t.Fatalf("twins: %+v %v", twins, err)
	}
	all, err := cl.Contracts(ctx, ledger.ContractFilter{Page: ledger.Page{Limit: 1}})
	if err != nil || len(all) != 4 {
		t.Fatalf("contracts in pages of 1: %d %v", len(all), err)
	}
	for i, c := range all {
		if c.ID != uint64(i+1) {
			t.Fatalf("contract %d has id %d", i, c.ID)
		}
	}
	pending, err := cl.Contracts(ctx, ledger.ContractFilter{State: ledger.StatePending, Owner: alice, Page: ledger.Page{Limit: 2}})
	if err != nil || len(pending) != 3 || pending[0].ID != 2 {
		t.Fatalf("pending contracts in pages of 2: %+v %v", pending, err)
	}
	resp := httpGet(t, e.srv.URL+"/v1/twins?limit=2", http.StatusOK)
	if l := resp.Header.Get("Link"); l != `</v1/twins?after=2&limit=2>; rel="next"` {
		t.Fatalf("Link %q", l)
	}
	resp = httpGet(t, e.srv.URL+"/v1/twins?after=4&limit=2", http.StatusOK)
	if l := resp.Header.Get("Link"); l != "" {
		t.Fatalf("last page: Link %q", l)
	}
	nodes, err := cl.Nodes(ctx)
	if err != nil || len(nodes) != 1 || nodes[0].Endpoint != "http://n1.example.org:8070" || nodes[0].Key != testKey("n1").Public() {
		t.Fatalf("nodes: %+v %v", nodes, err)
	}

	// Bad parameters are 400, unknown objects and paths 404.
	for _, tc := range []struct {
		path string
		code int
	}{
		{"/v1/twins?limit=0", 400},
		{"/v1/twins?limit=1001", 400},
		{"/v1/twins?limit=abc", 400},
		{"/v1/twins?after=-1", 400},
		{"/v1/twins?after=01", 400},
		{"/v1/twins?limit=1&limit=2", 400},
		{"/v1/twins?bogus=1", 400},
		{"/v1/contracts?limit=101", 400},
		{"/v1/contracts?state=running", 400},
		{"/v1/contracts?node=0", 400},
		{"/v1/contracts?nod=1", 400},
		{"/v1/twins/abc", 400},
		{"/v1/twins/0", 400},
		{"/v1/twins/4294967296", 400},
		{"/v1/contracts/1?x=1", 400},
		{"/v1/tx/abc", 400},
		{"/v1/twins/99", 404},
		{"/v1/nodes/99", 404},
		{"/v1/contracts/99", 404},
		{"/v1/tx/" + strings.Repeat("00", 32), 404},
		{"/v1/nothing", 404},
	} {
		resp := httpGet(t, e.srv.URL+tc.path, tc.code)
		var eb ledgerclient.ErrorBody
		if err := json.NewDecoder(resp.Body).Decode(&eb); err != nil || eb.Error == "" {
			t.Errorf("%s: error body %+v %v", tc.path, eb, err)
		}
	}

	// Posts: too large, empty.
	for _, tc := range []struct {
		body []byte
		code int
	}{
		{bytes.Repeat([]byte("x"), ledger.MaxTx+1), http.StatusRequestEntityTooLarge},
		{nil, http.StatusBadRequest},
	} {
		resp, err := http.Post(e.srv.URL+"/v1/tx", "application/json", bytes.NewReader(tc.body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.code {
			t.Errorf("post of %d bytes: %d, want %d", len(tc.body), resp.StatusCode, tc.code)
		}
	}
}

func mustTx(t *testing.T, s ledger.Signer, nonce uint64, body ledger.Body) []byte {
	t.Helper()
	b, err := ledger.NewTx(testChain, s, nonce, body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// httpGet fetches u and checks its status; the body is left to read.
func httpGet(t *testing.T, u string, want int) *http.Response {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != want {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %d, want %d: %s", u, resp.StatusCode, want, b)
	}
	return resp
}

// fakeChain is a Chain whose broadcasts never commit in time and whose
// index learns a transaction only after a few lookups: a slow chain.
type fakeChain struct {
	lookups   atomic.Int32
	posts     atomic.Int32
	knownFrom int32 // the lookup from which Tx finds the transaction
	code      uint32
}

func (f *fakeChain) Broadcast(ctx context.Context, tx []byte) (engine.Result, error) {
	f.posts.Add(1)
	<-ctx.Done()
	return engine.Result{}, fmt.Errorf("broadcast: %w", ctx.Err())
}

func (f *fakeChain) Query(context.Context, string, []byte) ([]byte, error) {
	return nil, errors.New("not served")
}

func (f *fakeChain) Status(context.Context) (engine.Status, error) { return engine.Status{}, nil }

func (f *fakeChain) Tx(_ context.Context, hash []byte) (engine.Result, error) {
	if f.lookups.Add(1) < f.knownFrom {
		return engine.Result{}, fmt.Errorf("tx %X: %w", hash, ledger.ErrNotFound)
	}
	return engine.Result{Hash: hash, Height: 7, Code: f.code, Log: "logged"}, nil
}

// TestSubmitSlowCommit: the server's wait runs out (504 with the hash);
// the client looks the transaction up instead of posting it again.
func TestSubmitSlowCommit(t *testing.T) {
	for _, code := range []uint32{0, ledger.CodeConflict} {
		t.Run(fmt.Sprint("code ", code), func(t *testing.T) {
			f := &fakeChain{knownFrom: 3, code: code}
			srv := httptest.NewServer(New(f, Options{CommitWait: 100 * time.Millisecond, Logger: quietLogger(t)}))
			defer srv.Close()
			tx := []byte(`{"some":"tx"}`)

			resp, err := http.Post(srv.URL+"/v1/tx", "application/json", bytes.NewReader(tx))
			if err != nil {
				t.Fatal(err)
			}
			var eb ledgerclient.ErrorBody
			json.NewDecoder(resp.Body).Decode(&eb)
			resp.Body.Close()
			if resp.StatusCode != http.StatusGatewayTimeout || eb.Hash != hex.EncodeToString(ledgerclient.TxHash(tx)) {
				t.Fatalf("slow commit: %d %+v", resp.StatusCode, eb)
			}

			f.posts.Store(0)
			cl, _ := ledgerclient.New(srv.URL, nil)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			r, err := cl.Submit(ctx, tx)
			if p := f.posts.Load(); p != 1 {
				t.Fatalf("%d posts: the client posted again", p)
			}
			if code == 0 {
				if err != nil || r.Height != 7 || !bytes.Equal(r.Hash, ledgerclient.TxHash(tx)) {
					t.Fatalf("submit: %+v %v", r, err)
				}
				return
			}
			var re *ledgerclient.RefusedError
			if !errors.As(err, &re) || re.Code != code || re.Height != 7 || !errors.Is(err, ledger.ErrConflict) {
				t.Fatalf("refused in its block: %v", err)
			}
		})
	}
}

// TestSubmitServerDown: a post that finds no server at all leaves the
// outcome unknown once the context ends; the error says so and names the
// hash.
func TestSubmitServerDown(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	u := srv.URL
	srv.Close()
	cl, _ := ledgerclient.New(u, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	_, err := cl.Submit(ctx, []byte("tx"))
	if !errors.Is(err, ledgerclient.ErrPending) || !strings.Contains(err.Error(), fmt.Sprintf("%X", ledgerclient.TxHash([]byte("tx")))) {
		t.Fatalf("submit to nobody: %v", err)
	}
}

// TestReadRetries: reads try again after a 5xx, not after a 4xx.
func TestReadRetries(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		switch {
		case r.URL.Path == "/v1/twins/1" && n < 3:
			http.Error(w, `{"error":"warming up"}`, http.StatusServiceUnavailable)
		case r.URL.Path == "/v1/twins/1":
			w.Write([]byte(`{"id":1,"key":"` + testKey("a").Public().String() + `","keys":[],"nonce":3}`))
		default:
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"error":"no such twin"}`))
		}
	}))
	defer srv.Close()
	cl, _ := ledgerclient.New(srv.URL, nil)
	tw, err := cl.Twin(context.Background(), 1)
	if err != nil || tw.Nonce != 3 || calls.Load() != 3 {
		t.Fatalf("twin after two 503s: %+v %v (%d calls)", tw, err, calls.Load())
	}
	calls.Store(0)
	if _, err := cl.Twin(context.Background(), 2); !errors.Is(err, ledger.ErrNotFound) || calls.Load() != 1 {
		t.Fatalf("404: %v after %d calls", err, calls.Load())
	}
}

func TestClientURL(t *testing.T) {
	for _, u := range []string{"", "ftp://x", "http://", "http://h/?q=1", "not a url"} {
		if _, err := ledgerclient.New(u, nil); err == nil {
			t.Errorf("New(%q): no error", u)
		}
	}
	c, err := ledgerclient.New("http://127.0.0.1:8090/", nil)
	if err != nil || c.URL() != "http://127.0.0.1:8090" {
		t.Fatalf("%v %v", c, err)
	}
}
