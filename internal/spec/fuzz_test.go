package spec

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse: Parse never panics, and what it accepts has a canonical form
// that parses back to the same bytes (so the challenge is stable).
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*/*")
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		d, err := Parse(in)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		c, err := d.Canonical()
		if err != nil {
			t.Fatalf("valid deployment has no canonical form: %v", err)
		}
		d2, err := Parse(c)
		if err != nil {
			t.Fatalf("canonical form does not parse: %v\n%s", err, c)
		}
		c2, _ := d2.Canonical()
		if !bytes.Equal(c, c2) {
			t.Fatalf("canonical form not stable:\n%s\n%s", c, c2)
		}
		Verify(d, nil)
		VerifyDeclared(d)
	})
}
