package spec

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

func read(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustParse(t *testing.T, in []byte) *Deployment {
	t.Helper()
	d, err := Parse(in)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return d
}

// TestValid: every file in testdata/valid parses, and its canonical form
// parses back to the same canonical form.
func TestValid(t *testing.T) {
	files, _ := filepath.Glob("testdata/valid/*")
	files = append(files, "testdata/golden/full.yaml", "testdata/golden/full.json")
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			d := mustParse(t, read(t, f))
			c, err := d.Canonical()
			if err != nil {
				t.Fatal(err)
			}
			c2, err := mustParse(t, c).Canonical()
			if err != nil || !bytes.Equal(c, c2) {
				t.Fatalf("canonical form does not round-trip:\n%s\n%s", c, c2)
			}
		})
	}
}

// TestInvalid: every file in testdata/invalid is refused with the error
// its "# error: ..." lines announce.
func TestInvalid(t *testing.T) {
	files, _ := filepath.Glob("testdata/invalid/*.yaml")
	if len(files) < 50 {
		t.Fatalf("only %d cases", len(files))
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".yaml"), func(t *testing.T) {
			in := read(t, f)
			var want []string
			for _, l := range strings.Split(string(in), "\n") {
				if w, ok := strings.CutPrefix(l, "# error: "); ok {
					want = append(want, w)
				}
			}
			if len(want) == 0 {
				t.Fatal("no '# error: ' line")
			}
			_, err := Parse(in)
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Parse = %v, want ErrInvalid", err)
			}
			for _, w := range want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "spec.") || strings.Contains(err.Error(), "raw") {
				t.Errorf("error leaks Go type names: %q", err)
			}
		})
	}
}

func TestInvalidJSON(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{`{"version": 1, "owner": 1, "owner": 2}`, `duplicate key "owner"`},
		{`{"version": 1} {}`, "data after the top-level object"},
		{`{"version": 1,}`, "json: invalid character"},
		{`{"version": 1.5, "owner": 1}`, `"1.5" is not a whole number`},
		{`{"version": 1e300, "owner": 1}`, `is not a whole number`},
		{`{"version": 1, "owner": 4294967296}`, `"4294967296" is not a whole number in 0..4294967295`},
		{`{"version": "1", "owner": 1, "workloads": []}`, `"1" is not a whole number`},
		{`{"version": 1, "owner": 1, "workloads": [], "x": 1}`, "field x not found"},
		{`{"a":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + "}", "nested more than"},
		{"{\"description\": \"\xff\"}", "not valid UTF-8"},
	} {
		_, err := Parse([]byte(c.in))
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Parse(%.40q) = %v, want %q", c.in, err, c.want)
		}
	}
}

func TestLimits(t *testing.T) {
	big := bytes.Repeat([]byte("#"), MaxInput+1)
	if _, err := Parse(big); !errors.Is(err, ErrInvalid) {
		t.Errorf("oversized input: %v", err)
	}
	var b strings.Builder
	b.WriteString("version: 1\nowner: 1\nworkloads:\n")
	for i := range 300 {
		b.WriteString("  - {name: v" + itoa(i) + ", kind: volume, volume: {size: 1GiB}}\n")
	}
	if _, err := Parse([]byte(b.String())); err == nil || !strings.Contains(err.Error(), "more than the limit 256") {
		t.Errorf("300 workloads: %v", err)
	}
	deep := "a: " + strings.Repeat("[", 100) + strings.Repeat("]", 100)
	if _, err := Parse([]byte(deep)); !errors.Is(err, ErrInvalid) {
		t.Errorf("deep nesting: %v", err)
	}
}

func itoa(i int) string {
	if i < 10 {
		return string(rune('0' + i))
	}
	return itoa(i/10) + string(rune('0'+i%10))
}

// TestManyErrors: validation reports every problem, not only the first.
func TestManyErrors(t *testing.T) {
	in := `version: 0
owner: 0
workloads:
  - {name: v, kind: volume, volume: {size: 1}}
  - {name: n, kind: network, network: {subnet: 8.8.8.0/24}}
`
	_, err := Parse([]byte(in))
	for _, w := range []string{"version: required", "owner: required", "volume.size", "is not private"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("error %v lacks %q", err, w)
		}
	}
	var fe *FieldError
	if !errors.As(err, &fe) {
		t.Errorf("no *FieldError in %v", err)
	}
}
