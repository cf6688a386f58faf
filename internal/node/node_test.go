package node

import (
	"bytes"
	"context"
	"encoding/json"
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

	bolt "go.etcd.io/bbolt"

	"github.com/zosgrid/zos/internal/auth"
	"github.com/zosgrid/zos/internal/key"
	"github.com/zosgrid/zos/internal/node/nodeclient"
	"github.com/zosgrid/zos/internal/pack"
	"github.com/zosgrid/zos/internal/spec"
	"github.com/zosgrid/zos/internal/store/mem"
)

// fixture is an agent over fakes, its API on loopback, an image served
// over HTTP, and two twins: 7 (the owner) and 8 (a co-signer).
type fixture struct {
	t        *testing.T
	agent    *Agent
	srv      *httptest.Server
	rt       *fakeRuntime
	net      *fakeNetwork
	gw       *fakeGateway
	mnt      *fakeMounter
	owner    key.Secret
	cosigner key.Secret
	other    key.Secret // twin 9, owns nothing here
	image    string     // flist digest
	imageURL string
	logs     *syncBuffer
	clock    *clock
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func mustKey(t *testing.T) key.Secret {
	t.Helper()
	k, err := key.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{t: t, rt: newFakeRuntime(), net: newFakeNetwork(), gw: &fakeGateway{hosts: map[string]string{}},
		mnt: newFakeMounter(), owner: mustKey(t), cosigner: mustKey(t), other: mustKey(t),
		logs: &syncBuffer{}, clock: &clock{t: time.Now()}}
	// An image: a tiny tree packed into a memory store, its flist served.
	tree := t.TempDir()
	os.WriteFile(filepath.Join(tree, "hello"), []byte("hi\n"), 0o644)
	fl, _, err := pack.Dir(context.Background(), tree, mem.New(), pack.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var served sync.Map
	served.Store("/img.fl", fl)
	img := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, ok := served.Load(r.URL.Path)
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(b.([]byte))
	}))
	t.Cleanup(img.Close)
	f.imageURL = img.URL + "/img.fl"
	f.image = digestOf(t, fl)

	data := t.TempDir()
	twins := TwinsFile(filepath.Join(data, "twins"))
	for id, k := range map[uint32]key.Secret{7: f.owner, 8: f.cosigner, 9: f.other} {
		if err := twins.Add(id, k.Public()); err != nil {
			t.Fatal(err)
		}
	}
	a, err := New(Options{
		Data: data, Key: mustKey(t), Twins: twins, Runtime: f.rt, Network: f.net, Gateway: f.gw, Mounter: f.mnt,
		Logger: slog.New(slog.NewTextHandler(f.logs, nil)), Now: f.clock.now, Interval: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	f.agent = a
	f.srv = httptest.NewServer(a.Handler())
	t.Cleanup(f.srv.Close)
	return f
}

func digestOf(t *testing.T, fl []byte) string {
	t.Helper()
	// The digest is the flist's own: open it as the node does.
	d, err := flistDigest(fl)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// spec returns a deployment signed by the given twins (7 is the owner).
func (f *fixture) spec(version int, extra string, signers map[uint32]key.Secret, requirement string) []byte {
	f.t.Helper()
	if requirement == "" {
		requirement = "{requests: [{twin: 7, weight: 1, required: true}], weight_required: 1}"
	}
	y := fmt.Sprintf(`version: %d
owner: 7
workloads:
  - {name: net, kind: network, network: {subnet: "10.1.0.0/24"}}
  - name: web
    kind: container
    container:
      image: {digest: "%s", url: "%s"}
      entrypoint: [/bin/sh, -c, "echo hi"]
      env: {A: "1"}
      memory: 67108864
      networks: [{network: net}]
      ports: [{port: 80}]
  - {name: gw, kind: gateway, gateway: {host: app.example.com, container: web, port: 80}}
%s
signature_requirement: %s
`, version, f.image, f.imageURL, extra, requirement)
	b := []byte(y)
	for twin, k := range signers {
		var err error
		if b, err = spec.Cosign(b, k, twin); err != nil {
			f.t.Fatal(err)
		}
	}
	return b
}

func (f *fixture) client(k key.Secret) *nodeclient.Client {
	c, err := nodeclient.New(f.srv.URL, k)
	if err != nil {
		f.t.Fatal(err)
	}
	return c
}

func code(err error) int {
	var se *nodeclient.StatusError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

func TestDeployReconcileDelete(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	c := f.client(f.owner)
	d, err := c.Deploy(ctx, f.spec(1, "", map[uint32]key.Secret{7: f.owner}, ""))
	if err != nil {
		t.Fatal(err)
	}
	if d.ID != 1 || d.Version != 1 {
		t.Fatalf("deployed %+v", d)
	}
	f.agent.reconcile(ctx)
	if got := f.rt.ids(); len(got) != 1 || got[0] != "d1-web" {
		t.Fatalf("containers %v", got)
	}
	s := f.rt.specs["d1-web"]
	if strings.Join(s.Args, " ") != "/bin/sh -c echo hi" || s.Memory != 64<<20 || s.Hostname != "web" || s.NetNS != "/run/fake/d1-web" {
		t.Fatalf("runtime spec %+v", s)
	}
	if !contains(s.Env, "A=1") || !contains(s.Env, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin") {
		t.Fatalf("env %v", s.Env)
	}
	if ip := f.net.sandboxes["d1-web"]["1-net"]; ip.String() != "10.1.0.2" {
		t.Fatalf("attachment %v", f.net.sandboxes)
	}
	if g := f.gw.Hosts()["app.example.com"]; g != "1-net 10.1.0.2:80" {
		t.Fatalf("gateway %q", g)
	}
	st, err := c.Get(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range st.Workloads {
		if w.State != nodeclient.WorkloadRunning && w.State != nodeclient.WorkloadOK {
			t.Fatalf("workload %+v", w)
		}
	}
	// A second pass changes nothing: no restart of a running container.
	f.agent.reconcile(ctx)
	if f.rt.starts["d1-web"] != 1 {
		t.Fatalf("started %d times", f.rt.starts["d1-web"])
	}

	if err := c.Delete(ctx, 1); err != nil {
		t.Fatal(err)
	}
	f.agent.reconcile(ctx)
	if len(f.rt.ids()) != 0 || len(f.net.networks) != 0 || len(f.net.sandboxes) != 0 || len(f.gw.Hosts()) != 0 || f.mnt.count() != 0 {
		t.Fatalf("left after delete: containers %v networks %v sandboxes %v hosts %v mounts %d", f.rt.ids(), f.net.networks, f.net.sandboxes, f.gw.Hosts(), f.mnt.count())
	}
	if st, _ := c.Get(ctx, 1); st.State != nodeclient.StateDeleted {
		t.Fatalf("state %s", st.State)
	}
	ev, err := c.Events(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, e := range ev {
		kinds = append(kinds, e.Kind)
	}
	want := "requested verified image-fetched mounted started delete-requested deleted"
	if strings.Join(kinds, " ") != want {
		t.Fatalf("events %q, want %q", strings.Join(kinds, " "), want)
	}
	if n, err := f.agent.DB().VerifyHistory(); err != nil || n != len(ev) {
		t.Fatalf("history: %d records, %v", n, err)
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func TestRestartWithBackoff(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	c := f.client(f.owner)
	if _, err := c.Deploy(ctx, f.spec(1, "", map[uint32]key.Secret{7: f.owner}, "")); err != nil {
		t.Fatal(err)
	}
	f.agent.reconcile(ctx)
	f.rt.exit("d1-web", 137, true)
	f.agent.reconcile(ctx) // notices the exit, schedules a restart in 1s
	st, _ := c.Get(ctx, 1)
	web := st.Workloads[2]
	if web.State != nodeclient.WorkloadRestarting || web.ExitCode == nil || *web.ExitCode != 137 || !web.OOMKilled || web.Restarts != 1 {
		t.Fatalf("after crash: %+v", web)
	}
	f.agent.reconcile(ctx) // too early
	if f.rt.starts["d1-web"] != 1 {
		t.Fatalf("restarted before its backoff")
	}
	f.clock.add(1100 * time.Millisecond)
	f.agent.reconcile(ctx)
	if f.rt.starts["d1-web"] != 2 {
		t.Fatalf("not restarted after its backoff: %d starts", f.rt.starts["d1-web"])
	}
	// A second crash waits 2s.
	f.rt.exit("d1-web", 1, false)
	f.agent.reconcile(ctx)
	f.clock.add(1500 * time.Millisecond)
	f.agent.reconcile(ctx)
	if f.rt.starts["d1-web"] != 2 {
		t.Fatalf("second restart came before 2s")
	}
	f.clock.add(600 * time.Millisecond)
	f.agent.reconcile(ctx)
	if f.rt.starts["d1-web"] != 3 {
		t.Fatalf("second restart missing")
	}
	ev, _ := c.Events(ctx, 1)
	var restarted, exited int
	for _, e := range ev {
		switch e.Kind {
		case "restarted":
			restarted++
		case "exited":
			exited++
			if exited == 1 && !strings.Contains(e.Detail, "exit code 137, killed for exceeding its memory limit") {
				t.Fatalf("exit event %q", e.Detail)
			}
		}
	}
	if restarted != 2 || exited != 2 {
		t.Fatalf("%d restarted, %d exited events", restarted, exited)
	}
}

func TestDeadMountRecreates(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	c := f.client(f.owner)
	if _, err := c.Deploy(ctx, f.spec(1, "", map[uint32]key.Secret{7: f.owner}, "")); err != nil {
		t.Fatal(err)
	}
	f.agent.reconcile(ctx)
	f.mnt.kill(filepath.Join(f.agent.opts.Data, "images")) // the image's FUSE server died
	f.agent.reconcile(ctx)
	if f.rt.starts["d1-web"] != 2 || f.mnt.count() != 2 {
		t.Fatalf("starts %d, mounts %d (want the image and the root)", f.rt.starts["d1-web"], f.mnt.count())
	}
	ev, _ := c.Events(ctx, 1)
	if !hasEvent(ev, "stopped", "image mount died: recreating") {
		t.Fatalf("events %+v", ev)
	}
}

// TestSharedImageMount runs two deployments of one image over a single
// image mount: its death recreates both, deleting one keeps it, deleting
// both removes it.
func TestSharedImageMount(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	c := f.client(f.owner)
	one := f.spec(1, "", map[uint32]key.Secret{7: f.owner}, "")
	two := f.spec(1, "", nil, "")
	two = bytes.Replace(two, []byte("app.example.com"), []byte("app2.example.com"), 1)
	two, err := spec.Cosign(two, f.owner, 7)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range [][]byte{one, two} {
		if _, err := c.Deploy(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	f.agent.reconcile(ctx)
	images := filepath.Join(f.agent.opts.Data, "images", "mnt")
	imageMounts := func() (n int) {
		f.mnt.mu.Lock()
		defer f.mnt.mu.Unlock()
		for dir := range f.mnt.mounted {
			if strings.HasPrefix(dir, images) {
				n++
			}
		}
		return n
	}
	if n, all := imageMounts(), f.mnt.count(); n != 1 || all != 3 {
		t.Fatalf("%d image mounts, %d mounts: want one image under two roots", n, all)
	}
	f.mnt.kill(images)
	f.agent.reconcile(ctx)
	if f.rt.starts["d1-web"] != 2 || f.rt.starts["d2-web"] != 2 || imageMounts() != 1 {
		t.Fatalf("after the image died: starts %d and %d, %d image mounts", f.rt.starts["d1-web"], f.rt.starts["d2-web"], imageMounts())
	}
	if err := c.Delete(ctx, 1); err != nil {
		t.Fatal(err)
	}
	f.agent.reconcile(ctx)
	if imageMounts() != 1 || f.mnt.count() != 2 {
		t.Fatalf("after one delete: %d image mounts, %d mounts", imageMounts(), f.mnt.count())
	}
	if err := c.Delete(ctx, 2); err != nil {
		t.Fatal(err)
	}
	f.agent.reconcile(ctx)
	if f.mnt.count() != 0 {
		t.Fatalf("after both deletes: %d mounts left", f.mnt.count())
	}
	if ents, _ := os.ReadDir(images); len(ents) != 0 {
		t.Errorf("image mount points left: %v", ents)
	}
}

func hasEvent(ev []nodeclient.Event, kind, detail string) bool {
	for _, e := range ev {
		if e.Kind == kind && strings.Contains(e.Detail, detail) {
			return true
		}
	}
	return false
}

func TestUpdateRecreatesChanged(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	c := f.client(f.owner)
	if _, err := c.Deploy(ctx, f.spec(1, "", map[uint32]key.Secret{7: f.owner}, "")); err != nil {
		t.Fatal(err)
	}
	f.agent.reconcile(ctx)
	v2 := bytes.Replace(f.spec(2, "", map[uint32]key.Secret{}, ""), []byte(`A: "1"`), []byte(`A: "2"`), 1)
	v2, err := spec.Cosign(v2, f.owner, 7)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Update(ctx, 1, v2); err != nil {
		t.Fatal(err)
	}
	f.agent.reconcile(ctx)
	if f.rt.starts["d1-web"] != 2 || !contains(f.rt.specs["d1-web"].Env, "A=2") {
		t.Fatalf("starts %d env %v", f.rt.starts["d1-web"], f.rt.specs["d1-web"].Env)
	}
	// The same version again, or a lower one, is refused.
	if _, err := c.Update(ctx, 1, v2); code(err) != http.StatusConflict {
		t.Fatalf("same version: %v", err)
	}
}

func TestOrphansRemoved(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	// Leftovers of an agent killed half-way through a deployment that was
	// then deleted: a container, a sandbox, a network, a gateway host.
	f.rt.Start(ctx, runtimeSpec("d42-web"))
	f.net.EnsureNetwork(ctx, "42-net", mustPrefix("10.9.0.0/24"))
	f.net.Sandbox(ctx, "d42-web")
	f.gw.Set("old.example.com", "42-net", mustAddrPort("10.9.0.2:80"))
	f.agent.reconcile(ctx)
	if len(f.rt.ids()) != 0 || len(f.net.networks) != 0 || len(f.net.sandboxes) != 0 || len(f.gw.Hosts()) != 0 {
		t.Fatalf("orphans left: %v %v %v %v", f.rt.ids(), f.net.networks, f.net.sandboxes, f.gw.Hosts())
	}
}

// TestRefusals: unsigned, tampered, expired, replayed, wrongly addressed
// and under-signed requests are refused, and each refusal is logged.
func TestRefusals(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	post := func(body []byte, edit func(*http.Request)) int {
		req, _ := http.NewRequest(http.MethodPost, f.srv.URL+"/v1/deployments", bytes.NewReader(body))
		auth.Sign(req, f.owner, body)
		if edit != nil {
			edit(req)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	good := f.spec(1, "", map[uint32]key.Secret{7: f.owner}, "")

	t.Run("unsigned", func(t *testing.T) {
		if c := post(good, func(r *http.Request) { r.Header.Del("Authorization") }); c != http.StatusUnauthorized {
			t.Fatalf("status %d", c)
		}
	})
	t.Run("tampered body", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodPost, f.srv.URL+"/v1/deployments", bytes.NewReader(good))
		auth.Sign(req, f.owner, good)
		evil := bytes.Replace(good, []byte("echo hi"), []byte("echo XX"), 1)
		req.Body = ioNopCloser(evil)
		req.ContentLength = int64(len(evil))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("status %d", resp.StatusCode)
		}
	})
	t.Run("expired", func(t *testing.T) {
		f.clock.add(time.Hour) // the node's clock is an hour ahead of the signature
		defer f.clock.add(-time.Hour)
		if c := post(good, nil); c != http.StatusUnauthorized {
			t.Fatalf("status %d", c)
		}
	})
	t.Run("replayed", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodPost, f.srv.URL+"/v1/deployments", bytes.NewReader(good))
		auth.Sign(req, f.owner, good)
		hdr := req.Header.Get("Authorization")
		if c := post(good, func(r *http.Request) { r.Header.Set("Authorization", hdr) }); c != http.StatusAccepted {
			t.Fatalf("first: status %d", c)
		}
		if c := post(good, func(r *http.Request) { r.Header.Set("Authorization", hdr) }); c != http.StatusUnauthorized {
			t.Fatalf("replay: status %d", c)
		}
	})
	t.Run("unregistered key", func(t *testing.T) {
		stranger := mustKey(t)
		if _, err := f.client(stranger).Deploy(ctx, good); code(err) != http.StatusForbidden {
			t.Fatalf("%v", err)
		}
	})
	t.Run("not the owner", func(t *testing.T) {
		if _, err := f.client(f.other).Deploy(ctx, good); code(err) != http.StatusForbidden {
			t.Fatalf("%v", err)
		}
		if _, err := f.client(f.other).Get(ctx, 1); code(err) != http.StatusNotFound {
			t.Fatalf("another's deployment: %v", err)
		}
		if err := f.client(f.other).Delete(ctx, 1); code(err) != http.StatusNotFound {
			t.Fatalf("delete another's deployment: %v", err)
		}
	})
	t.Run("under-signed", func(t *testing.T) {
		req := "{requests: [{twin: 7, weight: 1, required: true}, {twin: 8, weight: 1, required: true}], weight_required: 2}"
		only7 := f.spec(1, "", map[uint32]key.Secret{7: f.owner}, req)
		_, err := f.client(f.owner).Deploy(ctx, only7)
		if code(err) != http.StatusForbidden || !strings.Contains(err.Error(), "required twins not signed: 8") {
			t.Fatalf("%v", err)
		}
		both := bytes.Replace(f.spec(1, "", nil, req), []byte("app.example.com"), []byte("b.example.com"), 1)
		for twin, k := range map[uint32]key.Secret{7: f.owner, 8: f.cosigner} {
			var err error
			if both, err = spec.Cosign(both, k, twin); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := f.client(f.owner).Deploy(ctx, both); err != nil {
			t.Fatalf("fully signed: %v", err)
		}
		// A signature by the right twin id with another key does not count.
		forged := f.spec(1, "", map[uint32]key.Secret{7: f.owner, 8: mustKey(t)}, req)
		if _, err := f.client(f.owner).Deploy(ctx, forged); code(err) != http.StatusForbidden {
			t.Fatalf("forged co-signature: %v", err)
		}
	})
	t.Run("history only for the node", func(t *testing.T) {
		if _, err := f.client(f.owner).History(ctx); code(err) != http.StatusForbidden {
			t.Fatalf("%v", err)
		}
		if _, err := f.client(f.agent.opts.Key).History(ctx); err != nil {
			t.Fatal(err)
		}
	})
	logs := f.logs.String()
	for _, want := range []string{"no authorization", "signature does not verify", "timestamp", "replay", "not a registered twin", "not signed by the key of the deployment's owner", "required twins not signed: 8"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks a refusal with %q", want)
		}
	}
	if t.Failed() {
		t.Logf("log:\n%s", logs)
	}
	ev, _ := f.agent.DB().History(0)
	if !hasEvent(ev, "refused", "required twins not signed: 8") {
		t.Fatalf("the under-signed deployment is not in the history")
	}
}

func TestHistoryTamper(t *testing.T) {
	dir := t.TempDir()
	k := mustKey(t)
	db, err := OpenDB(filepath.Join(dir, "state.db"), k, false, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		if _, err := db.Record(nodeclient.Event{Deployment: 1, Kind: "started", Detail: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := db.VerifyHistory(); err != nil || n != 5 {
		t.Fatalf("%d %v", n, err)
	}
	ev, _ := db.History(0)
	edit := func(seq uint64, fn func(e *nodeclient.Event), del bool) {
		t.Helper()
		err := db.bolt.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketHistory)
			if del {
				return b.Delete(u64(seq))
			}
			e := ev[seq-1]
			fn(&e)
			v, _ := json.Marshal(e)
			return b.Put(u64(seq), v)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name string
		seq  uint64
		fn   func(e *nodeclient.Event)
		del  bool
		want string
	}{
		{"detail changed", 3, func(e *nodeclient.Event) { e.Detail = "x" }, false, "record 3 (started, deployment 1): history tampered: content does not match"},
		{"rehashed without the key", 3, func(e *nodeclient.Event) { e.Detail = "x"; e.Hash = hashEvent(*e).String() }, false, "record 3 (started, deployment 1): history tampered: signature"},
		{"removed", 2, nil, true, "sequence number 3 where 2 was due"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			edit(tc.seq, tc.fn, tc.del)
			_, err := db.VerifyHistory()
			if !errors.Is(err, ErrTampered) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
			// restore
			db.bolt.Update(func(tx *bolt.Tx) error {
				v, _ := json.Marshal(ev[tc.seq-1])
				return tx.Bucket(bucketHistory).Put(u64(tc.seq), v)
			})
			if _, err := db.VerifyHistory(); err != nil {
				t.Fatalf("restored: %v", err)
			}
		})
	}
}

func TestImageChangedRefused(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	// The spec pins another digest than what the URL serves.
	b := bytes.Replace(f.spec(1, "", nil, ""), []byte(f.image), []byte(strings.Repeat("ab", 32)), 1)
	b, err := spec.Cosign(b, f.owner, 7)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.client(f.owner).Deploy(ctx, b); err != nil {
		t.Fatal(err)
	}
	f.agent.reconcile(ctx)
	f.agent.reconcile(ctx)
	if len(f.rt.ids()) != 0 {
		t.Fatalf("a container runs from a changed image")
	}
	ev, _ := f.agent.DB().History(1)
	n := 0
	for _, e := range ev {
		if e.Kind == "image-refused" {
			n++
			if !strings.Contains(e.Detail, "image changed") {
				t.Fatalf("event %q", e.Detail)
			}
		}
	}
	if n != 1 {
		t.Fatalf("%d image-refused events, want 1: %+v", n, ev)
	}
	st, _ := f.client(f.owner).Get(ctx, 1)
	if st.Workloads[2].State != nodeclient.WorkloadFailed || !strings.Contains(st.Workloads[2].Detail, "image changed") {
		t.Fatalf("status %+v", st.Workloads[2])
	}
}

func TestGatewayHostTaken(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	c := f.client(f.owner)
	if _, err := c.Deploy(ctx, f.spec(1, "", map[uint32]key.Secret{7: f.owner}, "")); err != nil {
		t.Fatal(err)
	}
	// The same host name in a second deployment is refused while the first lives.
	if _, err := c.Deploy(ctx, f.spec(1, "", map[uint32]key.Secret{7: f.owner}, "")); code(err) != http.StatusConflict || !strings.Contains(err.Error(), "app.example.com") {
		t.Fatalf("second claim of the host: %v", err)
	}
	// An update of the deployment that holds it is fine.
	if _, err := c.Update(ctx, 1, f.spec(2, "", map[uint32]key.Secret{7: f.owner}, "")); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(ctx, 1); err != nil {
		t.Fatal(err)
	}
	f.agent.reconcile(ctx)
	if _, err := c.Deploy(ctx, f.spec(1, "", map[uint32]key.Secret{7: f.owner}, "")); err != nil {
		t.Fatalf("after the holder was deleted: %v", err)
	}
}

func TestRotateLog(t *testing.T) {
	p := filepath.Join(t.TempDir(), "log")
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.WriteString(strings.Repeat("a", 100))
	if err := rotateLog(p, 200); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p + ".1"); !os.IsNotExist(err) {
		t.Fatalf("rotated under the limit")
	}
	f.WriteString(strings.Repeat("b", 150))
	if err := rotateLog(p, 200); err != nil {
		t.Fatal(err)
	}
	f.WriteString("after\n") // the writer's descriptor goes on at the new end
	old, _ := os.ReadFile(p + ".1")
	cur, _ := os.ReadFile(p)
	if len(old) != 250 || string(cur) != "after\n" {
		t.Fatalf("log.1 %d bytes, log %q", len(old), cur)
	}
	b, err := readTail(p+".1", 10)
	if err != nil || string(b) != strings.Repeat("b", 10) {
		t.Fatalf("tail %q %v", b, err)
	}
}
