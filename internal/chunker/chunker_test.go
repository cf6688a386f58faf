package chunker

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
)

var rewrite = flag.Bool("rewrite", false, "rewrite testdata golden files")

func input(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func cuts(c *Chunker, data []byte) []int {
	var out []int
	for len(data) > 0 {
		n := c.Cut(data)
		out = append(out, n)
		data = data[n:]
	}
	return out
}

// TestGolden pins the cut points of a fixed input: they are part of the format.
func TestGolden(t *testing.T) {
	c, err := New(Default)
	if err != nil {
		t.Fatal(err)
	}
	data := input(8<<20, 42)
	var sb strings.Builder
	off := 0
	for _, n := range cuts(c, data) {
		s := sha256.Sum256(data[off : off+n])
		fmt.Fprintf(&sb, "%d %d %s\n", off, n, hex.EncodeToString(s[:8]))
		off += n
	}
	const golden = "testdata/cuts-default.txt"
	if *rewrite {
		os.MkdirAll("testdata", 0o755)
		if err := os.WriteFile(golden, []byte(sb.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -rewrite to create)", err)
	}
	if sb.String() != string(want) {
		t.Fatal("cut points changed: this breaks dedup with every existing store (a format change)")
	}
}

func TestBounds(t *testing.T) {
	c, _ := New(Default)
	data := input(20<<20, 7)
	cs := cuts(c, data)
	total := 0
	for i, n := range cs {
		total += n
		if n > Default.Max || (n < Default.Min && i != len(cs)-1) {
			t.Fatalf("chunk %d has %d bytes", i, n)
		}
	}
	if total != len(data) {
		t.Fatal("chunks do not cover the input")
	}
	avg := len(data) / len(cs)
	if avg < Default.Avg*3/4 || avg > Default.Avg*3/2 {
		t.Fatalf("average chunk %d far from %d", avg, Default.Avg)
	}
	// Zeros never match a mask: they cut at Max.
	if n := c.Cut(make([]byte, 1<<20)); n != Default.Max {
		t.Fatalf("zeros cut at %d", n)
	}
}

// TestResync: an insertion near the start changes only the chunks around it.
func TestResync(t *testing.T) {
	c, _ := New(Default)
	data := input(8<<20, 9)
	edited := append(append(bytes.Clone(data[:100000]), []byte("inserted")...), data[100000:]...)
	a, b := chunkSet(c, data), chunkSet(c, edited)
	shared := 0
	for k := range a {
		if b[k] {
			shared++
		}
	}
	if shared < len(a)-4 {
		t.Fatalf("only %d of %d chunks survive a small insertion", shared, len(a))
	}
}

func chunkSet(c *Chunker, data []byte) map[[32]byte]bool {
	m := map[[32]byte]bool{}
	for len(data) > 0 {
		n := c.Cut(data)
		m[sha256.Sum256(data[:n])] = true
		data = data[n:]
	}
	return m
}

func TestInvalid(t *testing.T) {
	for _, p := range []Params{{0, 64, 128}, {1024, 3000, 9000}, {4096, 1024, 8192}, {1024, 4096, 2048}} {
		if _, err := New(p); err == nil {
			t.Errorf("New(%+v) accepted", p)
		}
	}
}

func BenchmarkCut(b *testing.B) {
	c, _ := New(Default)
	data := input(64<<20, 1)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		cuts(c, data)
	}
}
