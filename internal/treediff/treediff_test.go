package treediff

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestFindsDifferences(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	for _, d := range []string{a, b} {
		os.WriteFile(filepath.Join(d, "f"), []byte("same"), 0o644)
		os.Symlink("t", filepath.Join(d, "l"))
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
