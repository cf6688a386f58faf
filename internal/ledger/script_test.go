package ledger

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"

	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/key"
	"github.com/zosgrid/zos/internal/spec"
)

// TestScripts runs the data-driven scripts in testdata/*.txt (go test
// -run TestScripts -rewrite to rewrite their expected output). Commands:
//
//	key NAME...                      print the keys named (seeded from the name)
//	spec NAME owner=T [require=(T:W[:required],...)] [weight=W] [version=V] [desc=D] [pad=N]
//	tx SIGNER TYPE [k=v...]          queue a transaction; prints CheckTx's verdict
//	tx raw [size=N]                  queue the input (or N bytes of junk) as a transaction
//	resend                           queue the last transaction again
//	block                            finalize and commit the queue as one block
//	finalize | reopen                finalize without commit; close and open the file
//	contract ID                      one line about a contract
//	query PATH                       the query's JSON (data: the input)
//
// SIGNER is NAME (the twin created by key NAME, signing with it),
// NAME@KEY (that twin, signing with key KEY) or node:NAME (the node whose
// key is NAME). T names a twin by NAME or number.
func TestScripts(t *testing.T) {
	datadriven.Walk(t, "testdata", func(t *testing.T, path string) {
		if filepath.Ext(path) != ".txt" {
			t.Skip()
		}
		h := newHarness(t)
		datadriven.RunTest(t, path, h.run)
	})
}

type queued struct {
	label string
	tx    []byte
	// onEvent learns ids from events: the harness names twins and nodes.
	onEvent func(Event)
}

type harness struct {
	path   string
	app    *App
	chain  string
	twins  map[string]uint32
	nodes  map[string]uint32
	nonces map[string]uint64
	specs  map[string]*spec.Deployment
	queue  []queued
	last   queued
	height int64
}

func newHarness(t *testing.T) *harness {
	h := &harness{path: filepath.Join(t.TempDir(), "ledger.db"), chain: "zos-test",
		twins: map[string]uint32{}, nodes: map[string]uint32{}, nonces: map[string]uint64{},
		specs: map[string]*spec.Deployment{}}
	h.open(t)
	if err := h.app.InitChain(h.chain); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.app.Close() })
	return h
}

func (h *harness) open(t testing.TB) {
	a, err := Open(h.path)
	if err != nil {
		t.Fatal(err)
	}
	h.app = a
}

func testKey(name string) key.Secret {
	s := digest.Sum([]byte("ledger test key " + name))
	return key.FromSeed(s[:])
}

func (h *harness) run(t *testing.T, d *datadriven.TestData) string {
	switch d.Cmd {
	case "key":
		var b strings.Builder
		for _, a := range d.CmdArgs {
			fmt.Fprintf(&b, "%s %s\n", a.Key, testKey(a.Key).Public())
		}
		return b.String()
	case "spec":
		return h.spec(t, d)
	case "tx":
		return h.tx(t, d)
	case "resend":
		h.queue = append(h.queue, h.last)
		return h.check(h.last.tx)
	case "block", "finalize":
		return h.block(t, d.Cmd == "block")
	case "reopen":
		if err := h.app.Close(); err != nil {
			t.Fatal(err)
		}
		h.open(t)
		height, hash := h.app.Info()
		h.height = height
		return fmt.Sprintf("height %d app hash %x\n", height, short(hash))
	case "contract":
		id, _ := strconv.ParseUint(d.CmdArgs[0].Key, 10, 64)
		c, err := h.app.Contract(id)
		if err != nil {
			return err.Error() + "\n"
		}
		return summary(c)
	case "query":
		out, err := h.app.Query(d.CmdArgs[0].Key, []byte(d.Input))
		if err != nil {
			return "error: " + err.Error() + "\n"
		}
		var b bytes.Buffer
		if err := json.Indent(&b, out, "", "  "); err != nil {
			t.Fatal(err)
		}
		return b.String() + "\n"
	}
	d.Fatalf(t, "unknown command %s", d.Cmd)
	return ""
}

func short(b []byte) []byte {
	if len(b) > 8 {
		return b[:8]
	}
	return b
}

func summary(c *ContractView) string {
	twins := func(as []Approval) []uint32 {
		var out []uint32
		for _, a := range as {
			out = append(out, a.Twin)
		}
		return out
	}
	s := fmt.Sprintf("contract %d: %s v%d node %d owner %d approvals %v since %d", c.ID, c.State, c.Version,
		c.Node, c.Owner, twins(c.Approvals), c.Since)
	if len(c.CancelVotes) > 0 {
		s += fmt.Sprintf(" cancel votes %v", c.CancelVotes)
	}
	if r := c.Revision; r != nil {
		s += fmt.Sprintf(" revision v%d approvals %v", r.Version, twins(r.Approvals))
	}
	if r := c.Report; r != nil {
		s += fmt.Sprintf(" report %s v%d %q at %d", r.State, r.Version, r.Detail, r.At.Height)
	}
	return s + "\n"
}

