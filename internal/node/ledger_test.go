package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zosgrid/zos/internal/key"
	"github.com/zosgrid/zos/internal/ledger"
	"github.com/zosgrid/zos/internal/node/nodeclient"
	"github.com/zosgrid/zos/internal/pack"
	"github.com/zosgrid/zos/internal/spec"
	"github.com/zosgrid/zos/internal/store/mem"
)

// appLedger is a node.Ledger over a real ledger.App: the state machine
// the validators run, each submitted transaction applied in a block of
// its own and committed. Queries go through the App's Go methods.
type appLedger struct {
	mu      sync.Mutex
	app     *ledger.App
	now     time.Time
	down    error                        // every call fails with it
	tamper  func(c *ledger.ContractView) // changes the contracts answered
	submits int                          // node.report transactions applied
}

const ledgerChain = "zos-node-test"

func newAppLedger(t *testing.T) *appLedger {
	return &appLedger{app: openApp(t, ledgerChain), now: time.Unix(1_750_000_000, 0)}
}

func openApp(t *testing.T, chain string) *ledger.App {
	t.Helper()
	app, err := ledger.Open(filepath.Join(t.TempDir(), "ledger.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { app.Close() })
	if err := app.InitChain(chain); err != nil {
		t.Fatal(err)
	}
	return app
}

var _ Ledger = (*appLedger)(nil)

func (l *appLedger) fail() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.down
}

func (l *appLedger) ChainID(context.Context) (string, error) {
	if err := l.fail(); err != nil {
		return "", err
	}
	return l.app.ChainID(), nil
}

func (l *appLedger) Nodes(context.Context) ([]ledger.NodeView, error) {
	if err := l.fail(); err != nil {
		return nil, err
	}
	var out []ledger.NodeView
	for {
		p := ledger.Page{Limit: 2} // small pages: the paging is exercised
		if len(out) > 0 {
			p.After = uint64(out[len(out)-1].ID)
		}
		ns, err := l.app.Nodes(p)
		if err != nil || len(ns) == 0 {
			return out, err
		}
		out = append(out, ns...)
	}
}

func (l *appLedger) Twin(_ context.Context, id uint32) (ledger.TwinView, error) {
	if err := l.fail(); err != nil {
		return ledger.TwinView{}, err
	}
	t, err := l.app.Twin(id)
	if err != nil {
		return ledger.TwinView{}, err
	}
	return *t, nil
}

func (l *appLedger) Contracts(_ context.Context, f ledger.ContractFilter) ([]ledger.ContractView, error) {
	if err := l.fail(); err != nil {
		return nil, err
	}
	l.mu.Lock()
	tamper := l.tamper
	l.mu.Unlock()
	state := f.State
	if tamper != nil {
		f.State = "" // tampered with before the filter: a pending contract may come out active
	}
	var out []ledger.ContractView
	f.Limit = 2
	for {
		cs, err := l.app.Contracts(f)
		if err != nil {
			return nil, err
		}
		if len(cs) == 0 {
			break
		}
		out = append(out, cs...)
		f.After = cs[len(cs)-1].ID
	}
	if tamper == nil {
		return out, nil
	}
	var kept []ledger.ContractView
	for _, c := range out {
		if tamper(&c); state == "" || c.State == state {
			kept = append(kept, c)
		}
	}
	return kept, nil
}

func (l *appLedger) Submit(_ context.Context, tx []byte) error {
	if err := l.fail(); err != nil {
		return err
	}
	if err := l.apply(tx); err != nil {
		return err
	}
	l.mu.Lock()
	l.submits++
	l.mu.Unlock()
	return nil
}

// apply runs tx through CheckTx, then alone in the next block.
func (l *appLedger) apply(tx []byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.app.CheckTx(tx); err != nil {
		return err
	}
	h, _ := l.app.Info()
	l.now = l.now.Add(time.Second)
	res, _ := l.app.FinalizeBlock(h+1, l.now, [][]byte{tx})
	if err := l.app.Commit(); err != nil {
		return err
	}
	if res[0].Code != 0 {
		return fmt.Errorf("refused (code %d): %s", res[0].Code, res[0].Log)
	}
	return nil
}

func (l *appLedger) setDown(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.down = err
}

func (l *appLedger) reports() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.submits
}

