package main

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"path/filepath"
	"strings"
	"testing"
)

// TestCLIHubOpen: zos hub open prints a link that shows a private
// namespace in a browser; without it the page is absent.
func TestCLIHubOpen(t *testing.T) {
	hubURL := startHubServe(t)
	k := filepath.Join(t.TempDir(), "alice.key")
	mustRun(t, "key", "gen", k)
	mustRun(t, "hub", "register", "alice", "--private", "--hub", hubURL, "--key", k)

	link := strings.TrimSpace(mustRun(t, "hub", "open", "alice", "--hub", hubURL, "--key", k, "--for", "10m"))
	if !strings.HasPrefix(link, hubURL+"/u/alice?view=") {
		t.Fatalf("link %q", link)
	}
	jar, _ := cookiejar.New(nil)
	resp, err := (&http.Client{Jar: jar}).Get(link)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), "<h1>alice") || !strings.Contains(string(b), "private") {
		t.Fatalf("view link: %d\n%s", resp.StatusCode, b)
	}
	if resp, err := http.Get(hubURL + "/u/alice"); err != nil || resp.StatusCode != 404 {
		t.Fatalf("without the link: %v %v", resp, err)
	}
	if _, errs, code := run(t, "hub", "open", "alice", "--hub", hubURL, "--key", k, "--for", "48h"); code == 0 || !strings.Contains(errs, "24h") {
		t.Fatalf("--for 48h: exit %d: %s", code, errs)
	}
}
