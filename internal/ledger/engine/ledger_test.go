package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cometbft/cometbft/types"

	"github.com/zosgrid/zos/internal/key"
	"github.com/zosgrid/zos/internal/ledger"
	"github.com/zosgrid/zos/internal/spec"
)

// recorder is a real ledger.App that remembers the app hash it committed
// at every height, so validators can be compared block by block. The
// App's InitChain (ChainIniter) is promoted: the engine hands it the
// genesis chain id.
type recorder struct {
	*ledger.App
	mu      sync.Mutex
	pending []byte
	pendH   int64
	hashes  map[int64][]byte
	// onFinalize, when set, sees every block's transactions.
	onFinalize func(txs [][]byte)
}

var _ ChainIniter = (*recorder)(nil)

func (r *recorder) FinalizeBlock(h int64, t time.Time, txs [][]byte) ([]ledger.TxResult, []byte) {
	if r.onFinalize != nil {
		r.onFinalize(txs)
	}
	res, hash := r.App.FinalizeBlock(h, t, txs)
	r.mu.Lock()
	r.pending, r.pendH = bytes.Clone(hash), h
	r.mu.Unlock()
	return res, hash
}

func (r *recorder) Commit() error {
	if err := r.App.Commit(); err != nil {
		return err
	}
	r.mu.Lock()
	r.hashes[r.pendH] = r.pending
	r.mu.Unlock()
	return nil
}

func (r *recorder) hashAt(h int64) ([]byte, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	v, ok := r.hashes[h]
	return v, ok
}

func ledgerKey(name string) key.Secret {
	seed := make([]byte, 32)
	copy(seed, name)
	return key.FromSeed(seed)
}