// chainFixture is an agent over fakes that watches an appLedger on which
// alice (twin 1) and bob (2) are registered, carol (3) too, and the
// agent's node belongs to alice once register is called.
type chainFixture struct {
	t                 *testing.T
	l                 *appLedger
	agent             *Agent
	srv               *httptest.Server
	rt                *fakeRuntime
	net               *fakeNetwork
	mnt               *fakeMounter
	nodeKey           key.Secret
	alice, bob, carol key.Secret
	nonce             map[uint32]uint64
	image, imageURL   string
	logs              *syncBuffer
	clock             *clock
}

func newChainFixture(t *testing.T) *chainFixture {
	t.Helper()
	f := &chainFixture{t: t, l: newAppLedger(t), nodeKey: mustKey(t), alice: mustKey(t), bob: mustKey(t), carol: mustKey(t),
		nonce: map[uint32]uint64{}, clock: &clock{t: time.Now()}}
	tree := t.TempDir()
	os.WriteFile(filepath.Join(tree, "hello"), []byte("hi\n"), 0o644)
	fl, _, err := pack.Dir(context.Background(), tree, mem.New(), pack.Options{})
	if err != nil {
		t.Fatal(err)
	}
	img := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(fl) }))
	t.Cleanup(img.Close)
	f.imageURL, f.image = img.URL+"/img.fl", digestOf(t, fl)
	f.createTwins()
	f.start(t.TempDir())
	return f
}

// start runs a new agent (fresh fakes: a new machine) over data with the
// node's key.
// newChain replaces the ledger behind the agent's back by a new chain,
// with alice, bob and carol registered again (same ids), not the node.
func (f *chainFixture) newChain(id string) {
	f.t.Helper()
	f.l.app = openApp(f.t, id)
	f.nonce = map[uint32]uint64{}
	f.createTwins()
}

func (f *chainFixture) createTwins() {
	f.t.Helper()
	for i, k := range []key.Secret{f.alice, f.bob, f.carol} {
		f.tx(ledger.Signer{Secret: k}, &ledger.TwinCreate{})
		f.nonce[uint32(i+1)] = 1 // twin.create's nonce is the twin's first
	}
}

func (f *chainFixture) start(data string) {
	f.t.Helper()
	f.rt, f.net, f.mnt, f.logs = newFakeRuntime(), newFakeNetwork(), newFakeMounter(), &syncBuffer{}
	a, err := New(Options{
		Data: data, Key: f.nodeKey, Twins: TwinsFile(filepath.Join(data, "twins")), Runtime: f.rt, Network: f.net, Mounter: f.mnt,
		Logger: slog.New(slog.NewTextHandler(f.logs, nil)), Now: f.clock.now, Interval: time.Hour,
		Ledger: f.l, ReportEvery: 10 * time.Second,
	})
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { a.Close() })
	f.agent = a
	f.srv = httptest.NewServer(a.Handler())
	f.t.Cleanup(f.srv.Close)
}

// tx applies a transaction signed by s (twin nonces counted here).
func (f *chainFixture) tx(s ledger.Signer, body ledger.Body) {
	f.t.Helper()
	if err := f.l.apply(f.mustTx(s, body)); err != nil {
		f.t.Fatalf("%s: %v", body.Type(), err)
	}
}

func (f *chainFixture) mustTx(s ledger.Signer, body ledger.Body) []byte {
	f.t.Helper()
	f.nonce[s.Twin]++
	n := f.nonce[s.Twin]
	if s.Twin == 0 {
		n = 1
	}
	b, err := ledger.NewTx(f.l.app.ChainID(), s, n, body)
	if err != nil {
		f.t.Fatal(err)
	}
	return b
}

func (f *chainFixture) twin(id uint32) ledger.Signer {
	return ledger.Signer{Secret: map[uint32]key.Secret{1: f.alice, 2: f.bob, 3: f.carol}[id], Twin: id}
}

func (f *chainFixture) register() {
	f.t.Helper()
	f.nonce[1]++
	n := f.nonce[1]
	chain := f.l.app.ChainID()
	b, err := ledger.NewTx(chain, f.twin(1), n, &ledger.NodeRegister{Key: f.nodeKey.Public(),
		Proof:    ledger.KeyProof(f.nodeKey, chain, ledger.TypeNodeRegister, 1, n),
		Capacity: ledger.Capacity{CPU: 4000, Memory: 8 << 30, Disk: 100 << 30}, Endpoint: "http://127.0.0.1:8070"})
	if err != nil {
		f.t.Fatal(err)
	}
	if err := f.l.apply(b); err != nil {
		f.t.Fatal(err)
	}
}

