package pack_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/zosgrid/zos/internal/flist"
	"github.com/zosgrid/zos/internal/pack"
	"github.com/zosgrid/zos/internal/store/dir"
	"github.com/zosgrid/zos/internal/store/mem"
	"github.com/zosgrid/zos/internal/unpack"
)

// layers is a LayerSource over in-memory tars.
type layers [][]byte

func (l layers) NumLayers() int { return len(l) }
func (l layers) OpenLayer(_ context.Context, i int) (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l[i])), nil
}

// th is a tar entry: a header and, for a regular file, its content.
type th struct {
	tar.Header
	data []byte
}

func file(name string, data []byte) th {
	return th{tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(data))}, data}
}
func dirEnt(name string) th {
	return th{tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: 0o755}, nil}
}
func symlink(name, target string) th {
	return th{tar.Header{Name: name, Typeflag: tar.TypeSymlink, Linkname: target, Mode: 0o777}, nil}
}
func hardlink(name, target string) th {
	return th{tar.Header{Name: name, Typeflag: tar.TypeLink, Linkname: target}, nil}
}

func mkTar(t testing.TB, ents ...th) []byte {
	t.Helper()
	var b bytes.Buffer
	w := tar.NewWriter(&b)
	for i, e := range ents {
		h := e.Header
		if h.Typeflag != tar.TypeXGlobalHeader {
			h.ModTime = time.Unix(1600000000+int64(i), int64(i)*1000)
			h.Format = tar.FormatPAX
		}
		if err := w.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		w.Write(e.data)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func convertLayers(t testing.TB, src pack.LayerSource, opt pack.Options) ([]byte, pack.Stats, error) {
	t.Helper()
	return pack.Layers(context.Background(), src, mem.New(), opt)
}

// listing describes an flist's tree: one line per path, sorted.
func listing(t testing.TB, fl []byte) []string {
	t.Helper()
	r, err := flist.Open(fl)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	err = r.Walk(func(p string, _ uint64, e *flist.Entry) error {
		if e.IsLink() {
			t2, err := r.Resolve(e)
			if err != nil {
				return err
			}
			out = append(out, fmt.Sprintf("%s link %s", p, t2.Kind()))
			return nil
		}
		line := fmt.Sprintf("%s %s %o", p, e.Kind(), e.Perm())
		switch e.Kind() {
		case flist.KindSymlink:
			line += " -> " + e.Target
		case flist.KindRegular:
			line += fmt.Sprintf(" %d", e.Size)
		}
		out = append(out, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

// TestLayersPathSafety: names that climb out, absolute names, names
// through symlinks (which umoci follows, scoped to the root) land inside
// the root; what no unpacker could create is a clear error.
func TestLayersPathSafety(t *testing.T) {
	for _, tc := range []struct {
		name string
		ents []th
		want []string // paths that must be in the listing
		err  string
	}{
		{name: "dotdot", ents: []th{file("../../etc/x", []byte("x"))}, want: []string{"/etc dir 755", "/etc/x file 644 1"}},
		{name: "absolute", ents: []th{file("/abs/y", []byte("y"))}, want: []string{"/abs/y file 644 1"}},
		{name: "through absolute symlink", ents: []th{symlink("evil", "/../../.."), file("evil/z", []byte("z"))}, want: []string{"/z file 644 1"}},
		{name: "through relative symlink", ents: []th{symlink("up", "../../../tmp"), file("up/f", []byte("f"))}, want: []string{"/tmp/f file 644 1", "/up symlink 777 -> ../../../tmp"}},
		{name: "symlink chain", ents: []th{dirEnt("usr/"), dirEnt("usr/lib/"), symlink("lib", "usr/lib"), symlink("l2", "lib/"), file("l2/so", []byte("so"))}, want: []string{"/usr/lib/so file 644 2"}},
		{name: "hard link through symlink", ents: []th{dirEnt("d/"), file("d/f", []byte("f")), symlink("s", "d"), hardlink("h", "s/f")}, want: []string{"/h file 644 1", "/d/f link file"}},
		{name: "hard link to symlink", ents: []th{symlink("s", "nowhere"), hardlink("h", "s")}, want: []string{"/h symlink 777 -> nowhere", "/s link symlink"}},
		{name: "symlink loop", ents: []th{symlink("a", "b"), symlink("b", "a"), file("a/x", nil)}, err: "too many levels"},
		{name: "root as symlink", ents: []th{symlink("./", "/etc")}, err: "root directory"},
		{name: "root as file", ents: []th{file(".", nil)}, err: "root directory"},
		{name: "hard link to nothing", ents: []th{hardlink("h", "missing")}, err: "does not exist"},
		{name: "hard link to itself", ents: []th{file("f", nil), hardlink("f", "f")}, err: "does not exist"},
		{name: "hard link to dir", ents: []th{dirEnt("d/"), hardlink("h", "d")}, err: "directory"},
		{name: "hard link to root", ents: []th{hardlink("h", "/")}, err: "directory"},
		{name: "file under file", ents: []th{file("f", nil), file("f/g", nil)}, err: "not a directory"},
		{name: "long name", ents: []th{file(strings.Repeat("n", 256), nil)}, err: "name of 256 bytes"},
		{name: "whiteout of parent", ents: []th{dirEnt("d/"), file("d/.wh...", nil)}, err: "whiteout"},
		{name: "whiteout of nothing", ents: []th{file(".wh.", nil)}, err: "whiteout"},
		{name: "deep", ents: []th{file(strings.Repeat("d/", 3000)+"f", nil)}, err: "levels of directories"},
		{name: "empty symlink", ents: []th{symlink("s", "")}, err: "symlink target"},
		{name: "negative owner", ents: []th{{tar.Header{Name: "f", Typeflag: tar.TypeReg, Uid: -2}, nil}}, err: "owner"},
		{name: "global header", ents: []th{{tar.Header{Name: "pax_global_header", Typeflag: tar.TypeXGlobalHeader, PAXRecords: map[string]string{"comment": "x"}}, nil}, file("f", nil)}, want: []string{"/f file 644 0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fl, _, err := convertLayers(t, layers{mkTar(t, tc.ents...)}, pack.Options{Workers: 1})
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, pack.ErrLayer) {
					t.Fatalf("err %v, want ErrLayer with %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := listing(t, fl)
			for _, w := range tc.want {
				found := false
				for _, g := range got {
					found = found || g == w
				}
				if !found {
					t.Errorf("no %q in %q", w, got)
				}
			}
		})
	}
}

// TestLayersTruncated: a layer that ends inside a file (as a hostile or
// torn one would, claiming an absurd size) is an error, not a panic or a
// huge allocation.
func TestLayersTruncated(t *testing.T) {
	for _, size := range []int64{100, 1 << 20, 1 << 40} {
		var b bytes.Buffer
		w := tar.NewWriter(&b)
		w.WriteHeader(&tar.Header{Name: "f", Typeflag: tar.TypeReg, Size: size, Mode: 0o644})
		w.Write(make([]byte, 50))
		w.Flush()
		_, _, err := convertLayers(t, layers{b.Bytes()}, pack.Options{Workers: 1})
		if err == nil || !strings.Contains(err.Error(), "unexpected EOF") {
			t.Errorf("size %d: err %v", size, err)
		}
	}
	if _, _, err := convertLayers(t, layers{[]byte("not a tar at all, but long enough to be read as a header block..." + strings.Repeat("x", 600))}, pack.Options{}); !errors.Is(err, pack.ErrLayer) {
		t.Errorf("garbage: %v", err)
	}
}

func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32() % 17)
	}
	return b
}

// overlayLayers replace, delete and re-create files, large and small.
func overlayLayers(t testing.TB) layers {
	var l1 []th
	for i := 0; i < 200; i++ {
		l1 = append(l1, file(fmt.Sprintf("small/%03d", i), randBytes(uint64(i%50), i*150)))
	}
	l1 = append(l1,
		file("big/a", randBytes(1000, 500<<10)),
		file("big/b", randBytes(1001, 200<<10)),
		file("keep", []byte("old content")),
		hardlink("keep-link", "keep"),
		file("bigkeep", randBytes(1002, 100<<10)),
		hardlink("bigkeep-link", "bigkeep"),
	)
	l2 := []th{
		file("big/a", randBytes(2000, 400<<10)),
		file(".wh.small", nil),
		file("small/new", []byte("new")),
		file("keep", []byte("new content")),
		file("bigkeep", []byte("small now")),
		file("big/.wh.b", nil),
	}
	return layers{mkTar(t, l1...), mkTar(t, l2...)}
}

// TestLayersHardLinksKeepReplacedContent: a name hard-linked to a file that
// a later layer replaces keeps the old content (the old inode), as on disk.
func TestLayersHardLinksKeepReplacedContent(t *testing.T) {
	ctx := context.Background()
	st := mem.New()
	fl, stats, err := pack.Layers(ctx, overlayLayers(t), st, pack.Options{Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	if stats.Orphans == 0 {
		t.Errorf("stats %+v: the replaced large files left no orphan chunks", stats)
	}
	r, err := flist.Open(fl)
	if err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(t.TempDir(), "d")
	if _, err := unpack.Unpack(ctx, r, st, dest, unpack.Options{}); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string][]byte{
		"keep": []byte("new content"), "keep-link": []byte("old content"),
		"bigkeep": []byte("small now"), "bigkeep-link": randBytes(1002, 100<<10),
		"big/a": randBytes(2000, 400<<10), "small/new": []byte("new"),
	} {
		got, err := os.ReadFile(filepath.Join(dest, p))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: %d bytes, err %v; want %d bytes", p, len(got), err, len(want))
		}
	}
	ls := strings.Join(listing(t, fl), "\n")
	for _, gone := range []string{"/small/000", "/big/b", " link "} {
		if strings.Contains(ls, gone) {
			t.Errorf("%q still there:\n%s", gone, ls)
		}
	}
}

// TestLayersDeterministic: the digest does not depend on the worker count
// or on whether small files were spooled in memory or to disk.
func TestLayersDeterministic(t *testing.T) {
	src := overlayLayers(t)
	var want string
	for i, opt := range []pack.Options{
		{Workers: 1},
		{Workers: 7},
		pack.WithSpoolMemory(pack.Options{Workers: 3, TempDir: t.TempDir()}, 1),
		pack.WithSpoolMemory(pack.Options{Workers: 2, TempDir: t.TempDir()}, 10<<10),
	} {
		fl, _, err := convertLayers(t, src, opt)
		if err != nil {
			t.Fatal(err)
		}
		r, err := flist.Open(fl)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			want = r.Digest().String()
		} else if got := r.Digest().String(); got != want {
			t.Errorf("options %d: digest %s, want %s", i, got, want)
		}
	}
}

// TestLayersEqualsDir: a single layer of a tree converts to what pack.Dir
// makes of the same tree, large and small files, duplicates and links.
func TestLayersEqualsDir(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to set owners")
	}
	root := goldenTree(t)
	want, _, err := pack.Dir(context.Background(), root, mem.New(), pack.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	w := tar.NewWriter(&b)
	links := map[[2]uint64]string{}
	err = filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		target, _ := os.Readlink(p)
		h, err := tar.FileInfoHeader(fi, target)
		if err != nil {
			return err
		}
		h.Name, h.Format = rel, tar.FormatPAX
		h.Uname, h.Gname = "", ""
		if fi.IsDir() {
			h.Name += "/"
		}
		xs, err := listXattrs(p)
		if err != nil {
			return err
		}
		for k, v := range xs {
			if h.PAXRecords == nil {
				h.PAXRecords = map[string]string{}
			}
			h.PAXRecords["SCHILY.xattr."+k] = v
		}
		if ino, nlink := inodeOf(fi); nlink > 1 && !fi.IsDir() {
			if first, ok := links[ino]; ok {
				h.Typeflag, h.Linkname, h.Size = tar.TypeLink, first, 0
			} else {
				links[ino] = rel
			}
		}
		if err := w.WriteHeader(h); err != nil {
			return err
		}
		if h.Typeflag == tar.TypeReg {
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			w.Write(data)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	got, _, err := convertLayers(t, layers{b.Bytes()}, pack.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("converted tar differs from pack.Dir:\n%q\n%q", listing(t, got), listing(t, want))
	}
}

// TestLayersDeltaAgainstBase: converting a release with the previous one
// as Base stores its new chunks (of large files streamed with their layer,
// and of the final stream of small files) as deltas, and changes nothing
// in the flist.
func TestLayersDeltaAgainstBase(t *testing.T) {
	ctx := context.Background()
	// Two layers of a release tree: the large file, then the small ones.
	asLayers := func(root string) layers {
		var big, small []th
		filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || p == root {
				return err
			}
			rel, _ := filepath.Rel(root, p)
			if d.IsDir() {
				small = append(small, dirEnt(rel))
				return nil
			}
			b, err := os.ReadFile(p)
			if len(b) >= 64<<10 {
				big = append(big, file(rel, b))
			} else {
				small = append(small, file(rel, b))
			}
			return err
		})
		return layers{mkTar(t, big...), mkTar(t, small...)}
	}
	v0, v1 := release(t, 0), release(t, 1)
	st := must(dir.New(t.TempDir()))
	base, _, err := pack.Layers(ctx, asLayers(v0), st, pack.Options{Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	before := storeBytes(t, st)
	r, _ := flist.Open(base)
	fl, stats, err := pack.Layers(ctx, asLayers(v1), st, pack.Options{Workers: 2, Base: r})
	if err != nil {
		t.Fatal(err)
	}
	plainSt := must(dir.New(t.TempDir()))
	pack.Layers(ctx, asLayers(v0), plainSt, pack.Options{Workers: 2})
	plainBefore := storeBytes(t, plainSt)
	plain, _, err := pack.Layers(ctx, asLayers(v1), plainSt, pack.Options{Workers: 2})
	if err != nil || !bytes.Equal(fl, plain) {
		t.Fatalf("flist differs when converted with a base (%v)", err)
	}
	grew, plainGrew := storeBytes(t, st)-before, storeBytes(t, plainSt)-plainBefore
	t.Logf("v1: %d new chunks, %d deltas; store grew %d bytes with the base, %d without", stats.NewChunks, stats.DeltaChunks, grew, plainGrew)
	if stats.DeltaChunks == 0 || grew*10 > plainGrew*8 {
		t.Fatalf("the base saved too little: %d deltas, %d vs %d bytes", stats.DeltaChunks, grew, plainGrew)
	}
	out := filepath.Join(t.TempDir(), "out")
	fr, _ := flist.Open(fl)
	if _, err := unpack.Unpack(ctx, fr, st, out, unpack.Options{}); err != nil {
		t.Fatal(err)
	}
	// Every file reads back exactly, through the deltas.
	filepath.WalkDir(v1, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(v1, p)
		want, _ := os.ReadFile(p)
		if got, err := os.ReadFile(filepath.Join(out, rel)); err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s does not read back (%v)", rel, err)
		}
		return nil
	})
}

func storeBytes(t *testing.T, st *dir.Store) int {
	n := 0
	for _, b := range blobs(t, st) {
		n += len(b)
	}
	return n
}

func mustFlist(t *testing.T) []byte {
	fl, _, err := convertLayers(t, layers{mkTar(t, file("f", []byte("x")))}, pack.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return fl
}
