package flist

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zosgrid/zos/internal/chunk"
	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/key"
)

func dir(name string, kids ...*Node) *Node {
	return &Node{Name: name, Entry: Entry{Mode: uint32(KindDir) | 0o755, Mtime: 1700000000}, Children: kids}
}

func file(name string, size, off uint64) *Node {
	return &Node{Name: name, Entry: Entry{Mode: uint32(KindRegular) | 0o644, Mtime: 1700000001, Nsec: 5, Size: size, Offset: off}}
}

// sample returns a small image using every entry kind.
func sample() *Image {
	f1 := file("a.txt", 100, 0)
	f2 := file("b.bin", 70000, 100)
	f2.Entry.Xattrs = []Xattr{{"user.z", []byte("1")}, {"security.capability", []byte{1, 0, 0, 2}}}
	f2.Entry.Mode |= 0o4000
	link := &Node{Name: "hard", LinkTo: f1}
	sym := &Node{Name: "sym", Entry: Entry{Mode: uint32(KindSymlink) | 0o777, Target: "../a.txt"}}
	dev := &Node{Name: "null", Entry: Entry{Mode: uint32(KindChar) | 0o666, Rdev: 0x103}}
	fifo := &Node{Name: "fifo", Entry: Entry{Mode: uint32(KindFIFO) | 0o600, UID: 1000, GID: 1000}}
	root := dir("", f1, dir("sub", f2, sym, link, dir("empty")), dir("dev", dev, fifo), file("zero", 0, 0))
	entries, _ := Flatten(root)
	return &Image{
		Entries: entries,
		Chunks:  []Chunk{{Sum: digest.Sum([]byte("c0")), Size: 65536}, {Sum: digest.Sum([]byte("c1")), Size: 4564}},
		Meta:    map[string][]byte{"chunker": []byte("fastcdc:16384:65536:262144")},
	}
}

