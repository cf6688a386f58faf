package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// ociLayout writes a two-layer image (the second deletes and replaces) as
// an OCI layout tagged v1, with the standard library only: what any image
// builder writes.
func ociLayout(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "layout")
	blobs := filepath.Join(dir, "blobs", "sha256")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		t.Fatal(err)
	}
	put := func(b []byte) (string, int) {
		sum := fmt.Sprintf("%x", sha256.Sum256(b))
		if err := os.WriteFile(filepath.Join(blobs, sum), b, 0o644); err != nil {
			t.Fatal(err)
		}
		return "sha256:" + sum, len(b)
	}
	type file struct {
		name string
		data []byte
		dir  bool
	}
	layer := func(files ...file) (gz []byte, diffID string) {
		var raw bytes.Buffer
		w := tar.NewWriter(&raw)
		for _, f := range files {
			h := &tar.Header{Name: f.name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(f.data)), ModTime: time.Unix(1700000000, 0)}
			if f.dir {
				h.Typeflag, h.Mode, h.Size = tar.TypeDir, 0o755, 0
			}
			w.WriteHeader(h)
			w.Write(f.data)
		}
		w.Close()
		var z bytes.Buffer
		zw := gzip.NewWriter(&z)
		zw.Write(raw.Bytes())
		zw.Close()
		return z.Bytes(), fmt.Sprintf("sha256:%x", sha256.Sum256(raw.Bytes()))
	}
	l1, d1 := layer(file{name: "etc/", dir: true}, file{name: "etc/hostname", data: []byte("zos\n")},
		file{name: "etc/old", data: []byte("old")}, file{name: "big", data: bytes.Repeat([]byte("0123456789abcdef"), 40000)})
	l2, d2 := layer(file{name: "etc/.wh.old"}, file{name: "etc/new", data: []byte("new\n")})
	l1d, l1n := put(l1)
	l2d, l2n := put(l2)
	config, _ := json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux",
		"config": map[string]any{"Entrypoint": []string{"/bin/app"}, "Env": []string{"A=1"}, "ExposedPorts": map[string]any{"80/tcp": map[string]any{}}},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{d1, d2}},
	})
	cd, cn := put(config)
	desc := func(mt, d string, n int) map[string]any {
		return map[string]any{"mediaType": mt, "digest": d, "size": n}
	}
	manifest, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": desc("application/vnd.oci.image.config.v1+json", cd, cn),
		"layers": []any{desc("application/vnd.oci.image.layer.v1.tar+gzip", l1d, l1n), desc("application/vnd.oci.image.layer.v1.tar+gzip", l2d, l2n)},
	})
	md, mn := put(manifest)
	m := desc("application/vnd.oci.image.manifest.v1+json", md, mn)
	m["annotations"] = map[string]string{"org.opencontainers.image.ref.name": "v1"}
	index, _ := json.Marshal(map[string]any{"schemaVersion": 2, "manifests": []any{m}})
	os.WriteFile(filepath.Join(dir, "index.json"), index, 0o644)
	os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644)
	return dir
}

func TestCLIPackImage(t *testing.T) {
	dir := t.TempDir()
	lay := ociLayout(t)
	store := "dir://" + filepath.Join(dir, "store")
	fl := filepath.Join(dir, "img.fl")
	out := mustRun(t, "flist", "pack", "oci:"+lay+":v1", "-o", fl, "--store", store, "--json")
	var sum map[string]any
	if err := json.Unmarshal([]byte(out), &sum); err != nil || sum["layers"].(float64) != 2 || sum["entries"].(float64) != 5 {
		t.Fatalf("pack --json: %v %s", err, out)
	}
	if got := mustRun(t, "flist", "cat", fl, "/etc/new"); got != "new\n" {
		t.Fatalf("cat = %q", got)
	}
	if ls := mustRun(t, "flist", "ls", fl, "/etc"); strings.Contains(ls, "old") {
		t.Fatalf("whiteout not applied: %s", ls)
	}
	mustRun(t, "flist", "verify", fl)
	text := mustRun(t, "flist", "pack", "oci:"+lay+":v1", "-o", filepath.Join(dir, "again.fl"), "--store", store)
	if !strings.Contains(text, "layers    2") || !strings.Contains(text, sum["digest"].(string)) {
		t.Fatalf("pack: %s", text)
	}

	// --base works for images: the same flist, its chunks already stored.
	based := mustRun(t, "flist", "pack", "oci:"+lay+":v1", "-o", filepath.Join(dir, "based.fl"), "--store", store, "--base", fl)
	if !strings.Contains(based, sum["digest"].(string)) {
		t.Fatalf("pack --base: %s", based)
	}

	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"oci:" + lay + ":v1", "--creds", "nocolon"}, exitUsage},
		{[]string{"oci:" + lay + ":nosuchtag"}, exitFail},
		{[]string{"docker-archive:/nonexistent.tar"}, exitFail},
		{[]string{lay, "--insecure"}, exitUsage},
	} {
		_, errs, code := run(t, append([]string{"flist", "pack", "-o", filepath.Join(dir, "x.fl"), "--store", store}, tc.args...)...)
		if code != tc.code || strings.Count(strings.TrimSpace(errs), "\n") != 0 {
			t.Errorf("pack %q: exit %d, want %d; stderr %q", tc.args, code, tc.code, errs)
		}
	}

	// Through Debian's registry (docker distribution) and a docker-archive,
	// both written by skopeo, as a user would: the same digest.
	for _, tool := range []string{"docker-registry", "skopeo"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed (.ci/deps.sh installs it): registry and docker-archive paths not tested here", tool)
		}
	}
	addr := startDockerRegistry(t)
	if b, err := exec.Command("skopeo", "copy", "--dest-tls-verify=false", "oci:"+lay+":v1", "docker://"+addr+"/zos/test:v1").CombinedOutput(); err != nil {
		t.Fatalf("skopeo copy to registry: %v\n%s", err, b)
	}
	archive := filepath.Join(dir, "image.tar")
	if b, err := exec.Command("skopeo", "copy", "oci:"+lay+":v1", "docker-archive:"+archive+":zos/test:v1").CombinedOutput(); err != nil {
		t.Fatalf("skopeo copy to archive: %v\n%s", err, b)
	}
	for _, ref := range []string{"docker://" + addr + "/zos/test:v1", "docker-archive:" + archive} {
		out := mustRun(t, "flist", "pack", ref, "-o", filepath.Join(dir, "r.fl"), "--store", store, "--json")
		var s map[string]any
		if err := json.Unmarshal([]byte(out), &s); err != nil || s["digest"] != sum["digest"] || s["new_chunks"].(float64) != 0 {
			t.Errorf("%s: %s (want digest %s and no new chunks)", ref, out, sum["digest"])
		}
	}
}

// startDockerRegistry runs Debian's docker-registry on a free loopback port.
func startDockerRegistry(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cfg := filepath.Join(t.TempDir(), "config.yml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n", t.TempDir(), addr)), 0o644)
	cmd := exec.Command("docker-registry", "serve", cfg)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for i := 0; i < 100; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return addr
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("docker-registry did not start")
	return ""
}
