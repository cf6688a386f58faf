package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zosgrid/zos/internal/treediff"
)

var zosBin string

// buildTags are the tags this test binary was built with (tags_*_test.go).
var buildTags string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "zos-cli-")
	if err != nil {
		panic(err)
	}
	zosBin = filepath.Join(dir, "zos")
	// The binary gets the test's own build tags: the node refuses to run
	// containers in a build without -tags seccomp.
	args := []string{"build", "-o", zosBin}
	if buildTags != "" {
		args = append(args, "-tags", buildTags)
	}
	if out, err := exec.Command("go", append(args, ".")...).CombinedOutput(); err != nil {
		panic(string(out))
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// run executes zos and returns stdout, stderr and the exit status.
func run(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(zosBin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	out, errs, code := run(t, args...)
	if code != 0 {
		t.Fatalf("zos %s: exit %d: %s", strings.Join(args, " "), code, errs)
	}
	return out
}

func smallTree(t *testing.T) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "tree")
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	os.WriteFile(filepath.Join(root, "etc/hostname"), []byte("zos\n"), 0o644)
	os.WriteFile(filepath.Join(root, "big"), bytes.Repeat([]byte("0123456789abcdef"), 40000), 0o755)
	os.Symlink("etc/hostname", filepath.Join(root, "link"))
	return root
}

func TestCLIPackVerifySign(t *testing.T) {
	dir := t.TempDir()
	tree := smallTree(t)
	fl := filepath.Join(dir, "img.fl")
	store := "dir://" + filepath.Join(dir, "store")
	out := mustRun(t, "flist", "pack", tree, "-o", fl, "--store", store, "--json")
	var sum map[string]any
	if err := json.Unmarshal([]byte(out), &sum); err != nil || sum["entries"].(float64) != 5 {
		t.Fatalf("pack --json: %v %s", err, out)
	}
	if got := mustRun(t, "flist", "cat", fl, "/etc/hostname"); got != "zos\n" {
		t.Fatalf("cat = %q", got)
	}
	if ls := mustRun(t, "flist", "ls", fl, "/"); !strings.Contains(ls, "link -> etc/hostname") {
		t.Fatalf("ls: %s", ls)
	}
	mustRun(t, "flist", "verify", fl)

	// Signing: an untrusted or missing signature is exit 3.
	keyf := filepath.Join(dir, "k")
	pub := strings.TrimSpace(mustRun(t, "key", "gen", keyf))
	other := strings.TrimSpace(mustRun(t, "key", "gen", filepath.Join(dir, "k2")))
	if _, _, code := run(t, "flist", "verify", fl, "--pubkey", pub); code != exitSignature {
		t.Fatalf("unsigned with --pubkey: exit %d", code)
	}
	mustRun(t, "flist", "sign", fl, "--key", keyf)
	mustRun(t, "flist", "verify", fl, "--pubkey", pub)
	if _, _, code := run(t, "flist", "verify", fl, "--pubkey", other); code != exitSignature {
		t.Fatalf("wrong signer: exit %d", code)
	}
	// Tampering with a signed flist's metadata: exit 3 (signature) or 4 (corrupt).
	b, _ := os.ReadFile(fl)
	bad := bytes.Clone(b)
	bad[len(bad)/3] ^= 1
	os.WriteFile(filepath.Join(dir, "bad.fl"), bad, 0o644)
	if _, errs, code := run(t, "flist", "verify", filepath.Join(dir, "bad.fl")); code != exitSignature && code != exitContent {
		t.Fatalf("tampered flist: exit %d %s", code, errs)
	}

	// A missing chunk: exit 4, and the report names it.
	var rep verifyReport
	chunks, _ := filepath.Glob(filepath.Join(dir, "store", "*", "*"))
	os.Remove(chunks[0])
	out, _, code := run(t, "flist", "verify", fl, "--json")
	if code != exitContent || json.Unmarshal([]byte(out), &rep) != nil || len(rep.Missing) != 1 || rep.OK {
		t.Fatalf("missing chunk: exit %d %s", code, out)
	}
	// A corrupted chunk: exit 4, reported invalid.
	os.WriteFile(chunks[1], []byte("ZCK\x01garbage-garbage-garbage"), 0o644)
	out, _, code = run(t, "flist", "verify", fl, "--json")
	json.Unmarshal([]byte(out), &rep)
	if code != exitContent || len(rep.Invalid) != 1 {
		t.Fatalf("corrupt chunk: exit %d %s", code, out)
	}
}

// TestCLIPackEmpty packs a tree with no file bytes: the summary must not
// divide by them, and the image must unpack to an empty directory.
func TestCLIPackEmpty(t *testing.T) {
	dir := t.TempDir()
	tree := filepath.Join(dir, "empty")
	os.Mkdir(tree, 0o755)
	fl := filepath.Join(dir, "empty.fl")
	out := mustRun(t, "flist", "pack", tree, "-o", fl, "--store", "dir://"+filepath.Join(dir, "store"))
	// The metadata line alone: the temporary paths elsewhere in the
	// summary may hold any digits.
	var meta string
	for line := range strings.Lines(out) {
		if strings.HasPrefix(strings.TrimSpace(line), "metadata ") {
			meta = line
		}
	}
	if !strings.Contains(out, "entries   1 ") || meta == "" || strings.Contains(meta, "of the tree") ||
		strings.Contains(meta, "Inf") || strings.Contains(meta, "NaN") {
		t.Fatalf("pack summary of an empty tree:\n%s", out)
	}
	dest := filepath.Join(dir, "out")
	mustRun(t, "flist", "unpack", fl, dest)
	if ents, err := os.ReadDir(dest); err != nil || len(ents) != 0 {
		t.Fatalf("unpacked empty tree: %v %v", ents, err)
	}
}

