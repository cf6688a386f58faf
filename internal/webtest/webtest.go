// Package webtest runs headless Chromium for the tests of zos's web pages
// (the hub's, the ledger's): what a browser builds from a page, not only
// what the server wrote.
package webtest

import (
	"bytes"
	"context"
	"os/exec"
	"testing"
	"time"
)

// Chromium returns the chromium binary, or skips the test saying why.
func Chromium(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium is not installed (Debian package chromium; .ci/deps.sh installs it)")
	}
	return bin
}

// Run runs headless Chromium (bin) with args, each run with a profile of
// its own, and returns its standard output: with --dump-dom, the DOM it
// built. A failure or a run over a minute fails the test.
func Run(t testing.TB, bin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
		"--disable-extensions", "--hide-scrollbars", "--user-data-dir=" + t.TempDir()}
	cmd := exec.CommandContext(ctx, bin, append(base, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium %v: %v\n%s", args, err, stderr.String())
	}
	return string(out)
}
