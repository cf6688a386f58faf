package pack_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/zosgrid/zos/internal/flist"
	"github.com/zosgrid/zos/internal/pack"
	"github.com/zosgrid/zos/internal/store/mem"
)

// goldenTree writes a tree whose every attribute is fixed (names, contents,
// modes, owners, times), so that its flist digest is a constant.
func goldenTree(t *testing.T) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "g")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "a/b/c"), 0o755))
	must(os.MkdirAll(filepath.Join(root, "z"), 0o755))
	r := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 120; i++ {
		b := make([]byte, r.IntN(20<<10))
		for j := range b {
			b[j] = byte(r.Uint32() % 11)
		}
		must(os.WriteFile(filepath.Join(root, "a", fmt.Sprintf("s%03d", i)), b, 0o644))
	}
	for i, n := range []int{64 << 10, 64<<10 - 1, 300 << 10, 1 << 20} {
		b := make([]byte, n)
		for j := range b {
			b[j] = byte(r.Uint32() % 5)
		}
		must(os.WriteFile(filepath.Join(root, "a/b", fmt.Sprintf("large%d", i)), b, 0o755))
	}
	must(os.WriteFile(filepath.Join(root, "z/dup1"), []byte("same"), 0o600))
	must(os.WriteFile(filepath.Join(root, "a/b/c/dup2"), []byte("same"), 0o644))
	must(os.WriteFile(filepath.Join(root, "a/b/c/empty"), nil, 0o644))
	must(os.Link(filepath.Join(root, "a/b/large2"), filepath.Join(root, "0link")))
	must(os.Symlink("a/b", filepath.Join(root, "sym")))
	must(unix.Setxattr(filepath.Join(root, "z/dup1"), "user.k", []byte("v"), 0))
	must(unix.Chmod(filepath.Join(root, "z"), 0o2755))
	must(os.Lchown(filepath.Join(root, "a/b/c"), 7, 8))
	must(os.Lchown(filepath.Join(root, "sym"), 9, 10))
	// Times last, deepest first, so that creating children changes none.
	var paths []string
	filepath.Walk(root, func(p string, _ os.FileInfo, _ error) error { paths = append(paths, p); return nil })
	for i := len(paths) - 1; i >= 0; i-- {
		ts := []unix.Timespec{unix.NsecToTimespec(int64(i) * 1e9), unix.NsecToTimespec(1700000000e9 + int64(i)*1001)}
		must(unix.UtimesNanoAt(unix.AT_FDCWD, paths[i], ts, unix.AT_SYMLINK_NOFOLLOW))
	}
	return root
}

// TestDirGolden pins the digest of a fixed tree: refactoring the streamer
// must not change a byte of what pack.Dir writes.
func TestDirGolden(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to set owners")
	}
	root := goldenTree(t)
	for _, w := range []int{1, 5} {
		fl, _, err := pack.Dir(context.Background(), root, mem.New(), pack.Options{Workers: w})
		if err != nil {
			t.Fatal(err)
		}
		r, err := flist.Open(fl)
		if err != nil {
			t.Fatal(err)
		}
		const want = "78539075b12d4171c582400f3a06dc843385f156906d65c8bf6f2b98cdcf9dc9"
		if got := r.Digest().String(); got != want {
			t.Errorf("workers %d: digest %s, want %s", w, got, want)
		}
	}
}
