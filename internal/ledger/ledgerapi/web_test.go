package ledgerapi

import (
	"html"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/zosgrid/zos/internal/ledger"
	"github.com/zosgrid/zos/internal/spec"
	"github.com/zosgrid/zos/internal/webtest"
)

// Hostile text that strangers write into the ledger: a node's endpoint,
// a node's report, a spec's description. None may become markup.
const (
	hostileEndpoint = `http://evil.example/"><script>alert(1)</script>`
	hostileDetail   = `<img src=x onerror=alert(2)>`
	hostileDesc     = `</pre><script>alert(3)</script>`
)

// webChain is a chain with two twins, a node with a hostile endpoint, an
// active contract (with a hostile description and a hostile report) that
// needed both twins, and a pending one missing bob.
func webChain(t *testing.T) *chainEnv {
	t.Helper()
	e := startChain(t, Options{})
	alice, bob := e.twin(t, "alice"), e.twin(t, "bob")
	node := e.register(t, "alice", alice, "n1", hostileEndpoint)
	aliceS := ledger.Signer{Secret: testKey("alice"), Twin: alice}
	bobS := ledger.Signer{Secret: testKey("bob"), Twin: bob}

	d := twoSigners(t, alice, bob, hostileDesc)
	d.Signatures = []spec.Signature{sign(t, d, "alice", alice)}
	e.submit(t, e.tx(t, "alice", aliceS, &ledger.ContractCreate{Node: node, Spec: d}))
	e.submit(t, e.tx(t, "bob", bobS, &ledger.ContractApprove{Contract: 1, Approval: sign(t, d, "bob", bob)}))
	e.submit(t, e.tx(t, "n1", ledger.Signer{Secret: testKey("n1"), Node: node},
		&ledger.NodeReport{Contract: 1, State: ledger.ReportRunning, Detail: hostileDetail, Version: 1}))

	p := twoSigners(t, alice, bob, "waiting for bob")
	p.Signatures = []spec.Signature{sign(t, p, "alice", alice)}
	e.submit(t, e.tx(t, "alice", aliceS, &ledger.ContractCreate{Node: node, Spec: p}))
	return e
}

// getPage fetches a page, checking its status and the headers every page has.
func getPage(t *testing.T, url string, want int) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("GET %s: %d, want %d\n%s", url, resp.StatusCode, want, b)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		t.Fatalf("GET %s: Content-Type %q", url, ct)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
		t.Fatalf("GET %s: CSP %q", url, csp)
	}
	return string(b)
}

func contains(t *testing.T, what, page string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(page, w) {
			t.Errorf("%s lacks %q", what, w)
		}
	}
	if t.Failed() {
		t.Fatalf("%s:\n%s", what, page)
	}
}

// noMarkup checks that nothing a stranger wrote became markup.
func noMarkup(t *testing.T, what, page string) {
	t.Helper()
	for _, bad := range []string{"<script", "<img"} {
		if i := strings.Index(strings.ToLower(page), bad); i >= 0 {
			t.Fatalf("%s contains %q unescaped at %d:\n%s", what, bad, i, page)
		}
	}
}

func TestWebPages(t *testing.T) {
	e := webChain(t)
	home := getPage(t, e.srv.URL+"/", http.StatusOK)
	noMarkup(t, "home", home)
	contains(t, "home", home,
		`<a href="/contracts/1">1</a>`, `<a href="/contracts/2">2</a>`,
		`<span class="state active">active</span>`, `<span class="state pending">pending</span>`,
		"2 / 2", "1 / 2", "missing twin 2", // weights reached / required
		"running v1", html.EscapeString(hostileDetail),
		html.EscapeString(hostileEndpoint), "4 cores", "8.0 GiB", "100.0 GiB",
		testKey("alice").Public().String(), testKey("bob").Public().String(),
		"chain <code>"+testChain+"</code>")

	active := getPage(t, e.srv.URL+"/?state=active", http.StatusOK)
	if !strings.Contains(active, `href="/contracts/1"`) || strings.Contains(active, `href="/contracts/2"`) {
		t.Fatalf("state=active lists:\n%s", active)
	}

	c := getPage(t, e.srv.URL+"/contracts/1", http.StatusOK)
	noMarkup(t, "contract 1", c)
	contains(t, "contract 1", c, "Contract 1", "requirement met", "weight <strong>2</strong> of 2",
		html.EscapeString(`"description": "`+hostileDesc+`"`),
		"active since")
	c2 := getPage(t, e.srv.URL+"/contracts/2", http.StatusOK)
	contains(t, "contract 2", c2, "requirement not met", "required twins missing 2")

	getPage(t, e.srv.URL+"/contracts/99", http.StatusNotFound)
	getPage(t, e.srv.URL+"/contracts/abc", http.StatusBadRequest)
	getPage(t, e.srv.URL+"/?state=weird", http.StatusBadRequest)
	getPage(t, e.srv.URL+"/?bogus=1", http.StatusBadRequest)
}

// domText is s as Chromium's --dump-dom writes text: only &, < and >
// escaped.
func domText(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

// TestWebChromium loads the pages in headless Chromium: the DOM a browser
// builds lists the ledger, and holds no element a stranger's text made.
func TestWebChromium(t *testing.T) {
	bin := webtest.Chromium(t)
	e := webChain(t)
	home := webtest.Run(t, bin, "--dump-dom", e.srv.URL+"/")
	contains(t, "home (chromium)", home, "The grid ledger", `href="/contracts/1"`, ">active<", ">pending<",
		"2 / 2", domText(hostileDetail), domText(hostileEndpoint))
	noMarkup(t, "home (chromium)", home)

	c := webtest.Run(t, bin, "--dump-dom", e.srv.URL+"/contracts/1")
	contains(t, "contract (chromium)", c, "Contract 1", "requirement met", "twin 2", domText(hostileDesc))
	noMarkup(t, "contract (chromium)", c)
}
