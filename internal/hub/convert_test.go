package hub

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/zosgrid/zos/internal/flist"
	"github.com/zosgrid/zos/internal/hub/hubclient"
	"github.com/zosgrid/zos/internal/oci"
	"github.com/zosgrid/zos/internal/pack"
	"github.com/zosgrid/zos/internal/store/mem"
	"github.com/zosgrid/zos/internal/store/storetest"
)

type tent struct {
	name string
	typ  byte
	data []byte
	link string
}

func tarLayer(t *testing.T, ents []tent) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	w := tar.NewWriter(&buf)
	for i, e := range ents {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		h := &tar.Header{Name: e.name, Typeflag: typ, Mode: 0o644, Linkname: e.link,
			ModTime: time.Unix(1700000000+int64(i), 0), Size: int64(len(e.data))}
		if typ == tar.TypeDir {
			h.Mode = 0o755
		}
		if typ != tar.TypeReg {
			h.Size = 0
		}
		if err := w.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		w.Write(e.data)
	}
	w.Close()
	b := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil },
		tarball.WithMediaType(types.OCILayer))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func noise(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 3))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32() % 17)
	}
	return b
}

// testImage has three layers that add, replace and delete files and
// directories, with files large enough to be chunked as they stream.
func testImage(t *testing.T) v1.Image {
	t.Helper()
	l1 := tarLayer(t, []tent{
		{name: "etc/", typ: tar.TypeDir},
		{name: "etc/os-release", data: []byte("ID=test\n")},
		{name: "usr/lib/big.so", data: noise(1, 700<<10)},
		{name: "usr/lib/gone/a", data: []byte("a")},
		{name: "bin", typ: tar.TypeSymlink, link: "usr/bin"},
	})
	l2 := tarLayer(t, []tent{
		{name: "usr/bin/tool", data: noise(2, 300<<10)},
		{name: "usr/lib/.wh.gone"},
		{name: "etc/os-release", data: []byte("ID=test2\n")},
	})
	l3 := tarLayer(t, []tent{
		{name: "usr/lib/big.so", data: noise(3, 500<<10)},
		{name: "etc/.wh.os-release"},
		{name: "srv/data", data: noise(4, 2<<20)},
	})
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	cf, err := base.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config = v1.Config{Cmd: []string{"/usr/bin/tool"}, Env: []string{"PATH=/usr/bin"}, WorkingDir: "/srv"}
	img, err := mutate.ConfigFile(base, cf)
	if err != nil {
		t.Fatal(err)
	}
	if img, err = mutate.AppendLayers(img, l1, l2, l3); err != nil {
		t.Fatal(err)
	}
	return img
}

