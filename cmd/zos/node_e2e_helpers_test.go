//go:build linux

package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/zosgrid/zos/internal/key"
	"github.com/zosgrid/zos/internal/node/nodeclient"
)

// e2eNode is one node under test: the zos binary built with the seccomp
// tag, the agent's data directory, its API and gateway addresses, and the
// agent process while one runs. Everything it starts it also stops.
type e2eNode struct {
	t      *testing.T
	bin    string // zos with -tags seccomp: the node refuses containers without it
	data   string
	api    string // 127.0.0.1:P
	gw     string // 127.0.0.1:G
	log    string // the agent's stderr, across restarts
	marker string // in every container's command line, to find leftovers
	agent  *exec.Cmd
	keys   []string // twin key files, for the cleanup
	clean  bool     // everything deleted and checked: the cleanup has nothing to do

	containerIDs []string // runtime ids of the containers deployed (d<id>-<name>)
}

func (n *e2eNode) url() string { return "http://" + n.api }

// zos runs the test's zos binary and returns stdout, stderr and the exit
// status.
func (n *e2eNode) zos(args ...string) (string, string, int) {
	n.t.Helper()
	cmd := exec.Command(n.bin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return out.String(), errb.String(), ee.ExitCode()
	} else if err != nil {
		n.t.Fatal(err)
	}
	return out.String(), errb.String(), 0
}

func (n *e2eNode) mustZos(args ...string) string {
	n.t.Helper()
	out, errs, code := n.zos(args...)
	if code != 0 {
		n.t.Fatalf("zos %s: exit %d: %s%s", strings.Join(args, " "), code, errs, out)
	}
	return out
}

// start runs `zos node run` and waits until its API listens.
func (n *e2eNode) start() {
	n.t.Helper()
	if n.agent != nil {
		n.t.Fatal("agent already running")
	}
	lf, err := os.OpenFile(n.log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		n.t.Fatal(err)
	}
	defer lf.Close()
	cmd := exec.Command(n.bin, "node", "run", "--data", n.data, "--listen", n.api, "--gateway", n.gw, "--interval", "500ms", "--chain", "none")
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
	n.t.Fatalf("zos node run did not listen on %s (log %s):\n%s", n.api, n.log, tailFile(n.log, 2000))
}

// kill9 kills the agent with SIGKILL, as a crash would.
func (n *e2eNode) kill9() {
	if n.agent == nil {
		return
	}
	n.agent.Process.Kill()
	n.agent.Wait()
	n.agent = nil
}

// stop ends the agent with SIGTERM (SIGKILL after 20s). After a failure it
// ends it with SIGQUIT instead and logs the goroutines of the agent's own
// packages, so that a hang says where the agent waited.
func (n *e2eNode) stop() {
	if n.agent == nil {
		return
	}
	if n.t.Failed() {
		n.agent.Process.Signal(syscall.SIGQUIT)
		n.agent.Wait()
		n.agent = nil
		n.t.Logf("agent goroutines at the failure (SIGQUIT):\n%s", agentStacks(n.log))
		return
	}
	n.agent.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { n.agent.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		n.t.Errorf("agent did not stop within 20s of SIGTERM")
		n.agent.Process.Kill()
		<-done
	}
	n.agent = nil
}

// client is a node API client signing with the key file kf.
func (n *e2eNode) client(kf string) *nodeclient.Client {
	n.t.Helper()
	s, err := key.Load(kf)
	if err != nil {
		n.t.Fatal(err)
	}
	c, err := nodeclient.New(n.url(), s)
	if err != nil {
		n.t.Fatal(err)
	}
	return c
}

// deploy signs spec (a JSON body) as twin and deploys it with
// `zos deploy`, optionally waiting; it returns the deployment's id.
func (n *e2eNode) deploy(name string, spec map[string]any, twin int, keyFile string, wait string) uint64 {
	n.t.Helper()
	path := n.writeSpec(name, spec, twin, keyFile)
	args := []string{"deploy", path, "--key", keyFile, "--node", n.url(), "--json"}
	if wait != "" {
		args = append(args, "--wait", wait)
	}
	out, errs, code := n.zos(args...)
	var res struct {
		Deployment nodeclient.Deployed
	}
	json.Unmarshal([]byte(out), &res)
	if code != 0 || res.Deployment.ID == 0 {
		n.t.Fatalf("zos deploy %s: exit %d: %s%s\nagent log:\n%s", name, code, errs, out, tailFile(n.log, 4000))
	}
	return res.Deployment.ID
}

