package oci_test

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/zosgrid/zos/internal/flist"
	"github.com/zosgrid/zos/internal/oci"
	"github.com/zosgrid/zos/internal/pack"
	"github.com/zosgrid/zos/internal/store/dir"
	"github.com/zosgrid/zos/internal/store/mem"
	"github.com/zosgrid/zos/internal/treediff"
	"github.com/zosgrid/zos/internal/unpack"
)

// ent is one tar entry of a test layer.
type ent struct {
	name string
	typ  byte // tar type; 0 = regular file
	mode int64
	uid  int
	data []byte
	link string
	xat  map[string]string
	maj  int64
	min  int64
}

var epoch = time.Unix(1700000000, 0)

func layerTar(t *testing.T, ents []ent) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := tar.NewWriter(&buf)
	for i, e := range ents {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		mode := e.mode
		if mode == 0 {
			mode = 0o644
			if typ == tar.TypeDir {
				mode = 0o755
			}
		}
		h := &tar.Header{
			Name: e.name, Typeflag: typ, Mode: mode, Uid: e.uid, Gid: e.uid,
			ModTime:  epoch.Add(time.Duration(i)*time.Second + time.Duration(i*7919)*time.Nanosecond),
			Linkname: e.link, Devmajor: e.maj, Devminor: e.min, Format: tar.FormatPAX,
		}
		if typ == tar.TypeReg {
			h.Size = int64(len(e.data))
		}
		for k, v := range e.xat {
			if h.PAXRecords == nil {
				h.PAXRecords = map[string]string{}
			}
			h.PAXRecords["SCHILY.xattr."+k] = v
		}
		if err := w.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if typ == tar.TypeReg {
			w.Write(e.data)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func layer(t *testing.T, ents []ent) v1.Layer {
	t.Helper()
	b := layerTar(t, ents)
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil },
		tarball.WithMediaType(types.OCILayer))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// blob returns n pseudo-random, compressible bytes.
func blob(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 9))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32() % 13)
	}
	return b
}

// capNetRaw is a valid security.capability value (v2, cap_net_raw+ep).
var capNetRaw = string([]byte{1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})

