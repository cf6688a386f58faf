package chunk

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/zosgrid/zos/internal/digest"
)

func TestSealOpen(t *testing.T) {
	c := NewCodec(zstd.SpeedDefault)
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
	c := NewCodec(zstd.SpeedDefault)
	plain := bytes.Repeat([]byte("abc"), 1000)
	sum, id, blob := c.Seal(plain)
	ref := Ref{sum, uint32(len(plain))}

	// Any single flipped bit is caught by the keyless check.
	for i := 0; i < len(blob); i += 7 {
		bad := bytes.Clone(blob)
		bad[i] ^= 0x10
		_, err := c.Open(ref, bad)
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
	c := NewCodec(zstd.SpeedDefault)
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