// deployment is a spec of alice's needing alice's and bob's approvals.
func (f *chainFixture) deployment(version uint64, env string) *spec.Deployment {
	f.t.Helper()
	d, err := spec.Parse(fmt.Appendf(nil, `version: %d
owner: 1
workloads:
  - {name: net, kind: network, network: {subnet: "10.1.0.0/24"}}
  - name: web
    kind: container
    container:
      image: {digest: "%s", url: "%s"}
      entrypoint: [/bin/sh, -c, "echo hi"]
      env: {V: "%s"}
      networks: [{network: net}]
signature_requirement:
  requests: [{twin: 1, weight: 1, required: true}, {twin: 2, weight: 1, required: true}, {twin: 3, weight: 1}]
  weight_required: 2
`, version, f.image, f.imageURL, env))
	if err != nil {
		f.t.Fatal(err)
	}
	return d
}

func (f *chainFixture) sign(d *spec.Deployment, twin uint32) spec.Signature {
	f.t.Helper()
	s, err := spec.Sign(d, f.twin(twin).Secret, twin)
	if err != nil {
		f.t.Fatal(err)
	}
	return s
}

// create puts d on node 1, approved by its owner only (pending).
func (f *chainFixture) create(d *spec.Deployment) {
	f.t.Helper()
	d.Signatures = []spec.Signature{f.sign(d, 1)}
	f.tx(f.twin(1), &ledger.ContractCreate{Node: 1, Spec: d})
}

func (f *chainFixture) approve(contract uint64, d *spec.Deployment, twin uint32) {
	f.t.Helper()
	c := *d
	c.Signatures = nil
	f.tx(f.twin(twin), &ledger.ContractApprove{Contract: contract, Approval: f.sign(&c, twin)})
}

// pass is what the agent's loops do, in order: read the ledger, reconcile,
// report.
func (f *chainFixture) pass() {
	ctx := f.t.Context()
	f.agent.watch.step(ctx)
	f.agent.reconcile(ctx)
	f.agent.watch.report(ctx)
}

func (f *chainFixture) contract(id uint64) *ledger.ContractView {
	f.t.Helper()
	c, err := f.l.app.Contract(id)
	if err != nil {
		f.t.Fatal(err)
	}
	return c
}

func (f *chainFixture) kinds(dep uint64) string {
	f.t.Helper()
	ev, err := f.agent.DB().History(dep)
	if err != nil {
		f.t.Fatal(err)
	}
	var k []string
	for _, e := range ev {
		k = append(k, e.Kind)
	}
	return strings.Join(k, " ")
}

func (f *chainFixture) client(k key.Secret) *nodeclient.Client {
	c, err := nodeclient.New(f.srv.URL, k)
	if err != nil {
		f.t.Fatal(err)
	}
	return c
}