// richLayers are three layers that delete, replace and re-create files and
// directories with every kind of entry and attribute.
func richLayers(t *testing.T, withRoot bool) []v1.Layer {
	var l1 []ent
	if withRoot {
		l1 = append(l1, ent{name: "./", typ: tar.TypeDir, mode: 0o751})
	}
	l1 = append(l1,
		ent{name: "etc/", typ: tar.TypeDir},
		ent{name: "etc/passwd", data: []byte("root:x:0:0::/root:/bin/sh\n")},
		ent{name: "etc/gone", data: []byte("deleted in layer 2")},
		ent{name: "etc/passwd-hl", typ: tar.TypeLink, link: "etc/passwd"},
		ent{name: "etc/abs", typ: tar.TypeSymlink, link: "/etc/passwd", uid: 5},
		ent{name: "etc/dangling", typ: tar.TypeSymlink, link: "../nowhere"},
		ent{name: "bin/", typ: tar.TypeDir, mode: 0o711},
		ent{name: "bin/su", mode: 0o4755, data: []byte("#!/bin/su\n")},
		ent{name: "bin/sgid", mode: 0o2711, uid: 42, data: blob(1, 70<<10)},
		ent{name: "bin/ping", mode: 0o755, data: []byte("ping"), xat: map[string]string{"security.capability": capNetRaw, "user.note": "v"}},
		ent{name: "bin/su-link", typ: tar.TypeLink, link: "/bin/su"},
		ent{name: "usr/", typ: tar.TypeDir},
		ent{name: "usr/lib/", typ: tar.TypeDir, xat: map[string]string{"user.dir": "yes", "trusted.t": ""}},
		ent{name: "lib", typ: tar.TypeSymlink, link: "usr/lib"},
		ent{name: "dev/", typ: tar.TypeDir},
		ent{name: "dev/null", typ: tar.TypeChar, mode: 0o666, maj: 1, min: 3},
		ent{name: "dev/loop0", typ: tar.TypeBlock, mode: 0o660, uid: 6, maj: 7, min: 0},
		ent{name: "dev/big", typ: tar.TypeChar, maj: 259, min: 70000},
		ent{name: "dev/fifo", typ: tar.TypeFifo, mode: 0o620},
		ent{name: "big/", typ: tar.TypeDir, mode: 0o1777},
		ent{name: "big/one", data: blob(2, 300<<10)},
		ent{name: "big/two", data: blob(3, 1<<20), uid: 1000},
		ent{name: "big/three", data: blob(4, 100<<10)},
		ent{name: "big/exact", data: blob(5, 64<<10)},
		ent{name: "big/under", data: blob(6, 64<<10-1)},
		ent{name: "opt/", typ: tar.TypeDir},
		ent{name: "opt/tree/", typ: tar.TypeDir},
		ent{name: "opt/tree/a/", typ: tar.TypeDir},
		ent{name: "opt/tree/a/f", data: []byte("f")},
		ent{name: "var/", typ: tar.TypeDir},
		ent{name: "var/cache/", typ: tar.TypeDir, mode: 0o700},
		ent{name: "var/cache/old1", data: []byte("old1")},
		ent{name: "var/cache/sub/", typ: tar.TypeDir},
		ent{name: "var/cache/sub/old2", data: blob(7, 90<<10)},
		ent{name: "x/", typ: tar.TypeDir},
		ent{name: "x/child", data: []byte("x child")},
		ent{name: "y", data: []byte("y was a file")},
		ent{name: "z", data: blob(8, 200<<10)},
		ent{name: "z-hl", typ: tar.TypeLink, link: "z"},
	)
	for i := 0; i < 60; i++ {
		l1 = append(l1, ent{name: fmt.Sprintf("usr/lib/s%02d", i), data: blob(uint64(100+i%40), i*500)})
	}
	l2 := []ent{
		{name: "etc/.wh.gone"},
		{name: "etc/", typ: tar.TypeDir, mode: 0o700, uid: 3},
		{name: "etc/passwd", mode: 0o600, data: []byte("root:x:0:0::/root:/bin/bash\n")},
		{name: "opt/.wh.tree"},
		{name: "var/cache/.wh..wh..opq"},
		{name: "var/cache/", typ: tar.TypeDir, mode: 0o750},
		{name: "var/cache/new", data: []byte("new")},
		{name: "x", data: []byte("x is a file now")},
		{name: "y/", typ: tar.TypeDir},
		{name: "y/child", data: []byte("y child")},
		{name: "big/.wh.one"},
		{name: "big/three", data: blob(9, 150<<10)},
		{name: "lib/through-symlink", data: []byte("lands in usr/lib")},
		{name: "bin/su-link2", typ: tar.TypeLink, link: "bin/su"},
		{name: "z", data: []byte("z replaced; z-hl keeps the old inode")},
		{name: "usr/lib/s03", data: blob(200, 3000)},
	}
	l3 := []ent{
		{name: "opt/tree/", typ: tar.TypeDir, mode: 0o705},
		{name: "opt/tree/new", data: []byte("re-created")},
		{name: "etc/gone/", typ: tar.TypeDir},
		{name: "etc/gone/inside", data: []byte("was a file, then nothing, now a dir")},
		{name: "x/.wh..wh..opq"}, // x is a file: nothing to do
		{name: ".wh.x"},
		{name: "x", typ: tar.TypeSymlink, link: "y/child"},
		{name: "y/.wh..wh..opq"},
		{name: "y/other", data: []byte("other")},
		{name: "big/one", data: blob(2, 300<<10)}, // back, same content
		{name: "usr/lib/.wh.s10"},
		{name: "usr/lib/.wh.s11"},
	}
	return []v1.Layer{layer(t, l1), layer(t, l2), layer(t, l3)}
}

func testConfig() v1.Config {
	return v1.Config{
		Entrypoint:   []string{"/bin/sh", "-c"},
		Cmd:          []string{"echo <hi> & bye"},
		Env:          []string{"PATH=/usr/bin:/bin", "A=b"},
		WorkingDir:   "/srv",
		User:         "1000:1000",
		ExposedPorts: map[string]struct{}{"8080/tcp": {}, "53/udp": {}},
		Labels:       map[string]string{"z": "1", "a": "2"},
	}
}