// TestFourValidatorsLedger runs the real ledger on 4 validators: every
// validator refuses a forged or wrongly signed transaction at CheckTx,
// and records the same refusal when a faulty proposer puts one in a
// block; with one validator stopped the others keep committing real
// ledger transactions; and every validator commits the same app hash at
// every height.
func TestFourValidatorsLedger(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	const chain = "zos-ledger-4"
	dirs := make([]string, 4)
	for i := range dirs {
		dirs[i] = t.TempDir()
	}
	if err := InitTestnet(dirs, TestnetOptions{ChainID: chain, Timing: testTiming}); err != nil {
		t.Fatal(err)
	}

	var forced atomic.Pointer[[]byte] // a tx the faulty proposers put in their blocks until one holds it
	var seen atomic.Bool
	prepare := func(txs [][]byte) [][]byte {
		if f := forced.Load(); f != nil && !seen.Load() {
			return append(txs, *f)
		}
		return txs
	}
	apps := make([]*recorder, 4)
	ns := make([]*Node, 4)
	for i, d := range dirs {
		a, err := ledger.Open(filepath.Join(d, "ledger.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { a.Close() })
		apps[i] = &recorder{App: a, hashes: map[int64][]byte{}}
		apps[i].onFinalize = func(txs [][]byte) {
			if f := forced.Load(); f != nil {
				for _, tx := range txs {
					if bytes.Equal(tx, *f) {
						seen.Store(true)
					}
				}
			}
		}
		ns[i] = mustStart(t, ctx, d, apps[i], Options{Logger: testLogger(t, fmt.Sprint("v", i)), RPCListen: "none", prepare: prepare})
	}
	for i, a := range apps {
		if a.ChainID() != chain {
			t.Fatalf("v%d: ledger chain id %q after start", i, a.ChainID())
		}
	}

	nonce := uint64(time.Now().UnixNano())
	mk := func(s ledger.Signer, body ledger.Body) []byte {
		t.Helper()
		nonce++
		b, err := ledger.NewTx(chain, s, nonce, body)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	commit := func(n *Node, what string, tx []byte) Result {
		t.Helper()
		r, err := n.Broadcast(ctx, tx)
		if err != nil || r.Code != 0 {
			t.Fatalf("%s: %+v %v", what, r, err)
		}
		return r
	}
	alice := ledger.Signer{Secret: ledgerKey("alice"), Twin: 1}
	r := commit(ns[0], "alice's twin", mk(ledger.Signer{Secret: ledgerKey("alice")}, &ledger.TwinCreate{}))
	for i, n := range ns {
		if _, err := n.WaitHeight(ctx, r.Height); err != nil {
			t.Fatalf("v%d: %v", i, err)
		}
		if _, err := n.Query(ctx, "twin/1", nil); err != nil {
			t.Fatalf("v%d: twin 1: %v", i, err)
		}
	}

	// Forged and wrongly signed transactions: refused by every validator.
	good := mk(alice, &ledger.NodeRegister{Key: ledgerKey("n1").Public(),
		Proof:    ledger.KeyProof(ledgerKey("n1"), chain, ledger.TypeNodeRegister, 1, nonce+1),
		Capacity: ledger.Capacity{CPU: 1000, Memory: 1 << 30, Disk: 1 << 30}, Endpoint: "http://n1.example.org"})
	flipped := bytes.Clone(good) // the registration with its signature's first character changed
	i := bytes.Index(flipped, []byte(`"sig":"`)) + len(`"sig":"`)
	if flipped[i] == 'A' {
		flipped[i] = 'B'
	} else {
		flipped[i] = 'A'
	}
	forgeries := []struct {
		name string
		tx   []byte
		code uint32
	}{
		{"signed by another key", mk(ledger.Signer{Secret: ledgerKey("mallory"), Twin: 1}, &ledger.TwinRotate{
			Key: ledgerKey("mallory").Public(), Proof: ledger.KeyProof(ledgerKey("mallory"), chain, ledger.TypeTwinRotate, 1, nonce+1)}), ledger.CodeSignature},
		{"signature changed", flipped, ledger.CodeSignature},
		{"another chain", func() []byte {
			b, err := ledger.NewTx("zos-elsewhere", alice, nonce+100, &ledger.ContractCancel{Contract: 1})
			if err != nil {
				t.Fatal(err)
			}
			return b
		}(), ledger.CodeChain},
		{"unknown twin", mk(ledger.Signer{Secret: ledgerKey("nobody"), Twin: 9}, &ledger.ContractCancel{Contract: 1}), ledger.CodeSigner},
	}
	for _, f := range forgeries {
		for i, n := range ns {
			_, err := n.Broadcast(ctx, f.tx)
			var re *RefusedError
			if !errors.As(err, &re) || re.Code != f.code {
				t.Fatalf("v%d: %s: %v, want code %d", i, f.name, err, f.code)
			}
		}
	}
	// A faulty proposer puts the forged one in a block: every validator
	// records the same refusal, and nothing changes.
	forged := forgeries[0].tx
	forced.Store(&forged)
	// An idle ledger chain makes no blocks: transactions make the blocks
	// the faulty proposer fills.
	for k := 0; ; k++ {
		if _, err := ns[0].Tx(ctx, types.Tx(forged).Hash()); err == nil {
			break
		}
		if k == 40 {
			t.Fatal("the forged transaction was in none of 40 blocks")
		}
		// A filler that changes no state (no contract 999999: refused in
		// its block), so the twins and ids the test goes on with stay.
		if _, err := ns[k%len(ns)].Broadcast(ctx, mk(alice, &ledger.ContractCancel{Contract: 999999})); err != nil {
			t.Fatalf("filler: %v", err)
		}
	}
	var want Result
	for i, n := range ns {
		var got Result
		eventually(t, 20*time.Second, fmt.Sprintf("v%d: forged tx in a block", i), func() error {
			var err error
			got, err = n.Tx(ctx, types.Tx(forged).Hash())
			return err
		})
		if got.Code != ledger.CodeSignature {
			t.Fatalf("v%d: forged tx in a block: %+v", i, got)
		}
		if i == 0 {
			want = got
		} else if got.Code != want.Code || got.Height != want.Height {
			t.Fatalf("v%d: forged tx %+v, v0's %+v", i, got, want)
		}
		if b, err := n.Query(ctx, "twin/1", nil); err != nil || !strings.Contains(string(b), ledgerKey("alice").Public().String()) {
			t.Fatalf("v%d: twin 1 after the forged rotation: %s %v", i, b, err)
		}
	}
	// The genuine registration still goes through.
	commit(ns[1], "node register", good)

	// Stop one: the other three go on with real ledger transactions.
	if err := ns[3].Stop(); err != nil {
		t.Fatal(err)
	}
	h := ns[0].Height()
	commit(ns[1], "bob's twin", mk(ledger.Signer{Secret: ledgerKey("bob")}, &ledger.TwinCreate{}))
	d, err := spec.Parse([]byte(`version: 1
owner: 1
workloads:
  - {name: app, kind: container, container: {image: {digest: "1111111111111111111111111111111111111111111111111111111111111111", url: "https://example.org/app.fl"}}}
signature_requirement:
  requests: [{twin: 1, weight: 1, required: true}, {twin: 2, weight: 1, required: true}]
  weight_required: 2
`))
	if err != nil {
		t.Fatal(err)
	}
	sig := func(name string, twin uint32) spec.Signature {
		s, err := spec.Sign(d, ledgerKey(name), twin)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	d.Signatures = []spec.Signature{sig("alice", 1)}
	commit(ns[2], "contract create", mk(alice, &ledger.ContractCreate{Node: 1, Spec: d}))
	r = commit(ns[0], "bob's approval", mk(ledger.Signer{Secret: ledgerKey("bob"), Twin: 2}, &ledger.ContractApprove{Contract: 1, Approval: sig("bob", 2)}))
	if r.Height <= h {
		t.Fatalf("approval at height %d, before v3 stopped at %d", r.Height, h)
	}
	activated := false
	for _, e := range r.Events {
		activated = activated || e.Type == "contract.activated"
	}
	if !activated {
		t.Fatalf("approval events %+v", r.Events)
	}
	// Past a full proposer rotation, so v3's turn came and went. An idle
	// ledger chain makes no blocks: transactions drive it there.
	target := ns[0].Height() + 5
	for i := 0; ns[0].Height() < target; i++ {
		commit(ns[i%3], "a filler transaction", mk(ledger.Signer{Secret: ledgerKey(fmt.Sprintf("filler-%d", i))}, &ledger.TwinCreate{}))
	}
	for i := range 3 {
		if _, err := ns[i].WaitHeight(ctx, target); err != nil {
			t.Fatalf("v%d: %v", i, err)
		}
		b, err := ns[i].Query(ctx, "contract/1", nil)
		if err != nil || !strings.Contains(string(b), `"state":"active"`) {
			t.Fatalf("v%d: contract 1: %.200s %v", i, b, err)
		}
	}
	for i := range 3 {
		if err := ns[i].Stop(); err != nil {
			t.Fatal(err)
		}
	}

	// Every validator committed the same app hash at every height it
	// reached (v3 up to where it stopped).
	top := int64(0)
	for _, a := range apps {
		h, _ := a.Info()
		top = max(top, h)
	}
	compared := 0
	for h := int64(1); h <= top; h++ {
		var ref []byte
		for i, a := range apps {
			got, ok := a.hashAt(h)
			if !ok {
				continue
			}
			if ref == nil {
				ref = got
			} else if !bytes.Equal(got, ref) {
				t.Fatalf("height %d: v%d app hash %X, another's %X", h, i, got, ref)
			}
			compared++
		}
	}
	v3, _ := apps[3].Info()
	t.Logf("app hashes agree: %d hashes compared up to height %d (v3 stopped at %d)", compared, top, v3)
}

// TestLedgerChainIdles: over the real ledger, a chain with no
// transactions stops making blocks (the ledger keeps its app hash through
// an empty block), and a transaction starts one at once.
func TestLedgerChainIdles(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	timing := testTiming
	timing.EmptyBlockInterval = -1
	if err := Init(dir, InitOptions{ChainID: "zos-idle", P2PListen: "tcp://127.0.0.1:0", RPCListen: "none", Timing: timing}); err != nil {
		t.Fatal(err)
	}
	app, err := ledger.Open(filepath.Join(dir, "ledger.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	n, err := Start(ctx, dir, app, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Stop()
	tx, err := ledger.NewTx("zos-idle", ledger.Signer{Secret: ledgerKey("idle")}, 1, &ledger.TwinCreate{})
	if err != nil {
		t.Fatal(err)
	}
	r, err := n.Broadcast(ctx, tx)
	if err != nil || r.Code != 0 {
		t.Fatalf("twin.create: %+v %v", r, err)
	}
	time.Sleep(5 * timing.BlockTime) // the block after the tx's, to sign its hash
	h := n.Height()
	time.Sleep(10 * timing.BlockTime)
	if h2 := n.Height(); h2 != h {
		t.Fatalf("an idle chain went on making blocks: height %d -> %d in %v", h, h2, 10*timing.BlockTime)
	}
	tx, _ = ledger.NewTx("zos-idle", ledger.Signer{Secret: ledgerKey("idle2")}, 1, &ledger.TwinCreate{})
	t0 := time.Now()
	if r, err := n.Broadcast(ctx, tx); err != nil || r.Code != 0 || r.Height <= h {
		t.Fatalf("twin.create after idling: %+v %v", r, err)
	}
	if d := time.Since(t0); d > 2*time.Second {
		t.Errorf("a transaction on an idle chain took %v to commit", d)
	}
}

// TestValidatorsOnHosts sets up 4 validators as for 4 machines
// (TestnetOptions.Hosts: 127.0.0.1-4 stand for them, every loopback
// address being this machine's) and runs them: they find each other at
// their hosts and commit the same ledger.
func TestValidatorsOnHosts(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ports, err := freePorts("127.0.0.1", 1)
	if err != nil {
		t.Fatal(err)
	}
	base := t.TempDir()
	var dirs, hosts []string
	for i := range 4 {
		dirs = append(dirs, filepath.Join(base, fmt.Sprintf("v%d", i)))
		hosts = append(hosts, fmt.Sprintf("127.0.0.%d", i+1))
	}
	if err := InitTestnet(dirs, TestnetOptions{ChainID: "zos-hosts", Hosts: hosts, P2PPort: ports[0], Timing: testTiming}); err != nil {
		t.Fatal(err)
	}
	if err := InitTestnet(dirs, TestnetOptions{ChainID: "zos-hosts", Hosts: hosts[:3], P2PPort: ports[0]}); err == nil {
		t.Fatal("3 hosts for 4 validators accepted")
	}
	ns := make([]*Node, 4)
	for i, d := range dirs {
		app, err := ledger.Open(filepath.Join(d, "ledger.db"))
		if err != nil {
			t.Fatal(err)
		}
		defer app.Close()
		if ns[i], err = Start(ctx, d, app, Options{RPCListen: "none"}); err != nil {
			t.Fatalf("v%d: %v", i, err)
		}
		defer ns[i].Stop()
	}
	tx, err := ledger.NewTx("zos-hosts", ledger.Signer{Secret: ledgerKey("hosts")}, 1, &ledger.TwinCreate{})
	if err != nil {
		t.Fatal(err)
	}
	r, err := ns[2].Broadcast(ctx, tx)
	if err != nil || r.Code != 0 {
		t.Fatalf("twin.create: %+v %v", r, err)
	}
	for i, n := range ns {
		if _, err := n.WaitHeight(ctx, r.Height); err != nil {
			t.Fatalf("v%d: %v", i, err)
		}
		if b, err := n.Query(ctx, "twin/1", nil); err != nil || !strings.Contains(string(b), `"id":1`) {
			t.Fatalf("v%d: twin 1: %s %v", i, b, err)
		}
		// Every peer connected (a validator may commit with 2 of 3 while
		// the last connection is still being made).
		var st Status
		for {
			st, err = n.Status(ctx)
			if err != nil || st.Peers == 3 || ctx.Err() != nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if err != nil || st.Peers != 3 || !strings.HasPrefix(st.P2PListen, "tcp://"+hosts[i]+":") {
			t.Fatalf("v%d: %+v %v (want 3 peers, listening on %s)", i, st, err, hosts[i])
		}
	}
}
