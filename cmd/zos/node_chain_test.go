//go:build linux

package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/zosgrid/zos/internal/ledger"
	"github.com/zosgrid/zos/internal/node/nodeclient"
)

// chainPrefix names this test's agent's links, namespaces, nftables table
// and cgroup parent: apart from the other e2e tests' and benchmarks'.
const chainPrefix = "zch"

// TestNodeChainE2E runs a validator (zos chain init/run), a hub and a node
// watching the chain, as root, with the real binary. Twins alice (1) and
// bob (2) and the node are registered on the ledger; a contract needing
// both twins' approvals does not run after one approval and runs within
// seconds of the second (the time from the last approval to running is
// logged: the benchmark figure); the node's "running" report is on
// the ledger; the contract's owner reads it through the node API although
// the node's twins file is empty; cancel votes meeting the requirement
// remove it. Then the node's data directory is wiped (agent stopped, its
// processes and mounts gone) and an agent started with the same key on the
// empty directory rebuilds the still active contract's workloads from the
// ledger alone.
func TestNodeChainE2E(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the node runs containers, mounts and networks: run as root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("/dev/fuse is absent: the node mounts images with FUSE")
	}
	src := corpusMin(t, "runs a validator, a hub, a node and containers of the corpus tree min")
	for _, tool := range []string{"mkfs.ext4", "nft", "losetup", "ip", "mount"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed (.ci/deps.sh installs the node's tools)", tool)
		}
	}
	if pids := otherAgents(""); len(pids) > 0 {
		t.Skipf("another zos node agent runs on this machine (pids %v): a benchmark or another e2e test; run this one alone", pids)
	}
	start := time.Now()
	bin := seccompZos(t)
	dir, err := os.MkdirTemp("", "zos-chain-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	mark := make([]byte, 6)
	rand.Read(mark)
	n := &e2eNode{
		t: t, bin: bin, data: filepath.Join(dir, "node"), log: filepath.Join(dir, "agent.log"),
		api: freeAddr(t), gw: freeAddr(t), marker: "zos-chain-e2e-" + hex.EncodeToString(mark),
	}
	nodeKey := filepath.Join(dir, "node.key") // outside the data directory: it survives the wipe
	chainAPI := "http://" + freeAddr(t)
	t.Cleanup(func() {
		n.stop()
		chainSweep(n)
		if left := mountsUnder(dir); len(left) > 0 {
			t.Errorf("mounts left under %s after the sweep: %v", dir, left)
			return
		}
		if t.Failed() {
			t.Logf("agent log (kept in %s), last lines:\n%s", n.log, tailFile(n.log, 8000))
			os.RemoveAll(n.data)
			return
		}
		os.RemoveAll(dir)
	})
	ctx := context.Background()

	// The validator.
	home := filepath.Join(dir, "chain")
	n.mustZos("chain", "init", "--home", home, "--chain-id", "zos-chain-e2e", "--p2p", "tcp://"+freeAddr(t), "--rpc", "none")
	chainLog := filepath.Join(dir, "chain.log")
	lf, err := os.Create(chainLog)
	if err != nil {
		t.Fatal(err)
	}
	chain := exec.Command(bin, "chain", "run", "--home", home, "--listen", strings.TrimPrefix(chainAPI, "http://"), "--log-level", "warn")
	chain.Stdout, chain.Stderr = lf, lf
	if err := chain.Start(); err != nil {
		t.Fatal(err)
	}
	lf.Close()
	t.Cleanup(func() {
		chain.Process.Signal(syscall.SIGTERM)
		chain.Wait()
		if t.Failed() {
			t.Logf("chain log, last lines:\n%s", tailFile(chainLog, 3000))
		}
	})
	n.waitFor("the chain API", 60*time.Second, func() string {
		if _, _, code := n.zos("chain", "status", "--chain", chainAPI); code != 0 {
			return "zos chain status fails"
		}
		return ""
	})
	cz := func(args ...string) string { // a zos chain command on this chain
		return strings.TrimSpace(n.mustZos(append(append([]string{"chain"}, args...), "--chain", chainAPI)...))
	}

	// Twins, the image on a hub.
	alice, bob := filepath.Join(dir, "alice.key"), filepath.Join(dir, "bob.key")
	n.mustZos("key", "gen", alice)
	n.mustZos("key", "gen", bob)
	if id := cz("twin", "create", "--key", alice); id != "1" {
		t.Fatalf("alice is twin %s", id)
	}
	if id := cz("twin", "create", "--key", bob); id != "2" {
		t.Fatalf("bob is twin %s", id)
	}
	hub := startHubServe(t)
	n.mustZos("hub", "register", "alice", "--hub", hub, "--key", alice)
	fl := filepath.Join(dir, "min.fl")
	out := n.mustZos("flist", "pack", src, "-o", fl, "--store", hub+"/chunks", "--key", alice, "--json")
	var sum struct{ Digest string }
	if err := json.Unmarshal([]byte(out), &sum); err != nil || len(sum.Digest) != 64 {
		t.Fatalf("pack --json: %v: %s", err, out)
	}
	n.mustZos("hub", "push", fl, "alice/min:chain", "--hub", hub, "--key", alice)
	t.Logf("chain up, twins registered, image packed and pushed at %s", time.Since(start).Round(time.Millisecond))

	// The agent, before its node is registered: it says so once.
	chainAgent(n, nodeKey, chainAPI)
	n.waitFor("the 'not registered' line", 20*time.Second, func() string {
		if strings.Contains(tailFile(n.log, 1<<20), "not registered on the ledger") {
			return ""
		}
		return "not in the log yet"
	})
	if id := cz("node", "register", "--key", alice, "--twin", "1", "--node-key", nodeKey, "--endpoint", n.url(),
		"--cpu", "2", "--memory", "4G", "--disk", "100G"); id != "1" {
		t.Fatalf("node %s", id)
	}

	image := map[string]any{"digest": sum.Digest, "hub": hub, "ref": "alice/min:chain"}
	sleeper := []string{"/usr/bin/perl", "-e", `$| = 1; $SIG{TERM} = sub { exit 0 }; print "up\n"; sleep 1 while 1;`, n.marker}
	both := map[string]any{
		"requests": []any{
			map[string]any{"twin": 1, "weight": 1, "required": true},
			map[string]any{"twin": 2, "weight": 1, "required": true},
		},
		"weight_required": 2,
	}
	specFile := func(name string, s map[string]any) string {
		b, _ := json.MarshalIndent(s, "", "  ")
		p := filepath.Join(dir, name+".json")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// Contract 1: both twins must approve; created unsigned.
	c1 := specFile("c1", map[string]any{
		"version": 1, "owner": 1, "description": "chain e2e: two signers",
		"workloads": []any{
			map[string]any{"name": "net", "kind": "network", "network": map[string]any{"subnet": "10.30.0.0/24"}},
			map[string]any{"name": "app", "kind": "container", "container": map[string]any{
				"image": image, "entrypoint": sleeper, "memory": "64MiB",
				"networks": []any{map[string]any{"network": "net"}},
			}},
		},
		"signature_requirement": both,
	})
	if id := cz("contract", "create", c1, "--node", "1", "--key", alice); id != "1" {
		t.Fatalf("contract %s", id)
	}
	ca := n.client(alice)
	status := func(id uint64) (nodeclient.Status, error) { return ca.Get(ctx, id) }

	cz("contract", "approve", "1", "--key", alice, "--twin", "1")
	time.Sleep(3 * time.Second) // three polls of the node
	if got := contractOf(t, n, chainAPI, 1); got.State != ledger.StatePending {
		t.Fatalf("after one approval: contract %s", got.State)
	}
	if s, err := status(1); err == nil {
		t.Fatalf("after one approval the node has deployment 1: %+v", s)
	}

	t0 := time.Now()
	cz("contract", "approve", "1", "--key", bob, "--twin", "2")
	committed := time.Now()
	var ranAt time.Time
	if !n.waitFor("contract 1 running after its last approval", 60*time.Second, func() string {
		s, err := status(1)
		if err != nil {
			return err.Error()
		}
		if why := running(s); why != "" {
			return why
		}
		ranAt = time.Now()
		return ""
	}) {
		t.FailNow()
	}
	// The node's own "started" record times the start more finely than
	// polling its API (same machine, same clock).
	startedAt := ranAt
	for _, e := range n.events(1, alice) {
		if e.Kind == "started" {
			startedAt = e.Time
		}
	}
	t.Logf("BENCH last approval -> running: container started %s after the approval's commit was acknowledged (%s after sending it; the commit took %s); the API showed it running %s after the commit",
		startedAt.Sub(committed).Round(time.Millisecond), startedAt.Sub(t0).Round(time.Millisecond), committed.Sub(t0).Round(time.Millisecond), ranAt.Sub(committed).Round(time.Millisecond))
	n.containerIDs = append(n.containerIDs, "d1-app")
	n.waitFor("the node's running report on the ledger", 20*time.Second, func() string {
		c := contractOf(t, n, chainAPI, 1)
		if c.Report == nil || c.Report.State != ledger.ReportRunning || c.Report.Version != 1 {
			return fmt.Sprintf("report %+v", c.Report)
		}
		return ""
	})
	if ev := n.events(1, alice); !hasEvent(ev, "ledger-accepted", "contract 1 on zos-chain-e2e") || !hasEvent(ev, "started", "") {
		t.Errorf("events %+v", ev)
	}
	if err := ca.Delete(ctx, 1); err == nil || !strings.Contains(err.Error(), "cancel it on the ledger") {
		t.Errorf("delete of a ledger deployment through the API: %v", err)
	}

	// Contract 2: alice alone; active at once, it stays through the wipe.
	c2 := specFile("c2", map[string]any{
		"version": 1, "owner": 1, "description": "chain e2e: survives a wiped node",
		"workloads": []any{map[string]any{"name": "keep", "kind": "container", "container": map[string]any{
			"image": image, "entrypoint": sleeper, "memory": "64MiB"}}},
	})
	n.mustZos("sign", c2, "--key", alice, "--twin", "1")
	if id := cz("contract", "create", c2, "--node", "1", "--key", alice); id != "2" {
		t.Fatalf("contract %s", id)
	}
	n.waitFor("contract 2 running", 60*time.Second, func() string {
		s, err := status(2)
		if err != nil {
			return err.Error()
		}
		return running(s)
	})
	n.containerIDs = append(n.containerIDs, "d2-keep")

	// Cancel contract 1: alice's vote alone does not meet the requirement.
	cz("contract", "cancel", "1", "--key", alice, "--twin", "1")
	time.Sleep(2 * time.Second)
	if s, err := status(1); err != nil || s.State != nodeclient.StateActive {
		t.Fatalf("after one cancel vote: %+v, %v", s, err)
	}
	cz("contract", "cancel", "1", "--key", bob, "--twin", "2")
	cancelled := time.Now()
	n.waitFor("contract 1 removed", 30*time.Second, func() string {
		s, err := status(1)
		if err != nil {
			return err.Error()
		}
		if s.State != nodeclient.StateDeleted {
			return "state " + s.State
		}
		return ""
	})
	t.Logf("contract 1 removed %s after its cancel committed", time.Since(cancelled).Round(time.Millisecond))
	n.waitFor("the node's removed report on the ledger", 20*time.Second, func() string {
		c := contractOf(t, n, chainAPI, 1)
		if c.State != ledger.StateCancelled || c.Report == nil || c.Report.State != ledger.ReportRemoved {
			return fmt.Sprintf("%s, report %+v", c.State, c.Report)
		}
		return ""
	})
	if procs := n.procs(); len(procs) == 0 {
		t.Fatal("contract 2's container and its image server are gone too")
	}

	// Wipe: the agent stops, the machine loses the node's processes and
	// mounts, the data directory goes. Same key, empty directory.
	n.stop()
	chainSweep(n)
	if err := os.RemoveAll(n.data); err != nil {
		t.Fatal(err)
	}
	wiped := time.Now()
	chainAgent(n, nodeKey, chainAPI)
	n.waitFor("contract 2 rebuilt on the wiped node", 90*time.Second, func() string {
		list, err := ca.List(ctx)
		if err != nil {
			return err.Error()
		}
		if len(list) != 1 {
			return fmt.Sprintf("%d deployments", len(list))
		}
		if w := workload(list[0], "keep"); w.State != nodeclient.WorkloadRunning {
			return fmt.Sprintf("deployment %d: %+v", list[0].ID, list[0].Workloads)
		}
		return ""
	})
	t.Logf("BENCH wiped node -> contract 2 running again: %s (image fetched from the hub again)", time.Since(wiped).Round(time.Millisecond))
	n.containerIDs = append(n.containerIDs, "d1-keep")

	// The end: cancel contract 2 (alice's vote meets its requirement); the
	// node removes everything.
	cz("contract", "cancel", "2", "--key", alice, "--twin", "1")
	n.waitFor("contract 2 removed", 30*time.Second, func() string {
		if left := n.procs(); len(left) > 0 {
			return fmt.Sprintf("processes %v", left)
		}
		if m := mountsUnder(n.data); len(m) > 0 {
			return fmt.Sprintf("mounts %v", m)
		}
		return ""
	})
	n.waitFor("the removed report of contract 2", 20*time.Second, func() string {
		if c := contractOf(t, n, chainAPI, 2); c.Report == nil || c.Report.State != ledger.ReportRemoved {
			return fmt.Sprintf("report %+v", c.Report)
		}
		return ""
	})
	n.stop()
	if hist := n.mustZos("node", "history", "--data", n.data, "--key", nodeKey); !strings.Contains(hist, "chain verified") {
		t.Errorf("node history: %s", hist)
	}
	if l := strings.Count(tailFile(n.log, 1<<22), "not registered on the ledger"); l != 1 {
		t.Errorf("%d 'not registered' lines, want 1", l)
	}
	if testing.Verbose() { // what the watcher said, and every warning
		var lines []string
		for _, l := range strings.Split(tailFile(n.log, 1<<22), "\n") {
			if strings.Contains(l, `"part":"ledger"`) || strings.Contains(l, `"level":"WARN"`) || strings.Contains(l, `"level":"ERROR"`) {
				lines = append(lines, l)
			}
		}
		t.Logf("agent log, ledger lines and warnings:\n%s", strings.Join(lines, "\n"))
	}
	t.Logf("done at %s", time.Since(start).Round(time.Millisecond))
}

// chainAgent starts `zos node run` watching chain, with the node key kept
// outside the data directory and this test's prefix.
func chainAgent(n *e2eNode, nodeKey, chain string) {
	n.t.Helper()
	lf, err := os.OpenFile(n.log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		n.t.Fatal(err)
	}
	defer lf.Close()
	cmd := exec.Command(n.bin, "node", "run", "--data", n.data, "--key", nodeKey, "--chain", chain,
		"--listen", n.api, "--gateway", n.gw, "--prefix", chainPrefix)
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	n.agent = cmd
	for range 200 {
		if c, err := net.Dial("tcp", n.api); err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	n.t.Fatalf("zos node run did not listen on %s:\n%s", n.api, tailFile(n.log, 2000))
}

// chainSweep removes what the node left on the machine, as a reboot
// would: processes and mounts (sweep), and this prefix's cgroups,
// namespaces, links and nftables table.
func chainSweep(n *e2eNode) {
	deadline := time.Now().Add(10 * time.Second)
	for n.sweep(); (len(n.procs()) > 0 || len(mountsUnder(n.data)) > 0) && time.Now().Before(deadline); n.sweep() {
		time.Sleep(50 * time.Millisecond)
	}
	for _, pat := range []string{"/sys/fs/cgroup/*/" + chainPrefix + "/*", "/sys/fs/cgroup/" + chainPrefix + "/*"} {
		m, _ := filepath.Glob(pat)
		for _, d := range m {
			if st, err := os.Stat(d); err == nil && st.IsDir() {
				os.Remove(d)
			}
		}
	}
	ents, _ := os.ReadDir("/run/zos/netns")
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), chainPrefix+"-") {
			p := filepath.Join("/run/zos/netns", e.Name())
			syscall.Unmount(p, syscall.MNT_DETACH)
			os.Remove(p)
		}
	}
	links, _ := os.ReadDir("/sys/class/net")
	for _, l := range links {
		if strings.HasPrefix(l.Name(), chainPrefix) {
			exec.Command("ip", "link", "del", l.Name()).Run()
		}
	}
	exec.Command("nft", "delete", "table", "inet", chainPrefix).Run()
}

// contractOf is `zos chain contract show ID --json`'s contract.
func contractOf(t *testing.T, n *e2eNode, chain string, id uint64) ledger.ContractView {
	t.Helper()
	out := n.mustZos("chain", "contract", "show", strconv.FormatUint(id, 10), "--json", "--chain", chain)
	var res struct{ Contract ledger.ContractView }
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("contract show --json: %v: %s", err, out)
	}
	return res.Contract
}
