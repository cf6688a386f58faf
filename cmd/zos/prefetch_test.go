package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/zosgrid/zos/internal/flist"
	"github.com/zosgrid/zos/internal/mount"
)

// probeSrc is a static program to run chrooted in a test image: it reads
// the files it is given, reports its PID and whether /proc is mounted, and
// exits with the status given by -exit.
const probeSrc = `package main

import (
	"fmt"
	"os"
	"strconv"
)

func main() {
	code := 0
	for _, a := range os.Args[1:] {
		if n, ok := cutExit(a); ok {
			code = n
			continue
		}
		b, err := os.ReadFile(a)
		if err != nil {
			fmt.Println("error", err)
			os.Exit(9)
		}
		fmt.Println(a, len(b))
	}
	_, err := os.Stat("/proc/self/stat")
	fmt.Println("pid", os.Getpid(), "proc", err == nil)
	if err := os.WriteFile("/tmp-written", []byte("x"), 0o644); err != nil {
		fmt.Println("write error", err)
		os.Exit(8)
	}
	os.Exit(code)
}

func cutExit(a string) (int, bool) {
	if len(a) > 6 && a[:6] == "-exit=" {
		n, err := strconv.Atoi(a[6:])
		return n, err == nil
	}
	return 0, false
}
`

// buildProbe compiles probeSrc statically into dst.
func buildProbe(t *testing.T, dst string) {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join(dir, "probe.go")
	if err := os.WriteFile(src, []byte(probeSrc), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "build", "-o", dst, src)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build probe: %v\n%s", err, out)
	}
}

var tracedRe = regexp.MustCompile(`traced (\d+) of (\d+) chunks`)

