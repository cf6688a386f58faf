package hub

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/zosgrid/zos/internal/auth"
	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/flist"
	"github.com/zosgrid/zos/internal/hub/hubclient"
	"github.com/zosgrid/zos/internal/key"
	"github.com/zosgrid/zos/internal/oci"
	"github.com/zosgrid/zos/internal/pack"
	"github.com/zosgrid/zos/internal/store/mem"
	"github.com/zosgrid/zos/internal/treediff"
	"github.com/zosgrid/zos/internal/unpack"
)

// writeArchive writes a docker-archive (`docker save` format) holding
// images under their tags.
func writeArchive(t *testing.T, images map[string]v1.Image) string {
	t.Helper()
	refs := map[name.Reference]v1.Image{}
	for tag, img := range images {
		refs[must(name.NewTag(tag))] = img
	}
	file := filepath.Join(t.TempDir(), "images.tar")
	if err := tarball.MultiRefWriteToFile(file, refs); err != nil {
		t.Fatal(err)
	}
	return file
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// spools lists the upload spool files in dir.
func spools(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, uploadPrefix+"*"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// counter is a body of n zero bytes that counts what was read of it.
type counter struct{ n, read int64 }

func (c *counter) Read(b []byte) (int, error) {
	if c.read >= c.n {
		return 0, io.EOF
	}
	k := int(min(int64(len(b)), c.n-c.read))
	clear(b[:k])
	c.read += int64(k)
	return k, nil
}

// upload sends an archive upload signed for signedSum, with body (and its
// length, -1 for chunked), and returns the status.
func upload(t *testing.T, th *testHub, k key.Secret, query string, signedSum digest.ID, body io.Reader, length int64) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, th.url+"/v1/convert/archive?"+query, body)
	req.ContentLength = length
	req.Header.Set(hubclient.HeaderBodyHash, signedSum.String())
	req.Header.Set("Expect", "100-continue")
	hd := auth.SignParts(k, http.MethodPost, th.host, req.URL.RequestURI(), time.Now().Unix(), auth.NewNonce(), signedSum)
	req.Header.Set("Authorization", hd.String())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		// A server that answers before reading the whole body closes the
		// connection after its answer; a client still writing may see the
		// reset instead of the answer.
		if errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
			return connReset
		}
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// connReset is upload's status for a request the server cut short.
const connReset = -1

