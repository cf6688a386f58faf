package pack

import (
	"os"
	"path/filepath"
	"testing"
)

// readSmall returns one byte more than expected when the file grew, fewer
// when it shrank, and refuses a symlink put where the file was.
func TestReadSmall(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	if err := os.WriteFile(p, []byte("0123456789"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ expect, want int }{{10, 10}, {4, 5}, {12, 10}, {0, 1}} {
		b := make([]byte, c.expect+1)
		n, err := readSmall(p, b)
		if err != nil || n != c.want || string(b[:n]) != "0123456789"[:n] {
			t.Errorf("expecting %d bytes: read %d %q, %v; want %d", c.expect, n, b[:n], err, c.want)
		}
	}
	if err := os.Symlink(p, filepath.Join(dir, "l")); err != nil {
		t.Fatal(err)
	}
	if _, err := readSmall(filepath.Join(dir, "l"), make([]byte, 11)); err == nil {
		t.Error("read through a symlink")
	}
}