func buildImage(t *testing.T, layers []v1.Layer, arch string) v1.Image {
	t.Helper()
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	cf, err := base.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Config = "linux", arch, testConfig()
	img, err := mutate.ConfigFile(base, cf)
	if err != nil {
		t.Fatal(err)
	}
	img, err = mutate.AppendLayers(img, layers...)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// writeLayout writes img into an OCI layout tagged tag.
func writeLayout(t *testing.T, img v1.Image, tag string) string {
	t.Helper()
	d := filepath.Join(t.TempDir(), "layout")
	p, err := layout.Write(d, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": tag})); err != nil {
		t.Fatal(err)
	}
	return d
}

func convert(t *testing.T, ref string, opt oci.Options) ([]byte, pack.Stats, *oci.Image) {
	t.Helper()
	img, err := oci.Open(context.Background(), ref, opt)
	if err != nil {
		t.Fatal(err)
	}
	fl, stats, err := pack.Layers(context.Background(), img, mem.New(), pack.Options{Workers: 3, Meta: img.Meta()})
	if err != nil {
		t.Fatalf("convert %s: %v", ref, err)
	}
	return fl, stats, img
}

func digestOf(t *testing.T, fl []byte) string {
	t.Helper()
	r, err := flist.Open(fl)
	if err != nil {
		t.Fatal(err)
	}
	return r.Digest().String()
}

// umociRootfs unpacks the layout's image with umoci and returns the rootfs.
// With fixRoot, the root directory (which umoci creates with the time of
// the unpack when no layer describes it) gets the attributes the converter
// gives a root no layer describes: 0755 root:root at the epoch.
func umociRootfs(t *testing.T, layoutDir, tag string, fixRoot bool) string {
	t.Helper()
	if _, err := exec.LookPath("umoci"); err != nil {
		t.Skip("umoci is not installed (apt-get install umoci; .ci/deps.sh installs it): cannot compare with its unpack")
	}
	if os.Geteuid() != 0 {
		t.Skip("umoci keeps owners and devices only as root")
	}
	bundle := filepath.Join(t.TempDir(), "bundle")
	out, err := exec.Command("umoci", "unpack", "--image", layoutDir+":"+tag, bundle).CombinedOutput()
	if err != nil {
		t.Fatalf("umoci unpack: %v\n%s", err, out)
	}
	rootfs := filepath.Join(bundle, "rootfs")
	if fixRoot {
		if err := os.Chmod(rootfs, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, rootfs, []unix.Timespec{{}, {}}, 0); err != nil {
			t.Fatal(err)
		}
	}
	return rootfs
}

// compareWithDir packs rootfs with the image's META and checks the digest
// equals want; on a mismatch it unpacks fl and lists the differences.
func compareWithDir(t *testing.T, src pack.LayerSource, fl []byte, rootfs string, meta map[string][]byte) {
	t.Helper()
	ref, _, err := pack.Dir(context.Background(), rootfs, mem.New(), pack.Options{Workers: 2, Meta: meta})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := digestOf(t, fl), digestOf(t, ref); got != want {
		st, err := dir.New(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		fl2, _, err := pack.Layers(context.Background(), src, st, pack.Options{Meta: meta})
		t.Errorf("converted digest %s, umoci rootfs packs to %s", got, want)
		if err == nil {
			r, _ := flist.Open(fl2)
			dest := filepath.Join(t.TempDir(), "dest")
			if _, err := unpack.Unpack(context.Background(), r, st, dest, unpack.Options{}); err != nil {
				t.Fatal(err)
			}
			diffs, _ := treediff.Compare(rootfs, dest)
			for _, d := range diffs {
				t.Log("umoci vs converted:", d)
			}
		}
	}
}

func discardLogger() *log.Logger { return log.New(io.Discard, "", 0) }

func basicAuthn(user, pass string) authn.Authenticator {
	return &authn.Basic{Username: user, Password: pass}
}

func startRegistry(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	return u.Host
}

func push(t *testing.T, host, repo string, img v1.Image, opts ...remote.Option) string {
	t.Helper()
	ref, err := name.ParseReference(host + "/" + repo)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img, opts...); err != nil {
		t.Fatal(err)
	}
	return host + "/" + repo
}

// TestConvertEqualsUmociUnpack is the acceptance test: a three-layer image
// converted from a registry, an OCI layout and a docker-archive has one
// digest, equal to that of `zos flist pack` of `umoci unpack`'s rootfs.
func TestConvertEqualsUmociUnpack(t *testing.T) {
	for _, withRoot := range []bool{false, true} {
		t.Run(fmt.Sprintf("root-entry=%v", withRoot), func(t *testing.T) {
			img := buildImage(t, richLayers(t, withRoot), "amd64")
			host := startRegistry(t, registry.New(registry.Logger(discardLogger())))
			repo := push(t, host, "test/rich:v1", img)
			lay := writeLayout(t, img, "v1")

			fromReg, stats, opened := convert(t, oci.Docker+repo, oci.Options{})
			if stats.Layers != 3 || stats.Orphans == 0 {
				t.Errorf("stats %+v: want 3 layers and orphan chunks (replaced large files)", stats)
			}
			fromLayout, _, _ := convert(t, oci.Layout+lay+":v1", oci.Options{})
			if digestOf(t, fromLayout) != digestOf(t, fromReg) {
				t.Errorf("oci: and docker:// digests differ")
			}
			archive := dockerArchive(t, img, repo)
			fromArchive, _, _ := convert(t, oci.DockerArchive+archive, oci.Options{})
			if digestOf(t, fromArchive) != digestOf(t, fromReg) {
				t.Errorf("docker-archive: and docker:// digests differ")
			}

			r, err := flist.Open(fromReg)
			if err != nil {
				t.Fatal(err)
			}
			v, ok := r.Meta(oci.MetaConfig)
			if !ok {
				t.Fatal("no config in META")
			}
			cfg, err := oci.ParseConfig(v)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(cfg.Entrypoint, " ") != "/bin/sh -c" || cfg.WorkingDir != "/srv" || cfg.User != "1000:1000" ||
				strings.Join(cfg.ExposedPorts, ",") != "53/udp,8080/tcp" || cfg.Labels["a"] != "2" || cfg.Architecture != "amd64" {
				t.Errorf("config %s", v)
			}

			rootfs := umociRootfs(t, lay, "v1", !withRoot)
			compareWithDir(t, opened, fromReg, rootfs, opened.Meta())
		})
	}
}

// dockerArchive writes img as a docker save tarball: with skopeo from the
// registry when it is installed (what users have), else with the library.
func dockerArchive(t *testing.T, img v1.Image, repo string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "image.tar")
	if _, err := exec.LookPath("skopeo"); err == nil {
		out, err := exec.Command("skopeo", "copy", "--src-tls-verify=false", "docker://"+repo, "docker-archive:"+file+":test/rich:v1").CombinedOutput()
		if err != nil {
			t.Fatalf("skopeo copy: %v\n%s", err, out)
		}
		return file
	}
	tag, err := name.NewTag("test/rich:v1")
	if err != nil {
		t.Fatal(err)
	}
	if err := tarball.WriteToFile(file, tag, img); err != nil {
		t.Fatal(err)
	}
	return file
}

