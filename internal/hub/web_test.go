package hub

import (
	"context"
	"fmt"
	"html"
	"image/png"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/zosgrid/zos/internal/flist"
	"github.com/zosgrid/zos/internal/key"
	"github.com/zosgrid/zos/internal/webtest"
)

// Hostile names: valid file names (no slash) and a symlink target that
// would open a script if any of them reached the page unescaped.
const (
	hostileFile   = `<script>alert(1)`
	hostileFile2  = `"><img src=x onerror=alert(2)>`
	hostileTarget = `</td><script>alert(3)</script>`
)

// webTree is tree(seed, edit) plus hostile names, a symlink and, with
// many > 0, a directory of many empty files.
func webTree(t *testing.T, seed uint64, edit func([]byte), many int) string {
	t.Helper()
	root := tree(t, seed, edit)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "usr", "share", "doc"), 0o755))
	must(os.WriteFile(filepath.Join(root, "usr", "share", "doc", "README"), []byte("read me\n"), 0o644))
	must(os.WriteFile(filepath.Join(root, "etc", hostileFile), []byte("x"), 0o600))
	must(os.WriteFile(filepath.Join(root, "etc", hostileFile2), []byte("y"), 0o600))
	must(os.Symlink(hostileTarget, filepath.Join(root, "etc", "evil-link")))
	must(os.Symlink("../usr/share/doc", filepath.Join(root, "etc", "doc")))
	must(os.Link(filepath.Join(root, "etc", "hostname"), filepath.Join(root, "etc", "hostname.hard")))
	if many > 0 {
		must(os.MkdirAll(filepath.Join(root, "many"), 0o755))
		for i := range many {
			must(os.WriteFile(filepath.Join(root, "many", fmt.Sprintf("f%05d", i)), nil, 0o644))
		}
	}
	return root
}

// publish packs root to the hub as k and pushes it, signed, to ref.
func publish(t *testing.T, h *testHub, k key.Secret, root, ref string) *flist.Reader {
	t.Helper()
	fl, _ := packTo(t, h.url, k, root, nil)
	r, err := flist.Open(fl)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client(t, h.url, &k).Push(context.Background(), mustRef(t, ref), flist.Sign(r, k)); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	return r
}