// writeSpec writes spec as JSON and signs it with `zos sign`.
func (n *e2eNode) writeSpec(name string, spec map[string]any, twin int, keyFile string) string {
	n.t.Helper()
	b, err := json.MarshalIndent(spec, "", "  ")
	if err != nil {
		n.t.Fatal(err)
	}
	path := filepath.Join(filepath.Dir(n.data), name+".json")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		n.t.Fatal(err)
	}
	n.mustZos("sign", path, "--key", keyFile, "--twin", strconv.Itoa(twin))
	return path
}

// status is `zos status ID --json`.
func (n *e2eNode) status(id uint64, keyFile string) nodeclient.Status {
	n.t.Helper()
	out := n.mustZos("status", strconv.FormatUint(id, 10), "--key", keyFile, "--node", n.url(), "--json")
	var s nodeclient.Status
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		n.t.Fatalf("zos status --json: %v: %s", err, out)
	}
	return s
}

// events is `zos status ID --events --json`: the deployment's records.
func (n *e2eNode) events(id uint64, keyFile string) []nodeclient.Event {
	n.t.Helper()
	out := n.mustZos("status", strconv.FormatUint(id, 10), "--key", keyFile, "--node", n.url(), "--events", "--json")
	var res struct {
		Events map[string][]nodeclient.Event
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		n.t.Fatalf("zos status --events --json: %v: %s", err, out)
	}
	return res.Events[strconv.FormatUint(id, 10)]
}

// logs is `zos logs ID NAME`.
func (n *e2eNode) logs(id uint64, name, keyFile string) string {
	n.t.Helper()
	return n.mustZos("logs", strconv.FormatUint(id, 10), name, "--key", keyFile, "--node", n.url())
}