// twinID resolves a twin by name or number.
func (h *harness) twinID(t testing.TB, s string) uint32 {
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		return uint32(n)
	}
	id, ok := h.twins[s]
	if !ok {
		t.Fatalf("no twin %s", s)
	}
	return id
}

func (h *harness) spec(t *testing.T, d *datadriven.TestData) string {
	name := d.CmdArgs[0].Key
	var owner, desc string
	version, weight, pad := 1, 0, 0
	d.ScanArgs(t, "owner", &owner)
	d.MaybeScanArgs(t, "version", &version)
	d.MaybeScanArgs(t, "weight", &weight)
	d.MaybeScanArgs(t, "desc", &desc)
	d.MaybeScanArgs(t, "pad", &pad)
	var y strings.Builder
	fmt.Fprintf(&y, "version: %d\nowner: %d\ndescription: %q\nworkloads:\n", version, h.twinID(t, owner), desc)
	y.WriteString("  - {name: app, kind: container, container: {image: {digest: \"1111111111111111111111111111111111111111111111111111111111111111\", url: \"https://example.org/app.fl\"}}}\n")
	for i := range pad { // containers of 8 args of 4000 bytes: 32 KB each
		fmt.Fprintf(&y, "  - {name: pad%d, kind: container, container: {image: {digest: \"1111111111111111111111111111111111111111111111111111111111111111\", url: \"https://example.org/app.fl\"}, args: [", i)
		for j := range 8 {
			if j > 0 {
				y.WriteString(", ")
			}
			y.WriteString(strings.Repeat("x", 4000))
		}
		y.WriteString("]}}\n")
	}
	if a, ok := d.Arg("require"); ok {
		y.WriteString("signature_requirement:\n  requests:\n")
		for _, r := range a.Vals {
			f := strings.Split(r, ":")
			fmt.Fprintf(&y, "    - {twin: %d, weight: %s, required: %v}\n", h.twinID(t, f[0]), f[1], len(f) > 2 && f[2] == "required")
		}
		fmt.Fprintf(&y, "  weight_required: %d\n", weight)
	}
	dep, err := spec.Parse([]byte(y.String()))
	if err != nil {
		return "error: " + err.Error() + "\n"
	}
	h.specs[name] = dep
	ch, _ := dep.Challenge()
	return fmt.Sprintf("spec %s v%d challenge %s\n", name, dep.Version, ch.Short())
}

// signer resolves SIGNER: the ledger signer, the harness's nonce label
// and the name of the twin (for twin.create) or node.
func (h *harness) signer(t testing.TB, s string) (Signer, string) {
	if n, ok := strings.CutPrefix(s, "node:"); ok {
		return Signer{Secret: testKey(n), Node: h.nodes[n]}, s
	}
	name, keyName, ok := strings.Cut(s, "@")
	if !ok {
		keyName = name
	}
	return Signer{Secret: testKey(keyName), Twin: h.twins[name]}, name
}

// sign makes twin NAME[@KEY]'s signature of d.
func (h *harness) sign(t testing.TB, d *spec.Deployment, s string) spec.Signature {
	name, keyName, ok := strings.Cut(s, "@")
	if !ok {
		keyName = name
	}
	g := spec.Signature{Twin: h.twinID(t, name), Key: testKey(keyName).Public()}
	ch, err := d.Challenge()
	if err != nil {
		t.Fatal(err)
	}
	copy(g.Sig[:], testKey(keyName).Sign(spec.Domain, ch[:]))
	return g
}