// TestConvertArchive: an uploaded multi-image docker-archive converts
// into the flist `zos flist pack docker-archive:FILE:TAG` makes locally;
// an altered body, an oversize one, a stranger's and a full queue are
// refused, the last three before the body is read, and no refusal leaves
// a spool file; one is left by nothing else either.
func TestConvertArchive(t *testing.T) {
	ctx := context.Background()
	tmp := t.TempDir()
	// A leftover of a hub that died is swept when a hub starts; a file a
	// live hub holds (locked) is not.
	left := filepath.Join(tmp, uploadPrefix+"1.tar")
	held := filepath.Join(tmp, uploadPrefix+"2.tar")
	os.WriteFile(left, []byte("x"), 0o600)
	os.WriteFile(held, []byte("x"), 0o600)
	hf := must(os.Open(held))
	if err := lock(hf); err != nil {
		t.Fatal(err)
	}
	b := dirBackend(t)
	th := convertHub(t, b, func(o *ConvertOptions) { o.TempDir = tmp; o.MaxUpload = 16 << 20; o.Workers = 1; o.Queue = 1 })
	if got := spools(t, tmp); len(got) != 1 || got[0] != held {
		t.Fatalf("after start: spool files %v, want only the held one", got)
	}
	hf.Close()
	os.Remove(held)

	register(t, th.url, alice, "alice")
	register(t, th.url, bob, "bob")
	cl := client(t, th.url, &alice)
	other := mutate.Annotations(testImage(t), map[string]string{"x": "y"}).(v1.Image)
	other, _ = mutate.AppendLayers(other, tarLayer(t, []tent{{name: "extra", data: []byte("more")}}))
	file := writeArchive(t, map[string]v1.Image{"example.com/app:v1": testImage(t)})
	two := writeArchive(t, map[string]v1.Image{"example.com/app:v1": testImage(t), "example.com/other:v2": other})

	j, err := cl.ConvertArchive(ctx, file, hubclient.ArchiveRequest{Target: "alice/app:v1"})
	if err != nil {
		t.Fatal(err)
	}
	sum := must(os.ReadFile(file))
	if want := "docker-archive:upload/" + digest.Sum(sum).String(); j.Source != want || j.State != hubclient.JobQueued {
		t.Fatalf("admitted: %+v, want source %s", j, want)
	}
	j = waitJob(t, cl, j.ID)
	if j.State != hubclient.JobDone || j.Progress.Layers != 3 {
		t.Fatalf("job: %+v", j)
	}
	img, err := oci.Open(ctx, oci.DockerArchive+file, oci.Options{})
	if err != nil {
		t.Fatal(err)
	}
	local, _, err := pack.Layers(ctx, img, mem.New(), pack.Options{Meta: img.Meta(), Stores: []string{th.url + "/chunks"}})
	if err != nil {
		t.Fatal(err)
	}
	if lr := must(flist.Open(local)); j.Result.Digest != lr.Digest() {
		t.Fatalf("hub converted %s, local pack %s", j.Result.Digest, lr.Digest())
	}
	if got := spools(t, tmp); len(got) != 0 {
		t.Fatalf("spool files after the job: %v", got)
	}

	// An archive of several images: the job fails and says why, with no
	// word of the hub's files; the spool goes all the same.
	j, err = cl.ConvertArchive(ctx, two, hubclient.ArchiveRequest{Target: "alice/app:v2"})
	if err != nil {
		t.Fatal(err)
	}
	if j = waitJob(t, cl, j.ID); j.State != hubclient.JobFailed || strings.Contains(j.Error, tmp) {
		t.Fatalf("ambiguous archive: %+v", j)
	}
	if got := spools(t, tmp); len(got) != 0 {
		t.Fatalf("spool files after a failed job: %v", got)
	}

	// An altered body: refused (401) once read, no job, no nonce, no spool.
	nonces := countNonces(t, b.Objects)
	altered := bytes.Clone(sum)
	altered[len(altered)/2] ^= 1
	if code := upload(t, th, alice, "target=alice/app:v3", digest.Sum(sum), bytes.NewReader(altered), int64(len(altered))); code != http.StatusUnauthorized {
		t.Fatalf("altered body: %d", code)
	}
	if n := countNonces(t, b.Objects); n != nonces {
		t.Fatalf("an altered upload recorded %d nonces", n-nonces)
	}
	if got := spools(t, tmp); len(got) != 0 {
		t.Fatalf("spool files after an altered upload: %v", got)
	}

	// Refused before the body is read: too large as declared, a key that
	// may not write the namespace, a target that is not one.
	for _, tc := range []struct {
		name  string
		k     key.Secret
		query string
		n     int64
		want  int
	}{
		{"declared too large", alice, "target=alice/big", 1 << 30, http.StatusRequestEntityTooLarge},
		{"not the owner", bob, "target=alice/app", 1 << 20, http.StatusForbidden},
		{"bad target", alice, "target=alice/app@" + digest.Sum(nil).String(), 1 << 20, http.StatusBadRequest},
	} {
		body := &counter{n: tc.n}
		if code := upload(t, th, tc.k, tc.query, digest.Sum([]byte(tc.name)), body, tc.n); code != tc.want || body.read != 0 {
			t.Errorf("%s: %d, want %d; %d bytes of the body read", tc.name, code, tc.want, body.read)
		}
	}
	// Too large, found while spooling a body of unknown length: 413 and
	// the rest of the body is not read.
	body := &counter{n: 1 << 30}
	if code := upload(t, th, alice, "target=alice/big", digest.Sum(nil), body, -1); code != http.StatusRequestEntityTooLarge && code != connReset || body.read > 64<<20 {
		t.Errorf("chunked upload over the limit: %d, %d bytes read", code, body.read)
	}
	if got := spools(t, tmp); len(got) != 0 {
		t.Fatalf("spool files after an oversize upload: %v", got)
	}

	// A full queue: 429 before the body is read.
	for range cap(th.conv.slots) {
		th.conv.slots <- struct{}{}
	}
	body = &counter{n: 1 << 20}
	if code := upload(t, th, alice, "target=alice/app", digest.Sum(nil), body, 1<<20); code != http.StatusTooManyRequests || body.read != 0 {
		t.Errorf("full queue: %d, %d bytes read", code, body.read)
	}
	for range cap(th.conv.slots) {
		<-th.conv.slots
	}

	// A docker-archive source in a plain convert request names a file of
	// the hub: refused.
	if _, err := cl.Convert(ctx, hubclient.ConvertRequest{Source: "docker-archive:/etc/passwd", Target: "alice/x"}); code(err) != http.StatusBadRequest {
		t.Errorf("docker-archive: source in /v1/convert: %v", err)
	}
}