// waitFor polls cond every 200ms until it returns "" (done) or timeout
// passes; then it fails with the last reason cond gave.
func (n *e2eNode) waitFor(what string, timeout time.Duration, cond func() string) bool {
	n.t.Helper()
	deadline := time.Now().Add(timeout)
	why := ""
	for {
		if why = cond(); why == "" {
			return true
		}
		if time.Now().After(deadline) {
			n.t.Errorf("%s: not after %s: %s", what, timeout, why)
			return false
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// running is "" when every workload of s runs or is in place, else why not.
func running(s nodeclient.Status) string {
	var bad []string
	for _, w := range s.Workloads {
		if w.State != nodeclient.WorkloadRunning && w.State != nodeclient.WorkloadOK {
			bad = append(bad, fmt.Sprintf("%s=%s %s", w.Name, w.State, w.Detail))
		}
	}
	if len(s.Workloads) == 0 {
		return "no workloads"
	}
	return strings.Join(bad, "; ")
}

func workload(s nodeclient.Status, name string) nodeclient.WorkloadStatus {
	for _, w := range s.Workloads {
		if w.Name == name {
			return w
		}
	}
	return nodeclient.WorkloadStatus{}
}

// gateway asks the gateway for host; it returns the status and body.
func (n *e2eNode) gateway(host string) (int, string, error) {
	req, _ := http.NewRequest(http.MethodGet, "http://"+n.gw+"/", nil)
	req.Host = host
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

// refusals returns the agent log's "refused request" records.
func (n *e2eNode) refusals() []map[string]any {
	f, err := os.Open(n.log)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil && m["msg"] == "refused request" {
			out = append(out, m)
		}
	}
	return out
}

// cleanup deletes every deployment the node still has, stops the agent,
// then sweeps what a failed test could leave: processes, mounts, loop
// devices, cgroups and namespaces of this node.
func (n *e2eNode) cleanup() {
	t := n.t
	if n.clean {
		n.stop()
		return
	}
	if n.agent == nil {
		if _, err := os.Stat(filepath.Join(n.data, "state.db")); err == nil {
			n.start()
		}
	}
	if n.agent != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		for _, kf := range n.keys {
			c := n.client(kf)
			list, _ := c.List(ctx)
			for _, s := range list {
				if s.State == nodeclient.StateActive {
					t.Logf("cleanup: deleting deployment %d", s.ID)
					c.Delete(ctx, s.ID)
				}
			}
			for _, s := range list {
				for ctx.Err() == nil {
					g, err := c.Get(ctx, s.ID)
					if err != nil || g.State == nodeclient.StateDeleted {
						break
					}
					time.Sleep(300 * time.Millisecond)
				}
			}
		}
		cancel()
		n.stop()
	}
	for _, l := range n.leaks(nil) {
		t.Logf("cleanup: leftover %s", l)
	}
	n.sweep()
}

// sweep removes by force what belongs to this node: processes whose
// command line names its data directory or the containers' marker, mounts
// under the data directory (lazily, deepest first), loop devices of its
// volumes, its containers' cgroups and its namespaces.
func (n *e2eNode) sweep() {
	for _, pid := range n.procs() {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	mps := mountsUnder(n.data)
	sort.Sort(sort.Reverse(sort.StringSlice(mps)))
	for _, mp := range mps {
		syscall.Unmount(mp, syscall.MNT_DETACH)
	}
	for _, dev := range n.loops() {
		exec.Command("losetup", "-d", strings.SplitN(dev, ":", 2)[0]).Run()
	}
	for _, d := range n.cgroups() {
		os.Remove(d)
	}
}

// reboot does to the machine what a reboot does to a node whose agent is
// down: every process and mount of the node goes (sweep), and with them
// what lives in memory only: network namespaces (bind mounts in
// /run/zos/netns), links, the agent's nftables table. What is on disk under
// the data directory stays.
func (n *e2eNode) reboot() {
	// Killed processes take a moment to leave their cgroups.
	deadline := time.Now().Add(10 * time.Second)
	for n.sweep(); len(n.leaks(nil)) > 0 && time.Now().Before(deadline); n.sweep() {
		time.Sleep(50 * time.Millisecond)
	}
	const nsDir = "/run/zos/netns"
	ents, _ := os.ReadDir(nsDir)
	for _, e := range ents {
		p := filepath.Join(nsDir, e.Name())
		syscall.Unmount(p, syscall.MNT_DETACH)
		os.Remove(p)
	}
	links, _ := os.ReadDir("/sys/class/net")
	for _, l := range links {
		if strings.HasPrefix(l.Name(), "zos") {
			exec.Command("ip", "link", "del", l.Name()).Run()
		}
	}
	exec.Command("nft", "delete", "table", "inet", "zos").Run()
}

// leaks lists what this node left on the machine: mounts under its data
// directory, processes (mount servers, containers), loop devices of its
// volumes, cgroups of its containers, and links, namespaces and nftables
// tables that were not there before (baseline).
func (n *e2eNode) leaks(base *machine) []string {
	var out []string
	for _, mp := range mountsUnder(n.data) {
		out = append(out, "mount "+mp)
	}
	for _, pid := range n.procs() {
		cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		out = append(out, fmt.Sprintf("process %d: %s", pid, strings.ReplaceAll(string(cmd), "\x00", " ")))
	}
	for _, l := range n.loops() {
		out = append(out, "loop device "+l)
	}
	for _, d := range n.cgroups() {
		out = append(out, "cgroup "+d)
	}
	if base != nil {
		now := snapshot()
		for _, l := range now.links {
			if !base.has(base.links, l) {
				out = append(out, "link "+l)
			}
		}
		for _, ns := range now.netns {
			if !base.has(base.netns, ns) {
				out = append(out, "netns "+ns)
			}
		}
		for _, tb := range now.tables {
			if !base.has(base.tables, tb) {
				out = append(out, "nftables table "+tb)
			}
		}
	}
	return out
}

// procs lists the processes whose command line names the node's data
// directory (image mount servers) or the containers' marker.
func (n *e2eNode) procs() []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() || n.agent != nil && pid == n.agent.Process.Pid {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(b) == 0 {
			continue
		}
		if bytes.Contains(b, []byte(n.data)) || bytes.Contains(b, []byte(n.marker)) {
			out = append(out, pid)
		}
	}
	return out
}

// loops lists `losetup -a` lines of files under the data directory.
func (n *e2eNode) loops() []string {
	b, _ := exec.Command("losetup", "-a").Output()
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, n.data) {
			out = append(out, l)
		}
	}
	return out
}

