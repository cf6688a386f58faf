package treediff

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestFindsDifferences(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	when := time.Unix(1700000000, 123456789)
	for _, d := range []string{a, b} {
		os.WriteFile(filepath.Join(d, "f"), []byte("same"), 0o644)
		os.Chtimes(filepath.Join(d, "f"), when, when) // written a few ns apart otherwise
		os.Symlink("t", filepath.Join(d, "l"))
		ts := []unix.Timespec{unix.NsecToTimespec(when.UnixNano()), unix.NsecToTimespec(when.UnixNano())}
		unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(d, "l"), ts, unix.AT_SYMLINK_NOFOLLOW)
	}
	if diffs, err := Compare(a, b); err != nil || len(diffs) != 0 {
		t.Fatalf("equal trees: %v %v", diffs, err)
	}
	os.WriteFile(filepath.Join(b, "f"), []byte("diff"), 0o644)
	os.Chmod(filepath.Join(b, "f"), 0o600)
	os.Chtimes(filepath.Join(a, "f"), time.Unix(1, 5), time.Unix(1, 5))
	os.WriteFile(filepath.Join(b, "extra"), nil, 0o644)
	diffs, err := Compare(a, b)
	if err != nil || len(diffs) < 4 {
		t.Fatalf("want content, mode, mtime and extra-file differences, got %v", diffs)
	}
}