func TestCLIErrorsAreOneLine(t *testing.T) {
	_, errs, code := run(t, "flist", "inspect", "/nonexistent.fl")
	if code == 0 || strings.Count(strings.TrimSpace(errs), "\n") != 0 || !strings.HasPrefix(errs, "zos: ") {
		t.Fatalf("exit %d, stderr %q", code, errs)
	}
	_, errs, code = run(t, "flist", "pack", t.TempDir())
	if code != exitUsage || !strings.Contains(errs, "-o") {
		t.Fatalf("pack without -o: exit %d %q", code, errs)
	}
	// Bad paths fail before any work, with what to do.
	st := "dir://" + t.TempDir()
	if _, errs, code = run(t, "flist", "pack", t.TempDir(), "-o", "/nonexistent/dir/x.fl", "--store", st); code != exitUsage || !strings.Contains(errs, "create it first") {
		t.Fatalf("pack -o into a missing directory: exit %d %q", code, errs)
	}
	if _, errs, code = run(t, "flist", "pack", "/nonexistent", "-o", filepath.Join(t.TempDir(), "x.fl"), "--store", st); code != exitUsage || !strings.Contains(errs, "not a directory") {
		t.Fatalf("pack of a missing tree: exit %d %q", code, errs)
	}
	for _, bad := range []string{"max", "0", "20", "-1"} {
		if _, errs, code = run(t, "flist", "pack", t.TempDir(), "-o", filepath.Join(t.TempDir(), "x.fl"), "--store", st, "--level", bad); code != exitUsage || !strings.Contains(errs, "--level") {
			t.Fatalf("pack --level %s: exit %d %q", bad, code, errs)
		}
	}
	for in, want := range map[string]int{"1": 1, "19": 19, "fastest": 1, "default": 3, "better": 7, "best": 11} {
		if got, err := parseLevel(in); err != nil || got != want {
			t.Fatalf("parseLevel(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	garbage := filepath.Join(t.TempDir(), "g.fl")
	os.WriteFile(garbage, []byte("zosflist\x01\x00garbage"), 0o644)
	if _, errs, code = run(t, "flist", "inspect", garbage); code != exitContent || strings.Contains(errs, "panic") {
		t.Fatalf("garbage flist: exit %d %q", code, errs)
	}
}

func TestCLIDiff(t *testing.T) {
	dir := t.TempDir()
	tree := smallTree(t)
	store := "dir://" + filepath.Join(dir, "store")
	a, b := filepath.Join(dir, "a.fl"), filepath.Join(dir, "b.fl")
	mustRun(t, "flist", "pack", tree, "-o", a, "--store", store)
	os.WriteFile(filepath.Join(tree, "etc/hostname"), []byte("zoz\n"), 0o644)
	os.WriteFile(filepath.Join(tree, "etc/new"), []byte("x"), 0o644)
	os.Remove(filepath.Join(tree, "link"))
	mustRun(t, "flist", "pack", tree, "-o", b, "--store", store)
	out := mustRun(t, "flist", "diff", a, b)
	for _, want := range []string{"+ /etc/new", "- /link", "~ /etc/hostname (mtime"} {
		if !strings.Contains(out, want) {
			t.Errorf("diff lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "/big") {
		t.Errorf("unchanged file reported:\n%s", out)
	}
	if got := mustRun(t, "flist", "diff", a, a); !strings.Contains(got, "no differences") {
		t.Errorf("self diff: %s", got)
	}
}

// TestCorpusRoundTrip packs and unpacks a real Debian root filesystem and
// compares both trees attribute by attribute.
func TestCorpusRoundTrip(t *testing.T) {
	src := corpusMin(t, "packs 200 MB")
	dir := t.TempDir()
	fl := filepath.Join(dir, "min.fl")
	mustRun(t, "flist", "pack", src, "-o", fl, "--store", "dir://"+filepath.Join(dir, "store"), "--workers", "2")
	mustRun(t, "flist", "verify", fl)
	dest := filepath.Join(dir, "out")
	mustRun(t, "flist", "unpack", fl, dest)
	diffs, err := treediff.Compare(src, dest)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range diffs {
		if !strings.HasPrefix(d, ".done") { // the corpus marker exists in both
			t.Error(d)
		}
	}
	// Determinism across worker counts on a real tree.
	fl1 := filepath.Join(dir, "min1.fl")
	mustRun(t, "flist", "pack", src, "-o", fl1, "--store", "dir://"+filepath.Join(dir, "store"), "--workers", "1")
	a, _ := os.ReadFile(fl)
	b, _ := os.ReadFile(fl1)
	if !bytes.Equal(a, b) {
		t.Fatal("flist differs between --workers 2 and --workers 1")
	}
}

// corpusMin returns the Debian corpus tree "min" (ZOS_CORPUS, default
// /var/cache/zos-corpus), skipping the test when it is not built (fatal
// under CI=true) or in -short mode (why says what the test costs).
func corpusMin(t *testing.T, why string) string {
	t.Helper()
	corpus := os.Getenv("ZOS_CORPUS")
	if corpus == "" {
		corpus = "/var/cache/zos-corpus"
	}
	src := filepath.Join(corpus, "min")
	if _, err := os.Stat(filepath.Join(src, ".done")); err != nil {
		msg := "Debian corpus not built: run ../shared/corpus/build-corpus.sh min"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	if testing.Short() {
		t.Skip(why + ": skipped in -short mode")
	}
	return src
}
