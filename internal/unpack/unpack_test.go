package unpack_test

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/zosgrid/zos/internal/chunk"
	"github.com/zosgrid/zos/internal/flist"
	"github.com/zosgrid/zos/internal/pack"
	"github.com/zosgrid/zos/internal/store/dir"
	"github.com/zosgrid/zos/internal/store/mem"
	"github.com/zosgrid/zos/internal/treediff"
	"github.com/zosgrid/zos/internal/unpack"
)

// makeTree builds a tree with every kind of entry and attribute zos records.
func makeTree(t *testing.T) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "src")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "etc/deep/er"), 0o755))
	must(os.MkdirAll(filepath.Join(root, "empty"), 0o700))
	r := rand.New(rand.NewPCG(1, 1))
	big := make([]byte, 3<<20)
	for i := range big {
		big[i] = byte(r.Uint32() % 7) // compressible, varied
	}
	must(os.WriteFile(filepath.Join(root, "big.bin"), big, 0o755))
	for i := 0; i < 200; i++ {
		must(os.WriteFile(filepath.Join(root, "etc", "f"+string(rune('a'+i%26))+string(rune('a'+i/26))), bytes.Repeat([]byte{byte(i)}, i*37), 0o644))
	}
	must(os.WriteFile(filepath.Join(root, "etc/deep/er/dup1"), []byte("same content"), 0o600))
	must(os.WriteFile(filepath.Join(root, "etc/deep/dup2"), []byte("same content"), 0o640))
	must(os.WriteFile(filepath.Join(root, "setuid"), []byte("#!/bin/sh\n"), 0o755))
	must(os.Chmod(filepath.Join(root, "setuid"), 0o4755|os.ModeSetuid))
	must(unix.Chmod(filepath.Join(root, "setuid"), 0o4755))
	must(unix.Chmod(filepath.Join(root, "empty"), 0o1777))
	must(os.Link(filepath.Join(root, "big.bin"), filepath.Join(root, "etc/big-link")))
	must(os.Symlink("../big.bin", filepath.Join(root, "etc/sym")))
	must(os.Symlink("/nonexistent/abs", filepath.Join(root, "dangling")))
	must(unix.Mkfifo(filepath.Join(root, "fifo"), 0o620))
	must(os.Lchown(filepath.Join(root, "etc/deep"), 1234, 5678))
	must(os.Lchown(filepath.Join(root, "etc/sym"), 42, 43))
	must(unix.Setxattr(filepath.Join(root, "big.bin"), "user.zos", []byte("yes"), 0))
	if os.Geteuid() == 0 {
		must(unix.Mknod(filepath.Join(root, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
		must(unix.Mknod(filepath.Join(root, "blk"), unix.S_IFBLK|0o600, int(unix.Mkdev(7, 0))))
		// A file capability, as ping or a container image ships.
		must(unix.Setxattr(filepath.Join(root, "setuid"), "security.capability",
			[]byte{0, 0, 0, 2, 0, 32, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 0))
	}
	ts := []unix.Timespec{{Sec: 1600000000, Nsec: 123456789}, {Sec: 1600000000, Nsec: 123456789}}
	must(unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(root, "etc/sym"), ts, unix.AT_SYMLINK_NOFOLLOW))
	must(unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(root, "etc"), ts, 0))
	return root
}

func TestPackUnpackRoundTrip(t *testing.T) {
	ctx := context.Background()
	src := makeTree(t)
	st, err := dir.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	fl, stats, err := pack.Dir(ctx, src, st, pack.Options{Workers: 3})
	if err != nil {
		t.Fatal(err)
	}
	if stats.DupFiles != 1 || stats.NewChunks == 0 || stats.NewChunks != stats.Chunks {
		t.Fatalf("stats %+v", stats)
	}
	r, err := flist.Open(fl)
	if err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(t.TempDir(), "dest")
	if _, err := unpack.Unpack(ctx, r, st, dest, unpack.Options{}); err != nil {
		t.Fatal(err)
	}
	diffs, err := treediff.Compare(src, dest)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range diffs {
		t.Error(d)
	}

	// Deterministic: 1 worker, a fresh store, same flist bytes; the store
	// holds exactly the same blobs.
	st2 := mem.New()
	fl2, stats2, err := pack.Dir(ctx, src, st2, pack.Options{Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(fl, fl2) {
		t.Fatal("flist differs between 3 workers and 1")
	}
	if st2.Len() != stats.NewChunks || stats2.StoredBytes != stats.StoredBytes {
		t.Fatalf("stores differ: %d/%d blobs, %d/%d bytes", st2.Len(), stats.NewChunks, stats2.StoredBytes, stats.StoredBytes)
	}
	// A second pack into the same store writes nothing new.
	_, again, err := pack.Dir(ctx, src, st, pack.Options{})
	if err != nil || again.NewChunks != 0 {
		t.Fatalf("repack: %d new chunks, %v", again.NewChunks, err)
	}
}

func TestUnpackRefusesCorruptChunk(t *testing.T) {
	ctx := context.Background()
	src := makeTree(t)
	st := mem.New()
	fl, _, err := pack.Dir(ctx, src, st, pack.Options{})
	if err != nil {
		t.Fatal(err)
	}
	r, _ := flist.Open(fl)
	victim := r.Chunks()[0]
	id := chunk.ID(victim.Sum)
	blob, _ := st.Get(ctx, id)
	bad := bytes.Clone(blob)
	bad[10] ^= 0xff
	st.Corrupt(id, bad)
	_, err = unpack.Unpack(ctx, r, st, filepath.Join(t.TempDir(), "d"), unpack.Options{})
	var inv *chunk.Invalid
	if !errors.As(err, &inv) || inv.ID != id {
		t.Fatalf("unpack over a corrupt chunk: %v", err)
	}
}

func TestUnpackRefusesNonEmptyDest(t *testing.T) {
	ctx := context.Background()
	src := makeTree(t)
	st := mem.New()
	fl, _, _ := pack.Dir(ctx, src, st, pack.Options{})
	r, _ := flist.Open(fl)
	dest := t.TempDir()
	os.WriteFile(filepath.Join(dest, "x"), nil, 0o644)
	if _, err := unpack.Unpack(ctx, r, st, dest, unpack.Options{}); err == nil {
		t.Fatal("unpacked into a non-empty directory")
	}
}
