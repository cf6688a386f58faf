package pack_test

import (
	"archive/tar"
	"context"
	"testing"

	"github.com/zosgrid/zos/internal/chunker"
	"github.com/zosgrid/zos/internal/flist"
	"github.com/zosgrid/zos/internal/pack"
	"github.com/zosgrid/zos/internal/store/mem"
)

// FuzzLayers applies two arbitrary layers: whatever they hold, Layers
// returns an error or an flist that opens and validates; it never panics.
// The seed corpus (testdata/fuzz/FuzzLayers) holds whiteouts, opaque
// directories, links through symlinks and replacements.
func FuzzLayers(f *testing.F) {
	l1 := mkTar(f, dirEnt("d/"), file("d/a", []byte("a")), symlink("s", "d"), hardlink("h", "d/a"),
		file("big", make([]byte, 300)), symlink("loop", "loop"), dirEnt("e/"), file("e/x", nil))
	l2 := mkTar(f, file("d/.wh.a", nil), file("s/b", []byte("b")), file("e/.wh..wh..opq", nil), file("e/y", nil),
		dirEnt("big/"), file("../../up", nil), th{tar.Header{Name: "dev", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3}, nil})
	f.Add(l1, l2)
	f.Add(l2, l1)
	f.Add([]byte{}, l1)
	f.Fuzz(func(t *testing.T, a, b []byte) {
		// Small chunks, so that small inputs have large files too.
		opt := pack.Options{Workers: 1, Chunking: chunker.Params{Min: 64, Avg: 256, Max: 1024}}
		fl, _, err := pack.Layers(context.Background(), layers{a, b}, mem.New(), opt)
		if err != nil {
			return
		}
		r, err := flist.Open(fl)
		if err != nil {
			t.Fatalf("converted flist does not open: %v", err)
		}
		if err := r.Validate(); err != nil {
			t.Fatalf("converted flist does not validate: %v", err)
		}
	})
}