// cgroups lists the cgroup directories of this node's containers
// (runtime: /zos/<container id> in every hierarchy).
func (n *e2eNode) cgroups() []string {
	ids := map[string]bool{}
	ents, _ := os.ReadDir(filepath.Join(n.data, "runtime"))
	for _, e := range ents {
		ids[e.Name()] = true
	}
	for _, id := range n.containerIDs {
		ids[id] = true
	}
	var out []string
	for id := range ids {
		for _, pat := range []string{"/sys/fs/cgroup/*/zos/" + id, "/sys/fs/cgroup/zos/" + id} {
			m, _ := filepath.Glob(pat)
			out = append(out, m...)
		}
	}
	sort.Strings(out)
	return out
}

// mountsUnder lists the mount points under dir (/proc/self/mountinfo).
func mountsUnder(dir string) []string {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		fs := strings.Fields(l)
		if len(fs) > 4 && (fs[4] == dir || strings.HasPrefix(fs[4], dir+"/")) {
			out = append(out, fs[4])
		}
	}
	return out
}

// machine is what the host had of the node's kind of things: links named
// zos*, namespaces in /run/zos/netns and nftables tables.
type machine struct{ links, netns, tables []string }

func (m *machine) has(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func snapshot() *machine {
	m := &machine{}
	ents, _ := os.ReadDir("/sys/class/net")
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "zos") {
			m.links = append(m.links, e.Name())
		}
	}
	ents, _ = os.ReadDir("/run/zos/netns")
	for _, e := range ents {
		m.netns = append(m.netns, e.Name())
	}
	// Only the agent's ("table inet zos"): other packages' tests, which go
	// test may run at the same time, make tables of their own prefix.
	b, _ := exec.Command("nft", "list", "tables").Output()
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if f := strings.Fields(l); len(f) == 3 && strings.HasPrefix(f[2], "zos") {
			m.tables = append(m.tables, l)
		}
	}
	return m
}

// otherAgents lists the pids of `zos node run` processes but the one of
// data ("" for none): agents on one machine share /run/zos/netns, the
// links' prefix and the host's nftables table, and each removes what the
// other made as orphans.
func otherAgents(data string) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		args := strings.Split(string(b), "\x00")
		if len(args) > 2 && strings.HasPrefix(filepath.Base(args[0]), "zos") && args[1] == "node" && args[2] == "run" && (data == "" || !slices.Contains(args, data)) {
			out = append(out, pid)
		}
	}
	return out
}

