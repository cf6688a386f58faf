package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// startHubServe runs `zos hub serve` on a free loopback port with extra
// flags and returns its URL.
func startHubServe(t *testing.T, flags ...string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	args := append([]string{"hub", "serve", "--listen", addr, "--data", t.TempDir(), "--log-level", "warn"}, flags...)
	cmd := exec.Command(zosBin, args...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for range 100 {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return "http://" + addr
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("zos hub serve did not start")
	return ""
}

// TestCLIHubConvert: `zos hub convert --wait` on a hub gives the flist
// that `zos flist pack docker://REF --store HUB/chunks` gives locally.
func TestCLIHubConvert(t *testing.T) {
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	idx, err := layout.ImageIndexFromPath(ociLayout(t))
	if err != nil {
		t.Fatal(err)
	}
	im, _ := idx.IndexManifest()
	img, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	ref, _ := name.ParseReference(u.Host + "/app:v1")
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	src := "docker://" + u.Host + "/app:v1"

	hubURL := startHubServe(t, "--convert-allow-private")
	dir := t.TempDir()
	k := filepath.Join(dir, "alice.key")
	mustRun(t, "key", "gen", k)
	mustRun(t, "hub", "register", "alice", "--hub", hubURL, "--key", k)

	out := mustRun(t, "flist", "pack", src, "-o", filepath.Join(dir, "local.fl"), "--store", hubURL+"/chunks", "--key", k, "--json")
	var local struct{ Digest string }
	if err := json.Unmarshal([]byte(out), &local); err != nil || local.Digest == "" {
		t.Fatalf("pack: %v %s", err, out)
	}

	out = mustRun(t, "hub", "convert", src, "alice/app:v1", "--hub", hubURL, "--key", k, "--wait", "--json")
	var job struct {
		State  string
		Result struct{ Ref, Digest string }
	}
	if err := json.Unmarshal([]byte(out), &job); err != nil || job.State != "done" {
		t.Fatalf("convert --wait --json: %v %s", err, out)
	}
	if job.Result.Digest != local.Digest || job.Result.Ref != "alice/app:v1" {
		t.Fatalf("hub converted %s as %s; zos flist pack gave %s", job.Result.Digest, job.Result.Ref, local.Digest)
	}

	// Without --wait: the job ID; --job waits for it (no key needed to read
	// a public namespace's job).
	id := strings.TrimSpace(mustRun(t, "hub", "convert", src, "alice/app", "--hub", hubURL, "--key", k))
	got := mustRun(t, "hub", "convert", "--job", id, "--hub", hubURL)
	if want := fmt.Sprintf("alice/app:latest@%s\n", local.Digest); got != want {
		t.Fatalf("convert --job: %q, want %q", got, want)
	}

	// A missing image: the job fails, the command says why and exits non-zero.
	_, errs, code := run(t, "hub", "convert", "docker://"+u.Host+"/nope:v1", "alice/nope", "--hub", hubURL, "--key", k, "--wait")
	if code == 0 || !strings.Contains(errs, "failed") || !strings.Contains(strings.ToLower(errs), "unknown") {
		t.Fatalf("missing image: exit %d: %s", code, errs)
	}

	// A hub started without --convert-allow-private refuses the loopback registry.
	strict := startHubServe(t)
	mustRun(t, "hub", "register", "alice", "--hub", strict, "--key", k)
	_, errs, code = run(t, "hub", "convert", src, "alice/app", "--hub", strict, "--key", k, "--wait")
	if code == 0 || !strings.Contains(errs, "--convert-allow-private") {
		t.Fatalf("strict hub: exit %d: %s", code, errs)
	}
}

// TestCLIHubConvertArchive: `zos hub convert docker-archive:FILE` uploads
// the tarball, and the hub converts it into the flist `zos flist pack
// docker-archive:FILE --store HUB/chunks` gives locally; converting it
// again over the same tag names the flist it replaces as its base.
func TestCLIHubConvertArchive(t *testing.T) {
	idx, err := layout.ImageIndexFromPath(ociLayout(t))
	if err != nil {
		t.Fatal(err)
	}
	im, _ := idx.IndexManifest()
	img, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "app.tar")
	if err := tarball.WriteToFile(file, name.MustParseReference("example.com/app:v1"), img); err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	hubURL := startHubServe(t, "--convert-tmp", tmp)
	k := filepath.Join(dir, "alice.key")
	mustRun(t, "key", "gen", k)
	mustRun(t, "hub", "register", "alice", "--hub", hubURL, "--key", k)

	out := mustRun(t, "flist", "pack", "docker-archive:"+file, "-o", filepath.Join(dir, "local.fl"), "--store", hubURL+"/chunks", "--key", k, "--json")
	var local struct{ Digest string }
	if err := json.Unmarshal([]byte(out), &local); err != nil || local.Digest == "" {
		t.Fatalf("pack: %v %s", err, out)
	}
	var job struct {
		State, Source, Base string
		Result              struct{ Ref, Digest string }
	}
	for i, wantBase := range []string{"", local.Digest} {
		out = mustRun(t, "hub", "convert", "docker-archive:"+file, "alice/app:v1", "--hub", hubURL, "--key", k, "--wait", "--json")
		job.Base = ""
		if err := json.Unmarshal([]byte(out), &job); err != nil || job.State != "done" || !strings.HasPrefix(job.Source, "docker-archive:upload/") {
			t.Fatalf("convert %d: %v %s", i, err, out)
		}
		if job.Result.Digest != local.Digest || job.Result.Ref != "alice/app:v1" || job.Base != wantBase {
			t.Fatalf("convert %d: %s as %s, base %q; zos flist pack gave %s", i, job.Result.Digest, job.Result.Ref, job.Base, local.Digest)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(tmp, "zos-upload-*")); len(left) > 0 {
		t.Fatalf("uploads left in --convert-tmp: %v", left)
	}
	// --creds make no sense for an upload.
	if _, _, code := run(t, "hub", "convert", "docker-archive:"+file, "alice/app", "--hub", hubURL, "--key", k, "--creds", "u:p"); code != exitUsage {
		t.Fatalf("--creds with an upload: exit %d", code)
	}
}