// TestCLITrace records a trace of a command chrooted into the image, in
// its own PID namespace with /proc mounted and a writable root; saves it
// only when the command succeeds; and a mount then prefetches it.
func TestCLITrace(t *testing.T) {
	needFUSE(t)
	dir := t.TempDir()
	tree := smallTree(t)
	os.MkdirAll(filepath.Join(tree, "bin"), 0o755)
	os.MkdirAll(filepath.Join(tree, "proc"), 0o755)
	buildProbe(t, filepath.Join(tree, "bin/probe"))
	fl := filepath.Join(dir, "img.fl")
	mustRun(t, "flist", "pack", tree, "-o", fl, "--store", "dir://"+filepath.Join(dir, "store"))
	b, _ := os.ReadFile(fl)
	r, err := flist.Open(b)
	if err != nil {
		t.Fatal(err)
	}

	tmp := filepath.Join(dir, "tmp")
	os.Mkdir(tmp, 0o755)
	cmd := exec.Command(zosBin, "flist", "trace", fl, "--", "/bin/probe", "/big", "/etc/hostname")
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	var outb, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &outb, &errb
	code := 0
	if err := cmd.Run(); err != nil {
		code = -1
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
	}
	out, errs := outb.String(), errb.String()
	if code != 0 || !strings.Contains(out, "/big 640000") || !strings.Contains(out, "pid 1 proc true") {
		t.Fatalf("trace: exit %d\nstdout %s\nstderr %s", code, out, errs)
	}
	m := tracedRe.FindStringSubmatch(errs)
	if m == nil {
		t.Fatalf("no summary: %q", errs)
	}
	tr, err := mount.ReadTrace(fl+".trace", r)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := strconv.Atoi(m[1]); n != len(tr.Chunks) || n < 2 {
		t.Errorf("summary says %s chunks, the trace holds %d", m[1], len(tr.Chunks))
	}
	// The probe (read first) comes before /big in the trace.
	_, probe, _ := r.Lookup("/bin/probe")
	_, big, _ := r.Lookup("/big")
	if int(tr.Chunks[0]) != r.ChunkAt(probe.Offset) {
		t.Errorf("trace starts with chunk %d, want the probe's first, %d", tr.Chunks[0], r.ChunkAt(probe.Offset))
	}
	found := false
	for _, k := range tr.Chunks {
		found = found || int(k) == r.ChunkAt(big.Offset)
	}
	if !found {
		t.Error("trace lacks /big's first chunk")
	}
	if left, _ := os.ReadDir(tmp); len(left) > 0 {
		t.Errorf("trace left %s behind", left[0].Name())
	}
	// The trace has ranges, and a start bundle was built from it.
	if tr.Ranges == nil || !strings.Contains(errs, "start bundle: "+strconv.Itoa(len(tr.Chunks))+" chunks") {
		t.Errorf("trace ranges %v; stderr %q", tr.Ranges != nil, errs)
	}
	bundle, err := os.ReadFile(fl + ".bundle")
	if err != nil || !bytes.HasPrefix(bundle, []byte("zosbndl\x01")) {
		t.Fatalf("no bundle beside the flist: %v", err)
	}
	// zos flist bundle builds it again from the trace, the same bytes; not
	// from a version-1 trace.
	again := filepath.Join(dir, "again.bundle")
	if _, errs, code := run(t, "flist", "bundle", fl, "-o", again); code != 0 || !strings.Contains(errs, "start bundle: ") {
		t.Fatalf("flist bundle: exit %d %q", code, errs)
	}
	if b, err := os.ReadFile(again); err != nil || !bytes.Equal(b, bundle) {
		t.Errorf("flist bundle built %d bytes (%v), trace built %d, or they differ", len(b), err, len(bundle))
	}
	v1 := filepath.Join(dir, "v1.trace")
	if b, err := (&mount.Trace{Flist: r.Digest(), Chunks: tr.Chunks}).MarshalBinary(); err != nil {
		t.Fatal(err)
	} else {
		os.WriteFile(v1, b, 0o644)
	}
	if _, errs, code := run(t, "flist", "bundle", fl, "--trace", v1, "-o", again); code != exitContent || !strings.Contains(errs, "version-1") {
		t.Errorf("flist bundle of a version-1 trace: exit %d %q", code, errs)
	}

	// A failing command: its status, and no trace.
	other := filepath.Join(dir, "other.trace")
	if _, errs, code := run(t, "flist", "trace", fl, "-o", other, "--", "/bin/probe", "-exit=3"); code != 3 || !strings.Contains(errs, "no trace saved") {
		t.Errorf("failing command: exit %d %q", code, errs)
	}
	if _, errs, code := run(t, "flist", "trace", fl, "-o", other, "--", "nosuch"); code != 127 || !strings.Contains(errs, "not found in the image") {
		t.Errorf("missing command: exit %d %q", code, errs)
	}
	if _, err := os.Stat(other); err == nil {
		t.Error("a failed run saved a trace")
	}
	if _, _, code := run(t, "flist", "trace", fl); code != exitUsage {
		t.Errorf("trace without a command: exit %d", code)
	}
	// Without chroot: the command runs here, the image at $ZOS_ROOT.
	out, errs, code = run(t, "flist", "trace", fl, "-o", other, "--no-chroot", "--", "sh", "-c", `cat "$ZOS_ROOT/etc/hostname"`)
	if code != 0 || out != "zos\n" {
		t.Fatalf("--no-chroot: exit %d %q %q", code, out, errs)
	}

	// A mount prefetches FL.trace.
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	logf := filepath.Join(dir, "mount.log")
	mountBG(t, fl, mnt, "--log", logf)
	waitLog(t, logf, "trace prefetch done")
	mustRun(t, "flist", "umount", mnt)
	logs, _ := os.ReadFile(logf)
	if !strings.Contains(string(logs), "prefetching by trace") || !strings.Contains(string(logs), "chunks="+strconv.Itoa(len(tr.Chunks))) {
		t.Errorf("mount log:\n%s", logs)
	}
	// ... streaming FL.bundle first, and from a URL over HTTP too; reads
	// see the image's bytes either way.
	srv := httptest.NewServer(http.FileServer(http.Dir(dir)))
	defer srv.Close()
	for _, extra := range [][]string{nil, {"--bundle", srv.URL + "/img.fl.bundle"}} {
		os.Truncate(logf, 0)
		mountBG(t, append([]string{fl, mnt, "--log", logf}, extra...)...)
		got, err := os.ReadFile(filepath.Join(mnt, "big"))
		want, _ := os.ReadFile(filepath.Join(tree, "big"))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%v: /big read through the bundle's mount differs: %v", extra, err)
		}
		waitLog(t, logf, "trace prefetch done")
		mustRun(t, "flist", "umount", mnt)
		logs, _ := os.ReadFile(logf)
		if !strings.Contains(string(logs), "start bundle streamed") || !strings.Contains(string(logs), "entries="+strconv.Itoa(len(tr.Chunks))) {
			t.Errorf("%v: mount log:\n%s", extra, logs)
		}
	}
	if _, errs, code := run(t, "flist", "mount", fl, mnt, "--bundle", fl+".bundle", "--no-trace"); code != exitUsage {
		t.Errorf("--bundle without its trace: exit %d %q", code, errs)
	}
	// A trace of another image is refused when named, ignored when found
	// beside the flist.
	fl2 := filepath.Join(dir, "img2.fl")
	os.WriteFile(filepath.Join(tree, "etc/hostname"), []byte("other\n"), 0o644)
	mustRun(t, "flist", "pack", tree, "-o", fl2, "--store", "dir://"+filepath.Join(dir, "store"))
	if _, errs, code := run(t, "flist", "mount", fl2, mnt, "--trace", fl+".trace", "--log", logf); code != exitContent || !strings.Contains(errs, "recorded on flist") {
		t.Errorf("mount with another image's trace: exit %d %q", code, errs)
	}
	b, _ = os.ReadFile(fl + ".trace")
	os.WriteFile(fl2+".trace", b, 0o644)
	mountBG(t, fl2, mnt, "--log", logf)
	mustRun(t, "flist", "umount", mnt)
	if logs, _ := os.ReadFile(logf); !strings.Contains(string(logs), "ignoring the trace beside the flist") {
		t.Errorf("a stale FL.trace was not reported:\n%s", logs)
	}
}

