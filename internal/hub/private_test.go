package hub

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"strings"
	"testing"
	"time"

	"github.com/zosgrid/zos/internal/auth"
	"github.com/zosgrid/zos/internal/hub/hubclient"
	"github.com/zosgrid/zos/internal/key"
)

// call sends a request to the hub, signed by k unless k is nil, and
// returns the status and body.
func call(t *testing.T, h *testHub, k *key.Secret, method, path string, body []byte) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, h.url+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if k != nil {
		auth.Sign(req, *k, body)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestPrivateNamespaces checks every route that reads or names something
// in a namespace: a private one (and what it holds) shows to its owner and
// the admins only; to anyone else it answers as an absent one does, word
// for word.
func TestPrivateNamespaces(t *testing.T) {
	ctx := context.Background()
	h := startHub(t, dirBackend(t), nil)
	register(t, h.url, alice, "alice")
	register(t, h.url, bob, "bob")
	ca := client(t, h.url, &alice)
	a := publish(t, h, alice, webTree(t, 11, nil, 0), "alice/secret-app:v1")
	d := a.Digest().String()
	// Bob links to alice's name while it is public, and publishes the very
	// same image himself (its chunks are all alice's).
	if err := client(t, h.url, &bob).Link(ctx, "bob", "mirror", mustRef(t, "alice/secret-app")); err != nil {
		t.Fatal(err)
	}
	bobs := publish(t, h, bob, webTree(t, 11, func(b []byte) { copy(b[1000:], "bob") }, 0), "bob/pub:v1")
	if _, err := ca.SetPrivate(ctx, "alice", true); err != nil {
		t.Fatal(err)
	}
	job := hubclient.Job{ID: strings.Repeat("ab", 16), State: hubclient.JobDone, Source: "docker://x/y", Target: "alice/secret-app:v1",
		By: alice.Public(), Created: time.Now(), Updated: time.Now()}
	if err := h.putJSON(ctx, jobObj(job.ID), job); err != nil {
		t.Fatal(err)
	}

	// Reads: the owner and an admin get 200; anonymous and bob get what a
	// namespace that does not exist gets ("nobody"), the same text.
	for _, p := range []string{
		"/v1/users/alice", "/v1/repos/alice", "/v1/repos/alice/secret-app",
		"/v1/flists/alice/secret-app:v1", "/v1/flists/alice/secret-app@" + d,
		"/v1/digests/" + d, "/v1/jobs/" + job.ID,
	} {
		for _, k := range []*key.Secret{&alice, &admin} {
			if c, b := call(t, h, k, http.MethodGet, p, nil); c != http.StatusOK {
				t.Errorf("GET %s by %s: %d %s", p, k.Public(), c, b)
			}
		}
		for who, k := range map[string]*key.Secret{"anonymous": nil, "bob": &bob} {
			c, b := call(t, h, k, http.MethodGet, p, nil)
			if c != http.StatusNotFound || strings.Contains(b, "secret-app") {
				t.Errorf("GET %s by %s: %d %s", p, who, c, b)
			}
			if !strings.HasPrefix(p, "/v1/digests/") && !strings.HasPrefix(p, "/v1/jobs/") {
				c2, b2 := call(t, h, k, http.MethodGet, strings.Replace(p, "alice", "nobody", 1), nil)
				if c2 != c || strings.ReplaceAll(b2, "nobody", "alice") != b {
					t.Errorf("GET %s by %s: private %d %q, absent %d %q", p, who, c, b, c2, b2)
				}
			}
		}
	}

	// Listings: the owner sees its namespace, an admin every one, others
	// only the public ones.
	for who, k := range map[string]*key.Secret{"anonymous": nil, "bob": &bob, "alice": &alice, "admin": &admin} {
		c, b := call(t, h, k, http.MethodGet, "/v1/users", nil)
		want := who == "alice" || who == "admin"
		if c != http.StatusOK || strings.Contains(b, `"alice"`) != want || !strings.Contains(b, `"bob"`) {
			t.Errorf("GET /v1/users by %s: %d %s", who, c, b)
		}
	}

	// Through bob's public names: his link into alice's namespace reads
	// as absent, and neither a promote from nor a new link to it works.
	for _, tc := range []struct {
		method, path, body string
	}{
		{"GET", "/v1/flists/bob/mirror:v1", ""},
		{"POST", "/v1/promote/bob/stolen", `{"source":"alice/secret-app:v1"}`},
		{"PUT", "/v1/links/bob/mirror2", `{"target":"alice/secret-app"}`},
	} {
		if c, b := call(t, h, &bob, tc.method, tc.path, []byte(tc.body)); c != http.StatusNotFound || strings.Contains(b, "secret-app") {
			t.Errorf("%s %s by bob: %d %s", tc.method, tc.path, c, b)
		}
	}
	// Writes: into a private namespace, as into an absent one (404); into
	// a public one of another key, 403.
	for _, tc := range []struct {
		method, path, body string
		want               int
	}{
		{"PUT", "/v1/tags/alice/secret-app/x", `{"digest":"` + d + `"}`, 404},
		{"PUT", "/v1/links/alice/l", `{"target":"bob/pub"}`, 404},
		{"DELETE", "/v1/flists/alice/secret-app", "", 404},
		{"POST", "/v1/users/alice", `{"private":false}`, 404},
		{"PUT", "/v1/tags/nobody/secret-app/x", `{"digest":"` + d + `"}`, 404},
		{"PUT", "/v1/tags/bob/pub/x", `{"digest":"` + bobs.Digest().String() + `"}`, 403},
	} {
		k := stranger
		if strings.Contains(tc.path, "/bob/") {
			k = alice
		}
		if c, b := call(t, h, &k, tc.method, tc.path, []byte(tc.body)); c != tc.want {
			t.Errorf("%s %s: %d %s, want %d", tc.method, tc.path, c, b, tc.want)
		}
	}

	// The web page: not listed, not shown; bob's copy of the same image
	// is compared with nothing it may not see.
	home := get(t, h.url+"/", http.StatusOK)
	if strings.Contains(home, "alice") || strings.Contains(home, "secret-app") {
		t.Fatalf("home page shows the private namespace:\n%s", home)
	}
	for _, p := range []string{"/u/alice", "/u/alice/secret-app", "/u/alice/secret-app/" + d, "/u/alice/secret-app/" + d + "/files/etc"} {
		if page := get(t, h.url+p, http.StatusNotFound); strings.Contains(page, "secret-app") && !strings.Contains(page, "no namespace") {
			t.Errorf("%s shows the private namespace", p)
		}
	}
	bp := get(t, h.url+"/u/bob/pub/"+bobs.Digest().String(), http.StatusOK)
	if !strings.Contains(bp, "(0 compared)") {
		t.Fatalf("bob's image is compared with alice's private one:\n%s", bp)
	}

	// Metrics carry routes, never names.
	if m := getText(t, h.url+"/metrics"); strings.Contains(m, "alice") || strings.Contains(m, "secret") {
		t.Fatalf("metrics name the private namespace")
	}
}

// TestViewToken: zos hub open's link shows a private namespace in a
// browser (a client with a cookie jar), for its namespace and hub only,
// until it expires; an altered, expired, too long-lived, foreign or
// non-owner's token is refused.
func TestViewToken(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	h := startHub(t, dirBackend(t), func(o *Options) { o.Now = clk.Now })
	register(t, h.url, alice, "alice")
	register(t, h.url, bob, "bob")
	a := publish(t, h, alice, webTree(t, 31, nil, 0), "alice/hidden-app:v1")
	publish(t, h, bob, webTree(t, 32, nil, 0), "bob/bobs-app:v1")
	for _, k := range []key.Secret{alice, bob} {
		if _, err := client(t, h.url, &k).SetPrivate(ctx, nsOfKey(k), true); err != nil {
			t.Fatal(err)
		}
	}
	link, err := client(t, h.url, &alice).ViewURL("alice", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar}
	open := func(u string, want int) string {
		t.Helper()
		resp, err := browser.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != want {
			t.Fatalf("GET %s: %d, want %d\n%s", u, resp.StatusCode, want, b)
		}
		if want == http.StatusOK && resp.Header.Get("Cache-Control") != "private, no-store" && strings.Contains(string(b), "hidden-app") {
			t.Fatalf("GET %s: a private page is cacheable: %q", u, resp.Header.Get("Cache-Control"))
		}
		return string(b)
	}

	// The link: redirected to the page without the token, which shows;
	// then the cookie opens the rest of the namespace and the home page
	// lists it, and nothing of bob's.
	resp, err := browser.Get(link)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Request.URL.RawQuery != "" || !strings.Contains(string(b), "hidden-app") || !strings.Contains(string(b), "private") {
		t.Fatalf("view link: %d at %s\n%s", resp.StatusCode, resp.Request.URL, b)
	}
	open(h.url+"/u/alice/hidden-app", 200)
	open(h.url+"/u/alice/hidden-app/"+a.Digest().String()+"/files/etc", 200)
	if home := open(h.url+"/", 200); !strings.Contains(home, `href="/u/alice"`) || strings.Contains(home, "bob") {
		t.Fatalf("home with alice's view cookie:\n%s", home)
	}
	open(h.url+"/u/bob", 404)
	open(h.url+"/u/bob/bobs-app", 404)
	// Not an API credential: the API still wants a signature.
	if c, _ := call(t, h, nil, "GET", "/v1/repos/alice", nil); c != 404 {
		t.Fatalf("API read without a signature: %d", c)
	}

	// Refused tokens: 403, and no cookie.
	host := strings.TrimPrefix(h.url, "http://")
	good := ViewTokenFor(alice, host, "alice", clk.Now().Add(time.Hour))
	altered := []byte(good)
	altered[len(altered)-5] ^= 1
	for name, u := range map[string]string{
		"expired":       "/u/alice?view=" + ViewTokenFor(alice, host, "alice", clk.Now().Add(-time.Second)),
		"altered":       "/u/alice?view=" + string(altered),
		"too long":      "/u/alice?view=" + ViewTokenFor(alice, host, "alice", clk.Now().Add(48*time.Hour)),
		"other ns":      "/u/bob?view=" + good,
		"other hub":     "/u/alice?view=" + ViewTokenFor(alice, lbHost+":1", "alice", clk.Now().Add(time.Hour)),
		"not the owner": "/u/alice?view=" + ViewTokenFor(bob, host, "alice", clk.Now().Add(time.Hour)),
		"garbage":       "/u/alice?view=x.y.z",
	} {
		fresh := &http.Client{}
		resp, err := fresh.Get(h.url + u)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden || len(resp.Cookies()) != 0 {
			t.Errorf("%s token: %d, cookies %v", name, resp.StatusCode, resp.Cookies())
		}
	}

	// An hour later the cookie no longer opens anything.
	clk.add(time.Hour + time.Second)
	open(h.url+"/u/alice/hidden-app", 404)
}

// ViewTokenFor is hubclient.ViewToken (named for the test's table).
func ViewTokenFor(k key.Secret, host, ns string, exp time.Time) string {
	return hubclient.ViewToken(k, host, ns, exp)
}

func nsOfKey(k key.Secret) string {
	if k.Public() == alice.Public() {
		return "alice"
	}
	return "bob"
}
