package storeurl

import (
	"context"
	"strings"
	"testing"

	"github.com/zosgrid/zos/internal/store/storetest"
)

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"s3://AK:SECRET@127.0.0.1:9000/bucket/p?tls=false": "s3://127.0.0.1:9000/bucket/p?tls=false",
		"00-7f=zdb://:pw@h:9900/ns":                        "00-7f=zdb://h:9900/ns",
		"https://hub/x?token=abc&a=1":                      "https://hub/x?a=1",
		"dir:///var/store":                                 "dir:///var/store",
	} {
		if got := Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
		if strings.Contains(Redact(in), "SECRET") || strings.Contains(Redact(in), "pw@") {
			t.Errorf("secret left in %q", Redact(in))
		}
	}
}

func TestOpenAllReplicates(t *testing.T) {
	ctx := context.Background()
	a, b := t.TempDir(), t.TempDir()
	s, err := OpenAll(ctx, []string{"dir://" + a, b}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, id, blob := storetest.Blob("r", 100)
	if err := s.Put(ctx, id, blob); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{a, b} {
		one, _ := Open(ctx, d, Options{})
		if ok, _ := one.Has(ctx, id); !ok {
			t.Fatalf("blob not replicated to %s", d)
		}
	}
	if _, err := OpenAll(ctx, []string{"ftp://x"}, Options{}); err == nil {
		t.Fatal("unknown scheme accepted")
	}
	if _, err := OpenAll(ctx, []string{"00-7f=" + a}, Options{}); err == nil {
		t.Fatal("routes leaving 80-ff uncovered accepted")
	}
}