// waitLog waits for a line in a server's log.
func waitLog(t *testing.T, path, want string) {
	t.Helper()
	for range 200 {
		if b, _ := os.ReadFile(path); strings.Contains(string(b), want) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	b, _ := os.ReadFile(path)
	t.Fatalf("log never said %q:\n%s", want, b)
}

// TestCLIWarm fills a cache with every chunk; a mount with that cache then
// reads the whole image with the store gone.
func TestCLIWarm(t *testing.T) {
	dir := t.TempDir()
	tree := smallTree(t)
	fl := filepath.Join(dir, "img.fl")
	storeDir := filepath.Join(dir, "store")
	mustRun(t, "flist", "pack", tree, "-o", fl, "--store", "dir://"+storeDir)
	cache := filepath.Join(dir, "cache")
	if _, errs, code := run(t, "flist", "warm", fl); code != exitUsage || !strings.Contains(errs, "--cache") {
		t.Errorf("warm without --cache: exit %d %q", code, errs)
	}
	out := mustRun(t, "flist", "warm", fl, "--cache", cache, "--json")
	var sum struct {
		Chunks, Bytes, Failed int64
		Seconds               float64
	}
	if err := json.Unmarshal([]byte(out), &sum); err != nil || sum.Chunks == 0 || sum.Bytes == 0 || sum.Failed != 0 {
		t.Fatalf("warm --json: %v %s", err, out)
	}
	blobs, _ := filepath.Glob(filepath.Join(cache, "[0-9a-f][0-9a-f]", "*")) // not .zos-cache/
	if int64(len(blobs)) != sum.Chunks {
		t.Errorf("cache holds %d blobs, warm reported %d chunks", len(blobs), sum.Chunks)
	}
	// A lost chunk: reported, exit 4.
	os.RemoveAll(storeDir)
	os.Mkdir(storeDir, 0o755)
	if _, errs, code := run(t, "flist", "warm", fl, "--cache", filepath.Join(dir, "cache2")); code != exitContent || !strings.Contains(errs, "failed") {
		t.Errorf("warm from an empty store: exit %d %q", code, errs)
	}
	if os.Geteuid() != 0 {
		return
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return
	}
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	mountBG(t, fl, mnt, "--cache", cache, "--log", filepath.Join(dir, "mount.log"))
	for _, p := range []string{"big", "etc/hostname"} {
		got, err := os.ReadFile(filepath.Join(mnt, p))
		want, _ := os.ReadFile(filepath.Join(tree, p))
		if err != nil || string(got) != string(want) {
			t.Errorf("%s from the warmed cache, store gone: %v", p, err)
		}
	}
	mustRun(t, "flist", "umount", mnt)
}

// TestCLIHubBundle: the hub builds, from the version-2 trace pushed with
// an flist, the very start bundle 'zos flist trace' built beside it;
// 'zos hub pull' saves it beside the flist, verified (a damaged one is not
// saved), and a mount of the pulled flist streams it.
func TestCLIHubBundle(t *testing.T) {
	needFUSE(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "hubdata")
	hubURL := startHubServe(t, "--data", data)
	k := filepath.Join(dir, "alice.key")
	mustRun(t, "key", "gen", k)
	mustRun(t, "hub", "register", "alice", "--hub", hubURL, "--key", k)
	tree := smallTree(t)
	os.MkdirAll(filepath.Join(tree, "bin"), 0o755)
	os.MkdirAll(filepath.Join(tree, "proc"), 0o755)
	buildProbe(t, filepath.Join(tree, "bin/probe"))
	fl := filepath.Join(dir, "img.fl")
	mustRun(t, "flist", "pack", tree, "-o", fl, "--store", hubURL+"/chunks", "--key", k)
	mustRun(t, "flist", "trace", fl, "--", "/bin/probe", "/big")
	local, err := os.ReadFile(fl + ".bundle")
	if err != nil {
		t.Fatal(err)
	}
	out := mustRun(t, "hub", "push", fl, "alice/img:v1", "--hub", hubURL, "--key", k)
	if !strings.Contains(out, "start bundle: ") || !strings.Contains(out, "built by the hub") {
		t.Fatalf("hub push: %q", out)
	}

	pulled := filepath.Join(dir, "pulled.fl")
	out = mustRun(t, "hub", "pull", "alice/img:v1", "-o", pulled, "--hub", hubURL, "--json")
	var res struct{ Bundle int64 }
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.Bundle != int64(len(local)) {
		t.Fatalf("hub pull --json: %v %s", err, out)
	}
	if got, err := os.ReadFile(pulled + ".bundle"); err != nil || !bytes.Equal(got, local) {
		t.Fatalf("the hub's bundle (%d bytes, %v) is not the one 'zos flist trace' built (%d bytes)", len(got), err, len(local))
	}
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	logf := filepath.Join(dir, "mount.log")
	mountBG(t, pulled, mnt, "--log", logf)
	got, err := os.ReadFile(filepath.Join(mnt, "big"))
	want, _ := os.ReadFile(filepath.Join(tree, "big"))
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("/big read through the pulled bundle's mount differs: %v", err)
	}
	waitLog(t, logf, "start bundle streamed")
	mustRun(t, "flist", "umount", mnt)
	if logs, _ := os.ReadFile(logf); !strings.Contains(string(logs), "bad=0") {
		t.Errorf("mount log:\n%s", logs)
	}

	// --no-bundle: none beside the flist, not even the earlier one.
	mustRun(t, "hub", "pull", "alice/img:v1", "-o", pulled, "--hub", hubURL, "--no-bundle")
	if _, err := os.Stat(pulled + ".bundle"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("--no-bundle left a bundle: %v", err)
	}
	// A bundle damaged on the hub is refused whole, and not saved.
	var stored string
	filepath.WalkDir(data, func(p string, e fs.DirEntry, err error) error {
		if err == nil && filepath.Base(filepath.Dir(p)) == "bundles" {
			stored = p
		}
		return nil
	})
	b, err := os.ReadFile(stored)
	if err != nil || !bytes.Equal(b, local) {
		t.Fatalf("the hub's stored bundle %q: %v", stored, err)
	}
	b[len(b)/2] ^= 1
	os.WriteFile(stored, b, 0o644)
	if _, errs, code := run(t, "hub", "pull", "alice/img:v1", "-o", pulled, "--hub", hubURL); code == 0 || !strings.Contains(errs, "start bundle") {
		t.Errorf("pull of a damaged bundle: exit %d %q", code, errs)
	}
	if _, err := os.Stat(pulled + ".bundle"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a damaged bundle was saved: %v", err)
	}
}
