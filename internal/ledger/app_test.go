package ledger

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/zosgrid/zos/internal/spec"
)

const testChain = "zos-test"

func openTest(t testing.TB) *App {
	t.Helper()
	a, err := Open(filepath.Join(t.TempDir(), "ledger.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	if err := a.InitChain(testChain); err != nil {
		t.Fatal(err)
	}
	return a
}

func mustTx(t testing.TB, s Signer, nonce uint64, body Body) []byte {
	t.Helper()
	b, err := NewTx(testChain, s, nonce, body)
	if err != nil {
		t.Fatalf("NewTx %s: %v", body.Type(), err)
	}
	return b
}

func testSpec(t testing.TB, yaml string) *spec.Deployment {
	t.Helper()
	d, err := spec.Parse([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

const specV1 = `version: 1
owner: 1
workloads:
  - {name: app, kind: container, container: {image: {digest: "1111111111111111111111111111111111111111111111111111111111111111", url: "https://example.org/app.fl"}}}
signature_requirement:
  requests: [{twin: 1, weight: 1, required: true}, {twin: 2, weight: 1}, {twin: 3, weight: 1}]
  weight_required: 2
`

func signed(t testing.TB, d *spec.Deployment, names ...string) *spec.Deployment {
	t.Helper()
	c := *d
	c.Signatures = nil
	for i, n := range names {
		twin := map[string]uint32{"alice": 1, "bob": 2, "carol": 3}[n]
		s, err := spec.Sign(&c, testKey(n), twin)
		if err != nil {
			t.Fatalf("sign %d: %v", i, err)
		}
		c.Signatures = append(c.Signatures, s)
	}
	return &c
}

// scenario is a run of blocks touching every transaction type: alice (1),
// bob (2), carol (3); node 1 of alice; a 2-of-3 contract with alice
// required, approved, revised, reported and cancelled.
func scenario(t testing.TB) [][][]byte {
	alice := Signer{Secret: testKey("alice"), Twin: 1}
	bob := Signer{Secret: testKey("bob"), Twin: 2}
	carol := Signer{Secret: testKey("carol"), Twin: 3}
	node := Signer{Secret: testKey("n1"), Node: 1}
	v1 := testSpec(t, specV1)
	v2 := testSpec(t, specV1)
	v2.Version = 2
	approve := func(d *spec.Deployment, name string) spec.Signature { return signed(t, d, name).Signatures[0] }
	return [][][]byte{
		{
			mustTx(t, Signer{Secret: testKey("alice")}, 1, &TwinCreate{}),
			mustTx(t, Signer{Secret: testKey("bob")}, 1, &TwinCreate{}),
			mustTx(t, Signer{Secret: testKey("carol")}, 1, &TwinCreate{}),
		},
		{
			mustTx(t, alice, 2, &NodeRegister{Key: testKey("n1").Public(), Proof: KeyProof(testKey("n1"), testChain, TypeNodeRegister, 1, 2),
				Capacity: Capacity{CPU: 8000, Memory: 16 << 30, Disk: 1 << 40}, Endpoint: "https://n1.example.org:8070"}),
			mustTx(t, alice, 3, &ContractCreate{Node: 1, Spec: signed(t, v1, "alice")}),
		},
		{
			mustTx(t, bob, 2, &ContractApprove{Contract: 1, Approval: approve(v1, "bob")}),
			mustTx(t, node, 1, &NodeReport{Contract: 1, State: ReportRunning, Detail: "up", Version: 1}),
			mustTx(t, alice, 4, &ContractUpdate{Contract: 1, Spec: signed(t, v2, "alice")}),
		},
		{
			mustTx(t, carol, 2, &ContractApprove{Contract: 1, Approval: approve(v2, "carol")}),
			mustTx(t, bob, 3, &TwinRotate{Key: testKey("bob2").Public(), Proof: KeyProof(testKey("bob2"), testChain, TypeTwinRotate, 2, 3)}),
			mustTx(t, alice, 5, &NodeUpdate{Node: 1, Capacity: Capacity{CPU: 4000, Memory: 8 << 30, Disk: 1 << 40}, Endpoint: "https://n1.example.org"}),
		},
		{
			mustTx(t, alice, 6, &ContractCancel{Contract: 1}),
			mustTx(t, carol, 3, &ContractCancel{Contract: 1}),
			mustTx(t, node, 2, &NodeReport{Contract: 1, State: ReportRemoved, Version: 2}),
		},
	}
}

func blockTimeOf(h int64) time.Time { return time.Unix(1_700_000_000+h*5, 0) }

// run finalizes and commits blocks from height 1, and returns the app
// hash after each.
func run(t testing.TB, a *App, blocks [][][]byte) [][]byte {
	t.Helper()
	var hashes [][]byte
	start, _ := a.Info()
	for i, b := range blocks {
		h := start + int64(i) + 1
		res, hash := a.FinalizeBlock(h, blockTimeOf(h), b)
		for j, r := range res {
			if r.Code != 0 {
				t.Fatalf("block %d tx %d: code %d: %s", h, j, r.Code, r.Log)
			}
		}
		if err := a.Commit(); err != nil {
			t.Fatal(err)
		}
		hashes = append(hashes, hash)
	}
	return hashes
}

// dump is every query's answer: what "the same state" means.
func dump(t testing.TB, a *App) string {
	t.Helper()
	var b bytes.Buffer
	for _, p := range []string{"info", "twins", "nodes", "contracts", "twin/1", "twin/2", "node/1", "contract/1"} {
		out, err := a.Query(p, nil)
		if err != nil {
			t.Fatalf("query %s: %v", p, err)
		}
		fmt.Fprintf(&b, "%s: %s\n", p, out)
	}
	return b.String()
}

func TestDeterminism(t *testing.T) {
	blocks := scenario(t)
	a, b := openTest(t), openTest(t)
	ha, hb := run(t, a, blocks), run(t, b, blocks)
	for i := range ha {
		if !bytes.Equal(ha[i], hb[i]) {
			t.Fatalf("block %d: app hashes differ: %x, %x", i+1, ha[i], hb[i])
		}
	}
	if da, db := dump(t, a), dump(t, b); da != db {
		t.Fatalf("states differ:\n%s\n%s", da, db)
	}
	c, err := a.Contract(1)
	if err != nil || c.State != StateCancelled || c.Version != 2 {
		t.Fatalf("contract 1: %+v, %v", c, err)
	}

	// One transaction different (carol's approval left out of block 4):
	// the hash differs from that block on, and not before.
	other := scenario(t)
	other[3] = other[3][1:]
	c2 := openTest(t)
	var hc [][]byte
	for i, blk := range other[:4] {
		res, hash := c2.FinalizeBlock(int64(i+1), blockTimeOf(int64(i+1)), blk)
		_ = res
		if err := c2.Commit(); err != nil {
			t.Fatal(err)
		}
		hc = append(hc, hash)
	}
	for i := range 3 {
		if !bytes.Equal(hc[i], ha[i]) {
			t.Fatalf("block %d: same blocks, different hashes", i+1)
		}
	}
	if bytes.Equal(hc[3], ha[3]) {
		t.Fatal("block 4: different transactions, same app hash")
	}

	// The same transactions at another time: another hash (the time is
	// state: it is recorded).
	d := openTest(t)
	d.FinalizeBlock(1, blockTimeOf(2), blocks[0])
	if _, h := d.Info(); h != nil {
		t.Fatal("finalize alone changed Info")
	}
	_, h := d.FinalizeBlock(1, blockTimeOf(2), blocks[0])
	if bytes.Equal(h, ha[0]) {
		t.Fatal("another block time, same app hash")
	}
}

// TestEmptyBlockKeepsHash: a block without transactions leaves the app
// hash as it was (so an idle chain stops making blocks), and the next
// block with one moves it again.
func TestEmptyBlockKeepsHash(t *testing.T) {
	blocks := scenario(t)
	a := openTest(t)
	_, h1 := a.FinalizeBlock(1, blockTimeOf(1), blocks[0])
	if err := a.Commit(); err != nil {
		t.Fatal(err)
	}
	_, h2 := a.FinalizeBlock(2, blockTimeOf(2), nil)
	if err := a.Commit(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(h1, h2) {
		t.Fatalf("empty block moved the app hash: %x -> %x", h1, h2)
	}
	if height, h := a.Info(); height != 2 || !bytes.Equal(h, h1) {
		t.Fatalf("Info after an empty block: %d %x", height, h)
	}
	_, h3 := a.FinalizeBlock(3, blockTimeOf(3), blocks[1])
	if bytes.Equal(h3, h2) {
		t.Fatal("a block with transactions kept the app hash")
	}
}

func TestPersistence(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	a, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.InitChain(testChain); err != nil {
		t.Fatal(err)
	}
	blocks := scenario(t)
	run(t, a, blocks[:3])
	height, hash := a.Info()
	before := dump(t, a)
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}

	a, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	h2, hash2 := a.Info()
	if h2 != height || !bytes.Equal(hash, hash2) || height != 3 {
		t.Fatalf("after reopen: height %d hash %x, want %d %x", h2, hash2, height, hash)
	}
	if after := dump(t, a); after != before {
		t.Fatalf("state changed across Close/Open:\n%s\n%s", before, after)
	}
	if a.ChainID() != testChain {
		t.Fatalf("chain id %q", a.ChainID())
	}
	if err := a.InitChain("zos-other"); err == nil {
		t.Fatal("InitChain with another chain id accepted")
	}
	// It carries on, and agrees with a ledger that never closed.
	rest := run(t, a, blocks[3:])
	ref := run(t, openTest(t), blocks)
	if !bytes.Equal(rest[len(rest)-1], ref[len(ref)-1]) {
		t.Fatal("a reopened ledger and a continuous one disagree")
	}
}

func TestCrashBeforeCommit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	a, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	a.InitChain(testChain)
	blocks := scenario(t)
	run(t, a, blocks[:2])
	before := dump(t, a)
	_, lost := a.FinalizeBlock(3, blockTimeOf(3), blocks[2])
	if err := a.Close(); err != nil { // the crash: no Commit
		t.Fatal(err)
	}

	a, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if h, _ := a.Info(); h != 2 {
		t.Fatalf("height %d after a crash before commit 3, want 2", h)
	}
	if after := dump(t, a); after != before {
		t.Fatalf("uncommitted block leaked into the state:\n%s\n%s", before, after)
	}
	if err := a.Commit(); err == nil {
		t.Fatal("Commit without FinalizeBlock accepted")
	}
	// The engine replays the block: same results, same hash.
	_, again := a.FinalizeBlock(3, blockTimeOf(3), blocks[2])
	if !bytes.Equal(lost, again) {
		t.Fatal("replayed block gives another app hash")
	}
	// Finalized twice before Commit: the second replaces the first.
	_, again = a.FinalizeBlock(3, blockTimeOf(3), blocks[2])
	if err := a.Commit(); err != nil {
		t.Fatal(err)
	}
	if h, hash := a.Info(); h != 3 || !bytes.Equal(hash, again) {
		t.Fatalf("after replay: height %d", h)
	}
}

func TestNoChainID(t *testing.T) {
	a, err := Open(filepath.Join(t.TempDir(), "ledger.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	tx := scenario(t)[0][0]
	if err := a.CheckTx(tx); !errors.Is(err, ErrChain) {
		t.Fatalf("CheckTx before InitChain: %v", err)
	}
	if err := a.InitChain("bad chain"); err == nil {
		t.Fatal("chain id with a space accepted")
	}
}

// TestRoundTrip: every body type's transaction decodes to itself, and a
// copy of it with any one byte changed is refused or means something else
// that its signature does not cover.
func TestRoundTrip(t *testing.T) {
	for _, blk := range scenario(t) {
		for _, b := range blk {
			tx, err := DecodeTx(b)
			if err != nil {
				t.Fatalf("%s: %v", b, err)
			}
			if err := tx.Validate(); err != nil {
				t.Fatalf("%s: %v", tx.Type(), err)
			}
			enc, err := tx.Encode()
			if err != nil || !bytes.Equal(enc, b) {
				t.Fatalf("%s: re-encoded differently (%v)", tx.Type(), err)
			}
			pub := map[SignerID]string{{Twin: 1}: "alice", {Twin: 2}: "bob", {Twin: 3}: "carol", {Node: 1}: "n1"}
			var k = tx.Signer.Key
			if k == nil {
				p := testKey(pub[tx.Signer]).Public()
				k = &p
			}
			if !tx.VerifySig(*k) {
				t.Fatalf("%s: signature does not verify", tx.Type())
			}
			for i := range b {
				m := bytes.Clone(b)
				m[i] ^= 0x01
				if mt, err := DecodeTx(m); err == nil && mt.VerifySig(*k) {
					t.Fatalf("%s: byte %d changed and the signature still verifies", tx.Type(), i)
				}
			}
		}
	}
}

func TestSpecTooLarge(t *testing.T) {
	d := testSpec(t, specV1)
	s, err := d.Stripped()
	if err != nil {
		t.Fatal(err)
	}
	big := bytes.Replace(s, []byte(`"description":""`), []byte(`"description":"`+string(bytes.Repeat([]byte("x"), MaxSpec))+`"`), 1)
	tx := &Tx{Chain: testChain, Signer: SignerID{Twin: 1}, Nonce: 1, Body: &ContractCreate{Node: 1, Spec: d}}
	o, err := tx.tree(true)
	if err != nil {
		t.Fatal(err)
	}
	o["body"].(obj)["spec"] = raw(big)
	if _, err := DecodeTx(encode(o)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("spec of %d bytes: %v", len(big), err)
	}
}

// TestNodeVerifies: a node rebuilds an active contract from the ledger's
// views and verifies its approvals itself, with the keys in force when it
// became active, even after a signer rotated its key; a view whose
// approvals were tampered with fails.
func TestNodeVerifies(t *testing.T) {
	a := openTest(t)
	blocks := scenario(t)
	run(t, a, blocks[:4]) // active v2, approved by alice and carol
	// carol rotates her key after: her approval still verifies with the
	// key she had when the contract's spec became active.
	run(t, a, [][][]byte{{mustTx(t, Signer{Secret: testKey("carol"), Twin: 3}, 10,
		&TwinRotate{Key: testKey("carol2").Public(), Proof: KeyProof(testKey("carol2"), testChain, TypeTwinRotate, 3, 10)})}})
	var c ContractView
	var twins []TwinView
	get := func(path string, v any) {
		out, err := a.Query(path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(out, v); err != nil {
			t.Fatal(err)
		}
	}
	get("contract/1", &c)
	get("twins", &twins)
	keys := map[uint32]TwinView{}
	for _, tw := range twins {
		keys[tw.ID] = tw
	}
	r, err := c.Verify(keys)
	if err != nil || !r.Met {
		t.Fatalf("node verification of active contract: %v", err)
	}
	if c.Digest != r.Challenge {
		t.Fatal("view digest is not the spec's challenge")
	}
	if c.Since != 4 {
		t.Fatalf("since %d, want 4", c.Since)
	}
	current := c
	current.Since = 0 // verified with the current keys: carol's approval no longer counts
	if _, err := current.Verify(keys); !errors.Is(err, spec.ErrSignature) {
		t.Fatalf("verified with carol's rotated key: %v", err)
	}
	forged := c
	forged.Approvals = []Approval{c.Approvals[0]}
	if _, err := forged.Verify(keys); !errors.Is(err, spec.ErrSignature) {
		t.Fatalf("one approval dropped: %v", err)
	}
	forged.Approvals = append([]Approval{}, c.Approvals...)
	forged.Approvals[1].Sig[0] ^= 1
	if _, err := forged.Verify(keys); !errors.Is(err, spec.ErrSignature) {
		t.Fatalf("tampered approval: %v", err)
	}

	var active []ContractView
	out, err := a.Query("contracts", []byte(`{"node":1,"state":"active"}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(out, &active); err != nil || len(active) != 1 || active[0].ID != 1 {
		t.Fatalf("active contracts of node 1: %s", out)
	}
}

func TestCode(t *testing.T) {
	for _, c := range []struct {
		err  error
		code uint32
	}{
		{nil, CodeOK},
		{refuse(ErrNonce, "x"), CodeNonce},
		{fmt.Errorf("wrapped: %w", refuse(ErrConflict, "x")), CodeConflict},
		{fmt.Errorf("q: %w", ErrNotFound), CodeNotFound},
		{errors.New("other"), CodeMalformed},
	} {
		if got := Code(c.err); got != c.code {
			t.Errorf("Code(%v) = %d, want %d", c.err, got, c.code)
		}
	}
}

// TestConcurrentReads: CheckTx and Query from other goroutines while
// blocks are finalized and committed (run with -race).
func TestConcurrentReads(t *testing.T) {
	a := openTest(t)
	blocks := scenario(t)
	done := make(chan struct{})
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			for {
				select {
				case <-done:
					errs <- nil
					return
				default:
				}
				a.CheckTx(blocks[2][0])
				if _, err := a.Query("contracts", []byte(`{"node":1}`)); err != nil {
					errs <- err
					return
				}
				a.Info()
			}
		}()
	}
	run(t, a, blocks)
	close(done)
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}
