package chunk

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/zosgrid/zos/internal/digest"
)

func TestSealOpen(t *testing.T) {
	c := NewCodec(3)
	rnd := make([]byte, 70000)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range rnd {
		rnd[i] = byte(r.Uint32())
	}
	for name, plain := range map[string][]byte{
		"empty":        {},
		"text":         bytes.Repeat([]byte("zero-os flist "), 5000),
		"incompressed": rnd,
	} {
		t.Run(name, func(t *testing.T) {
			sum, id, blob := c.Seal(plain)
			if sum != digest.Sum(plain) || id != ID(sum) {
				t.Fatal("wrong fingerprint or id")
			}
			if bytes.Contains(blob, plain[:min(len(plain), 32)]) && len(plain) >= 32 {
				t.Fatal("blob leaks plaintext")
			}
			_, _, again := c.Seal(plain)
			if !bytes.Equal(blob, again) {
				t.Fatal("seal not deterministic")
			}
			got, err := c.Open(Ref{sum, uint32(len(plain))}, blob)
			if err != nil || !bytes.Equal(got, plain) {
				t.Fatalf("open: %v", err)
			}
		})
	}
}

func TestOpenRefusesTampering(t *testing.T) {
	c := NewCodec(3)
	plain := bytes.Repeat([]byte("abc"), 1000)
	sum, id, blob := c.Seal(plain)
	ref := Ref{sum, uint32(len(plain))}

	// Any single flipped bit is caught by the keyless check, which Open runs
	// once authentication failed; a flip in the check bytes themselves only
	// by Check (every store's Get runs it), Open's plaintext being right.
	for i := 0; i < len(blob); i += 7 {
		bad := bytes.Clone(blob)
		bad[i] ^= 0x10
		got, err := c.Open(ref, bad)
		if cerr := Check(id, bad); !errors.Is(cerr, ErrCorrupt) {
			t.Fatalf("flip at %d: check = %v", i, cerr)
		}
		if i >= len(blob)-checkSize {
			if err != nil || !bytes.Equal(got, plain) {
				t.Fatalf("flip in the check at %d: %v", i, err)
			}
			continue
		}
		var inv *Invalid
		if !errors.As(err, &inv) || inv.ID != id || !errors.Is(err, ErrCorrupt) {
			t.Fatalf("flip at %d: err = %v", i, err)
		}
	}
	// Truncation.
	if _, err := c.Open(ref, blob[:len(blob)-1]); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("truncated: %v", err)
	}
	// A well-formed blob of other content, filed under this ID (a forging store).
	_, _, other := c.Seal([]byte("other content"))
	body := other[:len(other)-checkSize]
	check := digest.Keyed(id, body)
	forged := append(bytes.Clone(body), check[:checkSize]...)
	if err := Check(id, forged); err != nil {
		t.Fatalf("forged blob should pass the keyless check: %v", err)
	}
	if _, err := c.Open(ref, forged); !errors.Is(err, ErrMismatch) {
		t.Fatalf("forged: err = %v, want ErrMismatch", err)
	}
	// Wrong size in the ref.
	if _, err := c.Open(Ref{sum, ref.Size + 1}, blob); !errors.Is(err, ErrMismatch) {
		t.Fatalf("size: %v", err)
	}
}

func FuzzOpen(f *testing.F) {
	c := NewCodec(3)
	plain := []byte("fuzz seed content fuzz seed content")
	sum, _, blob := c.Seal(plain)
	f.Add(blob)
	f.Add([]byte("ZCK\x01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := c.Open(Ref{sum, uint32(len(plain))}, b)
		if err == nil && !bytes.Equal(got, plain) {
			t.Fatal("accepted wrong content")
		}
	})
}

