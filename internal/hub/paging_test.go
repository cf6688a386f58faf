package hub

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/zosgrid/zos/internal/hub/hubclient"
	"github.com/zosgrid/zos/internal/key"
)

// TestPaging registers 120 users and pushes 120 names into one
// namespace: the JSON listings and the web page list them a page at a
// time, each entry exactly once.
func TestPaging(t *testing.T) {
	ctx := context.Background()
	h := startHub(t, dirBackend(t), nil)
	const n = 120
	for i := range n {
		k := key.FromSeed([]byte(fmt.Sprintf("zos hub paging test user %07d", i)))
		register(t, h.url, k, fmt.Sprintf("u%03d", i))
	}
	register(t, h.url, alice, "alice")
	root := t.TempDir()
	os.WriteFile(filepath.Join(root, "f"), []byte("one small file\n"), 0o644)
	fl, _ := packTo(t, h.url, alice, root, nil)
	ca := client(t, h.url, &alice)
	for i := range n {
		if _, err := ca.Push(ctx, mustRef(t, fmt.Sprintf("alice/n%03d", i)), fl); err != nil {
			t.Fatal(err)
		}
	}

	// JSON: pages of ?limit, chained by Link rel="next", every entry once.
	walk := func(path string, limit int, name func(json.RawMessage) string) (pages []int, names []string) {
		t.Helper()
		next := path + fmt.Sprintf("?limit=%d", limit)
		for next != "" {
			resp, err := http.Get(h.url + next)
			if err != nil {
				t.Fatal(err)
			}
			var page []json.RawMessage
			if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&page) != nil {
				t.Fatalf("GET %s: %d", next, resp.StatusCode)
			}
			resp.Body.Close()
			pages = append(pages, len(page))
			for _, e := range page {
				names = append(names, name(e))
			}
			next = ""
			if q, ok := hubclient.NextPage(resp.Header.Get("Link")); ok {
				next = path + "?" + q
			}
		}
		return pages, names
	}
	userName := func(e json.RawMessage) string { var u hubclient.User; json.Unmarshal(e, &u); return u.Name }
	repoName := func(e json.RawMessage) string { var r hubclient.Repo; json.Unmarshal(e, &r); return r.Name }
	pages, names := walk("/v1/users", 50, userName)
	if fmt.Sprint(pages) != "[50 50 21]" || !sortedDistinct(names) || len(names) != n+1 {
		t.Fatalf("users: pages %v, %d names", pages, len(names))
	}
	pages, names = walk("/v1/repos/alice", 50, repoName)
	if fmt.Sprint(pages) != "[50 50 20]" || !sortedDistinct(names) || names[0] != "n000" || names[n-1] != "n119" {
		t.Fatalf("repos: pages %v, %v", pages, names)
	}
	if c, _ := call(t, h, nil, "GET", "/v1/users?limit=1001", nil); c != 400 {
		t.Fatalf("limit over the maximum: %d", c)
	}
	// The client follows the pages (default 100).
	if us, err := client(t, h.url, nil).Users(ctx); err != nil || len(us) != n+1 {
		t.Fatalf("client users: %d, %v", len(us), err)
	}
	if rs, err := ca.Repos(ctx, "alice"); err != nil || len(rs) != n {
		t.Fatalf("client repos: %d, %v", len(rs), err)
	}

	// The web page: namespaces 50 a page, names 100 a page, through the
	// "next page" links.
	seen := map[string]int{}
	var homePages []int
	for next := "/"; next != ""; {
		page := get(t, h.url+next, http.StatusOK)
		rows := strings.Count(page, `<td class="ns">`)
		homePages = append(homePages, rows)
		for i := range n {
			if strings.Contains(page, fmt.Sprintf(`href="/u/u%03d"`, i)) {
				seen[fmt.Sprintf("u%03d", i)]++
			}
		}
		next = ""
		if strings.Contains(page, `rel="next"`) {
			next = href(t, page, func(u string) bool { return strings.HasPrefix(u, "/?after=") })
		}
	}
	if fmt.Sprint(homePages) != "[50 50 21]" || len(seen) != n {
		t.Fatalf("home pages %v, %d users seen", homePages, len(seen))
	}
	for u, c := range seen {
		if c != 1 {
			t.Fatalf("%s on %d home pages", u, c)
		}
	}
	// alice's row shows 20 names and a link to the rest.
	first := get(t, h.url+"/", http.StatusOK)
	contains(t, "first home page", first, "and 100 more", `href="/u/alice/n019"`)
	ns := get(t, h.url+"/u/alice", http.StatusOK)
	if c := len(nameLinkRE.FindAllString(ns, -1)); c != 100 {
		t.Fatalf("first page of alice: %d names", c)
	}
	ns = get(t, h.url+href(t, ns, func(u string) bool { return strings.HasPrefix(u, "/u/alice?after=") }), http.StatusOK)
	if c := len(nameLinkRE.FindAllString(ns, -1)); c != 20 || !strings.Contains(ns, `href="/u/alice/n119"`) || strings.Contains(ns, `rel="next"`) {
		t.Fatalf("second page of alice: %d names\n%s", c, ns)
	}
}

func sortedDistinct(s []string) bool {
	for i := 1; i < len(s); i++ {
		if s[i-1] >= s[i] {
			return false
		}
	}
	return true
}

var nameLinkRE = regexp.MustCompile(`<td><a href="/u/alice/n[0-9]+">`)