func TestLedgerContractLifecycle(t *testing.T) {
	f := newChainFixture(t)
	ctx := t.Context()

	// Not registered yet: said once, looked for every pass.
	f.pass()
	f.pass()
	if n := strings.Count(f.logs.String(), "not registered on the ledger"); n != 1 {
		t.Fatalf("%d 'not registered' lines:\n%s", n, f.logs)
	}
	f.register()
	v1 := f.deployment(1, "1")
	f.create(v1)
	f.pass()
	if ids := f.rt.ids(); len(ids) != 0 || f.kinds(0) != "" {
		t.Fatalf("a pending contract ran: %v, history %q", ids, f.kinds(0))
	}

	// The second required approval activates it: the node runs it.
	f.approve(1, v1, 2)
	f.pass()
	if ids := f.rt.ids(); len(ids) != 1 || ids[0] != "d1-web" {
		t.Fatalf("containers %v", ids)
	}
	if got, want := f.kinds(1), "ledger-accepted verified image-fetched mounted started"; got != want {
		t.Fatalf("history %q, want %q", got, want)
	}
	if r := f.contract(1).Report; r == nil || r.State != ledger.ReportRunning || r.Version != 1 {
		t.Fatalf("report %+v", r)
	}
	// Idempotent: another pass adds nothing, reports nothing.
	reports := f.l.reports()
	f.pass()
	if got := f.kinds(0); strings.Count(got, "ledger-accepted") != 1 || f.rt.starts["d1-web"] != 1 || f.l.reports() != reports {
		t.Fatalf("second pass: history %q, %d starts, %d reports", got, f.rt.starts["d1-web"], f.l.reports()-reports)
	}

	// Its owner reads it through the API with the key the ledger holds
	// (the twins file is empty), and cannot delete it alone.
	alice := f.client(f.alice)
	st, err := alice.Get(ctx, 1)
	if err != nil || st.Owner != 1 || st.Version != 1 {
		t.Fatalf("status %+v, %v", st, err)
	}
	if err := alice.Delete(ctx, 1); code(err) != http.StatusConflict {
		t.Fatalf("delete through the API: %v", err)
	}
	if _, err := f.client(mustKey(t)).Get(ctx, 1); code(err) != http.StatusForbidden {
		t.Fatalf("an unknown key: %v", err)
	}

	// A revision runs only once its own approvals meet its requirement.
	v2 := f.deployment(2, "2")
	v2.Signatures = []spec.Signature{f.sign(v2, 1)}
	f.tx(f.twin(1), &ledger.ContractUpdate{Contract: 1, Spec: v2})
	f.pass()
	if r, _ := f.agent.db.get(1); r.Version != 1 || f.rt.starts["d1-web"] != 1 {
		t.Fatalf("a pending revision was applied: version %d", r.Version)
	}
	f.approve(1, v2, 2)
	f.pass()
	if r, _ := f.agent.db.get(1); r.Version != 2 || f.rt.starts["d1-web"] != 2 || !contains(f.rt.specs["d1-web"].Env, "V=2") {
		t.Fatalf("revision: version %d, %d starts, env %v", r.Version, f.rt.starts["d1-web"], f.rt.specs["d1-web"].Env)
	}
	if !strings.Contains(f.kinds(1), "ledger-updated") {
		t.Fatalf("history %q", f.kinds(1))
	}
	if r := f.contract(1).Report; r.State != ledger.ReportRunning || r.Version != 2 {
		t.Fatalf("report after the revision %+v", r)
	}

	// Cancel: one vote is not enough, the requirement's votes are.
	f.tx(f.twin(1), &ledger.ContractCancel{Contract: 1})
	f.pass()
	if len(f.rt.ids()) != 1 {
		t.Fatal("removed on one cancel vote")
	}
	f.tx(f.twin(2), &ledger.ContractCancel{Contract: 1})
	f.pass()
	if ids := f.rt.ids(); len(ids) != 0 || len(f.net.networks) != 0 || f.mnt.count() != 0 {
		t.Fatalf("left after cancel: %v %v %d mounts", ids, f.net.networks, f.mnt.count())
	}
	if got := f.kinds(1); !strings.HasSuffix(got, "ledger-cancelled deleted") {
		t.Fatalf("history %q", got)
	}
	if r := f.contract(1).Report; r.State != ledger.ReportRemoved {
		t.Fatalf("report after cancel %+v", r)
	}
	if links, _ := f.agent.db.links(); len(links) != 0 {
		t.Fatalf("links left %+v", links)
	}
	reports = f.l.reports()
	f.pass()
	if f.l.reports() != reports || strings.Count(f.kinds(0), "ledger-accepted") != 1 {
		t.Fatalf("after cancel: %d more reports, history %q", f.l.reports()-reports, f.kinds(0))
	}
	if n, err := f.agent.DB().VerifyHistory(); err != nil || n == 0 {
		t.Fatalf("history chain: %d, %v", n, err)
	}
}

// TestLedgerStatelessNode wipes the node's data: a new agent with the same
// key and an empty directory (on a machine where nothing runs) rebuilds
// every active contract's workloads from the ledger alone, and does not
// report again what the ledger already holds.
func TestLedgerStatelessNode(t *testing.T) {
	f := newChainFixture(t)
	f.register()
	for i := range 3 {
		d := f.deployment(1, fmt.Sprint(i))
		f.create(d)
		f.approve(uint64(i+1), d, 2)
	}
	f.tx(f.twin(1), &ledger.ContractCancel{Contract: 2})
	f.tx(f.twin(2), &ledger.ContractCancel{Contract: 2}) // cancelled before the node ever ran it
	f.pass()
	if ids := f.rt.ids(); strings.Join(ids, " ") != "d1-web d2-web" {
		t.Fatalf("containers %v", ids)
	}
	reports := f.l.reports()
	f.agent.Close()
	f.start(t.TempDir())
	f.pass()
	if ids := f.rt.ids(); strings.Join(ids, " ") != "d1-web d2-web" {
		t.Fatalf("after the wipe: containers %v", ids)
	}
	links, _ := f.agent.db.links()
	if links[1].Deployment == 0 || links[3].Deployment == 0 || len(links) != 2 {
		t.Fatalf("links %+v", links)
	}
	if f.l.reports() != reports {
		t.Fatalf("%d reports of states the ledger holds already", f.l.reports()-reports)
	}
}

