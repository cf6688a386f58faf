package spec

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/zosgrid/zos/internal/canon"
)

// goldenChallenge pins the challenge of testdata/golden/full.yaml: a change
// here is a change of the signed format, which needs a new version.
const goldenChallenge = "e19b60f4d2e4d4fcaac852432fb43a4b5db9effe1e4b4fbc3b132a600425c3fd"

func TestGolden(t *testing.T) {
	y := mustParse(t, read(t, "testdata/golden/full.yaml"))
	j := mustParse(t, read(t, "testdata/golden/full.json"))
	cy, err := y.Stripped()
	if err != nil {
		t.Fatal(err)
	}
	cj, _ := j.Stripped()
	if !bytes.Equal(cy, cj) {
		t.Fatalf("YAML and JSON of one deployment differ:\n%s\n%s", cy, cj)
	}
	const golden = "testdata/golden/full.canonical.json"
	if *update {
		os.WriteFile(golden, append(cy, '\n'), 0o644)
	}
	if want := read(t, golden); !bytes.Equal(append(cy, '\n'), want) {
		t.Errorf("canonical form changed:\n got %s\nwant %s", cy, want)
	}
	ch, _ := y.Challenge()
	if ch.String() != goldenChallenge {
		t.Errorf("challenge %s, pinned %s", ch, goldenChallenge)
	}
	if jc, _ := j.Challenge(); jc != ch {
		t.Error("JSON challenge differs")
	}
}

// TestEqualMeaning: spellings of one meaning give one challenge.
func TestEqualMeaning(t *testing.T) {
	base := `version: 1
owner: 1
workloads:
  - name: app
    kind: container
    container:
      image: {digest: "1111111111111111111111111111111111111111111111111111111111111111", url: "https://example.org/app.fl"}
`
	same := []string{
		// defaults spelled out, keys reordered, flow style, other number spellings
		`{"workloads": [{"container": {"ports": [], "pids": 1024, "memory": "256MiB", "cpu": 1000, "env": {}, "args": [],
		  "image": {"url": "https://example.org/app.fl", "stores": [], "digest": "1111111111111111111111111111111111111111111111111111111111111111", "hub": "", "ref": ""},
		  "mounts": [], "networks": [], "user": "", "workdir": "", "entrypoint": []}, "kind": "container", "name": "app"}],
		  "owner": 1, "version": 1, "description": "",
		  "signature_requirement": {"requests": [{"twin": 1, "weight": 1, "required": true}], "weight_required": 1},
		  "signatures": []}`,
		"owner: 0x1\nversion: 1.0\n" + strings.SplitN(base, "\n", 3)[2],
		"# a comment\nversion:   1\nowner: 1\nworkloads:\n- kind: container\n  name: app\n  container:\n    image:\n      url: https://example.org/app.fl\n      digest: '1111111111111111111111111111111111111111111111111111111111111111'\n\n",
		base + "      memory: 268435456\n      cpu: 1e3\n",
	}
	want, err := mustParse(t, []byte(base)).Challenge()
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range same {
		if got, err := mustParse(t, []byte(s)).Challenge(); err != nil || got != want {
			t.Errorf("spelling %d: challenge %s, want %s (%v)", i, got, want, err)
		}
	}
}

// TestDifferentMeaning: any change of meaning changes the challenge,
// including ones that a concatenation without separators would merge.
func TestDifferentMeaning(t *testing.T) {
	base := string(read(t, "testdata/golden/full.yaml"))
	want, _ := mustParse(t, []byte(base)).Challenge()
	for _, c := range [][2]string{
		{"version: 3", "version: 4"},
		{"owner: 7", "owner: 8"},
		{"description: my blog", `description: "my blog "`},
		{"cpu: 500", "cpu: 501"},
		{"memory: 512MiB", "memory: 513MiB"},
		{`args: ["--port", "8080"]`, `args: ["--port8080"]`},
		{`args: ["--port", "8080"]`, `args: ["8080", "--port"]`},
		{`path: /srv/static, read_only: true`, `path: /srv/static`},
		{"ip: 10.20.0.10", "ip: 10.20.0.11"},
		{"{twin: 8}", "{twin: 8, weight: 2}"},
		{"weight_required: 2", "weight_required: 1"},
		{"- {twin: 9, weight: 1, required: false}", "- {twin: 9, weight: 1, required: true}"},
		{`"00-7f=dir:///var/cache/zos"`, `"00-7e=dir:///var/cache/zos"`},
		{`["http://chunks.example.org/store", "00-7f=dir:///var/cache/zos"]`, `["00-7f=dir:///var/cache/zos", "http://chunks.example.org/store"]`},
		{"MODE: production", "MOD: Eproduction"},
	} {
		changed := strings.Replace(base, c[0], c[1], 1)
		if changed == base {
			t.Fatalf("%q not found", c[0])
		}
		if got, err := mustParse(t, []byte(changed)).Challenge(); err != nil || got == want {
			t.Errorf("%q -> %q: challenge unchanged (%v)", c[0], c[1], err)
		}
	}
}

func TestCanonicalStrings(t *testing.T) {
	got := string(canon.AppendString(nil, "a\"\\\x01\n\t\u00e9\u2028</>\x7f"))
	want := `"a\"\\\u0001\n\t` + "\u00e9\u2028</>\x7f" + `"`
	if got != want {
		t.Errorf("got %s want %s", got, want)
	}
}
