package digest

import (
	"errors"
	"testing"
)

func TestKnownVector(t *testing.T) {
	// BLAKE3 of the empty input, from the reference test vectors.
	const want = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
	if got := Sum(nil).String(); got != want {
		t.Fatalf("Sum(nil) = %s, want %s", got, want)
	}
	h := New()
	if got := FromHash(h).String(); got != want {
		t.Fatalf("streaming = %s, want %s", got, want)
	}
}

func TestParse(t *testing.T) {
	id := Sum([]byte("zos"))
	back, err := Parse(id.String())
	if err != nil || back != id {
		t.Fatalf("round trip: %v %v", back, err)
	}
	for _, bad := range []string{"", "ab", id.String()[:63] + "G", "AF1349B9F5F9A1A6A0404DEA36DCC9499BCB25C9ADC112B7CC9A93CAE41F3262", id.String() + "0"} {
		if _, err := Parse(bad); !errors.Is(err, ErrSyntax) {
			t.Errorf("Parse(%q) err = %v, want ErrSyntax", bad, err)
		}
	}
}

func TestDeriveIndependent(t *testing.T) {
	m := []byte("material")
	a, b := Derive("zos test a", m), Derive("zos test b", m)
	if a == b || a == Sum(m) {
		t.Fatal("contexts must give independent outputs")
	}
	if Derive("zos test a", m) != a {
		t.Fatal("Derive not deterministic")
	}
	if Keyed(a, []byte("x"), []byte("y")) != Keyed(a, []byte("xy")) {
		t.Fatal("Keyed must hash the concatenation")
	}
}
