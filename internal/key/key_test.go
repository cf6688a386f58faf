package key

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	s, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	p := s.Public()
	back, err := ParsePublic(p.String())
	if err != nil || back != p {
		t.Fatalf("public round trip: %v", err)
	}
	path := filepath.Join(t.TempDir(), "k")
	if err := s.Save(path); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode())
	}
	if err := s.Save(path); err == nil {
		t.Fatal("Save overwrote an existing key")
	}
	l, err := Load(path)
	if err != nil || l.Public() != p {
		t.Fatalf("load: %v", err)
	}
}

func TestDomainSeparation(t *testing.T) {
	s := FromSeed(make([]byte, 32))
	sig := s.Sign("zos flist", []byte("m"))
	if !s.Public().Verify("zos flist", []byte("m"), sig) {
		t.Fatal("valid signature refused")
	}
	if s.Public().Verify("zos store", []byte("m"), sig) {
		t.Fatal("signature accepted under another domain")
	}
	if s.Public().Verify("zos flist", []byte("n"), sig) {
		t.Fatal("signature accepted for another message")
	}
}

func TestParseStrict(t *testing.T) {
	p := FromSeed(make([]byte, 32)).Public().String()
	for _, bad := range []string{"", p[:len(p)-1], "ed25519:" + p[8:] + "=", "ED25519:" + p[8:], p + "A"} {
		if _, err := ParsePublic(bad); !errors.Is(err, ErrSyntax) {
			t.Errorf("ParsePublic(%q) = %v", bad, err)
		}
	}
	if _, err := ParseSecret("zos-secret-key-v1:AAAA"); !errors.Is(err, ErrSyntax) {
		t.Error("short seed accepted")
	}
}