// TestLedgerVerifies checks that the node does not trust the query
// endpoint about approvals: a pending contract answered as active, or an
// approval changed on the way, is refused (once in the history).
func TestLedgerVerifies(t *testing.T) {
	for _, tc := range []struct {
		name   string
		tamper func(c *ledger.ContractView)
		why    string
	}{
		{"pending shown active", func(c *ledger.ContractView) { c.State = ledger.StateActive }, "required twins not signed: 2;"},
		{"approval forged", func(c *ledger.ContractView) {
			c.State = ledger.StateActive
			a := c.Approvals[0]
			a.Twin, a.Sig[0] = 2, a.Sig[0]^1
			c.Approvals = append(c.Approvals, a)
		}, "required twins not signed: 2;"},
		{"spec changed", func(c *ledger.ContractView) {
			c.State = ledger.StateActive
			c.Spec = []byte(strings.Replace(string(c.Spec), `"V":"1"`, `"V":"x"`, 1))
		}, "required twins not signed: 1, 2;"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newChainFixture(t)
			f.register()
			f.create(f.deployment(1, "1"))
			f.l.tamper = tc.tamper
			f.pass()
			f.pass()
			if ids := f.rt.ids(); len(ids) != 0 {
				t.Fatalf("ran %v", ids)
			}
			ev, _ := f.agent.DB().History(0)
			if len(ev) != 1 || ev[0].Kind != "ledger-refused" || !strings.Contains(ev[0].Detail, tc.why) {
				t.Fatalf("history %+v", ev)
			}
		})
	}
}

// TestLedgerUnreachable: a ledger that cannot be read is logged once per
// outage and changes nothing; the API keeps answering; a report that
// cannot be submitted is retried after the next pass.
func TestLedgerUnreachable(t *testing.T) {
	f := newChainFixture(t)
	f.register()
	d := f.deployment(1, "1")
	f.create(d)
	f.approve(1, d, 2)
	outage := errors.New("connection refused")
	f.l.setDown(outage)
	for range 3 {
		f.pass()
	}
	if n := strings.Count(f.logs.String(), "ledger unreachable"); n != 1 {
		t.Fatalf("%d 'unreachable' lines:\n%s", n, f.logs)
	}
	if _, err := f.client(f.nodeKey).Info(t.Context()); err != nil {
		t.Fatalf("API during the outage: %v", err)
	}
	f.l.setDown(nil)
	f.agent.watch.step(t.Context())
	f.agent.reconcile(t.Context())
	if !strings.Contains(f.logs.String(), "ledger reachable again") || len(f.rt.ids()) != 1 {
		t.Fatalf("after the outage: %v\n%s", f.rt.ids(), f.logs)
	}
	// The report fails, then goes on the next pass.
	f.l.setDown(outage)
	f.agent.watch.report(t.Context())
	f.agent.watch.report(t.Context())
	if n := strings.Count(f.logs.String(), "node report not recorded"); n != 1 || f.contract(1).Report != nil {
		t.Fatalf("%d 'not recorded' lines", n)
	}
	f.l.setDown(nil)
	f.pass()
	if r := f.contract(1).Report; r == nil || r.State != ledger.ReportRunning {
		t.Fatalf("report %+v", r)
	}
}