func basicAuth(user, pass string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != user || p != pass {
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// TestPrivateRegistry pulls with explicit credentials and with a docker
// config.json, and fails clearly without either.
func TestPrivateRegistry(t *testing.T) {
	img := buildImage(t, []v1.Layer{layer(t, []ent{{name: "f", data: []byte("private")}})}, "amd64")
	host := startRegistry(t, basicAuth("alice", "s3cret", registry.New(registry.Logger(discardLogger()))))
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	repo := push(t, host, "priv/img:1", img, remote.WithAuth(basicAuthn("alice", "s3cret")))

	if _, err := oci.Open(context.Background(), oci.Docker+repo, oci.Options{}); err == nil || !strings.Contains(err.Error(), "UNAUTHORIZED") && !strings.Contains(err.Error(), "401") {
		t.Errorf("anonymous pull: %v, want unauthorized", err)
	}
	if _, err := oci.Open(context.Background(), oci.Docker+repo, oci.Options{Username: "alice", Password: "wrong"}); err == nil {
		t.Error("wrong password accepted")
	}
	want, _, _ := convert(t, oci.Docker+repo, oci.Options{Username: "alice", Password: "s3cret"})

	cfgDir := t.TempDir()
	conf := fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, host, base64.StdEncoding.EncodeToString([]byte("alice:s3cret")))
	if err := os.WriteFile(filepath.Join(cfgDir, "config.json"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DOCKER_CONFIG", cfgDir)
	got, _, _ := convert(t, oci.Docker+repo, oci.Options{})
	if digestOf(t, got) != digestOf(t, want) {
		t.Error("digests differ between explicit credentials and config.json")
	}
}

// TestIndexPicksHostPlatform converts a multi-platform image and gets the
// linux/amd64 one, from a registry and from a layout.
func TestIndexPicksHostPlatform(t *testing.T) {
	amd := buildImage(t, []v1.Layer{layer(t, []ent{{name: "arch", data: []byte("amd64")}})}, "amd64")
	arm := buildImage(t, []v1.Layer{layer(t, []ent{{name: "arch", data: []byte("arm64")}})}, "arm64")
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
		mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
	)
	host := startRegistry(t, registry.New(registry.Logger(discardLogger())))
	ref, err := name.ParseReference(host + "/multi:1")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(ref, idx); err != nil {
		t.Fatal(err)
	}
	single := buildImage(t, []v1.Layer{layer(t, []ent{{name: "arch", data: []byte("amd64")}})}, "amd64")
	want, _, _ := convert(t, oci.Docker+push(t, host, "single:1", single), oci.Options{})
	got, _, _ := convert(t, oci.Docker+host+"/multi:1", oci.Options{Platform: "linux/amd64"})
	if digestOf(t, got) != digestOf(t, want) {
		t.Error("registry index: not the amd64 image")
	}
	if _, err := oci.Open(context.Background(), oci.Docker+host+"/multi:1", oci.Options{Platform: "linux/s390x"}); err == nil {
		t.Error("no s390x image, but Open succeeded")
	}

	d := filepath.Join(t.TempDir(), "layout")
	p, err := layout.Write(d, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendIndex(idx, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "1"})); err != nil {
		t.Fatal(err)
	}
	got, _, _ = convert(t, oci.Layout+d+":1", oci.Options{Platform: "linux/amd64"})
	if digestOf(t, got) != digestOf(t, want) {
		t.Error("layout index: not the amd64 image")
	}
	if _, err := oci.Open(context.Background(), oci.Docker+push(t, host, "arm:1", arm), oci.Options{Platform: "linux/amd64"}); err == nil {
		t.Error("an arm64 image opened as linux/amd64")
	}
}

// TestConvertCorpusEqualsUmoci converts a real Debian root filesystem (the
// corpus's min.tar, as GNU tar wrote it) with a second layer that deletes,
// replaces and writes through the usrmerge symlinks, and compares with
// umoci unpack of the same image.
func TestConvertCorpusEqualsUmoci(t *testing.T) {
	corpus := os.Getenv("ZOS_CORPUS")
	if corpus == "" {
		corpus = "/var/cache/zos-corpus"
	}
	tarFile := filepath.Join(corpus, "min.tar")
	if _, err := os.Stat(tarFile); err != nil {
		t.Skip("Debian corpus not built (../shared/corpus/build-corpus.sh min): real-image comparison not run")
	}
	if testing.Short() {
		t.Skip("real-image comparison: skipped in -short mode")
	}
	// gzip: umoci 0.4.7 cannot read uncompressed OCI layers.
	base, err := tarball.LayerFromFile(tarFile, tarball.WithMediaType(types.OCILayer), tarball.WithCompressionLevel(1))
	if err != nil {
		t.Fatal(err)
	}
	top := layer(t, []ent{
		{name: "usr/share/doc/.wh..wh..opq"},
		{name: "usr/share/doc/", typ: tar.TypeDir},
		{name: "usr/share/doc/README", data: []byte("docs removed")},
		{name: "etc/.wh.apt"},
		{name: "bin/zos-added", mode: 0o755, data: blob(11, 100<<10)}, // through bin -> usr/bin
		{name: "etc/hostname", data: []byte("zos\n")},
		{name: "etc/hostname-hl", typ: tar.TypeLink, link: "etc/hostname"},
		{name: "var/lib/dpkg/", typ: tar.TypeDir, mode: 0o700},
	})
	img := buildImage(t, []v1.Layer{base, top}, "amd64")
	lay := writeLayout(t, img, "min")
	opened, err := oci.Open(context.Background(), oci.Layout+lay+":min", oci.Options{})
	if err != nil {
		t.Fatal(err)
	}
	fl, stats, err := pack.Layers(context.Background(), opened, mem.New(), pack.Options{Meta: opened.Meta()})
	if err != nil {
		t.Fatal(err)
	}
	if stats.Files < 1000 {
		t.Fatalf("stats %+v: not a root filesystem", stats)
	}
	// min.tar has a "./" entry: the root's attributes come from it.
	rootfs := umociRootfs(t, lay, "min", false)
	compareWithDir(t, opened, fl, rootfs, opened.Meta())
}
