package ledger

import (
	"bytes"
	"encoding/json"
	"testing"
)

// FuzzDecodeTx: DecodeTx never panics; what it accepts is its own
// canonical encoding (one spelling per transaction), and checking it
// further never panics either.
func FuzzDecodeTx(f *testing.F) {
	for _, blk := range scenario(f) {
		for _, b := range blk {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		tx, err := DecodeTx(b)
		if err != nil {
			if Code(err) == CodeOK {
				t.Fatalf("refusal with code 0: %v", err)
			}
			return
		}
		enc, err := tx.Encode()
		if err != nil {
			t.Fatalf("decoded but does not encode: %v", err)
		}
		if !bytes.Equal(enc, b) {
			t.Fatalf("decoded a second spelling:\n%s\n%s", b, enc)
		}
		_ = tx.Validate()
		_ = tx.VerifySig(testKey("alice").Public())
	})
}

// FuzzQuery: any path and data give JSON or an error, never a panic.
func FuzzQuery(f *testing.F) {
	a := openTest(f)
	run(f, a, scenario(f))
	for _, s := range []struct{ path, data string }{
		{"contracts", `{"node":1,"state":"active"}`},
		{"contracts", `{"owner":1,"after":18446744073709551615}`},
		{"twins", `{"after":4294967295,"limit":1}`},
		{"contract/1", ""},
		{"node/4294967296", ""},
		{"twin/01", ""},
		{"info", ""},
	} {
		f.Add(s.path, []byte(s.data))
	}
	f.Fuzz(func(t *testing.T, path string, data []byte) {
		out, err := a.Query(path, data)
		if err == nil && !json.Valid(out) {
			t.Fatalf("query %q: not JSON: %s", path, out)
		}
	})
}