// TestCheckArchive: an archive whose manifest or config the archive
// reader would load whole is refused first.
func TestCheckArchive(t *testing.T) {
	write := func(ents ...tent) string {
		var buf bytes.Buffer
		w := tar.NewWriter(&buf)
		for _, e := range ents {
			typ := e.typ
			if typ == 0 {
				typ = tar.TypeReg
			}
			w.WriteHeader(&tar.Header{Name: e.name, Typeflag: typ, Linkname: e.link, Size: int64(len(e.data)), Mode: 0o644})
			w.Write(e.data)
		}
		w.Close()
		f := filepath.Join(t.TempDir(), "a.tar")
		os.WriteFile(f, buf.Bytes(), 0o644)
		return f
	}
	manifest := []byte(`[{"Config":"c.json","RepoTags":["a:b"],"Layers":["l.tar"]}]`)
	big := make([]byte, maxArchiveJSON+1)
	for _, tc := range []struct {
		name string
		file string
		ok   bool
	}{
		{"fine", write(tent{name: "manifest.json", data: manifest}, tent{name: "c.json", data: []byte("{}")}), true},
		{"no manifest", write(tent{name: "c.json", data: []byte("{}")}), false},
		{"manifest a link", write(tent{name: "x", data: manifest}, tent{name: "manifest.json", typ: tar.TypeSymlink, link: "x"}, tent{name: "c.json", data: []byte("{}")}), false},
		{"no config", write(tent{name: "manifest.json", data: manifest}), false},
		{"config too big", write(tent{name: "manifest.json", data: manifest}, tent{name: "c.json", data: big}), false},
		{"config a link", write(tent{name: "manifest.json", data: manifest}, tent{name: "c.json", typ: tar.TypeLink, link: "manifest.json"}), false},
		{"manifest too big", write(tent{name: "manifest.json", data: append(manifest, big...)}, tent{name: "c.json", data: []byte("{}")}), false},
	} {
		if err := checkArchive(tc.file); (err == nil) != tc.ok {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}

// versionImage is release v of an image: a large text-like file edited in
// a few places in every release, and small files of which a few change.
func versionImage(t *testing.T, v int) v1.Image {
	t.Helper()
	r := rand.New(rand.NewPCG(9, 9))
	words := []string{"function ", "return ", "const ", "node", "(", ")", "{\n", "}\n", " = ", ";\n", "if (", "else "}
	var src []byte
	for len(src) < 2<<20 {
		src = append(src, words[r.IntN(len(words))]...)
		if r.IntN(12) == 0 {
			src = fmt.Appendf(src, "%d", r.Uint32())
		}
	}
	e := rand.New(rand.NewPCG(5, 5))
	for rel := 1; rel <= v; rel++ {
		for range 20 {
			at := e.IntN(len(src) - 16)
			src = append(src[:at:at], append(fmt.Appendf(nil, "v%d_%d", rel, e.Uint32()), src[at+4:]...)...)
		}
	}
	big := []tent{{name: "usr/", typ: tar.TypeDir}, {name: "usr/lib/", typ: tar.TypeDir}, {name: "usr/lib/app.js", data: src}}
	var small []tent
	for i := range 40 {
		body := bytes.Repeat(fmt.Appendf(nil, "message %d\n", i), 200)
		if i%10 == 0 {
			body = fmt.Appendf(body, "changed in v%d\n", v)
		}
		small = append(small, tent{name: fmt.Sprintf("usr/lib/m%02d.txt", i), data: body})
	}
	img := testImage(t)
	img, err := mutate.AppendLayers(img, tarLayer(t, big), tarLayer(t, small))
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// chunkBytes is the size of every blob in b's chunk store.
func chunkBytes(t *testing.T, b *Backend) int64 {
	t.Helper()
	ctx := context.Background()
	var n int64
	err := b.Chunks.List(ctx, func(id digest.ID) error {
		blob, err := b.Chunks.Get(ctx, id)
		n += int64(len(blob))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestConvertDeltas: a conversion that replaces a tag stores its new
// chunks as deltas against the flist the tag held: same flist, a smaller
// store growth than without, and the new version unpacks through the
// hub's store to the tree it unpacks to without deltas.
func TestConvertDeltas(t *testing.T) {
	ctx := context.Background()
	files := map[string]string{
		"v1": writeArchive(t, map[string]v1.Image{"app:v1": versionImage(t, 1)}),
		"v2": writeArchive(t, map[string]v1.Image{"app:v2": versionImage(t, 2)}),
	}
	grow := map[bool]int64{}
	digests := map[bool]digest.ID{}
	trees := map[bool]string{}
	for _, deltas := range []bool{false, true} {
		b := dirBackend(t)
		// One URL for both hubs: the flist records it.
		th := convertHub(t, b, func(o *ConvertOptions) { o.NoDeltas = !deltas; o.URL = "http://" + lbHost })
		register(t, th.url, alice, "alice")
		cl := client(t, th.url, &alice)
		var prev digest.ID
		for i, image := range []string{"v1", "v2"} {
			before := chunkBytes(t, b)
			j, err := cl.ConvertArchive(ctx, files[image], hubclient.ArchiveRequest{Target: "alice/app"})
			if err != nil {
				t.Fatal(err)
			}
			if j = waitJob(t, cl, j.ID); j.State != hubclient.JobDone {
				t.Fatalf("%s: %+v", image, j)
			}
			switch {
			case i == 0 && (!j.Base.IsZero() || j.Progress.DeltaChunks != 0):
				t.Fatalf("first version: base %s, %d deltas", j.Base, j.Progress.DeltaChunks)
			case i == 1 && deltas && (j.Base != prev || j.Progress.DeltaChunks == 0):
				t.Fatalf("second version: base %s (want %s), %d deltas", j.Base, prev, j.Progress.DeltaChunks)
			case i == 1 && !deltas && (!j.Base.IsZero() || j.Progress.DeltaChunks != 0):
				t.Fatalf("NoDeltas: base %s, %d deltas", j.Base, j.Progress.DeltaChunks)
			}
			prev = j.Result.Digest
			if i == 1 {
				grow[deltas] = chunkBytes(t, b) - before
				digests[deltas] = j.Result.Digest
				t.Logf("deltas %v: v2 had %d new chunks, %d deltas; the store grew %d bytes", deltas, j.Progress.NewChunks, j.Progress.DeltaChunks, grow[deltas])
			}
		}
		// The new version unpacks through the hub's store.
		p, err := cl.Pull(ctx, mustRef(t, "alice/app"))
		if err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(t.TempDir(), "out")
		if _, err := unpack.Unpack(ctx, must(flist.Open(p.Flist)), b.Chunks, out, unpack.Options{}); err != nil {
			t.Fatalf("deltas %v: unpack v2: %v", deltas, err)
		}
		trees[deltas] = out
	}
	if digests[true] != digests[false] {
		t.Fatalf("v2 is %s with deltas, %s without", digests[true], digests[false])
	}
	if diffs, err := treediff.Compare(trees[false], trees[true]); err != nil || len(diffs) > 0 {
		t.Fatalf("v2 unpacked with deltas differs: %v %v", diffs, err)
	}
	if grow[true]*10 > grow[false]*5 {
		t.Fatalf("deltas saved too little: the store grew %d bytes with them, %d without", grow[true], grow[false])
	}
}

// dirImage is a one-layer image of the tree at root.
func dirImage(t *testing.T, root string) v1.Image {
	t.Helper()
	f := filepath.Join(t.TempDir(), "layer.tar")
	out := must(os.Create(f))
	w := tar.NewWriter(out)
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		link := ""
		if fi.Mode()&os.ModeSymlink != 0 {
			link = must(os.Readlink(p))
		}
		hdr, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return err
		}
		hdr.Name = must(filepath.Rel(root, p))
		hdr.Uname, hdr.Gname = "", ""
		if err := w.WriteHeader(hdr); err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			_, err = w.Write(must(os.ReadFile(p)))
		}
		return err
	})
	if err == nil {
		err = w.Close()
	}
	if err == nil {
		err = out.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	l, err := tarball.LayerFromFile(f, tarball.WithCompressionLevel(1))
	if err != nil {
		t.Fatal(err)
	}
	return must(mutate.AppendLayers(testImageBase(t), l))
}

// testImageBase is testImage without its layers.
func testImageBase(t *testing.T) v1.Image {
	t.Helper()
	img := testImage(t)
	cf := must(img.ConfigFile())
	return must(mutate.ConfigFile(must(mutate.AppendLayers(must(mutate.ConfigFile(img, cf)))), cf))
}

// TestConvertDeltasCorpus measures how much the hub's store grows for
// successive releases of a real package (the corpus's typescript series),
// converted into one tag with and without deltas (docs/HUB.md has the
// numbers), and checks the last release unpacks the same either way.
func TestConvertDeltasCorpus(t *testing.T) {
	corpus := os.Getenv("ZOS_CORPUS")
	if corpus == "" {
		corpus = "/var/cache/zos-corpus"
	}
	versions := []string{"typescript-5.7.3", "typescript-5.8.3", "typescript-5.9.3"}
	if _, err := os.Stat(filepath.Join(corpus, "versions", versions[0])); err != nil {
		t.Skip("corpus versions not built: not measured")
	}
	if testing.Short() {
		t.Skip("corpus measurement: skipped in -short mode")
	}
	ctx := context.Background()
	var files []string
	for _, v := range versions {
		files = append(files, writeArchive(t, map[string]v1.Image{"ts:" + strings.TrimPrefix(v, "typescript-"): dirImage(t, filepath.Join(corpus, "versions", v))}))
	}
	trees := map[bool]string{}
	total := map[bool]int64{}
	for _, deltas := range []bool{false, true} {
		b := dirBackend(t)
		th := convertHub(t, b, func(o *ConvertOptions) { o.NoDeltas = !deltas; o.URL = "http://" + lbHost })
		register(t, th.url, alice, "alice")
		cl := client(t, th.url, &alice)
		for i, file := range files {
			before := chunkBytes(t, b)
			start := time.Now()
			j, err := cl.ConvertArchive(ctx, file, hubclient.ArchiveRequest{Target: "alice/ts"})
			if err != nil {
				t.Fatal(err)
			}
			if j = waitJob(t, cl, j.ID); j.State != hubclient.JobDone {
				t.Fatalf("%s: %+v", versions[i], j)
			}
			grew := chunkBytes(t, b) - before
			total[deltas] += grew
			t.Logf("deltas %-5v %s: %.1f MB of files, %d chunks, %d new, %d as deltas; store +%.2f MB (%.1fs)", deltas, versions[i],
				float64(j.Progress.Bytes)/1e6, j.Progress.Chunks, j.Progress.NewChunks, j.Progress.DeltaChunks, float64(grew)/1e6, time.Since(start).Seconds())
		}
		p, err := cl.Pull(ctx, mustRef(t, "alice/ts"))
		if err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(t.TempDir(), "out")
		if _, err := unpack.Unpack(ctx, must(flist.Open(p.Flist)), b.Chunks, out, unpack.Options{}); err != nil {
			t.Fatal(err)
		}
		trees[deltas] = out
	}
	t.Logf("store for the %d releases: %.2f MB with deltas, %.2f MB without", len(versions), float64(total[true])/1e6, float64(total[false])/1e6)
	if diffs, err := treediff.Compare(trees[false], trees[true]); err != nil || len(diffs) > 0 {
		t.Fatalf("the last release unpacked with deltas differs: %v %v", diffs, err)
	}
}
