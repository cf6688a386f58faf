//go:build linux

package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/zosgrid/zos/internal/auth"
	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/flist"
	"github.com/zosgrid/zos/internal/key"
	"github.com/zosgrid/zos/internal/mount"
	"github.com/zosgrid/zos/internal/node/nodeclient"
)

// Programs the containers run (perl and sh of the Debian corpus tree).
const (
	// e2eWeb reports what it sees of its image, /proc and its volume, then
	// serves HTTP on 8000 ($1 is the server, $0 the marker).
	e2eWeb = `echo "layer2: $(cat /etc/zos-e2e-layer2 2>&1)"
if [ -e /etc/issue.net ]; then echo "issue.net: present"; else echo "issue.net: deleted"; fi
echo "image env: $ZOS_E2E"
echo "procs:" /proc/[0-9]*
echo "volume: $(echo written >/data/probe && cat /data/probe)"
exec /usr/bin/perl -MIO::Socket::INET -e "$1" "$0"`
	e2eServer = `$| = 1; $SIG{TERM} = sub { exit 0 };
my $s = IO::Socket::INET->new(LocalPort => 8000, Listen => 16, ReuseAddr => 1) or die "listen: $!";
print "listening\n";
while (my $c = $s->accept) {
	while (my $l = <$c>) { last if $l =~ /^\r?\n$/ }
	print $c "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhello from zos\n";
	close $c;
}`
	// e2eProbe connects to $ARGV[0] every second (2 s timeout) and prints
	// the outcome whenever it changes.
	e2eProbe = `$| = 1; $SIG{TERM} = sub { exit 0 }; my $t = $ARGV[0]; my $last = "";
while (1) {
	my $s = IO::Socket::INET->new(PeerAddr => $t, Proto => "tcp", Timeout => 2);
	my $r;
	if ($s) {
		print $s "GET / HTTP/1.0\r\n\r\n";
		my $a = join "", <$s>;
		close $s;
		$r = "connected to $t: " . ($a =~ /hello from zos/ ? "hello from zos" : "no answer");
	} else {
		$r = "no connection to $t: $@";
	}
	print "$r\n" if $r ne $last;
	$last = $r;
	sleep 1;
}`
	// e2eHog wants 200 MiB (a count known only at run time: perl folds
	// constant expressions when it compiles).
	e2eHog = `$| = 1; $SIG{TERM} = sub { exit 0 }; print "hog: allocating\n";
my $n = 200 * 1024 * 1024 + time % 2; my $x = "a" x $n; print "hog: survived\n"; sleep 1000000;`
	// e2eForks forks up to 60 sleepers and says how many it got. It does
	// not catch SIGTERM: deleting it takes the runtime's kill after grace.
	e2eForks = `$| = 1; my $n = 0;
for (1..60) { my $p = fork; last unless defined $p; if (!$p) { sleep 1000000; exit 0 } $n++ }
print "forked $n of 60\n"; sleep 1000000;`
)