// startRegistry serves a registry on loopback, through wrap if not nil.
func startRegistry(t *testing.T, wrap func(http.Handler) http.Handler) string {
	t.Helper()
	var h http.Handler = registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	if wrap != nil {
		h = wrap(h)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	return u.Host
}

func pushImage(t *testing.T, repo string, img v1.Image) {
	t.Helper()
	ref, err := name.ParseReference(repo)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
}

func convertHub(t *testing.T, b *Backend, mod func(*ConvertOptions)) *testHub {
	t.Helper()
	th := startHub(t, b, func(o *Options) {
		o.Convert = ConvertOptions{AllowPrivate: true, Heartbeat: 20 * time.Millisecond, TempDir: t.TempDir()}
		if mod != nil {
			mod(&o.Convert)
		}
	})
	t.Cleanup(th.Close)
	return th
}

func waitJob(t *testing.T, cl *hubclient.Client, id string) hubclient.Job {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	j, err := cl.WaitJob(ctx, id, 20*time.Millisecond, nil)
	if err != nil {
		t.Fatalf("job %s: %v", id, err)
	}
	return j
}

// TestConvert: the hub converts a multi-layer image from a registry into
// the flist `zos flist pack docker://REF --store HUB/chunks` makes, and
// publishes it like a push; a second hub over the same backend answers
// for the job.
func TestConvert(t *testing.T) {
	reg := startRegistry(t, nil)
	pushImage(t, reg+"/app:v1", testImage(t))
	b := dirBackend(t)
	th := convertHub(t, b, nil)
	register(t, th.url, alice, "alice")
	cl := client(t, th.url, &alice)
	ctx := context.Background()

	j, err := cl.Convert(ctx, hubclient.ConvertRequest{Source: "docker://" + reg + "/app:v1", Target: "alice/app:v1"})
	if err != nil {
		t.Fatal(err)
	}
	if j.State != hubclient.JobQueued || j.Target != "alice/app:v1" || j.By != alice.Public() {
		t.Fatalf("admitted job: %+v", j)
	}
	var progress []hubclient.Job
	var mu sync.Mutex
	j, err = cl.WaitJob(ctx, j.ID, 5*time.Millisecond, func(j hubclient.Job) {
		mu.Lock()
		progress = append(progress, j)
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	if j.State != hubclient.JobDone || j.Result == nil || j.Error != "" {
		t.Fatalf("job: %+v", j)
	}
	if j.Progress.Layers != 3 || j.Progress.Layer != 3 || j.Progress.Bytes == 0 || j.Progress.ImageBytes == 0 || j.Progress.NewChunks == 0 {
		t.Errorf("progress at the end: %+v", j.Progress)
	}

	// The same engine locally, recording the hub's chunk store as the CLI does.
	img, err := oci.Open(ctx, "docker://"+reg+"/app:v1", oci.Options{})
	if err != nil {
		t.Fatal(err)
	}
	local, _, err := pack.Layers(ctx, img, mem.New(), pack.Options{Meta: img.Meta(), Stores: []string{th.url + "/chunks"}})
	if err != nil {
		t.Fatal(err)
	}
	lr, _ := flist.Open(local)
	if j.Result.Digest != lr.Digest() {
		t.Fatalf("hub converted %s, local pack %s", j.Result.Digest, lr.Digest())
	}
	p, err := cl.Pull(ctx, mustRef(t, "alice/app:v1"))
	if err != nil || p.Digest != lr.Digest() {
		t.Fatalf("pull: %v %v", p.Digest, err)
	}
	if missing, err := th.missingClosure(ctx, lr.Chunks()); err != nil || len(missing) > 0 {
		t.Fatalf("chunks missing after a conversion: %d %v", len(missing), err)
	}

	// Any hub over the backend answers for the job; it reads the record.
	other := convertHub(t, b, nil)
	oj, err := client(t, other.url, nil).Job(ctx, j.ID)
	if err != nil || oj.State != hubclient.JobDone || oj.Result.Digest != j.Result.Digest {
		t.Fatalf("job through another hub: %+v %v", oj, err)
	}
	// Nothing of it is secret but the credentials, which it never held.
	raw, _ := b.Objects.Get(ctx, jobObj(j.ID))
	if bytes.Contains(raw, []byte("password")) {
		t.Errorf("job record holds credentials: %s", raw)
	}

	// Converting again uploads nothing new.
	j2, err := cl.Convert(ctx, hubclient.ConvertRequest{Source: "docker://" + reg + "/app:v1", Target: "alice/app"})
	if err != nil {
		t.Fatal(err)
	}
	j2 = waitJob(t, cl, j2.ID)
	if j2.State != hubclient.JobDone || j2.Progress.NewChunks != 0 || j2.Result.Ref != "alice/app:latest" {
		t.Fatalf("second conversion: %+v %+v", j2, j2.Result)
	}

	body := scrape(t, th.url)
	for _, want := range []string{`zos_hub_conversion_jobs_total{result="done"} 2`, `zos_hub_conversion_duration_seconds_count{result="done"} 2`} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func scrape(t *testing.T, hubURL string) string {
	t.Helper()
	resp, err := http.Get(hubURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestConvertFailures: a missing image and a registry at a private
// address fail with clear errors; unsigned and foreign requests are
// refused; bad sources are 400.
func TestConvertFailures(t *testing.T) {
	reg := startRegistry(t, nil)
	pushImage(t, reg+"/app:v1", testImage(t))
	b := dirBackend(t)
	th := convertHub(t, b, nil)
	register(t, th.url, alice, "alice")
	register(t, th.url, bob, "bob")
	cl := client(t, th.url, &alice)
	ctx := context.Background()

	j, err := cl.Convert(ctx, hubclient.ConvertRequest{Source: "docker://" + reg + "/nothing:here", Target: "alice/x"})
	if err != nil {
		t.Fatal(err)
	}
	j = waitJob(t, cl, j.ID)
	if j.State != hubclient.JobFailed || !strings.Contains(strings.ToLower(j.Error), "unknown") || j.Result != nil {
		t.Fatalf("missing image: %+v", j)
	}
	if _, err := cl.Pull(ctx, mustRef(t, "alice/x")); code(err) != http.StatusNotFound {
		t.Fatalf("a failed conversion published something: %v", err)
	}

	req := hubclient.ConvertRequest{Source: "docker://" + reg + "/app:v1", Target: "alice/app"}
	if _, err := client(t, th.url, nil).Convert(ctx, req); code(err) != http.StatusUnauthorized {
		t.Errorf("unsigned convert: %v", err)
	}
	if _, err := client(t, th.url, &bob).Convert(ctx, req); code(err) != http.StatusForbidden {
		t.Errorf("convert into another's namespace: %v", err)
	}
	for _, src := range []string{"oci:/etc", "docker-archive:/etc/passwd", "/etc", "docker://", "docker://u:secret@" + reg + "/app:v1"} {
		if _, err := cl.Convert(ctx, hubclient.ConvertRequest{Source: src, Target: "alice/app"}); code(err) != http.StatusBadRequest {
			t.Errorf("source %q: %v", src, err)
		}
	}
	if _, err := cl.Convert(ctx, hubclient.ConvertRequest{Source: req.Source, Target: "alice/app@" + strings.Repeat("ab", 32)}); code(err) != http.StatusBadRequest {
		t.Errorf("target with a digest: %v", err)
	}
	if _, err := cl.Job(ctx, strings.Repeat("a", 32)); code(err) != http.StatusNotFound {
		t.Errorf("unknown job: %v", err)
	}

	// A hub that was not told otherwise refuses loopback registries.
	strict := convertHub(t, b, func(o *ConvertOptions) { o.AllowPrivate = false })
	scl := client(t, strict.url, &alice)
	j, err = scl.Convert(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	j = waitJob(t, scl, j.ID)
	if j.State != hubclient.JobFailed || !strings.Contains(j.Error, "--convert-allow-private") {
		t.Fatalf("loopback registry on a strict hub: %+v", j)
	}
	if !strings.Contains(scrape(t, strict.url), `zos_hub_conversion_jobs_total{result="failed"} 1`) {
		t.Error("failed job not counted")
	}

	// An image larger than the hub's limit fails, and publishes nothing.
	small := convertHub(t, b, func(o *ConvertOptions) { o.MaxBytes = 100 << 10 })
	mcl := client(t, small.url, &alice)
	j, err = mcl.Convert(ctx, hubclient.ConvertRequest{Source: req.Source, Target: "alice/huge"})
	if err != nil {
		t.Fatal(err)
	}
	if j = waitJob(t, mcl, j.ID); j.State != hubclient.JobFailed || !strings.Contains(j.Error, "limit") {
		t.Fatalf("image over the limit: %+v", j)
	}
	if _, err := mcl.Pull(ctx, mustRef(t, "alice/huge")); code(err) != http.StatusNotFound {
		t.Fatalf("an image over the limit was published: %v", err)
	}
}

// TestConvertQueue: with one worker and one queue place, a third job is
// refused with 429 while the first runs; all admitted jobs end.
func TestConvertQueue(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	reg := startRegistry(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/manifests/") {
				<-release
			}
			h.ServeHTTP(w, r)
		})
	})
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	// Pushing reads manifests with HEAD only.
	pushImage(t, reg+"/app:v1", testImage(t))
	th := convertHub(t, dirBackend(t), func(o *ConvertOptions) { o.Workers, o.Queue = 1, 1 })
	register(t, th.url, alice, "alice")
	cl := client(t, th.url, &alice)
	ctx := context.Background()
	req := hubclient.ConvertRequest{Source: "docker://" + reg + "/app:v1", Target: "alice/app"}
	var ids []string
	for range 2 {
		j, err := cl.Convert(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, j.ID)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		j, err := cl.Job(ctx, ids[0])
		if err != nil {
			t.Fatal(err)
		}
		if j.State == hubclient.JobRunning {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("first job never ran: %+v", j)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if j, _ := cl.Job(ctx, ids[1]); j.State != hubclient.JobQueued {
		t.Errorf("second job: %s, want queued", j.State)
	}
	_, err := cl.Convert(ctx, req)
	var se *hubclient.StatusError
	if !errors.As(err, &se) || se.Code != http.StatusTooManyRequests {
		t.Fatalf("third job: %v, want 429", err)
	}
	once.Do(func() { close(release) })
	for _, id := range ids {
		if j := waitJob(t, cl, id); j.State != hubclient.JobDone {
			t.Errorf("job %s: %+v", id, j)
		}
	}
	if !strings.Contains(scrape(t, th.url), `zos_hub_conversion_jobs_total{result="refused"} 1`) {
		t.Error("refused job not counted")
	}
}

// TestConvertStale: a job whose hub stopped writing it is reported failed
// after StaleAfter; a hub that shuts down records its jobs as failed.
func TestConvertStale(t *testing.T) {
	b := dirBackend(t)
	now := time.Now()
	th := startHub(t, b, func(o *Options) {
		o.Now = func() time.Time { return now }
		o.Convert.StaleAfter = time.Minute
	})
	t.Cleanup(th.Close)
	register(t, th.url, alice, "alice")
	ctx := context.Background()
	id := strings.Repeat("b", 32)
	rec := hubclient.Job{ID: id, State: hubclient.JobRunning, Source: "docker://x/y", Target: "alice/y:latest",
		By: alice.Public(), Created: now.Add(-time.Hour), Updated: now.Add(-30 * time.Second)}
	raw, _ := json.Marshal(rec)
	if err := b.Objects.Put(ctx, jobObj(id), raw); err != nil {
		t.Fatal(err)
	}
	cl := client(t, th.url, nil)
	if j, err := cl.Job(ctx, id); err != nil || j.State != hubclient.JobRunning {
		t.Fatalf("fresh job: %+v %v", j, err)
	}
	now = now.Add(time.Minute)
	j, err := cl.Job(ctx, id)
	if err != nil || j.State != hubclient.JobFailed || !strings.Contains(j.Error, "stopped") {
		t.Fatalf("stale job: %+v %v", j, err)
	}

	// Shutting down: a job waiting on a registry that never answers ends
	// failed, recorded.
	block := make(chan struct{})
	reg := startRegistry(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-block:
			case <-r.Context().Done():
			}
		})
	})
	t.Cleanup(func() { close(block) })
	h2 := convertHub(t, b, nil)
	j, err = client(t, h2.url, &alice).Convert(ctx, hubclient.ConvertRequest{Source: "docker://" + reg + "/a:b", Target: "alice/a"})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	h2.Close()
	var got hubclient.Job
	if raw, err := b.Objects.Get(ctx, jobObj(j.ID)); err != nil || json.Unmarshal(raw, &got) != nil {
		t.Fatal(err)
	}
	if got.State != hubclient.JobFailed || !strings.Contains(got.Error, "shut down") {
		t.Fatalf("job of a hub that shut down: %+v", got)
	}
}

func TestPublicAddr(t *testing.T) {
	for _, tc := range []struct {
		ip     string
		public bool
	}{
		{"8.8.8.8", true}, {"2606:4700::1111", true}, {"151.101.1.1", true},
		{"127.0.0.1", false}, {"::1", false}, {"10.1.2.3", false}, {"172.16.0.1", false}, {"192.168.1.1", false},
		{"169.254.169.254", false}, {"100.64.0.1", false}, {"0.0.0.0", false}, {"::", false}, {"fc00::1", false},
		{"fe80::1", false}, {"::ffff:127.0.0.1", false}, {"::ffff:10.0.0.1", false}, {"64:ff9b::a00:1", false},
		{"64:ff9b::808:808", true}, {"224.0.0.1", false}, {"255.255.255.255", false}, {"198.18.0.1", false},
	} {
		if got := publicAddr(netip.MustParseAddr(tc.ip)); got != tc.public {
			t.Errorf("%s: public %v, want %v", tc.ip, got, tc.public)
		}
	}
}

// TestConvertS3: over one MinIO bucket, a job started on one hub is
// answered by another while it runs and after it ends, and its flist is
// served by both.
func TestConvertS3(t *testing.T) {
	ctx := context.Background()
	endpoint, access, secret := storetest.StartMinIO(t)
	data := "s3://" + access + ":" + secret + "@" + endpoint + "/zoshub/conv?tls=false"
	open := func() *Backend {
		b, err := OpenBackend(ctx, data)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		return b
	}
	release := make(chan struct{})
	reg := startRegistry(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
				<-release // hold the layers until B has seen the job running
			}
			h.ServeHTTP(w, r)
		})
	})
	pushImage(t, reg+"/app:v1", testImage(t))
	a, b := convertHub(t, open(), nil), convertHub(t, open(), nil)
	register(t, a.url, alice, "alice")
	j, err := client(t, a.url, &alice).Convert(ctx, hubclient.ConvertRequest{Source: "docker://" + reg + "/app:v1", Target: "alice/app"})
	if err != nil {
		close(release)
		t.Fatal(err)
	}
	cb := client(t, b.url, nil)
	deadline := time.Now().Add(20 * time.Second)
	for {
		bj, err := cb.Job(ctx, j.ID)
		if err == nil && bj.State == hubclient.JobRunning {
			break
		}
		if time.Now().After(deadline) {
			close(release)
			t.Fatalf("hub B never saw the job running: %+v %v", bj, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	close(release)
	done := waitJob(t, cb, j.ID)
	if done.State != hubclient.JobDone {
		t.Fatalf("job through B: %+v", done)
	}
	if p, err := cb.Pull(ctx, mustRef(t, "alice/app")); err != nil || p.Digest != done.Result.Digest {
		t.Fatalf("pull through B: %v %v", p.Digest, err)
	}
}