func TestRoundTrip(t *testing.T) {
	img := sample()
	b, err := Encode(img)
	if err != nil {
		t.Fatal(err)
	}
	b2, _ := Encode(sample())
	if !bytes.Equal(b, b2) {
		t.Fatal("encoding not deterministic")
	}
	r, err := Open(b)
	if err != nil {
		t.Fatal(err)
	}
	if r.Len() != uint64(len(img.Entries)) || r.StreamSize() != 70100 {
		t.Fatalf("len %d stream %d", r.Len(), r.StreamSize())
	}
	var paths []string
	err = r.Walk(func(p string, i uint64, e *Entry) error {
		want := img.Entries[i]
		want.Xattrs = e.Xattrs // compared below
		if fmt.Sprint(*e) != fmt.Sprint(want) && !strings.Contains(p, "b.bin") {
			t.Errorf("%s: got %+v want %+v", p, *e, want)
		}
		paths = append(paths, p)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := "/ /a.txt /dev /sub /zero /dev/fifo /dev/null /sub/b.bin /sub/empty /sub/hard /sub/sym"
	if got := strings.Join(paths, " "); got != want {
		t.Fatalf("walk order:\n got %s\nwant %s", got, want)
	}
	_, e, err := r.Lookup("/sub/b.bin")
	if err != nil || e.Size != 70000 || e.Perm() != 0o4644 || len(e.Xattrs) != 2 || e.Xattrs[0].Name != "security.capability" {
		t.Fatalf("lookup b.bin: %+v %v", e, err)
	}
	_, h, err := r.Lookup("sub/hard")
	if err != nil || !h.IsLink() {
		t.Fatalf("hard: %+v %v", h, err)
	}
	if t2, err := r.Resolve(h); err != nil || t2.Size != 100 {
		t.Fatalf("resolve: %v", err)
	}
	if _, _, err := r.Lookup("/sub/nope"); !errors.Is(err, ErrNotExist) {
		t.Fatalf("missing: %v", err)
	}
	if _, _, err := r.Lookup("/a.txt/x"); !errors.Is(err, ErrNotExist) {
		t.Fatalf("through a file: %v", err)
	}
	if r.ChunkAt(65535) != 0 || r.ChunkAt(65536) != 1 || r.ChunkAt(70099) != 1 {
		t.Fatal("ChunkAt")
	}
}

func TestSign(t *testing.T) {
	b, _ := Encode(sample())
	r, _ := Open(b)
	if _, err := r.VerifySignatures(); !errors.Is(err, ErrSignature) {
		t.Fatal("unsigned flist verified")
	}
	k1, k2 := key.FromSeed(bytes.Repeat([]byte{1}, 32)), key.FromSeed(bytes.Repeat([]byte{2}, 32))
	s1 := Sign(r, k1)
	r1, err := Open(s1)
	if err != nil || r1.Digest() != r.Digest() {
		t.Fatalf("signing changed the digest: %v", err)
	}
	s2 := Sign(r1, k2)
	r2, _ := Open(s2)
	if got, err := r2.VerifySignatures(k2.Public()); err != nil || len(got) != 2 {
		t.Fatalf("two signatures: %v %v", got, err)
	}
	if _, err := r2.VerifySignatures(key.FromSeed(bytes.Repeat([]byte{3}, 32)).Public()); !errors.Is(err, ErrSignature) {
		t.Fatal("accepted without a trusted signer")
	}
	// Any change to the body breaks the signature (or the framing).
	for _, off := range []int{30, len(r.Body()) / 2, len(r.Body()) - 1} {
		bad := bytes.Clone(s1)
		bad[off] ^= 1
		rb, err := Open(bad)
		if err != nil {
			continue
		}
		if _, err := rb.VerifySignatures(); !errors.Is(err, ErrSignature) {
			t.Fatalf("flip at %d: verified", off)
		}
	}
}

// mutate encodes an image changed by fn without the writer's self-check, so
// the decoder sees exactly what an attacker could write.
func mutate(fn func(img *Image)) []byte {
	img := sample()
	fn(img)
	return frame([][]byte{encodeMeta(img.Meta), encodeEntries(img.Entries), encodeChunks(img.Chunks)})
}

func find(img *Image, name string) *Entry {
	for i := range img.Entries {
		if img.Entries[i].Name == name {
			return &img.Entries[i]
		}
	}
	panic(name)
}

func TestRefusesMalicious(t *testing.T) {
	cases := map[string]func(*Image){
		"slash in name":    func(m *Image) { find(m, "a.txt").Name = "../../etc/passwd" },
		"dotdot":           func(m *Image) { find(m, "a.txt").Name = ".." },
		"NUL in name":      func(m *Image) { find(m, "a.txt").Name = "a\x00b" },
		"empty name":       func(m *Image) { find(m, "a.txt").Name = "" },
		"long name":        func(m *Image) { find(m, "a.txt").Name = strings.Repeat("x", 256) },
		"duplicate names":  func(m *Image) { find(m, "sym").Name = "hard" },
		"unsorted":         func(m *Image) { find(m, "a.txt").Name = "zz" },
		"file past stream": func(m *Image) { find(m, "b.bin").Size = 1 << 40 },
		"chunks short":     func(m *Image) { m.Chunks = m.Chunks[:1] },
		"cycle":            func(m *Image) { find(m, "sub").FirstChild = 0 },
		"shared children": func(m *Image) {
			e := find(m, "dev")
			s := find(m, "sub")
			e.FirstChild, e.NumChildren = s.FirstChild, s.NumChildren
		},
		"children past end": func(m *Image) { find(m, "sub").NumChildren = 1 << 40 },
		"link forward":      func(m *Image) { find(m, "a.txt").Link = 9 },
		"link to dir":       func(m *Image) { find(m, "hard").Link = 2 },
		"bad mode":          func(m *Image) { find(m, "a.txt").Mode = 0o170644 },
		"nsec":              func(m *Image) { find(m, "a.txt").Nsec = 1e9 },
		"root not dir":      func(m *Image) { m.Entries[0].Mode = uint32(KindRegular) },
		"zero chunk":        func(m *Image) { m.Chunks[1].Size = 0 },
		"huge chunk":        func(m *Image) { m.Chunks[1].Size = chunk.MaxSize + 1 },
		"symlink NUL":       func(m *Image) { find(m, "sym").Target = "a\x00" },
		"xattr dup":         func(m *Image) { e := find(m, "b.bin"); e.Xattrs = []Xattr{{"user.a", nil}, {"user.a", nil}} },
		"orphan entries":    func(m *Image) { find(m, "sub").NumChildren-- },
	}
	for name, fn := range cases {
		t.Run(name, func(t *testing.T) {
			b := mutate(fn)
			r, err := Open(b)
			if err == nil {
				err = r.Validate()
			}
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("accepted (err=%v)", err)
			}
		})
	}
}

func TestTruncated(t *testing.T) {
	b, _ := Encode(sample())
	k := key.FromSeed(make([]byte, 32))
	r, _ := Open(b)
	b = Sign(r, k)
	for n := 0; n < len(b); n++ {
		r, err := Open(b[:n])
		if err == nil {
			err = r.Validate()
		}
		if err == nil && n < len(r.Body()) {
			t.Fatalf("truncated to %d bytes accepted", n)
		}
	}
}

func FuzzOpen(f *testing.F) {
	b, _ := Encode(sample())
	f.Add(b)
	seeds, _ := filepath.Glob("testdata/*.fl")
	for _, s := range seeds {
		if d, err := os.ReadFile(s); err == nil {
			f.Add(d)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := Open(b)
		if err != nil {
			return
		}
		if r.Validate() != nil {
			return
		}
		// A valid flist walks, and every path looks up to its own entry.
		r.Walk(func(p string, i uint64, e *Entry) error {
			if j, _, err := r.Lookup(p); err != nil || j != i {
				t.Fatalf("%s: lookup gives %d, %v; walk gave %d", p, j, err, i)
			}
			return nil
		})
	})
}