// TestNodeE2E runs a hub and a node on loopback, as root, with the real
// binary: an image converted from an OCI layout of the corpus tree min is
// pushed to the hub and deployed by digest; the agent is killed with -9
// half-way through the first deployment and converges when started
// again; the container runs, answers through the gateway, sees its image's
// layers, its own processes only and its volume; its memory limit
// OOM-kills a hog, which is restarted; its pids limit holds; a container
// of one deployment reaches another of the same network, while one of
// another owner's deployment on the same subnet does not; a container
// killed with -9 restarts; tampered, expired, replayed, unsigned and
// under-signed requests are refused and the refusals logged; deleting
// everything leaves nothing behind; the history's chain verifies, and a
// record changed in the state file is found.
func TestNodeE2E(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the node runs containers, mounts and networks: run as root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("/dev/fuse is absent: the node mounts images with FUSE")
	}
	src := corpusMin(t, "runs a hub, a node and containers of the corpus tree min")
	for _, tool := range []string{"mkfs.ext4", "nft", "losetup", "ip", "tar", "mount"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed (.ci/deps.sh installs the node's tools)", tool)
		}
	}
	if pids := otherAgents(""); len(pids) > 0 {
		t.Skipf("another zos node agent runs on this machine (pids %v): agents share /run/zos/netns, the zos* links and the host's nftables table, and each removes the other's networks as orphans", pids)
	}
	start := time.Now()
	bin := seccompZos(t)
	base := snapshot()
	dir, err := os.MkdirTemp("", "zos-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	mark := make([]byte, 6)
	rand.Read(mark)
	n := &e2eNode{
		t: t, bin: bin, data: filepath.Join(dir, "node"), log: filepath.Join(dir, "agent.log"),
		api: freeAddr(t), gw: freeAddr(t), marker: "zos-e2e-" + hex.EncodeToString(mark),
	}
	t.Cleanup(func() {
		n.sweep()
		if left := mountsUnder(dir); len(left) > 0 {
			t.Errorf("mounts left under %s after the sweep: %v", dir, left)
			return
		}
		if t.Failed() {
			t.Logf("agent log (kept in %s), last lines:\n%s", n.log, tailFile(n.log, 6000))
			os.RemoveAll(n.data)
			return
		}
		os.RemoveAll(dir)
	})
	t.Cleanup(n.cleanup)
	ctx := context.Background()

	// Another agent started meanwhile would remove this one's networks
	// and sandboxes as orphans (and this one its): say so if the test fails.
	watch := make(chan struct{})
	intruders := map[int]bool{}
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			for _, pid := range otherAgents(n.data) {
				intruders[pid] = true
			}
			select {
			case <-watch:
				return
			case <-time.After(time.Second):
			}
		}
	}()
	t.Cleanup(func() {
		close(watch)
		<-watched
		if len(intruders) > 0 && t.Failed() {
			t.Logf("other zos node agents ran during the test (pids %v): agents on one machine remove each other's networks and sandboxes as orphans, which breaks the containers' networking", slices.Sorted(maps.Keys(intruders)))
		}
	})

	// part runs one step as a subtest; the node's helpers report to it.
	part := func(name string, f func(t *testing.T)) bool {
		return t.Run(name, func(st *testing.T) {
			old := n.t
			n.t = st
			defer func() { n.t = old }()
			f(st)
		})
	}

	hub := startHubServe(t)
	me, other := filepath.Join(dir, "me.key"), filepath.Join(dir, "other.key")
	n.mustZos("key", "gen", me)
	n.mustZos("key", "gen", other)
	n.keys = []string{me, other}
	n.mustZos("hub", "register", "me", "--hub", hub, "--key", me)

	// The image: an OCI layout of min plus a layer that adds one file and
	// deletes another, converted into the hub's store and pushed.
	var imgDigest string
	if !part("image", func(t *testing.T) {
		lay := minImage(t, src)
		fl := filepath.Join(dir, "min.fl")
		out := n.mustZos("flist", "pack", "oci:"+lay+":e2e", "-o", fl, "--store", hub+"/chunks", "--key", me, "--json")
		var sum struct {
			Digest string
			Layers int
		}
		if err := json.Unmarshal([]byte(out), &sum); err != nil || sum.Layers != 2 || len(sum.Digest) != 64 {
			t.Fatalf("pack --json: %v: %s", err, out)
		}
		// A prefetch trace beside the flist goes to the hub with it, and
		// from there to the node.
		d, err := digest.Parse(sum.Digest)
		if err != nil {
			t.Fatal(err)
		}
		// Version 2: the first KiB of each chunk larger than that, so
		// the hub builds a start bundle, which the node's mount streams.
		fb, _ := os.ReadFile(fl)
		r, err := flist.Open(fb)
		if err != nil {
			t.Fatal(err)
		}
		ft := &mount.Trace{Flist: d, Chunks: []uint32{3, 1, 2, 0}}
		for _, k := range ft.Chunks {
			var rg []mount.Range
			if r.Chunks()[k].Size > 1024 {
				rg = []mount.Range{{Start: 0, Len: 1}}
			}
			ft.Ranges = append(ft.Ranges, rg)
		}
		tr, err := ft.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(fl+".trace", tr, 0o644); err != nil {
			t.Fatal(err)
		}
		out = n.mustZos("hub", "push", fl, "me/min:e2e", "--hub", hub, "--key", me)
		if want := "me/min:e2e@" + sum.Digest + "\ntrace: 4 chunks to prefetch\nstart bundle: "; !strings.HasPrefix(out, want) || !strings.Contains(out, "(4 chunks,") {
			t.Fatalf("hub push: %q, want %q...", out, want)
		}
		imgDigest = sum.Digest
	}) {
		t.FailNow()
	}
	t.Logf("image %s converted and pushed at %s", imgDigest, time.Since(start).Round(time.Millisecond))

	image := map[string]any{"digest": imgDigest, "hub": hub, "ref": "me/min:e2e"}
	container := func(name string, entry []string, extra map[string]any) map[string]any {
		c := map[string]any{"image": image, "entrypoint": entry}
		maps.Copy(c, extra)
		return map[string]any{"name": name, "kind": "container", "container": c}
	}
	network := map[string]any{"name": "net", "kind": "network", "network": map[string]any{"subnet": "10.20.0.0/24"}}
	perl := func(code string, args ...string) []string {
		return append([]string{"/usr/bin/perl", "-MIO::Socket::INET", "-e", code}, append(args, n.marker)...)
	}
	specA := map[string]any{
		"version": 1, "owner": 1, "description": "e2e: web, peer, volume, gateway",
		"workloads": []any{
			network,
			map[string]any{"name": "data", "kind": "volume", "volume": map[string]any{"size": "64MiB"}},
			container("web", []string{"/bin/sh", "-c", e2eWeb, n.marker, e2eServer}, map[string]any{
				"memory": "128MiB", "pids": 64, "cpu": 500,
				"networks": []any{map[string]any{"network": "net", "ip": "10.20.0.10"}},
				"ports":    []any{map[string]any{"port": 8000}},
				"mounts":   []any{map[string]any{"volume": "data", "path": "/data"}},
			}),
			container("peer", perl(e2eProbe, "10.20.0.10:8000"), map[string]any{
				"memory": "64MiB", "networks": []any{map[string]any{"network": "net", "ip": "10.20.0.11"}},
			}),
			map[string]any{"name": "gw", "kind": "gateway", "gateway": map[string]any{"host": "web.example.com", "container": "web", "port": 8000}},
		},
	}
	specB := map[string]any{
		"version": 1, "owner": 2, "description": "e2e: another owner on the same subnet",
		"workloads": []any{
			network,
			container("other", perl(e2eProbe, "10.20.0.10:8000"), map[string]any{
				"memory": "64MiB", "networks": []any{map[string]any{"network": "net", "ip": "10.20.0.11"}},
			}),
		},
	}
	specC := map[string]any{
		"version": 1, "owner": 1, "description": "e2e: limits",
		"workloads": []any{
			container("hog", perl(e2eHog), map[string]any{"memory": "32MiB"}),
			container("forks", perl(e2eForks), map[string]any{"pids": 16}),
		},
	}
	specU := map[string]any{
		"version": 1, "owner": 1, "description": "e2e: needs twins 1 and 2",
		"workloads": []any{container("web", perl(e2eServer), nil)},
		"signature_requirement": map[string]any{
			"requests": []any{
				map[string]any{"twin": 1, "weight": 1, "required": true},
				map[string]any{"twin": 2, "weight": 1, "required": true},
			},
			"weight_required": 2,
		},
	}

	n.mustZos("node", "twin", "add", "1", me, "--data", n.data)
	n.mustZos("node", "twin", "add", "2", other, "--data", n.data)
	n.start()
	cme, cother := n.client(me), n.client(other)

	// Deployment A; the agent is killed with -9 as soon as the first image
	// mount is recorded, then started again: A must converge.
	var idA uint64
	if !part("agent-kill-mid-deploy", func(t *testing.T) {
		idA = n.deploy("a", specA, 1, me, "")
		n.containerIDs = append(n.containerIDs, fmt.Sprintf("d%d-web", idA), fmt.Sprintf("d%d-peer", idA))
		var seen []string
		n.waitFor("a first mount of deployment A", 60*time.Second, func() string {
			evs, err := cme.Events(ctx, idA)
			if err != nil {
				return err.Error()
			}
			seen = seen[:0]
			for _, e := range evs {
				seen = append(seen, e.Kind+" "+e.Workload)
				if e.Kind == "mounted" {
					return ""
				}
			}
			return fmt.Sprintf("events %v", seen)
		})
		n.kill9()
		t.Logf("agent killed with -9 after %v", seen)
		n.start()
		n.waitFor("deployment A running after the agent's restart", 90*time.Second, func() string {
			s, err := cme.Get(ctx, idA)
			if err != nil {
				return err.Error()
			}
			return running(s)
		})
		if s := n.status(idA, me); running(s) != "" {
			t.Fatalf("zos status: %s", running(s))
		}
	}) {
		t.FailNow()
	}
	t.Logf("deployment A running at %s", time.Since(start).Round(time.Millisecond))

	part("image-trace", func(t *testing.T) {
		want, _ := os.ReadFile(filepath.Join(dir, "min.fl.trace"))
		got, err := os.ReadFile(filepath.Join(n.data, "images", imgDigest+".fl.trace"))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("the hub's trace on the node: %v", err)
		}
		if !hasEvent(n.events(idA, me), "image-fetched", "a trace of 4 chunks to prefetch and the hub's start bundle to stream") {
			t.Errorf("image-fetched event does not mention the trace and the bundle: %+v", n.events(idA, me))
		}
		// The image's mount streamed the hub's start bundle, all of it.
		logs, _ := os.ReadFile(filepath.Join(n.data, "images", "mnt", imgDigest+".log"))
		if !bytes.Contains(logs, []byte("/v1/bundles/"+imgDigest)) || !bytes.Contains(logs, []byte("start bundle streamed")) ||
			!bytes.Contains(logs, []byte("entries=4 bad=0")) {
			t.Errorf("the image's mount log shows no start bundle streamed from the hub:\n%s", logs)
		}
	})

	part("runs", func(t *testing.T) {
		n.waitFor("the gateway answering for web.example.com", 30*time.Second, func() string {
			code, body, err := n.gateway("web.example.com")
			if err != nil || code != 200 || body != "hello from zos\n" {
				return fmt.Sprintf("%d %q %v", code, body, err)
			}
			return ""
		})
		log := n.logs(idA, "web", me)
		for _, want := range []string{"layer2: from layer two\n", "issue.net: deleted\n", "image env: from-image\n", "volume: written\n", "listening\n"} {
			if !strings.Contains(log, want) {
				t.Errorf("web's log lacks %q:\n%s", want, log)
			}
		}
		if code, body, _ := n.gateway("nope.example.com"); code != 404 {
			t.Errorf("gateway for an unknown host: %d %q, want 404", code, body)
		}
		t.Logf("web's log:\n%s", log)
		// The leak check at the end sees every kind of thing a running
		// deployment has.
		running := strings.Join(n.leaks(base), "\n")
		for _, kind := range []string{"mount ", "process ", "loop device ", "cgroup ", "link ", "netns ", "nftables table "} {
			if !strings.Contains(running, "\n"+kind) && !strings.HasPrefix(running, kind) {
				t.Errorf("the leak check sees no %q of a running deployment:\n%s", kind, running)
			}
		}
	})

	part("host-processes", func(t *testing.T) {
		log := n.logs(idA, "web", me)
		m := regexp.MustCompile(`procs:(( /proc/\d+)+)\n`).FindStringSubmatch(log)
		if m == nil {
			t.Fatalf("web's log has no procs line:\n%s", log)
		}
		var pids []int
		for _, f := range strings.Fields(m[1]) {
			p, _ := strconv.Atoi(strings.TrimPrefix(f, "/proc/"))
			pids = append(pids, p)
		}
		agent := n.agent.Process.Pid
		for _, p := range pids {
			if p == os.Getpid() || p == agent || p > 10 {
				t.Errorf("the container sees pid %d (test %d, agent %d): %v", p, os.Getpid(), agent, pids)
			}
		}
		if len(pids) > 3 || pids[0] != 1 {
			t.Errorf("the container sees %v; want only its own shell, pid 1", pids)
		}
	})

	part("same-deployment-network", func(t *testing.T) {
		n.waitFor("peer reaching web on A's network", 30*time.Second, func() string {
			log := n.logs(idA, "peer", me)
			if !strings.Contains(log, "connected to 10.20.0.10:8000: hello from zos\n") {
				return "peer's log: " + log
			}
			return ""
		})
	})

	var idB uint64
	part("other-deployment-network", func(t *testing.T) {
		idB = n.deploy("b", specB, 2, other, "60s")
		n.containerIDs = append(n.containerIDs, fmt.Sprintf("d%d-other", idB))
		var log string
		n.waitFor("B's probe reporting", 30*time.Second, func() string {
			log = n.logs(idB, "other", other)
			if !strings.Contains(log, "\n") {
				return "nothing yet"
			}
			return ""
		})
		// Two more rounds of probes (2 s timeout, 1 s pause), while A's web
		// still answers through the gateway.
		time.Sleep(6 * time.Second)
		if code, body, err := n.gateway("web.example.com"); code != 200 {
			t.Errorf("A's web stopped answering during the probe: %d %q %v", code, body, err)
		}
		log = n.logs(idB, "other", other)
		t.Logf("B's probe:\n%s", log)
		if strings.Contains(log, "connected to") || !strings.Contains(log, "no connection to 10.20.0.10:8000") {
			t.Errorf("a container of deployment B (owner 2, same subnet) reached A's web, or did not try:\n%s", log)
		}
		// Nor does owner 2 see A through the API.
		if _, errs, code := n.zos("status", strconv.FormatUint(idA, 10), "--key", other, "--node", n.url()); code == 0 || !strings.Contains(errs, "no deployment") {
			t.Errorf("owner 2 asking for A's status: exit %d %s", code, errs)
		}
		if _, errs, code := n.zos("logs", strconv.FormatUint(idA, 10), "web", "--key", other, "--node", n.url()); code == 0 {
			t.Errorf("owner 2 read A's logs: exit %d %s", code, errs)
		}
	})

	// An agent killed with -9 while everything runs: the next one adopts
	// the running containers instead of starting them again.
	part("agent-restart-adopts", func(t *testing.T) {
		before := n.status(idA, me)
		n.kill9()
		n.start()
		var after nodeclient.Status
		n.waitFor("deployment A running under the new agent", 30*time.Second, func() string {
			after = n.status(idA, me)
			return running(after)
		})
		for _, name := range []string{"web", "peer"} {
			b, a := workload(before, name), workload(after, name)
			if b.Pid == 0 || a.Pid != b.Pid || a.Restarts != 0 {
				t.Errorf("%s: pid %d before the agent's restart, %d after (restarts %d): not adopted", name, b.Pid, a.Pid, a.Restarts)
			}
		}
		if code, body, err := n.gateway("web.example.com"); code != 200 {
			t.Errorf("gateway under the new agent: %d %q %v", code, body, err)
		}
	})

	idC := n.deploy("c", specC, 1, me, "")
	n.containerIDs = append(n.containerIDs, fmt.Sprintf("d%d-hog", idC), fmt.Sprintf("d%d-forks", idC))

	part("oom", func(t *testing.T) {
		n.waitFor("hog OOM-killed and restarted", 60*time.Second, func() string {
			w := workload(n.status(idC, me), "hog")
			if !w.OOMKilled || w.Restarts < 1 {
				return fmt.Sprintf("%+v", w)
			}
			return ""
		})
		n.waitFor("hog's exit and restart in its events", 30*time.Second, func() string {
			var exited, restarted bool
			var kinds []string
			for _, e := range n.events(idC, me) {
				if e.Workload != "hog" {
					continue
				}
				kinds = append(kinds, e.Kind+": "+e.Detail)
				exited = exited || e.Kind == "exited" && strings.Contains(e.Detail, "memory limit")
				restarted = restarted || e.Kind == "restarted"
			}
			if !exited || !restarted {
				return fmt.Sprintf("hog's events: %q", kinds)
			}
			return ""
		})
		log := n.logs(idC, "hog", me)
		t.Logf("hog's log:\n%s", log)
		if !strings.Contains(log, "hog: allocating") || strings.Contains(log, "hog: survived") {
			t.Errorf("hog's log:\n%s", log)
		}
	})

	part("pids", func(t *testing.T) {
		var log string
		n.waitFor("forks reporting", 30*time.Second, func() string {
			if log = n.logs(idC, "forks", me); !strings.Contains(log, "forked ") {
				return "forks' log: " + log
			}
			return ""
		})
		t.Logf("forks' log:\n%s", log)
		ms := regexp.MustCompile(`forked (\d+) of 60`).FindAllStringSubmatch(log, -1)
		for _, m := range ms {
			// pids 16 counts the container's own process: 15 children at most.
			if k, _ := strconv.Atoi(m[1]); k < 1 || k > 15 {
				t.Errorf("with pids 16 the container forked %d processes:\n%s", k, log)
			}
		}
		if w := workload(n.status(idC, me), "forks"); w.State != nodeclient.WorkloadRunning || w.Restarts != 0 {
			t.Errorf("forks: %+v", w)
		}
	})

	part("crash-restart", func(t *testing.T) {
		w := workload(n.status(idA, me), "web")
		cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", w.Pid))
		if w.Pid <= 1 || !bytes.Contains(cmd, []byte(n.marker)) {
			t.Fatalf("web's pid %d is not its process (%q)", w.Pid, cmd)
		}
		if err := syscall.Kill(w.Pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		n.waitFor("web restarted after kill -9", 30*time.Second, func() string {
			s := workload(n.status(idA, me), "web")
			if s.State != nodeclient.WorkloadRunning || s.Restarts < w.Restarts+1 || s.Pid == w.Pid || s.Pid == 0 {
				return fmt.Sprintf("%+v", s)
			}
			return ""
		})
		n.waitFor("the gateway answering again", 20*time.Second, func() string {
			if code, body, err := n.gateway("web.example.com"); code != 200 || body != "hello from zos\n" {
				return fmt.Sprintf("%d %q %v", code, body, err)
			}
			return ""
		})
		var exited bool
		for _, e := range n.events(idA, me) {
			exited = exited || e.Workload == "web" && e.Kind == "exited"
		}
		if !exited {
			t.Errorf("no exited event for web")
		}
		// After starting a dozen containers the agent's main thread is
		// still in the node's mount namespace: libcontainer joins each
		// container's on a thread it lets die, which must never be the
		// main one (Go would park it there for good).
		self, _ := os.Readlink("/proc/self/ns/mnt")
		agent, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", n.agent.Process.Pid))
		if err != nil || agent != self {
			t.Errorf("agent's main thread in mount namespace %q (%v), the node's is %q", agent, err, self)
		}
	})

	// The FUSE server of web's image dies: the agent notices, remounts and
	// recreates the container. The image is served once for the whole
	// machine: web and peer (same image) share one server.
	part("dead-image-mount", func(t *testing.T) {
		images := filepath.Join(n.data, "images", "mnt") + "/"
		var servers []int
		for _, pid := range n.procs() {
			cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			if bytes.Contains(cmd, []byte("\x00flist\x00mount\x00")) && bytes.Contains(cmd, []byte("\x00"+images)) {
				servers = append(servers, pid)
			}
		}
		if len(servers) != 1 {
			t.Fatalf("%d image mount servers under %s, want one for web and peer's image", len(servers), images)
		}
		server := servers[0]
		w := workload(n.status(idA, me), "web")
		syscall.Kill(server, syscall.SIGKILL)
		n.waitFor("web and peer recreated on a new image mount", 30*time.Second, func() string {
			died := map[string]bool{}
			for _, e := range n.events(idA, me) {
				died[e.Workload] = died[e.Workload] || e.Kind == "stopped" && strings.Contains(e.Detail, "image mount died")
			}
			s := workload(n.status(idA, me), "web")
			if !died["web"] || !died["peer"] || s.State != nodeclient.WorkloadRunning || s.Pid == w.Pid {
				return fmt.Sprintf("mount death recorded for %v; web %+v", died, s)
			}
			return ""
		})
		n.waitFor("the gateway answering after the remount", 20*time.Second, func() string {
			if code, body, err := n.gateway("web.example.com"); code != 200 || body != "hello from zos\n" {
				return fmt.Sprintf("%d %q %v", code, body, err)
			}
			return ""
		})
	})

	// A reboot: the agent dies, and every process, mount, loop device,
	// cgroup, namespace, link and nftables rule goes with the machine's
	// memory; only the data directory stays. The next agent brings every
	// workload back, and the volume keeps what was written to it.
	part("reboot", func(t *testing.T) {
		vol := filepath.Join(n.data, "volumes", fmt.Sprintf("d%d-data", idA))
		if err := os.WriteFile(filepath.Join(vol, "before-reboot"), []byte("kept\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		reached := strings.Count(n.logs(idA, "peer", me), "hello from zos")
		n.kill9()
		n.reboot()
		if l := n.leaks(nil); len(l) > 0 {
			t.Fatalf("the simulated reboot left %v", l)
		}
		start := time.Now()
		n.start()
		n.waitFor("deployments A and B running after the reboot", 60*time.Second, func() string {
			if r := running(n.status(idA, me)); r != "" {
				return "A: " + r
			}
			if r := running(n.status(idB, other)); r != "" {
				return "B: " + r
			}
			return ""
		})
		n.waitFor("the gateway answering after the reboot", 20*time.Second, func() string {
			if code, body, err := n.gateway("web.example.com"); code != 200 || body != "hello from zos\n" {
				return fmt.Sprintf("%d %q %v", code, body, err)
			}
			return ""
		})
		t.Logf("every workload back %.1fs after the agent started", time.Since(start).Seconds())
		if b, err := os.ReadFile(filepath.Join(vol, "before-reboot")); err != nil || string(b) != "kept\n" {
			t.Errorf("volume after the reboot: %q %v", b, err)
		}
		n.waitFor("peer reaching web again", 30*time.Second, func() string {
			if log := n.logs(idA, "peer", me); strings.Count(log, "hello from zos") <= reached {
				return "peer's log: " + log[max(0, len(log)-400):]
			}
			return ""
		})
	})

	part("refusals", func(t *testing.T) {
		// Under-signed: twins 1 and 2 are required, only 1 signed.
		path := n.writeSpec("u", specU, 1, me)
		_, errs, code := n.zos("deploy", path, "--key", me, "--node", n.url())
		if code != exitSignature || !strings.Contains(errs, "required twins not signed: 2") {
			t.Errorf("under-signed deploy: exit %d %q, want %d naming twin 2", code, errs, exitSignature)
		}

		sec, err := key.Load(me)
		if err != nil {
			t.Fatal(err)
		}
		send := func(method, path string, body []byte, sign func(*http.Request)) (int, string) {
			t.Helper()
			req, _ := http.NewRequest(method, n.url()+path, bytes.NewReader(body))
			sign(req)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, string(b)
		}
		// Tampered: the body changed after signing.
		good, err := os.ReadFile(filepath.Join(dir, "c.json"))
		if err != nil {
			t.Fatal(err)
		}
		bad := bytes.Replace(good, []byte(`"memory": 33554432`), []byte(`"memory": 67108864`), 1)
		if bytes.Equal(bad, good) {
			bad = append(bytes.Clone(good), ' ')
		}
		if code, body := send("POST", "/v1/deployments", bad, func(r *http.Request) { auth.Sign(r, sec, good) }); code != 401 || !strings.Contains(body, "signature does not verify") {
			t.Errorf("tampered deploy: %d %s", code, body)
		}
		// Expired: signed an hour ago.
		if code, body := send("GET", "/v1/deployments", nil, func(r *http.Request) {
			h := auth.SignParts(sec, "GET", n.api, "/v1/deployments", time.Now().Add(-time.Hour).Unix(), auth.NewNonce(), digest.Sum(nil))
			r.Header.Set("Authorization", h.String())
		}); code != 401 || !strings.Contains(body, "timestamp") {
			t.Errorf("expired request: %d %s", code, body)
		}
		// Replayed: the same header twice.
		var hdr string
		if code, body := send("GET", "/v1/deployments", nil, func(r *http.Request) {
			auth.Sign(r, sec, nil)
			hdr = r.Header.Get("Authorization")
		}); code != 200 {
			t.Errorf("signed list: %d %s", code, body)
		}
		if code, body := send("GET", "/v1/deployments", nil, func(r *http.Request) { r.Header.Set("Authorization", hdr) }); code != 401 || !strings.Contains(body, "replay") {
			t.Errorf("replayed request: %d %s", code, body)
		}
		// Unsigned.
		if code, body := send("GET", "/v1/deployments", nil, func(*http.Request) {}); code != 401 {
			t.Errorf("unsigned request: %d %s", code, body)
		}

		// Every refusal is in the agent's log.
		var got []string
		for _, r := range n.refusals() {
			got = append(got, fmt.Sprintf("%v %v %v: %v", r["method"], r["path"], r["status"], r["reason"]))
		}
		all := strings.Join(got, "\n")
		for _, want := range []string{
			"POST /v1/deployments 401: request not authorized: signature does not verify",
			"GET /v1/deployments 401: request not authorized: timestamp",
			"GET /v1/deployments 401: request not authorized: nonce already used (replay)",
			"GET /v1/deployments 401: request not authorized: no authorization",
		} {
			if !strings.Contains(all, want) {
				t.Errorf("the agent's log has no refusal %q; its refusals:\n%s", want, all)
			}
		}
		if !regexp.MustCompile(`POST /v1/deployments 403: .*required twins not signed: 2`).MatchString(all) {
			t.Errorf("the agent's log has no refusal of the under-signed deployment; its refusals:\n%s", all)
		}
		// None of them became a deployment.
		if list, err := cme.List(ctx); err != nil || len(list) != 2 {
			t.Errorf("owner 1 has %d deployments (%v), want 2 (A and C)", len(list), err)
		}
	})

	part("delete-no-leaks", func(t *testing.T) {
		for _, d := range []struct {
			id  uint64
			key string
		}{{idA, me}, {idB, other}, {idC, me}} {
			if d.id == 0 {
				continue
			}
			n.mustZos("delete", strconv.FormatUint(d.id, 10), "--key", d.key, "--node", n.url(), "--wait", "30s")
			if s := n.status(d.id, d.key); s.State != nodeclient.StateDeleted {
				t.Errorf("deployment %d: %s after delete --wait", d.id, s.State)
			}
		}
		n.waitFor("nothing left of the deployments", 15*time.Second, func() string {
			return strings.Join(n.leaks(base), "; ")
		})
		if code, _, _ := n.gateway("web.example.com"); code != 404 {
			t.Errorf("gateway after delete: %d, want 404", code)
		}
		if _, err := cother.Get(ctx, idB); err != nil {
			t.Errorf("a deleted deployment's status: %v", err)
		}
	})

	part("history", func(t *testing.T) {
		out := n.mustZos("node", "history", "--data", n.data, "--node", n.url(), "--json")
		var h struct {
			Events   []nodeclient.Event
			Verified int
			OK       bool
			Error    string
		}
		if err := json.Unmarshal([]byte(out), &h); err != nil || !h.OK || h.Verified != len(h.Events) {
			t.Fatalf("history --json: %v ok=%v verified %d of %d: %s", err, h.OK, h.Verified, len(h.Events), h.Error)
		}
		kinds := map[string]bool{}
		refused := uint64(0)
		for _, e := range h.Events {
			kinds[e.Kind] = true
			if e.Kind == "refused" && strings.Contains(e.Detail, "required twins not signed: 2") {
				refused = e.Seq
			}
		}
		for _, k := range []string{"requested", "verified", "refused", "image-fetched", "mounted", "started", "exited", "restarted", "volume-created", "deleted"} {
			if !kinds[k] {
				t.Errorf("the history has no %q record", k)
			}
		}
		if refused == 0 {
			t.Fatalf("the history has no refusal of the under-signed deployment")
		}

		n.stop()
		for _, l := range n.leaks(base) {
			t.Errorf("after the agent stopped: %s", l)
		}
		if out := n.mustZos("node", "history", "--data", n.data); !strings.Contains(out, "chain verified") {
			t.Errorf("history of the stopped agent: %s", out)
		}

		// Change one record in the state file: the chain no longer verifies,
		// and the report names the record.
		db, err := bolt.Open(filepath.Join(n.data, "state.db"), 0o600, &bolt.Options{Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		err = db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket([]byte("history"))
			k := binary.BigEndian.AppendUint64(nil, refused)
			var rec map[string]any
			if err := json.Unmarshal(b.Get(k), &rec); err != nil {
				return err
			}
			rec["detail"] = "owner 1 version 1: accepted after all"
			v, _ := json.Marshal(rec)
			return b.Put(k, v)
		})
		db.Close()
		if err != nil {
			t.Fatal(err)
		}
		_, errs, code := n.zos("node", "history", "--data", n.data)
		if code != exitSignature || !strings.Contains(errs, fmt.Sprintf("record %d ", refused)) || !strings.Contains(errs, "changed") {
			t.Errorf("history of a tampered state: exit %d %q, want %d naming record %d", code, errs, exitSignature, refused)
		}
		n.clean = !t.Failed()
	})
	t.Logf("TestNodeE2E took %s", time.Since(start).Round(time.Millisecond))
}
