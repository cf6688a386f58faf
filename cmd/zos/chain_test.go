package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/zosgrid/zos/internal/ledger"
	"github.com/zosgrid/zos/internal/webtest"
)

// chainRun is a `zos chain run` started by a test.
type chainRun struct {
	url    string
	cmd    *exec.Cmd
	stderr *bytes.Buffer
	done   chan error
}

// startChainRun runs `zos chain run` on home with its API on a free port,
// and waits until the API answers. Cleanup stops it with SIGTERM and
// checks that it exits cleanly.
func startChainRun(t *testing.T, home string) *chainRun {
	t.Helper()
	addr := freeAddr(t)
	r := &chainRun{url: "http://" + addr, stderr: &bytes.Buffer{}, done: make(chan error, 1)}
	r.cmd = exec.Command(zosBin, "chain", "run", "--home", home, "--listen", addr,
		"--p2p", "tcp://127.0.0.1:0", "--rpc", "none", "--log-level", "info")
	r.cmd.Stderr = r.stderr
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { r.done <- r.cmd.Wait() }()
	t.Cleanup(func() { r.stop(t) })
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(r.url + "/v1/info")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return r
			}
		}
		select {
		case err := <-r.done:
			r.done <- err
			t.Fatalf("zos chain run exited: %v\n%s", err, r.stderr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("zos chain run: no API after 30 s\n%s", r.stderr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (r *chainRun) stop(t *testing.T) {
	t.Helper()
	if r.cmd.ProcessState != nil {
		return
	}
	r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("zos chain run after SIGTERM: %v\n%s", err, r.stderr)
		} else if !strings.Contains(r.stderr.String(), "ledger engine stopped") {
			t.Errorf("zos chain run did not stop its engine:\n%s", r.stderr)
		}
	case <-time.After(30 * time.Second):
		r.cmd.Process.Kill()
		t.Errorf("zos chain run: still running 30 s after SIGTERM\n%s", r.stderr)
	}
}

const chainTestSpec = `version: 1
owner: 1
description: needs both twins
workloads:
  - {name: app, kind: container, container: {image: {digest: "1111111111111111111111111111111111111111111111111111111111111111", url: "https://example.org/app.fl"}}}
signature_requirement:
  requests: [{twin: 1, weight: 1, required: true}, {twin: 2, weight: 1, required: true}]
  weight_required: 2
`

// TestChainCLI runs the zos binary: a chain initialised and run in a temp
// home, two twins, a node, a contract that needs both twins going from
// pending to active, a cancel by an unlisted twin refused, a co-signer's
// cancel only a vote, and the page listing it in Chromium.
func TestChainCLI(t *testing.T) {
	dir := t.TempDir()
	home := filepath.Join(dir, "chain")
	out := mustRun(t, "chain", "init", "--home", home, "--chain-id", "zos-cli", "--block-time", "100ms", "--round-timeout", "400ms")
	if !strings.Contains(out, "chain zos-cli initialised") {
		t.Fatalf("init: %s", out)
	}
	// Idempotent; another chain id for the same home is refused.
	if out := mustRun(t, "chain", "init", "--home", home); !strings.Contains(out, "zos-cli already initialised") {
		t.Fatalf("second init: %s", out)
	}
	if _, errs, code := run(t, "chain", "init", "--home", home, "--chain-id", "other"); code == 0 {
		t.Fatalf("init for another chain: exit 0 %s", errs)
	}
	if _, errs, code := run(t, "chain", "run", "--home", filepath.Join(dir, "nothing")); code != exitUsage || !strings.Contains(errs, "zos chain init") {
		t.Fatalf("run without init: exit %d %s", code, errs)
	}

	ch := startChainRun(t, home)
	c := func(args ...string) []string { return append(append([]string{"chain"}, args...), "--chain", ch.url) }

	var st struct {
		Chain      string `json:"chain"`
		Validators []any  `json:"validators"`
	}
	if err := json.Unmarshal([]byte(mustRun(t, c("status", "--json")...)), &st); err != nil || st.Chain != "zos-cli" || len(st.Validators) != 1 {
		t.Fatalf("status: %+v %v", st, err)
	}

	keys := map[string]string{}
	for _, n := range []string{"alice", "bob", "carol", "node"} {
		keys[n] = filepath.Join(dir, n+".key")
		mustRun(t, "key", "gen", keys[n])
	}
	for i, n := range []string{"alice", "bob", "carol"} {
		if id := strings.TrimSpace(mustRun(t, c("twin", "create", "--key", keys[n])...)); id != fmt.Sprint(i+1) {
			t.Fatalf("twin create %s: %q", n, id)
		}
	}
	// A key is a twin's only once.
	if _, errs, code := run(t, c("twin", "create", "--key", keys["alice"])...); code == 0 || !strings.Contains(errs, "refused") {
		t.Fatalf("alice's key again: exit %d %s", code, errs)
	}
	node := strings.TrimSpace(mustRun(t, c("node", "register", "--key", keys["alice"], "--twin", "1", "--node-key", keys["node"],
		"--endpoint", "http://127.0.0.1:8070", "--cpu", "4", "--memory", "8G", "--disk", "100G")...))
	if node != "1" {
		t.Fatalf("node register: %q", node)
	}
	if out := mustRun(t, c("nodes")...); !strings.Contains(out, "http://127.0.0.1:8070") || !strings.Contains(out, "4000m") {
		t.Fatalf("nodes: %s", out)
	}

	// The spec needs alice and bob; alice signs it and creates the contract.
	sp := filepath.Join(dir, "app.yaml")
	if err := os.WriteFile(sp, []byte(chainTestSpec), 0o644); err != nil {
		t.Fatal(err)
	}
	mustRun(t, "sign", sp, "--key", keys["alice"], "--twin", "1")
	id := strings.TrimSpace(mustRun(t, c("contract", "create", sp, "--node", "1", "--key", keys["alice"])...))
	if id != "1" {
		t.Fatalf("contract create: %q", id)
	}
	show := func() (ledger.ContractView, approvalsJSON) {
		t.Helper()
		var j struct {
			Contract  ledger.ContractView `json:"contract"`
			Approvals approvalsJSON       `json:"approvals"`
		}
		if err := json.Unmarshal([]byte(mustRun(t, c("contract", "show", id, "--json")...)), &j); err != nil {
			t.Fatal(err)
		}
		return j.Contract, j.Approvals
	}
	cv, ap := show()
	if cv.State != ledger.StatePending || ap.Met || ap.Weight != 1 || ap.WeightRequired != 2 || len(ap.Missing) != 1 || ap.Missing[0] != 2 {
		t.Fatalf("after create: %s %+v", cv.State, ap)
	}
	if out := mustRun(t, c("contract", "show", id)...); !strings.Contains(out, "missing required: twin 2") || !strings.Contains(out, "weight 1 of 2 required, not met") {
		t.Fatalf("show: %s", out)
	}

	// Bob approves with his own key: active. Carol, unlisted, cannot.
	if _, errs, code := run(t, c("contract", "approve", id, "--key", keys["carol"], "--twin", "3")...); code == 0 {
		t.Fatalf("approve by an unlisted twin: exit 0 %s", errs)
	}
	if _, errs, code := run(t, c("contract", "approve", id, "--key", keys["carol"], "--twin", "2")...); code != exitSignature {
		t.Fatalf("approve as bob with carol's key: exit %d %s", code, errs)
	}
	_, errs, _ := run(t, c("contract", "approve", id, "--key", keys["bob"], "--twin", "2")...)
	if !strings.Contains(errs, "contract 1: active") {
		t.Fatalf("approve: %s", errs)
	}
	cv, ap = show()
	if cv.State != ledger.StateActive || !ap.Met || ap.Weight != 2 || len(ap.Missing) != 0 {
		t.Fatalf("after approval: %s %+v", cv.State, ap)
	}
	if out := mustRun(t, c("contracts", "--state", "active", "--node", "1")...); !strings.Contains(out, "active") || !strings.Contains(out, "2/2") {
		t.Fatalf("contracts: %s", out)
	}

	// Nobody alone cancels an active contract that needed two: carol is
	// refused outright, bob's cancel is a vote and it stays active.
	_, errs, code := run(t, c("contract", "cancel", id, "--key", keys["carol"], "--twin", "3")...)
	if code == 0 || !strings.Contains(errs, "code 6, denied") || strings.Count(strings.TrimSpace(errs), "\n") != 0 {
		t.Fatalf("cancel by carol: exit %d %q", code, errs)
	}
	mustRun(t, c("contract", "cancel", id, "--key", keys["bob"], "--twin", "2")...)
	if cv, _ = show(); cv.State != ledger.StateActive || len(cv.CancelVotes) != 1 || cv.CancelVotes[0] != 2 {
		t.Fatalf("after bob's cancel vote: %s %v", cv.State, cv.CancelVotes)
	}

	// Missing objects and bad input.
	if _, errs, code := run(t, c("contract", "show", "99")...); code != exitFail || !strings.Contains(errs, "not found") {
		t.Fatalf("show 99: exit %d %s", code, errs)
	}
	if _, _, code := run(t, c("contract", "show", "x")...); code != exitUsage {
		t.Fatalf("show x: exit %d", code)
	}
	if _, errs, code := run(t, "chain", "status", "--chain", "http://"+freeAddr(t)); code != exitFail || !strings.Contains(errs, "zos chain run") {
		t.Fatalf("status of nobody: exit %d %s", code, errs)
	}

	// The page lists it.
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Log("chromium is not installed: the page is not checked in a browser")
		return
	}
	home1 := webtest.Run(t, bin, "--dump-dom", ch.url+"/")
	for _, want := range []string{`href="/contracts/1"`, ">active<", "2 / 2", "http://127.0.0.1:8070", "chain <code>zos-cli</code>"} {
		if !strings.Contains(home1, want) {
			t.Fatalf("page lacks %q:\n%s", want, home1)
		}
	}
	page := webtest.Run(t, bin, "--dump-dom", ch.url+"/contracts/1")
	for _, want := range []string{"Contract 1", "requirement met", "cancel votes", "needs both twins"} {
		if !strings.Contains(page, want) {
			t.Fatalf("contract page lacks %q:\n%s", want, page)
		}
	}
}
