package spec

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/zosgrid/zos/internal/key"
)

func testKey(n byte) key.Secret { return key.FromSeed(bytes.Repeat([]byte{n}, 32)) }

// The golden deployment asks twins 7 (required), 8 and 9, weight 1 each,
// for a weight of 2.
func golden(t *testing.T) *Deployment {
	t.Helper()
	return mustParse(t, read(t, "testdata/golden/full.yaml"))
}

var keys = map[uint32]key.Public{7: testKey(7).Public(), 8: testKey(8).Public(), 9: testKey(9).Public(), 10: testKey(10).Public()}

func sign(t *testing.T, d *Deployment, twin uint32, sec key.Secret) Signature {
	t.Helper()
	s, err := Sign(d, sec, twin)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestMultisig(t *testing.T) {
	older := golden(t)
	newer := golden(t)
	newer.Version++

	for _, c := range []struct {
		name    string
		sigs    func(d *Deployment) []Signature
		met     bool
		weight  uint64
		missing []uint32
		ignored []string
	}{
		{"owner and one", func(d *Deployment) []Signature {
			return []Signature{sign(t, d, 7, testKey(7)), sign(t, d, 8, testKey(8))}
		}, true, 2, nil, nil},
		{"all three", func(d *Deployment) []Signature {
			return []Signature{sign(t, d, 9, testKey(9)), sign(t, d, 7, testKey(7)), sign(t, d, 8, testKey(8))}
		}, true, 3, nil, nil},
		{"required missing", func(d *Deployment) []Signature {
			return []Signature{sign(t, d, 8, testKey(8)), sign(t, d, 9, testKey(9))}
		}, false, 2, []uint32{7}, nil},
		{"weight not reached", func(d *Deployment) []Signature {
			return []Signature{sign(t, d, 7, testKey(7))}
		}, false, 1, nil, nil},
		{"none", func(d *Deployment) []Signature { return nil }, false, 0, []uint32{7}, nil},
		{"duplicate counts once", func(d *Deployment) []Signature {
			s := sign(t, d, 7, testKey(7))
			return []Signature{s, s}
		}, false, 1, nil, []string{"duplicate"}},
		{"wrong key", func(d *Deployment) []Signature {
			s := sign(t, d, 7, testKey(7))
			forged := Signature{Twin: 8, Key: testKey(10).Public()}
			copy(forged.Sig[:], testKey(10).Sign(Domain, mustChallenge(t, d)))
			return []Signature{s, forged}
		}, false, 1, nil, []string{"not the twin's registered key"}},
		{"declared key right but signature by another", func(d *Deployment) []Signature {
			s := sign(t, d, 7, testKey(7))
			bad := Signature{Twin: 8, Key: testKey(8).Public()}
			copy(bad.Sig[:], testKey(9).Sign(Domain, mustChallenge(t, d)))
			return []Signature{s, bad}
		}, false, 1, nil, []string{"signature invalid"}},
		{"other domain", func(d *Deployment) []Signature {
			bad := Signature{Twin: 8, Key: testKey(8).Public()}
			copy(bad.Sig[:], testKey(8).Sign("zos flist digest v1", mustChallenge(t, d)))
			return []Signature{sign(t, d, 7, testKey(7)), bad}
		}, false, 1, nil, []string{"signature invalid"}},
		{"unlisted twin ignored", func(d *Deployment) []Signature {
			return []Signature{sign(t, d, 7, testKey(7)), sign(t, d, 8, testKey(8)), {Twin: 10, Key: testKey(10).Public()}}
		}, true, 2, nil, []string{"not in the signature requirement"}},
		{"unknown twin key", func(d *Deployment) []Signature {
			d.Requirement.Requests = append(d.Requirement.Requests, Request{Twin: 11, Weight: 5})
			return []Signature{sign(t, d, 7, testKey(7)), sign(t, d, 11, testKey(11))}
		}, false, 1, nil, []string{"no registered key"}},
		{"tampered after signing", func(d *Deployment) []Signature {
			sigs := []Signature{sign(t, d, 7, testKey(7)), sign(t, d, 8, testKey(8))}
			d.Workload("web").Container.Memory <<= 1 // after signing
			return sigs
		}, false, 0, []uint32{7}, []string{"signature invalid", "signature invalid"}},
		{"signature over an older version", func(d *Deployment) []Signature {
			return []Signature{sign(t, older, 7, testKey(7)), sign(t, d, 8, testKey(8)), sign(t, d, 9, testKey(9))}
		}, false, 2, []uint32{7}, []string{"signature invalid"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := newer
			d = clone(t, d)
			d.Signatures = c.sigs(d)
			r, err := Verify(d, keys)
			if c.met != (err == nil) || r.Met != c.met {
				t.Fatalf("Verify = %v, met %v; want met %v", err, r.Met, c.met)
			}
			if !c.met {
				var se *SignatureError
				if !errors.Is(err, ErrSignature) || !errors.As(err, &se) {
					t.Fatalf("error %v is not a *SignatureError", err)
				}
				if se.Weight != c.weight || !slices.Equal(se.Missing, c.missing) {
					t.Errorf("SignatureError %+v", se)
				}
			}
			if r.Weight != c.weight || !slices.Equal(r.Missing, c.missing) {
				t.Errorf("weight %d missing %v, want %d %v", r.Weight, r.Missing, c.weight, c.missing)
			}
			if len(r.Ignored) != len(c.ignored) {
				t.Fatalf("ignored %+v, want %v", r.Ignored, c.ignored)
			}
			for i, ig := range r.Ignored {
				if !strings.Contains(ig.Reason, c.ignored[i]) {
					t.Errorf("ignored[%d] = %q, want %q", i, ig.Reason, c.ignored[i])
				}
			}
		})
	}
}

func mustChallenge(t *testing.T, d *Deployment) []byte {
	ch, err := d.Challenge()
	if err != nil {
		t.Fatal(err)
	}
	return ch[:]
}

func clone(t *testing.T, d *Deployment) *Deployment {
	c, err := d.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	return mustParse(t, c)
}

// TestSignaturesOutsideChallenge: adding, reordering or removing
// signatures never changes the challenge.
func TestSignaturesOutsideChallenge(t *testing.T) {
	d := golden(t)
	before := mustChallenge(t, d)
	d.Signatures = []Signature{sign(t, d, 8, testKey(8)), sign(t, d, 7, testKey(7))}
	if !bytes.Equal(before, mustChallenge(t, d)) {
		t.Fatal("signatures changed the challenge")
	}
	if _, err := Sign(d, testKey(10), 10); err == nil {
		t.Error("Sign accepted an unlisted twin")
	}
	if _, err := VerifyDeclared(d); err != nil {
		t.Errorf("VerifyDeclared: %v", err)
	}
}

func TestCosign(t *testing.T) {
	in := read(t, "testdata/golden/full.yaml")
	out, err := Cosign(in, testKey(7), 7)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(out, []byte("# The example of docs/SPEC.md")) {
		t.Error("comment lost")
	}
	out, err = Cosign(out, testKey(8), 8)
	if err != nil {
		t.Fatal(err)
	}
	again, err := Cosign(out, testKey(8), 8) // renewing replaces, never duplicates
	if err != nil {
		t.Fatal(err)
	}
	d := mustParse(t, again)
	if len(d.Signatures) != 2 {
		t.Fatalf("%d signatures after renewing", len(d.Signatures))
	}
	if r, err := Verify(d, keys); err != nil || r.Weight != 2 {
		t.Fatalf("Verify after cosigning: %v %+v", err, r)
	}
	if _, err := Cosign(out, testKey(10), 10); err == nil {
		t.Error("unlisted twin signed")
	}

	// JSON in, canonical JSON out, then YAML signers can continue on it.
	j, err := Cosign(read(t, "testdata/golden/full.json"), testKey(9), 9)
	if err != nil || !bytes.HasPrefix(j, []byte("{\n")) {
		t.Fatalf("json cosign: %v\n%s", err, j)
	}
	j, err = Cosign(j, testKey(7), 7)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(mustParse(t, j), keys); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	// A YAML spec with "signatures:" empty or null.
	for _, tail := range []string{"signatures: []\n", "signatures:\n"} {
		if _, err := Cosign(append(bytes.Clone(in), tail...), testKey(7), 7); err != nil {
			t.Errorf("%q: %v", tail, err)
		}
	}
}

// TestMalformedSignatureIgnored: a relay that appends undecodable entries
// cannot veto a deployment: they are dropped, reported, and the
// requirement is judged on the rest.
func TestMalformedSignatureIgnored(t *testing.T) {
	d := golden(t)
	d.Signatures = []Signature{sign(t, d, 7, testKey(7)), sign(t, d, 8, testKey(8))}
	canon, err := d.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	// Append garbage entries to the canonical JSON's signature list.
	garbage := `{"twin":9,"key":"ed25519:nope","sig":"AAAA"},{"twin":0,"key":"` + testKey(9).Public().String() + `","sig":"` + strings.Repeat("A", 86) + `"}`
	evil := bytes.Replace(canon, []byte(`"signatures":[`), []byte(`"signatures":[`+garbage+`,`), 1)
	if bytes.Equal(evil, canon) {
		t.Fatal("no signature list in the canonical form")
	}
	e, err := Parse(evil)
	if err != nil {
		t.Fatalf("garbage signatures made the deployment invalid: %v", err)
	}
	if len(e.Signatures) != 2 || len(e.Malformed) != 2 || e.Malformed[0].Index != 0 || e.Malformed[1].Index != 1 {
		t.Fatalf("signatures %d, malformed %+v", len(e.Signatures), e.Malformed)
	}
	res, err := Verify(e, keys)
	if err != nil || !res.Met {
		t.Fatalf("requirement: %+v %v", res, err)
	}
	if len(res.Ignored) != 2 || !strings.HasPrefix(res.Ignored[0].Reason, "malformed: key") || !strings.Contains(res.Ignored[1].Reason, "twin: required") {
		t.Fatalf("ignored %+v", res.Ignored)
	}
	// The stored canonical form drops them.
	again, _ := e.Canonical()
	if !bytes.Equal(again, canon) {
		t.Fatalf("canonical form changed:\n%s\n%s", again, canon)
	}
}