func (h *harness) tx(t *testing.T, d *datadriven.TestData) string {
	who, typ := d.CmdArgs[0].Key, ""
	if who == "raw" {
		b := []byte(strings.TrimSpace(d.Input))
		var size int
		if d.MaybeScanArgs(t, "size", &size) {
			b = bytes.Repeat([]byte("{"), size)
		}
		h.last = queued{label: "raw", tx: b}
		h.queue = append(h.queue, h.last)
		return h.check(b)
	}
	if len(d.CmdArgs) < 2 {
		d.Fatalf(t, "tx SIGNER TYPE")
	}
	typ = d.CmdArgs[1].Key
	s, label := h.signer(t, who)
	if typ == TypeTwinCreate {
		s.Twin = 0 // signed by the key itself
	} else if s.Node == 0 && s.Twin == 0 && typ != TypeTwinCreate {
		s.Twin = 1 << 31 // a twin that does not exist
	}
	var as uint32
	if d.MaybeScanArgs(t, "as", &as) {
		s.Twin = as
	}
	nonce := h.nonces[label] + 1
	d.MaybeScanArgs(t, "nonce", &nonce)
	h.nonces[label] = max(h.nonces[label], nonce)
	chain := h.chain
	d.MaybeScanArgs(t, "chain", &chain)
	str := func(k, def string) string { d.MaybeScanArgs(t, k, &def); return def }
	num := func(k string, def uint64) uint64 { d.MaybeScanArgs(t, k, &def); return def }
	dep := func() *spec.Deployment {
		var name string
		d.ScanArgs(t, "spec", &name)
		dd, ok := h.specs[name]
		if !ok {
			d.Fatalf(t, "no spec %s", name)
		}
		c := *dd
		c.Signatures = nil
		if a, ok := d.Arg("sigs"); ok {
			for _, v := range a.Vals {
				c.Signatures = append(c.Signatures, h.sign(t, &c, v))
			}
		}
		return &c
	}
	capacity := func() Capacity {
		return Capacity{CPU: num("cpu", 4000), Memory: num("memory", 8<<30), Disk: num("disk", 100<<30)}
	}
	q := queued{label: who + " " + typ}
	var body Body
	switch typ {
	case TypeTwinCreate:
		body = &TwinCreate{}
		q.onEvent = func(e Event) {
			if e.Type == "twin.created" {
				id, _ := strconv.ParseUint(e.ID, 10, 32)
				h.twins[label] = uint32(id)
			}
		}
	case TypeTwinRotate:
		nk := testKey(str("new", ""))
		body = &TwinRotate{Key: nk.Public(), Proof: KeyProof(testKey(str("proof", str("new", ""))), chain, typ, s.Twin, num("proofnonce", nonce))}
	case TypeNodeRegister:
		name := str("key", "")
		body = &NodeRegister{Key: testKey(name).Public(), Proof: KeyProof(testKey(str("proof", name)), chain, typ, s.Twin, num("proofnonce", nonce)),
			Capacity: capacity(), Endpoint: str("endpoint", "http://"+name+".example.org:8070")}
		q.onEvent = func(e Event) {
			if e.Type == "node.registered" {
				id, _ := strconv.ParseUint(e.ID, 10, 32)
				h.nodes[name] = uint32(id)
			}
		}
	case TypeNodeUpdate:
		name := str("node", "")
		body = &NodeUpdate{Node: h.nodes[name], Capacity: capacity(), Endpoint: str("endpoint", "http://"+name+".example.org:8070")}
	case TypeNodeReport:
		body = &NodeReport{Contract: num("contract", 0), State: str("state", ReportRunning), Detail: strings.TrimSpace(d.Input), Version: num("version", 1)}
	case TypeContractCreate:
		body = &ContractCreate{Node: h.nodes[str("node", "")], Spec: dep()}
	case TypeContractUpdate:
		body = &ContractUpdate{Contract: num("contract", 0), Spec: dep()}
	case TypeContractApprove:
		c := *dep()
		approver := str("approval", who)
		body = &ContractApprove{Contract: num("contract", 0), Approval: h.sign(t, &c, approver)}
	case TypeContractCancel:
		body = &ContractCancel{Contract: num("contract", 0)}
	default:
		d.Fatalf(t, "unknown type %s", typ)
	}
	tx, err := signTx(chain, s, nonce, body)
	if err != nil {
		return "build error: " + err.Error() + "\n"
	}
	b, err := tx.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if d.HasArg("tamper") { // change the nonce after signing
		b = bytes.Replace(b, []byte(fmt.Sprintf(`"nonce":%d`, nonce)), []byte(fmt.Sprintf(`"nonce":%d`, nonce+1000)), 1)
	}
	q.tx = b
	h.last = q
	h.queue = append(h.queue, q)
	return h.check(b)
}

func (h *harness) check(b []byte) string {
	if err := h.app.CheckTx(b); err != nil {
		return fmt.Sprintf("check: code %d: %s\n", Code(err), oneLine(err.Error()))
	}
	return "check: ok\n"
}

func (h *harness) block(t *testing.T, commit bool) string {
	h.height++
	when := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(h.height) * time.Second)
	txs := make([][]byte, len(h.queue))
	for i, q := range h.queue {
		txs[i] = q.tx
	}
	results, hash := h.app.FinalizeBlock(h.height, when, txs)
	var b strings.Builder
	fmt.Fprintf(&b, "block %d\n", h.height)
	for i, r := range results {
		q := h.queue[i]
		if r.Code != 0 {
			fmt.Fprintf(&b, "  %s: code %d: %s\n", q.label, r.Code, r.Log)
			continue
		}
		var ev []string
		for _, e := range r.Events {
			ev = append(ev, e.Type+" "+e.ID)
			if q.onEvent != nil {
				q.onEvent(e)
			}
		}
		fmt.Fprintf(&b, "  %s: ok: %s\n", q.label, strings.Join(ev, ", "))
	}
	h.queue = nil
	if commit {
		if err := h.app.Commit(); err != nil {
			t.Fatal(err)
		}
	} else {
		h.height-- // the block is lost unless committed
	}
	fmt.Fprintf(&b, "app hash %x\n", short(hash))
	return b.String()
}