// versioned returns a pseudo-random text and an edited copy of it, the way
// one release of a file relates to the next.
func versioned(n int, seed uint64) (old, neu []byte) {
	r := rand.New(rand.NewPCG(seed, 7))
	words := []string{"function ", "return ", "const ", "ts.", "node", "(", ")", "{\n", "}\n", "type", "Checker", " = ", ";\n"}
	for len(old) < n {
		old = append(old, words[r.IntN(len(words))]...)
		if r.IntN(20) == 0 {
			old = fmt.Appendf(old, "%d", r.Uint32())
		}
	}
	neu = bytes.Clone(old)
	for i := 0; i < 40; i++ { // scattered small edits
		at := r.IntN(len(neu) - 10)
		neu = append(neu[:at:at], append([]byte(fmt.Sprint(r.Uint32())), neu[at+3:]...)...)
	}
	return old, neu
}

func TestDelta(t *testing.T) {
	c := NewCodec(3)
	old, neu := versioned(60000, 1)
	baseSum, baseID, baseBlob := c.Seal(old)
	baseRef := Ref{baseSum, uint32(len(old))}
	sum := digest.Sum(neu)
	ref := Ref{sum, uint32(len(neu))}
	full := c.SealSum(neu, sum)

	blob, ok := c.SealDelta(nil, neu, sum, []Base{{Ref: baseRef, Plain: old}})
	if !ok {
		t.Fatal("delta refused for a lightly edited copy")
	}
	if len(blob)*4 > len(full) {
		t.Fatalf("delta %d bytes, full %d: want at least 4x smaller", len(blob), len(full))
	}
	again, _ := c.SealDelta(nil, neu, sum, []Base{{Ref: baseRef, Plain: old}})
	if !bytes.Equal(blob, again) {
		t.Fatal("delta seal not deterministic")
	}
	if err := Check(ID(sum), blob); err != nil {
		t.Fatalf("keyless check: %v", err)
	}
	depth, deps, err := Deps(blob)
	if err != nil || depth != 1 || len(deps) != 1 || deps[0] != baseID {
		t.Fatalf("Deps = %d %v %v", depth, deps, err)
	}
	if _, err := c.Open(ref, blob); !errors.Is(err, ErrNeedBases) {
		t.Fatalf("Open without bases: %v", err)
	}
	var asked []int
	fetch := func(r Ref, maxDepth int) ([]byte, error) {
		asked = append(asked, maxDepth)
		if r != baseRef {
			t.Fatalf("asked for %v", r)
		}
		return c.OpenWith(r, baseBlob, maxDepth, nil)
	}
	got, err := c.OpenWith(ref, blob, MaxDepth, fetch)
	if err != nil || !bytes.Equal(got, neu) {
		t.Fatalf("OpenWith: %v", err)
	}
	if len(asked) != 1 || asked[0] != 0 { // a depth-1 delta needs full bases
		t.Fatalf("base asked with max depths %v", asked)
	}
	// A wrong base (a store serving other content) never yields plaintext.
	_, err = c.OpenWith(ref, blob, MaxDepth, func(Ref, int) ([]byte, error) { return neu[:len(old)], nil })
	if !errors.Is(err, ErrMismatch) {
		t.Fatalf("wrong base: %v", err)
	}
	// A reader that allows no delta refuses it before asking for bases.
	if _, err := c.OpenWith(ref, blob, 0, fetch); !errors.Is(err, ErrMismatch) {
		t.Fatalf("depth 0: %v", err)
	}
	// Bases at the depth limit, or unrelated content, give no delta.
	if _, ok := c.SealDelta(nil, neu, sum, []Base{{Ref: baseRef, Plain: old, Depth: MaxDepth}}); ok {
		t.Fatal("delta on a base at MaxDepth")
	}
	other, _ := versioned(60000, 99)
	if _, ok := c.SealDelta(nil, neu, sum, []Base{{Ref: Ref{digest.Sum(other), uint32(len(other))}, Plain: other}}); ok {
		t.Fatal("delta against unrelated content should not pay")
	}
	// Tampering anywhere, including the clear base IDs, is caught; in the
	// trailing check bytes by Check (which every store's Get runs), while
	// Open still returns the right plaintext.
	for i := 0; i < len(blob); i += 5 {
		bad := bytes.Clone(blob)
		bad[i] ^= 1
		got, err := c.OpenWith(ref, bad, MaxDepth, fetch)
		if i >= len(blob)-checkSize {
			if err != nil || !bytes.Equal(got, neu) || Check(ID(sum), bad) == nil {
				t.Fatalf("flip in the check at %d: %v, check %v", i, err, Check(ID(sum), bad))
			}
		} else if err == nil {
			t.Fatalf("flip at %d accepted", i)
		}
	}
}

