package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCLISpecSign(t *testing.T) {
	dir := t.TempDir()
	src, err := os.ReadFile("../../internal/spec/testdata/golden/full.yaml")
	if err != nil {
		t.Fatal(err)
	}
	sp := filepath.Join(dir, "dep.yaml")
	os.WriteFile(sp, src, 0o640)
	pub := map[string]string{}
	for _, tw := range []string{"7", "8", "9"} {
		pub[tw] = strings.TrimSpace(mustRun(t, "key", "gen", filepath.Join(dir, "k"+tw)))
	}
	keys := filepath.Join(dir, "keys")
	os.WriteFile(keys, []byte("# twins\n7 "+pub["7"]+"\n8 "+pub["8"]+"\n9 "+pub["9"]+" # co-signer\n"), 0o644)

	out := mustRun(t, "spec", "check", sp)
	if !strings.Contains(out, "challenge e19b60f4d2e4") || !strings.Contains(out, "NOT met") {
		t.Fatalf("check: %s", out)
	}
	if _, _, code := run(t, "spec", "check", sp, "--keys", keys); code != exitSignature {
		t.Fatalf("unsigned spec: exit %d, want %d", code, exitSignature)
	}
	mustRun(t, "sign", sp, "--key", filepath.Join(dir, "k7"), "--twin", "7")
	mustRun(t, "sign", sp, "--key", filepath.Join(dir, "k9"), "--twin", "9")
	if fi, _ := os.Stat(sp); fi.Mode().Perm() != 0o640 {
		t.Errorf("sign changed the mode to %v", fi.Mode())
	}
	var res struct {
		Met      bool   `json:"met"`
		Weight   uint64 `json:"weight"`
		Requests []struct {
			Twin   uint32 `json:"twin"`
			Signed bool   `json:"signed"`
		} `json:"requests"`
	}
	out = mustRun(t, "spec", "check", sp, "--keys", keys, "--json")
	if err := json.Unmarshal([]byte(out), &res); err != nil || !res.Met || res.Weight != 2 || res.Requests[1].Signed {
		t.Fatalf("check --json: %v %s", err, out)
	}

	// Another key claiming twin 8 does not count.
	mustRun(t, "key", "gen", filepath.Join(dir, "mallory"))
	mustRun(t, "sign", sp, "--key", filepath.Join(dir, "mallory"), "--twin", "8")
	out = mustRun(t, "spec", "check", sp, "--keys", keys)
	if !strings.Contains(out, "not the twin's registered key") || !strings.Contains(out, "requirement met: weight 2 of 2") {
		t.Fatalf("check after a forged co-signature: %s", out)
	}

	// A tampered spec: still valid, no longer signed.
	b, _ := os.ReadFile(sp)
	os.WriteFile(sp, []byte(strings.Replace(string(b), "memory: 512MiB", "memory: 1GiB", 1)), 0o644)
	if out, _, code := run(t, "spec", "check", sp, "--keys", keys); code != exitSignature || !strings.Contains(out, "signature invalid") {
		t.Fatalf("tampered: exit %d\n%s", code, out)
	}

	// JSON to standard output; canonical form.
	js := filepath.Join(dir, "dep.json")
	os.WriteFile(js, []byte(mustRun(t, "spec", "canonical", sp)), 0o644)
	signed := mustRun(t, "sign", js, "--key", filepath.Join(dir, "k7"), "--twin", "7", "-o", "-")
	if !strings.HasPrefix(signed, "{\n") {
		t.Fatalf("sign -o - of JSON: %s", signed)
	}
	if _, errs, code := run(t, "sign", sp, "--key", filepath.Join(dir, "k7"), "--twin", "10"); code == 0 || !strings.Contains(errs, "not in the signature requirement") {
		t.Fatalf("unlisted twin: exit %d: %s", code, errs)
	}
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("version: 1\nowner: 1\nworkloads:\n  - {name: v, kind: volume, volume: {size: 1}}\n  - {name: n, kind: network, network: {subnet: 8.8.8.0/24}}\n"), 0o644)
	if _, errs, code := run(t, "spec", "check", bad); code != exitFail || !strings.Contains(errs, "volume.size") || !strings.Contains(errs, "not private") {
		t.Fatalf("invalid spec: exit %d: %s", code, errs)
	}
}