func tailFile(path string, n int) string {
	b, _ := os.ReadFile(path)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// freeAddr returns a loopback address with a port nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// seccompZos returns a zos binary built with -tags seccomp, which the
// node's containers need: the package's own when TestMain built it so,
// else one built here.
func seccompZos(t *testing.T) string {
	t.Helper()
	if out, err := exec.Command("go", "version", "-m", zosBin).Output(); err == nil && strings.Contains(string(out), "-tags=seccomp") {
		return zosBin
	}
	bin := filepath.Join(t.TempDir(), "zos")
	if out, err := exec.Command("go", "build", "-tags", "seccomp", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build -tags seccomp: %v\n%s", err, out)
	}
	return bin
}

// minImage writes an OCI layout (tag e2e) of two layers: the corpus tree
// min as an uncompressed tar, then a gzip layer that adds
// /etc/zos-e2e-layer2 and deletes /etc/issue.net (a whiteout). Its config
// sets ZOS_E2E=from-image in the environment.
func minImage(t *testing.T, src string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "layout")
	blobs := filepath.Join(dir, "blobs", "sha256")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		t.Fatal(err)
	}
	put := func(b []byte) (string, int64) {
		sum := fmt.Sprintf("%x", sha256.Sum256(b))
		if err := os.WriteFile(filepath.Join(blobs, sum), b, 0o644); err != nil {
			t.Fatal(err)
		}
		return "sha256:" + sum, int64(len(b))
	}
	// Layer 1: tar of the tree, as build-corpus.sh makes min.tar.
	tmp := filepath.Join(dir, "layer1.tar")
	if out, err := exec.Command("tar", "--numeric-owner", "--xattrs", "--exclude=./.done", "-C", src, "-cf", tmp, ".").CombinedOutput(); err != nil {
		t.Fatalf("tar of %s: %v\n%s", src, err, out)
	}
	f, err := os.Open(tmp)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	n1, err := io.Copy(h, f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	d1 := fmt.Sprintf("sha256:%x", h.Sum(nil))
	if err := os.Rename(tmp, filepath.Join(blobs, d1[len("sha256:"):])); err != nil {
		t.Fatal(err)
	}
	// Layer 2: one file added, one deleted.
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	mt := time.Unix(1700000000, 0)
	tw.WriteHeader(&tar.Header{Name: "etc/.wh.issue.net", Typeflag: tar.TypeReg, Mode: 0o644, ModTime: mt})
	body := []byte("from layer two\n")
	tw.WriteHeader(&tar.Header{Name: "etc/zos-e2e-layer2", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body)), ModTime: mt})
	tw.Write(body)
	tw.Close()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(raw.Bytes())
	zw.Close()
	d2diff := fmt.Sprintf("sha256:%x", sha256.Sum256(raw.Bytes()))
	d2, n2 := put(gz.Bytes())

	config, _ := json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux",
		"config": map[string]any{
			"Env": []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "ZOS_E2E=from-image"},
			"Cmd": []string{"/bin/sh"},
		},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{d1, d2diff}},
	})
	cd, cn := put(config)
	desc := func(mt, d string, n int64) map[string]any {
		return map[string]any{"mediaType": mt, "digest": d, "size": n}
	}
	manifest, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": desc("application/vnd.oci.image.config.v1+json", cd, cn),
		"layers": []any{
			desc("application/vnd.oci.image.layer.v1.tar", d1, n1),
			desc("application/vnd.oci.image.layer.v1.tar+gzip", d2, n2),
		},
	})
	md, mn := put(manifest)
	m := desc("application/vnd.oci.image.manifest.v1+json", md, mn)
	m["annotations"] = map[string]string{"org.opencontainers.image.ref.name": "e2e"}
	index, _ := json.Marshal(map[string]any{"schemaVersion": 2, "manifests": []any{m}})
	os.WriteFile(filepath.Join(dir, "index.json"), index, 0o644)
	os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644)
	return dir
}

func hasEvent(ev []nodeclient.Event, kind, detail string) bool {
	for _, e := range ev {
		if e.Kind == kind && strings.Contains(e.Detail, detail) {
			return true
		}
	}
	return false
}

// agentStacks takes the Go runtime's goroutine dump off the end of the
// log file (into log+".stacks", so the log's tail stays the agent's own
// lines) and returns the stacks that pass through zos's packages
// (internal/), the runtime's and the libraries' idle pools left out.
func agentStacks(log string) string {
	b, err := os.ReadFile(log)
	if err != nil {
		return err.Error()
	}
	i := bytes.LastIndex(b, []byte("SIGQUIT: quit"))
	if i < 0 {
		return "no goroutine dump in the log"
	}
	dump := string(b[i:])
	if os.WriteFile(log+".stacks", b[i:], 0o644) == nil {
		os.Truncate(log, int64(i))
	}
	var out []string
	for _, g := range strings.Split(dump, "\n\n") {
		if strings.HasPrefix(g, "goroutine ") && strings.Contains(g, "/zos/internal/") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}