// get fetches a page, checking its status and the headers every page has.
func get(t *testing.T, url string, want int) string {
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

var hrefRE = regexp.MustCompile(`href="([^"]*)"`)

// href returns the first link target in page that satisfies match.
func href(t *testing.T, page string, match func(string) bool) string {
	t.Helper()
	for _, m := range hrefRE.FindAllStringSubmatch(page, -1) {
		if u := html.UnescapeString(m[1]); match(u) {
			return u
		}
	}
	t.Fatalf("no matching link in page:\n%s", page)
	return ""
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

// noScript checks that nothing a user named became markup.
func noScript(t *testing.T, what, page string) {
	t.Helper()
	for _, bad := range []string{"<script", "<img"} {
		if i := strings.Index(strings.ToLower(page), bad); i >= 0 {
			t.Fatalf("%s contains %q unescaped at %d:\n%s", what, bad, i, page)
		}
	}
}

func TestWebPages(t *testing.T) {
	ctx := context.Background()
	h := startHub(t, dirBackend(t), nil)
	register(t, h.url, alice, "alice")
	register(t, h.url, bob, "bob")
	cb := client(t, h.url, &bob)

	// One image alone: nothing of it is elsewhere in the hub.
	a := publish(t, h, alice, webTree(t, 1, nil, 1200), "alice/app:v1")
	page := get(t, h.url+"/u/alice/app/"+a.Digest().String(), http.StatusOK)
	contains(t, "flist page", page, "0.0%</strong> of its chunks (0 of ")
	// A second, mostly the same: now most of the first one's chunks are in
	// another image (the cached answer is recomputed).
	b := publish(t, h, alice, webTree(t, 1, func(b []byte) { copy(b[300<<10:], "an edit in the middle") }, 0), "alice/app:v2")
	page = get(t, h.url+"/u/alice/app/"+a.Digest().String(), http.StatusOK)
	if strings.Contains(page, "0.0%</strong>") || strings.Contains(page, "100.0%</strong>") || !strings.Contains(page, "(1 compared)") {
		t.Fatalf("sharing of the first image after the second is pushed:\n%s", page)
	}
	// Bob's namespace is private: not listed, not shown.
	publish(t, h, bob, webTree(t, 3, nil, 0), "bob/secret:v1")
	if _, err := cb.SetPrivate(ctx, "bob", true); err != nil {
		t.Fatal(err)
	}

	home := get(t, h.url+"/", http.StatusOK)
	contains(t, "home", home, `href="/u/alice"`, `href="/u/alice/app"`, ">v1<", ">v2<", "2 versions")
	if strings.Contains(home, "bob") || strings.Contains(home, "secret") {
		t.Fatalf("home lists a private namespace:\n%s", home)
	}
	for _, p := range []string{"/u/bob", "/u/bob/secret", "/u/bob/secret/" + a.Digest().String(), "/u/nobody", "/u/alice/nope",
		"/u/alice/app/" + strings.Repeat("0", 64), "/u/alice/app/" + a.Digest().String() + "/files/no/such"} {
		get(t, h.url+p, http.StatusNotFound)
	}

	ns := get(t, h.url+"/u/alice", http.StatusOK)
	contains(t, "namespace page", ns, `href="/u/alice/app"`, alice.Public().String())
	name := get(t, h.url+"/u/alice/app", http.StatusOK)
	contains(t, "name page", name, `href="/u/alice/app/`+a.Digest().String()+`"`, `href="/u/alice/app/`+b.Digest().String()+`"`, a.Digest().String(), alice.Public().String())

	fp := get(t, h.url+"/u/alice/app/"+a.Digest().String(), http.StatusOK)
	contains(t, "flist page", fp,
		a.Digest().String(),
		fmt.Sprintf("in %d entries", a.Len()),
		fmt.Sprintf("%d references", len(a.Chunks())),
		alice.Public().String(),
		"zos hub pull alice/app@"+a.Digest().String()+" --hub "+h.url+" -o app.fl",
		"zos flist mount app.fl /mnt/app --store "+h.url+"/chunks",
		"--pubkey "+alice.Public().String(),
		"digest: "+a.Digest().String(), "hub: "+h.url, "ref: alice/app@"+a.Digest().String(),
		`href="/u/alice/app/`+a.Digest().String()+`/files/etc"`,
		">big.txt<", ">etc/<", ">many/<", ">v1<")
	noScript(t, "flist page", fp)

	// A directory with hostile names, escaped as text; their links work.
	etc := get(t, h.url+"/u/alice/app/"+a.Digest().String()+"/files/etc", http.StatusOK)
	noScript(t, "etc page", etc)
	contains(t, "etc page", etc, html.EscapeString(hostileFile), html.EscapeString(hostileFile2), html.EscapeString(hostileTarget),
		">hostname<", "../usr/share/doc", "-rw-------", "lrwxrwxrwx", `rel="up"`, ">hostname.hard<", "hard link (entry ")
	for _, n := range []string{hostileFile, hostileFile2} {
		u := href(t, etc, func(u string) bool { return strings.HasSuffix(u, "/etc/"+url.PathEscape(n)) })
		file := get(t, h.url+u, http.StatusOK)
		noScript(t, "hostile file page", file)
		contains(t, "hostile file page", file, html.EscapeString(n), "<td>file</td>", "1 B (1 bytes) in 1 chunk")
	}
	big := get(t, h.url+"/u/alice/app/"+a.Digest().String()+"/files/big.txt", http.StatusOK)
	contains(t, "big.txt page", big, "<td>file</td>", "chunks")
	// A hostile path in the URL comes back escaped in the error page.
	e := get(t, h.url+"/u/alice/app/"+a.Digest().String()+"/files/%3Cscript%3Ealert(4)", http.StatusNotFound)
	noScript(t, "error page", e)
	e = get(t, h.url+"/u/%3Cscript%3Ealert(5)", http.StatusNotFound)
	noScript(t, "error page", e)

	// A directory over a page long is paged.
	many := get(t, h.url+"/u/alice/app/"+a.Digest().String()+"/files/many", http.StatusOK)
	if n := strings.Count(many, `<tr class="file">`); n != webPageSize {
		t.Fatalf("first page of many: %d rows", n)
	}
	next := href(t, many, func(u string) bool { return strings.Contains(u, "?from=") })
	many = get(t, h.url+next, http.StatusOK)
	if n := strings.Count(many, `<tr class="file">`); n != 200 || !strings.Contains(many, ">f01199<") || !strings.Contains(many, "previous page") {
		t.Fatalf("second page of many: %d rows\n%s", n, many)
	}

	// The stylesheet is served; the metrics label the home page "/".
	resp, err := http.Get(h.url + "/static/hub.css")
	if err != nil || resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/css") {
		t.Fatalf("css: %v %v", resp, err)
	}
	resp.Body.Close()
	metrics := getText(t, h.url+"/metrics")
	if !strings.Contains(metrics, `zos_hub_requests_total{code="200",method="GET",route="/"}`) {
		t.Fatalf("metrics lack the home route:\n%s", metrics)
	}
}

func getText(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestWebChromium loads the page in headless Chromium, follows its links
// from the home page down to a directory of an image and back, and takes
// a screenshot of an image's page.
func TestWebChromium(t *testing.T) {
	bin := webtest.Chromium(t)
	h := startHub(t, dirBackend(t), nil)
	register(t, h.url, alice, "alice")
	a := publish(t, h, alice, webTree(t, 1, nil, 0), "alice/app:v1")
	publish(t, h, alice, webTree(t, 1, func(b []byte) { copy(b[300<<10:], "an edit in the middle") }, 0), "alice/app:v2")
	dump := func(path string) string { t.Helper(); return webtest.Run(t, bin, "--dump-dom", h.url+path) }

	home := dump("/")
	contains(t, "home (chromium)", home, "Flists on this hub", ">alice<", ">v1<")
	user := dump(href(t, home, func(u string) bool { return u == "/u/alice" }))
	contains(t, "namespace (chromium)", user, "<h1>alice</h1>", ">app<")
	name := dump(href(t, user, func(u string) bool { return u == "/u/alice/app" }))
	contains(t, "name (chromium)", name, "Versions", a.Digest().String())
	flistPath := href(t, name, func(u string) bool { return u == "/u/alice/app/"+a.Digest().String() })
	fp := dump(flistPath)
	contains(t, "flist (chromium)", fp, "Already in the hub", "zos hub pull alice/app@"+a.Digest().String(), ">etc/<", ">big.txt<")
	if strings.Contains(fp, "<script") {
		t.Fatalf("the DOM has a script element:\n%s", fp)
	}
	etc := dump(href(t, fp, func(u string) bool { return strings.HasSuffix(u, "/files/etc") }))
	contains(t, "etc (chromium)", etc, ">hostname<", html.EscapeString(hostileFile), "evil-link")
	if strings.Contains(etc, "<script") || strings.Contains(etc, "<img") {
		t.Fatalf("a hostile name became markup in the DOM:\n%s", etc)
	}
	back := dump(href(t, etc, func(u string) bool { return u == flistPath }))
	contains(t, "back at the image (chromium)", back, "Already in the hub", ">etc/<")

	shot := filepath.Join(t.TempDir(), "hub.png")
	if p := os.Getenv("ZOS_WEB_SCREENSHOT"); p != "" {
		shot = p // keep it (docs)
	}
	webtest.Run(t, bin, "--screenshot="+shot, "--window-size=1280,900", h.url+flistPath)
	f, err := os.Open(shot)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	bd := img.Bounds()
	if bd.Dx() != 1280 || bd.Dy() != 900 {
		t.Fatalf("screenshot is %v", bd)
	}
	colors := map[[3]uint32]bool{}
	for y := bd.Min.Y; y < bd.Max.Y; y += 3 {
		for x := bd.Min.X; x < bd.Max.X; x += 3 {
			r, g, b, _ := img.At(x, y).RGBA()
			colors[[3]uint32{r >> 8, g >> 8, b >> 8}] = true
		}
	}
	if len(colors) < 20 {
		t.Fatalf("screenshot has %d colours: a blank page?", len(colors))
	}
	t.Logf("screenshot %s: %v, %d colours", shot, bd.Size(), len(colors))
}

func TestLsMode(t *testing.T) {
	for _, c := range []struct {
		mode uint32
		want string
	}{
		{uint32(flist.KindRegular) | 0o644, "-rw-r--r--"},
		{uint32(flist.KindRegular) | 0o4755, "-rwsr-xr-x"},
		{uint32(flist.KindRegular) | 0o2644, "-rw-r-Sr--"},
		{uint32(flist.KindDir) | 0o1777, "drwxrwxrwt"},
		{uint32(flist.KindDir) | 0o1770, "drwxrwx--T"},
		{uint32(flist.KindSymlink) | 0o777, "lrwxrwxrwx"},
		{uint32(flist.KindChar) | 0o666, "crw-rw-rw-"},
		{uint32(flist.KindBlock) | 0o660, "brw-rw----"},
		{uint32(flist.KindFIFO) | 0o600, "prw-------"},
		{uint32(flist.KindSocket) | 0o755, "srwxr-xr-x"},
	} {
		if got := lsMode(&flist.Entry{Mode: c.mode}); got != c.want {
			t.Errorf("%o: %s, want %s", c.mode, got, c.want)
		}
	}
}