func FuzzOpenWith(f *testing.F) {
	c := NewCodec(3)
	old, neu := versioned(3000, 3)
	baseSum, _, baseBlob := c.Seal(old)
	baseRef := Ref{baseSum, uint32(len(old))}
	sum := digest.Sum(neu)
	delta, ok := c.SealDelta(nil, neu, sum, []Base{{Ref: baseRef, Plain: old}})
	if !ok {
		f.Fatal("no delta seed")
	}
	f.Add(delta)
	f.Add(c.SealSum(neu, sum))
	f.Fuzz(func(t *testing.T, blob []byte) {
		// Re-key the keyless check so mutations reach the parser.
		if len(blob) > checkSize {
			body := blob[:len(blob)-checkSize]
			k := digest.Keyed(ID(sum), body)
			copy(blob[len(body):], k[:checkSize])
		}
		Deps(blob)
		got, err := c.OpenWith(Ref{sum, uint32(len(neu))}, blob, MaxDepth, func(r Ref, d int) ([]byte, error) {
			if r != baseRef {
				return nil, ErrNeedBases
			}
			return c.OpenWith(r, baseBlob, d, nil)
		})
		if err == nil && !bytes.Equal(got, neu) {
			t.Fatal("opened to wrong content")
		}
	})
}

// FuzzOpenFrame feeds arbitrary zstd frames to the decoder behind a valid
// seal, as someone who holds the fingerprint (and so the key) could forge:
// Open must refuse or return exactly the plaintext, and never panic or
// inflate past ref.Size.
func FuzzOpenFrame(f *testing.F) {
	c := NewCodec(1)
	plain := bytes.Repeat([]byte("frame seed "), 300)
	f.Add(c.compress(nil, plain), uint32(len(plain)))
	f.Add([]byte{0x28, 0xb5, 0x2f, 0xfd}, uint32(10))
	f.Add([]byte{}, uint32(0))
	sum := digest.Sum(plain)
	f.Fuzz(func(t *testing.T, frame []byte, size uint32) {
		g := aead(sum)
		blob := append(magic[:], methodZstd)
		blob = g.Seal(blob, zeroNonce[:], frame, blob[:headerSize])
		check := digest.Keyed(ID(sum), blob)
		blob = append(blob, check[:checkSize]...)
		got, err := c.Open(Ref{sum, size}, blob)
		if err == nil && !bytes.Equal(got, plain) {
			t.Fatal("accepted wrong content")
		}
		if err != nil && !errors.Is(err, ErrMismatch) {
			t.Fatalf("a well-sealed blob reported as %v", err)
		}
	})
}

// BenchmarkOpen opens a sealed 64 KiB chunk of text-like content (about 3x
// compressible), as a cold read does for every chunk it fetches.
func BenchmarkOpen(b *testing.B) {
	var plain []byte
	for i := 0; len(plain) < 64<<10; i++ {
		plain = fmt.Appendf(plain, "line %d: the quick brown fox %x jumps over the lazy dog\n", i, i*i*2654435761)
	}
	plain = plain[:64<<10]
	c := NewCodec(0)
	sum, _, blob := c.Seal(plain)
	ref := Ref{Sum: sum, Size: uint32(len(plain))}
	b.SetBytes(int64(len(plain)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Open(ref, blob); err != nil {
			b.Fatal(err)
		}
	}
}
