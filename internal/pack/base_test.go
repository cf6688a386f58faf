package pack_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/zosgrid/zos/internal/chunk"
	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/flist"
	"github.com/zosgrid/zos/internal/pack"
	"github.com/zosgrid/zos/internal/store"
	"github.com/zosgrid/zos/internal/store/dir"
	"github.com/zosgrid/zos/internal/treediff"
	"github.com/zosgrid/zos/internal/unpack"
)

// release writes version v of a small "package": one large source-like file
// edited a little in every release (and growing), small files of which a few
// change, and one file renamed in v2.
func release(t *testing.T, v int) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), fmt.Sprintf("v%d", v))
	if err := os.MkdirAll(filepath.Join(root, "lib/locale"), 0o755); err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(42, 0))
	words := []string{"function ", "return ", "const ", "ts.", "node", "(", ")", "{\n", "}\n", "checker", " = ", ";\n", "if (", "else "}
	var src []byte
	for len(src) < 1500<<10 {
		src = append(src, words[r.IntN(len(words))]...)
		if r.IntN(15) == 0 {
			src = fmt.Appendf(src, "%d", r.Uint32())
		}
	}
	e := rand.New(rand.NewPCG(7, uint64(0)))
	for rel := 1; rel <= v; rel++ { // every release edits 30 places and inserts a 2 KiB feature
		for i := 0; i < 30; i++ {
			at := e.IntN(len(src) - 16)
			src = append(src[:at:at], append(fmt.Appendf(nil, "v%d_%d", rel, e.Uint32()), src[at+4:]...)...)
		}
		at := e.IntN(len(src))
		src = append(src[:at:at], append(bytes.Repeat(fmt.Appendf(nil, "feature%d();", rel), 200), src[at:]...)...)
	}
	write := func(p string, b []byte) {
		if err := os.WriteFile(filepath.Join(root, p), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("lib/compiler.js", src)
	for i := 0; i < 30; i++ {
		body := bytes.Repeat(fmt.Appendf(nil, "message %d of locale %d\n", i, i%5), 100)
		if i%10 == 0 {
			body = fmt.Appendf(body, "changed in v%d\n", v)
		}
		name := fmt.Sprintf("lib/locale/m%02d.json", i)
		if i == 3 && v >= 2 {
			name = "lib/locale/renamed.json"
		}
		write(name, body)
	}
	return root
}

func packInto(t *testing.T, st store.Store, src string, base []byte) ([]byte, pack.Stats) {
	t.Helper()
	opt := pack.Options{Workers: 2}
	if base != nil {
		r, err := flist.Open(base)
		if err != nil {
			t.Fatal(err)
		}
		opt.Base = r
	}
	fl, stats, err := pack.Dir(context.Background(), src, st, opt)
	if err != nil {
		t.Fatal(err)
	}
	return fl, stats
}

// blobs reads every blob of a dir store.
func blobs(t *testing.T, st *dir.Store) map[digest.ID][]byte {
	t.Helper()
	m := map[digest.ID][]byte{}
	err := st.List(context.Background(), func(id digest.ID) error {
		b, err := st.Get(context.Background(), id)
		m[id] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestPackDeltaAgainstBase(t *testing.T) {
	ctx := context.Background()
	vs := []string{release(t, 0), release(t, 1), release(t, 2), release(t, 3), release(t, 4)}
	st, err := dir.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var fls [][]byte
	var prev []byte
	for i, v := range vs {
		fl, stats := packInto(t, st, v, prev)
		// The flist is the same with or without a base: it names content only.
		plain, _ := packInto(t, must(dir.New(t.TempDir())), v, nil)
		if !bytes.Equal(fl, plain) {
			t.Fatalf("v%d: flist differs when packed with a base", i)
		}
		// Chains restart: a release whose bases are all at MaxDepth is
		// stored whole, like a key frame, and the next one deltas again.
		keyframe := i%(chunk.MaxDepth+1) == 0
		if !keyframe && stats.DeltaChunks == 0 {
			t.Fatalf("v%d: no chunk stored as a delta (%d new)", i, stats.NewChunks)
		}
		if keyframe && stats.DeltaChunks != 0 {
			t.Fatalf("v%d: %d deltas against bases at MaxDepth", i, stats.DeltaChunks)
		}
		fls, prev = append(fls, fl), fl
		t.Logf("v%d: %d chunks, %d new, %d deltas, %d bytes written", i, stats.Chunks, stats.NewChunks, stats.DeltaChunks, stats.StoredBytes)
	}

	// Every version reads back exactly, through any chain of deltas.
	for i, fl := range fls {
		r, _ := flist.Open(fl)
		out := filepath.Join(t.TempDir(), "out")
		if _, err := unpack.Unpack(ctx, r, st, out, unpack.Options{}); err != nil {
			t.Fatalf("v%d unpack: %v", i, err)
		}
		if diffs, err := treediff.Compare(vs[i], out); err != nil || len(diffs) > 0 {
			t.Fatalf("v%d differs: %v %v", i, diffs, err)
		}
	}

	// Chains stay within MaxDepth, depths are what the headers say, and
	// every base a blob names is in the store (a GC can follow them).
	all := blobs(t, st)
	depths := map[int]int{}
	for id, b := range all {
		d, bases, err := chunk.Deps(b)
		if err != nil {
			t.Fatal(err)
		}
		depths[d]++
		if d > chunk.MaxDepth {
			t.Fatalf("%s: depth %d", id.Short(), d)
		}
		for _, bid := range bases {
			bb, ok := all[bid]
			if !ok {
				t.Fatalf("%s: base %s not in the store", id.Short(), bid.Short())
			}
			if bd, _, _ := chunk.Deps(bb); bd >= d {
				t.Fatalf("%s at depth %d has base at depth %d", id.Short(), d, bd)
			}
		}
	}
	if depths[chunk.MaxDepth] == 0 {
		t.Fatalf("depths %v: five releases should reach MaxDepth", depths)
	}

	// Deltas pay: the five releases take much less than packed independently.
	plainSt := must(dir.New(t.TempDir()))
	for _, v := range vs {
		packInto(t, plainSt, v, nil)
	}
	var withDelta, without int
	for _, b := range all {
		withDelta += len(b)
	}
	for _, b := range blobs(t, plainSt) {
		without += len(b)
	}
	t.Logf("store: %d bytes with deltas, %d without (%.2fx), depths %v", withDelta, without, float64(withDelta)/float64(without), depths)
	if withDelta*10 > without*6 { // measured 0.51x, with the key frame at v3
		t.Fatalf("deltas saved too little: %d vs %d bytes", withDelta, without)
	}

	// Deterministic: the same release packed with the same base into two
	// stores holding the base gives identical stores.
	a, b := must(dir.New(t.TempDir())), must(dir.New(t.TempDir()))
	packInto(t, a, vs[0], nil)
	packInto(t, b, vs[0], nil)
	fa, _ := packInto(t, a, vs[1], fls[0])
	fb, _ := packInto(t, b, vs[1], fls[0])
	ba, bb := blobs(t, a), blobs(t, b)
	if !bytes.Equal(fa, fb) || len(ba) != len(bb) {
		t.Fatal("packs with a base differ")
	}
	for id, x := range ba {
		if !bytes.Equal(x, bb[id]) {
			t.Fatalf("blob %s differs between stores", id.Short())
		}
	}
}

// A base whose chunks are missing from the store, or rotten, costs only the
// delta: the chunk is stored whole and reads back.
func TestPackBaseMissing(t *testing.T) {
	ctx := context.Background()
	v0, v1 := release(t, 0), release(t, 1)
	st0 := must(dir.New(t.TempDir()))
	base, _ := packInto(t, st0, v0, nil)
	st := must(dir.New(t.TempDir())) // does not hold the base's chunks
	fl, stats := packInto(t, st, v1, base)
	if stats.DeltaChunks != 0 {
		t.Fatalf("%d deltas against chunks the store lacks", stats.DeltaChunks)
	}
	r, _ := flist.Open(fl)
	out := filepath.Join(t.TempDir(), "out")
	if _, err := unpack.Unpack(ctx, r, st, out, unpack.Options{}); err != nil {
		t.Fatal(err)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