// TestLedgerReportLimit: a container that keeps crashing is reported
// failed, and its flips between failed and running at most once per
// ReportEvery.
func TestLedgerReportLimit(t *testing.T) {
	f := newChainFixture(t)
	f.register()
	d := f.deployment(1, "1")
	f.create(d)
	f.approve(1, d, 2)
	f.pass()
	base := f.l.reports() // running
	f.clock.add(20 * time.Second)
	f.rt.exit("d1-web", 1, false)
	f.pass() // exited: restarting, reported failed at once (the last report was long ago)
	if r := f.contract(1).Report; r.State != ledger.ReportFailed || !strings.Contains(r.Detail, "web: restarting after exit code 1") {
		t.Fatalf("report %+v", r)
	}
	for range 5 { // it restarts and crashes again, every 1.1 s
		f.clock.add(1100 * time.Millisecond)
		f.pass()
		f.rt.exit("d1-web", 1, false)
		f.pass()
	}
	if n := f.l.reports() - base; n != 1 {
		t.Fatalf("%d reports in 5.5 s, want 1 (ReportEvery 10 s)", n)
	}
	f.clock.add(10 * time.Second)
	f.pass() // restarted and running: reported now
	if r := f.contract(1).Report; r.State != ledger.ReportRunning {
		t.Fatalf("report after the limit %+v", r)
	}
}

// TestLedgerChainChanged: the ledger behind the URL becomes another
// chain. The old chain's deployments stay until the node is found on the
// new one (nothing is removed on what cannot be read), then go: contract
// ids of one chain mean nothing on another. The new chain's contracts run.
func TestLedgerChainChanged(t *testing.T) {
	f := newChainFixture(t)
	f.register()
	d := f.deployment(1, "1")
	f.create(d)
	f.approve(1, d, 2)
	f.pass()
	if ids := f.rt.ids(); len(ids) != 1 {
		t.Fatalf("containers %v", ids)
	}
	f.newChain("zos-other")
	f.pass()
	if ids := f.rt.ids(); len(ids) != 1 || !strings.Contains(f.logs.String(), "another chain now") {
		t.Fatalf("before the node is on the new chain: containers %v", ids)
	}
	f.register()
	d2 := f.deployment(1, "new")
	f.create(d2)
	f.approve(1, d2, 2)
	f.pass()
	if ids := f.rt.ids(); strings.Join(ids, " ") != "d2-web" || !contains(f.rt.specs["d2-web"].Env, "V=new") {
		t.Fatalf("after: containers %v", ids)
	}
	if got := f.kinds(1); !strings.HasSuffix(got, "ledger-cancelled deleted") {
		t.Fatalf("history of the old chain's deployment %q", got)
	}
	if r := f.contract(1).Report; r == nil || r.State != ledger.ReportRunning {
		t.Fatalf("report on the new chain %+v", r)
	}
	if links, _ := f.agent.db.links(); len(links) != 1 || links[1].Chain != "zos-other" || links[1].Deployment != 2 {
		t.Fatalf("links %+v", links)
	}
}

func TestReportDetail(t *testing.T) {
	long := strings.Repeat("é", 200)
	for in, want := range map[string]string{
		"web: exit\ncode 1": "web: exit code 1",
		long:                strings.Repeat("é", ledger.MaxDetail/2),
		"tab\there\x7f":     "tab here ",
	} {
		if got := reportDetail(in); got != want {
			t.Errorf("reportDetail(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestLedgerRun drives the agent's own loops (Run: reconcile, and the
// watcher beside it) until the contract's report is on the ledger, with
// the API in use meanwhile (go test -race).
func TestLedgerRun(t *testing.T) {
	f := newChainFixture(t)
	f.register()
	d := f.deployment(1, "1")
	f.create(d)
	f.approve(1, d, 2)
	f.agent.opts.Interval, f.agent.watch.every = 50*time.Millisecond, 20*time.Millisecond
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.agent.Run(ctx)
	}()
	defer func() { cancel(); <-done }()
	alice := f.client(f.alice)
	deadline := time.Now().Add(10 * time.Second)
	for {
		f.l.mu.Lock()
		c, err := f.l.app.Contract(1)
		f.l.mu.Unlock()
		if err == nil && c.Report != nil && c.Report.State == ledger.ReportRunning {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no running report after 10 s:\n%s", f.logs)
		}
		alice.List(ctx)
		time.Sleep(10 * time.Millisecond)
	}
	if st, err := alice.Get(ctx, 1); err != nil || running(st) != "" {
		t.Fatalf("status %+v, %v", st, err)
	}
}

func running(s nodeclient.Status) string {
	for _, w := range s.Workloads {
		if w.State != nodeclient.WorkloadRunning && w.State != nodeclient.WorkloadOK {
			return w.Name + " " + w.State
		}
	}
	return ""
}
