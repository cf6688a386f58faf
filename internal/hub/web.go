package hub

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/flist"
	"github.com/zosgrid/zos/internal/hub/hubclient"
	"github.com/zosgrid/zos/internal/hub/object"
	"github.com/zosgrid/zos/internal/key"
)

// The web page: a server-rendered catalogue of the hub at "/" (docs/HUB.md,
// "Web page"). It reads what the API reads, anonymously: private namespaces
// are neither listed nor shown. Everything a user named (namespaces, names,
// tags, file names, symlink targets) goes through html/template, and the
// pages carry a Content-Security-Policy that allows no script at all.
//
// Directory pages read the flist through flist.Reader's Lookup and
// children ranges, so a page of a huge image decodes a few entry blocks,
// not the whole tree.

//go:embed web
var webFiles embed.FS

// webPageSize bounds the rows of a directory page (?from=N pages on).
const webPageSize = 1000

// webCSP forbids scripts, frames, forms and every origin but our own for
// styles: a name that slipped through escaping still could not run.
const webCSP = "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

type web struct {
	h       *Hub
	pages   map[string]*template.Template
	css     []byte
	readers readerCache
	shares  shareCache
}

// webRoutes adds the web page's routes to m.
func (h *Hub) webRoutes(m *http.ServeMux) {
	w := newWeb(h)
	m.HandleFunc("GET /{$}", w.home)
	m.HandleFunc("GET /static/hub.css", w.style)
	m.HandleFunc("GET /u/{ns}", w.tokened(w.namespace))
	m.HandleFunc("GET /u/{ns}/{name}", w.tokened(w.name))
	m.HandleFunc("GET /u/{ns}/{name}/{digest}", w.tokened(w.flist))
	m.HandleFunc("GET /u/{ns}/{name}/{digest}/files/{path...}", w.tokened(w.flist))
}

// viewCookie is the cookie that keeps a view token of namespace ns.
func viewCookie(ns string) string { return "zos-view-" + ns }

// tokened serves a namespace's pages, first taking a view token from the
// URL (?view=TOKEN, made by zos hub open): a valid one is kept in a cookie
// for the browser's session and the browser sent back to the page without
// it, so the token leaves the address bar; an invalid one is refused.
func (w *web) tokened(next http.HandlerFunc) http.HandlerFunc {
	return func(rw http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if !q.Has(hubclient.ViewParam) {
			next(rw, r)
			return
		}
		ns := r.PathValue("ns")
		tok := q.Get(hubclient.ViewParam)
		exp, err := w.checkToken(r, ns, tok)
		if err != nil {
			w.h.lim.fail(addrBucket(w.h.lim.client(r)))
			w.h.log.Debug("view token refused", "ns", ns, "remote", r.RemoteAddr, "why", err)
			w.render(rw, r, http.StatusForbidden, "error", page{Title: "Forbidden",
				Data: "This view link is not valid: it expired, was altered, or is for another namespace or hub. Make a new one with zos hub open."})
			return
		}
		http.SetCookie(rw, &http.Cookie{Name: viewCookie(ns), Value: tok, Path: "/", Expires: exp,
			MaxAge: max(1, int(time.Until(exp).Seconds())), HttpOnly: true, SameSite: http.SameSiteLaxMode,
			Secure: r.TLS != nil || r.Header.Get("X-Forwarded-Proto") == "https"})
		q.Del(hubclient.ViewParam)
		u := *r.URL
		u.RawQuery = q.Encode()
		rw.Header().Set("Cache-Control", "no-store")
		rw.Header().Set("Referrer-Policy", "no-referrer")
		http.Redirect(rw, r, u.RequestURI(), http.StatusSeeOther)
	}
}

// checkToken checks a view token for ns as the request addressed the
// hub, and that its key may read ns (the owner, or an admin). It returns
// when the token expires.
func (w *web) checkToken(r *http.Request, ns, tok string) (time.Time, error) {
	if len(w.h.opt.Hosts) > 0 && !slices.ContainsFunc(w.h.opt.Hosts, func(h string) bool { return strings.EqualFold(h, r.Host) }) {
		return time.Time{}, fmt.Errorf("host %q is not this hub's", r.Host)
	}
	k, exp, err := hubclient.CheckViewToken(tok, r.Host, ns, w.h.opt.Now())
	if err != nil {
		return exp, err
	}
	u, err := w.h.user(r.Context(), ns)
	if err != nil {
		return exp, err
	}
	if u.Key != k && !w.h.admins[k] {
		return exp, fmt.Errorf("key %s is not the owner of %s", k, ns)
	}
	return exp, nil
}

// viewer is the page's visitor: anonymous, with the namespaces its valid
// view cookies open. A cookie that no longer checks (expired) is ignored.
func (w *web) viewer(r *http.Request) *viewer {
	var v *viewer
	for _, c := range r.Cookies() {
		ns, ok := strings.CutPrefix(c.Name, "zos-view-")
		if !ok || hubclient.CheckNamespace(ns) != nil {
			continue
		}
		if _, err := w.checkToken(r, ns, c.Value); err != nil {
			continue
		}
		if v == nil {
			v = &viewer{tokens: map[string]bool{}}
		}
		v.tokens[ns] = true
	}
	return v
}

func newWeb(h *Hub) *web {
	funcs := template.FuncMap{
		"size":  humanSize,
		"date":  func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04 UTC") },
		"short": func(d digest.ID) string { return d.Short() },
		"pct": func(a, b int) string {
			if b == 0 {
				return "-"
			}
			return strconv.FormatFloat(100*float64(a)/float64(b), 'f', 1, 64) + "%"
		},
	}
	base := template.Must(template.New("layout.html").Funcs(funcs).ParseFS(webFiles, "web/layout.html"))
	w := &web{h: h, pages: map[string]*template.Template{}}
	for _, p := range []string{"home", "namespace", "name", "flist", "error"} {
		w.pages[p] = template.Must(template.Must(base.Clone()).ParseFS(webFiles, "web/"+p+".html"))
	}
	css, err := fs.ReadFile(webFiles, "web/hub.css")
	if err != nil {
		panic(err) // embedded: cannot happen
	}
	w.css = css
	w.readers.budget = 64 << 20
	return w
}

// crumb is one step of the navigation line at the top of a page.
type crumb struct{ Name, Href string }

// page is what every template receives.
type page struct {
	Title  string
	Crumbs []crumb
	Hub    string // base URL of the hub as the visitor reached it
	Data   any
	// Private: the page shows a private namespace (through a view
	// token): no cache may keep it.
	Private bool
}

func (w *web) render(rw http.ResponseWriter, r *http.Request, code int, name string, p page) {
	p.Hub = baseURL(r)
	var b bytes.Buffer
	if err := w.pages[name].ExecuteTemplate(&b, "layout.html", p); err != nil {
		w.h.log.Error("rendering web page", "page", name, "err", err)
		http.Error(rw, "internal error (see the hub's log)", http.StatusInternalServerError)
		return
	}
	hd := rw.Header()
	hd.Set("Content-Type", "text/html; charset=utf-8")
	hd.Set("Content-Security-Policy", webCSP)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("Cache-Control", "no-cache")
	if p.Private {
		hd.Set("Cache-Control", "private, no-store")
	}
	hd.Set("Content-Length", strconv.Itoa(b.Len()))
	rw.WriteHeader(code)
	if r.Method != http.MethodHead {
		rw.Write(b.Bytes())
	}
}

// fail renders an error page: 404 for what is absent or private (the page
// reads anonymously, and says no more than that), 400 for bad input, 500
// (logged) for the rest.
func (w *web) fail(rw http.ResponseWriter, r *http.Request, err error) {
	code := http.StatusInternalServerError
	var he *httpError
	switch {
	case errors.As(err, &he) && he.code == http.StatusBadRequest:
		code = http.StatusBadRequest
	case errors.As(err, &he) && (he.code == http.StatusUnauthorized || he.code == http.StatusNotFound),
		errors.Is(err, errForbidden), isNotFound(err), errors.Is(err, flist.ErrNotExist):
		code = http.StatusNotFound
	case r.Context().Err() != nil:
		return
	}
	msg := err.Error()
	if code == http.StatusInternalServerError {
		w.h.log.Error("web page failed", "path", r.URL.Path, "err", err)
		msg = "internal error (see the hub's log)"
	}
	w.render(rw, r, code, "error", page{Title: http.StatusText(code), Data: msg})
}

func (w *web) style(rw http.ResponseWriter, r *http.Request) {
	hd := rw.Header()
	hd.Set("Content-Type", "text/css; charset=utf-8")
	hd.Set("Cache-Control", "public, max-age=3600")
	hd.Set("X-Content-Type-Options", "nosniff")
	rw.Write(w.css)
}

// baseURL is the hub's address as the request reached it, for the commands
// the pages print (behind a TLS proxy, X-Forwarded-Proto says https).
func baseURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil || r.Header.Get("X-Forwarded-Proto") == "https" {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

func nsHref(ns string) string         { return "/u/" + url.PathEscape(ns) }
func nameHref(ns, name string) string { return nsHref(ns) + "/" + url.PathEscape(name) }
func flistHref(ns, name string, d digest.ID) string {
	return nameHref(ns, name) + "/" + d.String()
}

// fileHref links to path p (slash-separated, "/" for the root) of an flist.
func fileHref(ns, name string, d digest.ID, p string) string {
	p = strings.Trim(path.Clean("/"+p), "/")
	if p == "" {
		return flistHref(ns, name, d)
	}
	segs := strings.Split(p, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return flistHref(ns, name, d) + "/files/" + strings.Join(segs, "/")
}

// readUser reads ns, refusing a private namespace the visitor may not
// read as absent.
func (w *web) readUser(ctx context.Context, v *viewer, ns string) (hubclient.User, error) {
	if err := w.h.mayRead(ctx, v, ns); err != nil {
		return hubclient.User{}, err
	}
	return w.h.user(ctx, ns)
}

// mayRead answers, for the page's visitor, whether a namespace's flists
// count (anonymous: the public ones).
func (w *web) mayRead(ctx context.Context, v *viewer) func(ns string) (bool, error) {
	return func(ns string) (bool, error) {
		err := w.h.mayRead(ctx, v, ns)
		if isNotFound(err) {
			return false, nil
		}
		return err == nil, err
	}
}

// Pages of the web page's listings: namespaces on the home page (with at
// most webNamesShown of each one's names), names on a namespace's page.
const (
	webUsersPage  = 50
	webNamesShown = 20
	webNamesPage  = 100
)

type homeData struct {
	Users []homeUser
	First bool   // not the first page: link to it
	Next  string // the next page, if any
}

type homeUser struct {
	Name, Href string
	Private    bool
	More       int // names not shown
	Created    time.Time
	Names      []homeName
}

type homeName struct {
	Name, Href string
	Tags       []string
	Versions   int
	Link       bool
}

func (w *web) home(rw http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	vw := w.viewer(r)
	after := r.URL.Query().Get("after")
	us, more, err := w.h.usersPage(ctx, vw, after, webUsersPage)
	if err != nil {
		w.fail(rw, r, err)
		return
	}
	data := homeData{First: after != ""}
	if more {
		data.Next = "/?" + url.Values{"after": {us[len(us)-1].Name}}.Encode()
	}
	users := make([]homeUser, 0, len(us))
	for _, u := range us {
		users = append(users, homeUser{Name: u.Name, Href: nsHref(u.Name), Created: u.Created, Private: u.Private})
	}
	for i := range users {
		// Names and tags from object names alone: no object is read.
		byName := map[string]*homeName{}
		prefix := reposPrefix + users[i].Name + "/"
		err := w.h.b.Objects.List(ctx, prefix, func(fi object.Info) error {
			parts := nsOf(fi.Name, prefix)
			if len(parts) < 2 {
				return nil
			}
			n := byName[parts[0]]
			if n == nil {
				n = &homeName{Name: parts[0], Href: nameHref(users[i].Name, parts[0])}
				byName[parts[0]] = n
			}
			switch {
			case len(parts) == 2 && parts[1] == "link":
				n.Link = true
			case len(parts) == 3 && parts[1] == "t":
				n.Tags = append(n.Tags, parts[2])
			case len(parts) == 3 && parts[1] == "v":
				n.Versions++
			}
			return nil
		})
		if err != nil {
			w.fail(rw, r, err)
			return
		}
		for _, n := range byName {
			sort.Strings(n.Tags)
			users[i].Names = append(users[i].Names, *n)
		}
		sort.Slice(users[i].Names, func(a, b int) bool { return users[i].Names[a].Name < users[i].Names[b].Name })
		if n := len(users[i].Names); n > webNamesShown {
			users[i].Names, users[i].More = users[i].Names[:webNamesShown], n-webNamesShown
		}
	}
	data.Users = users
	w.render(rw, r, http.StatusOK, "home", page{Title: "Flists", Data: data, Private: vw != nil})
}

type repoView struct {
	Name, Href string
	Link       string
	LinkHref   string
	Tags       []tagView
	Versions   []versionView
}

type tagView struct {
	Tag    string
	Digest digest.ID
	Href   string
}

type versionView struct {
	hubclient.Version
	Href string
	Tags []string
}

func (w *web) repoView(ns string, rp hubclient.Repo) repoView {
	v := repoView{Name: rp.Name, Href: nameHref(ns, rp.Name), Link: rp.Link}
	if rp.Link != "" {
		if t, err := hubclient.ParseRef(rp.Link); err == nil {
			v.LinkHref = nameHref(t.NS, t.Name)
			if !t.Digest.IsZero() {
				v.LinkHref = flistHref(t.NS, t.Name, t.Digest)
			}
		}
	}
	tagsOf := map[digest.ID][]string{}
	for tag, d := range rp.Tags {
		v.Tags = append(v.Tags, tagView{Tag: tag, Digest: d, Href: flistHref(ns, rp.Name, d)})
		tagsOf[d] = append(tagsOf[d], tag)
	}
	sort.Slice(v.Tags, func(i, j int) bool { return v.Tags[i].Tag < v.Tags[j].Tag })
	for i := len(rp.Versions) - 1; i >= 0; i-- { // newest first
		ver := rp.Versions[i]
		tags := tagsOf[ver.Digest]
		sort.Strings(tags)
		v.Versions = append(v.Versions, versionView{Version: ver, Href: flistHref(ns, rp.Name, ver.Digest), Tags: tags})
	}
	return v
}

func (w *web) namespace(rw http.ResponseWriter, r *http.Request) {
	ns := r.PathValue("ns")
	vw := w.viewer(r)
	u, err := w.readUser(r.Context(), vw, ns)
	after := r.URL.Query().Get("after")
	var repos []hubclient.Repo
	var next string
	if err == nil {
		repos, next, err = w.h.reposPage(r.Context(), ns, after, webNamesPage)
	}
	if err != nil {
		w.fail(rw, r, err)
		return
	}
	data := struct {
		User        hubclient.User
		Repos       []repoView
		First, Next string
	}{User: u}
	if after != "" {
		data.First = nsHref(ns)
	}
	if next != "" {
		data.Next = nsHref(ns) + "?" + url.Values{"after": {next}}.Encode()
	}
	for _, rp := range repos {
		data.Repos = append(data.Repos, w.repoView(ns, rp))
	}
	w.render(rw, r, http.StatusOK, "namespace", page{Title: ns, Crumbs: []crumb{{ns, ""}}, Data: data, Private: u.Private})
}

func (w *web) name(rw http.ResponseWriter, r *http.Request) {
	ns, name := r.PathValue("ns"), r.PathValue("name")
	vw := w.viewer(r)
	u, err := w.readUser(r.Context(), vw, ns)
	if err == nil && hubclient.CheckName(name) != nil {
		err = errorf(http.StatusNotFound, "no name %q", name)
	}
	var repos []hubclient.Repo
	if err == nil {
		repos, err = w.h.repos(r.Context(), ns, name)
	}
	if err == nil && len(repos) == 0 {
		err = errorf(http.StatusNotFound, "no %s/%s", ns, name)
	}
	if err != nil {
		w.fail(rw, r, err)
		return
	}
	w.render(rw, r, http.StatusOK, "name", page{Title: ns + "/" + name, Private: u.Private,
		Crumbs: []crumb{{ns, nsHref(ns)}, {name, ""}}, Data: w.repoView(ns, repos[0])})
}

// entryView is one row of a directory page, or the subject of a file page.
type entryView struct {
	Name, Href string
	Kind       string
	Mode       string
	UID, GID   uint32
	Size       uint64
	Mtime      time.Time
	Target     string // symlink target, or a note for hard links and devices
	Dir        bool
	Regular    bool
	Chunks     int // regular files: chunks holding the content
	Xattrs     []string
}

type flistView struct {
	NS, Name   string
	Digest     digest.ID
	Version    hubclient.Version
	Tags       []string
	Signers    []key.Public
	FileSize   int64  // the flist file
	Content    uint64 // bytes of file content
	Entries    uint64
	Chunks     int // chunk references
	Share      shareStats
	ShareErr   string
	Ref        string // NS/NAME@DIGEST
	LocalName  string // file name in the commands
	Path       string // "/" or the shown path
	Up         string // parent directory's link, "" at the root
	Root       bool
	Entry      *entryView  // the shown path when it is not a directory
	Children   []entryView // the shown directory's entries (one page)
	NumEntries uint64      // children in the shown directory
	From       uint64      // first child shown
	Prev, Next string      // paging links
}

func (w *web) flist(rw http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	ns, name := r.PathValue("ns"), r.PathValue("name")
	vw := w.viewer(r)
	u, err := w.readUser(ctx, vw, ns)
	if err == nil && hubclient.CheckName(name) != nil {
		err = errorf(http.StatusNotFound, "no name %q", name)
	}
	var d digest.ID
	if err == nil {
		if d, err = digest.Parse(r.PathValue("digest")); err != nil {
			err = errorf(http.StatusNotFound, "no version %q", r.PathValue("digest"))
		}
	}
	var ver hubclient.Version
	if err == nil {
		err = w.h.getJSON(ctx, versionObj(ns, name, d), &ver)
		if isNotFound(err) {
			err = errorf(http.StatusNotFound, "no %s/%s@%s", ns, name, d)
		}
	}
	var fr *flist.Reader
	if err == nil {
		fr, err = w.reader(ctx, d)
	}
	if err != nil {
		w.fail(rw, r, err)
		return
	}
	p := "/" + strings.Trim(r.PathValue("path"), "/")
	v := flistView{NS: ns, Name: name, Digest: d, Version: ver, FileSize: ver.Size, Ref: ns + "/" + name + "@" + d.String(),
		LocalName: name + ".fl", Path: path.Clean(p), Root: path.Clean(p) == "/"}
	for _, s := range fr.Signatures() {
		v.Signers = append(v.Signers, key.Public(s.Key))
	}
	crumbs := []crumb{{ns, nsHref(ns)}, {name, nameHref(ns, name)}, {"@" + d.Short(), flistHref(ns, name, d)}}
	if v.Root {
		crumbs[2].Href = ""
		v.Content, v.Entries, v.Chunks = fr.StreamSize(), fr.Len(), len(fr.Chunks())
		var repos []hubclient.Repo
		if repos, err = w.h.repos(ctx, ns, name); err == nil && len(repos) > 0 {
			for tag, td := range repos[0].Tags {
				if td == d {
					v.Tags = append(v.Tags, tag)
				}
			}
			sort.Strings(v.Tags)
		}
		if v.Share, err = w.share(ctx, d, fr, w.mayRead(ctx, vw)); err != nil {
			if ctx.Err() != nil {
				return
			}
			w.h.log.Error("computing chunk sharing", "digest", d, "err", err)
			v.ShareErr = "not available (see the hub's log)"
		}
	} else {
		acc := ""
		segs := strings.Split(v.Path[1:], "/")
		for i, s := range segs {
			acc += "/" + s
			c := crumb{s, fileHref(ns, name, d, acc)}
			if i == len(segs)-1 {
				c.Href = ""
			}
			crumbs = append(crumbs, c)
		}
		v.Up = fileHref(ns, name, d, path.Dir(v.Path))
	}
	_, e, err := fr.Lookup(v.Path)
	if err == nil {
		e, err = fr.Resolve(e)
	}
	if err != nil {
		w.fail(rw, r, err)
		return
	}
	if e.Kind() != flist.KindDir {
		ev := w.entryView(fr, ns, name, d, v.Path, e)
		v.Entry = &ev
	} else {
		v.NumEntries = e.NumChildren
		if f, err := strconv.ParseUint(r.URL.Query().Get("from"), 10, 64); err == nil && f < e.NumChildren {
			v.From = f
		}
		end := min(v.From+webPageSize, e.NumChildren)
		for i := v.From; i < end; i++ {
			c, err := fr.Entry(e.FirstChild + i)
			if err != nil {
				w.fail(rw, r, err)
				return
			}
			v.Children = append(v.Children, w.entryView(fr, ns, name, d, path.Join(v.Path, c.Name), c))
		}
		here := fileHref(ns, name, d, v.Path)
		if v.From > 0 {
			v.Prev = here + "?from=" + strconv.FormatUint(v.From-min(v.From, webPageSize), 10)
		}
		if end < e.NumChildren {
			v.Next = here + "?from=" + strconv.FormatUint(end, 10)
		}
	}
	title := ns + "/" + name + "@" + d.Short()
	if !v.Root {
		title += " " + v.Path
	}
	w.render(rw, r, http.StatusOK, "flist", page{Title: title, Crumbs: crumbs, Data: v, Private: u.Private})
}

func (w *web) entryView(fr *flist.Reader, ns, name string, d digest.ID, p string, e *flist.Entry) entryView {
	v := entryView{Name: e.Name, Href: fileHref(ns, name, d, p)}
	if e.IsLink() {
		t, err := fr.Resolve(e)
		if err != nil {
			v.Kind, v.Target = "?", "broken hard link"
			return v
		}
		v.Target = "hard link (entry " + strconv.FormatInt(e.Link, 10) + ")"
		e = t // the attributes are the target's; the name stays the link's
	}
	v.Kind = e.Kind().String()
	v.Mode = lsMode(e)
	v.Regular = e.Kind() == flist.KindRegular
	v.UID, v.GID, v.Size = e.UID, e.GID, e.Size
	v.Mtime = time.Unix(e.Mtime, int64(e.Nsec))
	v.Dir = e.Kind() == flist.KindDir
	switch e.Kind() {
	case flist.KindSymlink:
		v.Target = e.Target
	case flist.KindChar, flist.KindBlock:
		v.Target = fmt.Sprintf("device %d:%d", (e.Rdev>>8)&0xfff|(e.Rdev>>32)&^0xfff, e.Rdev&0xff|(e.Rdev>>12)&^0xff)
	case flist.KindRegular:
		if e.Size > 0 {
			v.Chunks = fr.ChunkAt(e.Offset+e.Size-1) - fr.ChunkAt(e.Offset) + 1
		}
	}
	for _, x := range e.Xattrs {
		v.Xattrs = append(v.Xattrs, x.Name)
	}
	return v
}

// lsMode renders a mode as ls -l does ("drwxr-xr-x", "-rwsr-xr-x").
func lsMode(e *flist.Entry) string {
	b := []byte("?rwxrwxrwx")
	switch e.Kind() {
	case flist.KindRegular:
		b[0] = '-'
	case flist.KindDir:
		b[0] = 'd'
	case flist.KindSymlink:
		b[0] = 'l'
	case flist.KindChar:
		b[0] = 'c'
	case flist.KindBlock:
		b[0] = 'b'
	case flist.KindFIFO:
		b[0] = 'p'
	case flist.KindSocket:
		b[0] = 's'
	}
	perm := e.Perm()
	for i := range 9 {
		if perm&(1<<(8-i)) == 0 {
			b[1+i] = '-'
		}
	}
	special := func(bit uint32, at int, set, unset byte) {
		if perm&bit != 0 {
			if b[at] == '-' {
				b[at] = unset
			} else {
				b[at] = set
			}
		}
	}
	special(0o4000, 3, 's', 'S')
	special(0o2000, 6, 's', 'S')
	special(0o1000, 9, 't', 'T')
	return string(b)
}

// reader opens flist d, from memory when it was opened lately. Flists are
// immutable, so a cached reader never goes stale.
func (w *web) reader(ctx context.Context, d digest.ID) (*flist.Reader, error) {
	if r := w.readers.get(d); r != nil {
		return r, nil
	}
	r, err := w.h.storedFlist(ctx, d)
	if err != nil {
		return nil, err
	}
	w.readers.put(d, r)
	return r, nil
}

// readerCache keeps recently opened flists within a byte budget, the
// oldest going first.
type readerCache struct {
	mu     sync.Mutex
	budget int
	used   int
	order  []digest.ID
	byID   map[digest.ID]*flist.Reader
}

func (c *readerCache) get(d digest.ID) *flist.Reader {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.byID[d]
}

func (c *readerCache) put(d digest.ID, r *flist.Reader) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byID == nil {
		c.byID = map[digest.ID]*flist.Reader{}
	}
	if _, ok := c.byID[d]; ok || len(r.Bytes()) > c.budget {
		return
	}
	for c.used+len(r.Bytes()) > c.budget && len(c.order) > 0 {
		old := c.order[0]
		c.order = c.order[1:]
		c.used -= len(c.byID[old].Bytes())
		delete(c.byID, old)
	}
	c.byID[d] = r
	c.order = append(c.order, d)
	c.used += len(r.Bytes())
}

// shareStats is how much of an flist's content the hub already held
// through other flists: of its distinct chunks, how many (and how many
// bytes) another stored flist also references.
type shareStats struct {
	Unique, Shared           int
	UniqueBytes, SharedBytes uint64
	Others                   int // flists compared with
}

// shareCache remembers each flist's sharing against the set of other
// flists it was computed with, and the chunk fingerprints of flists seen
// (immutable, so kept until the budget evicts them).
type shareCache struct {
	mu      sync.Mutex                  // one computation at a time
	results map[digest.ID][]shareResult // newest last
	sums    map[digest.ID][]digest.ID
	nsums   int
}

type shareResult struct {
	gen digest.ID // hash of the sorted digests compared with
	st  shareStats
}

// maxShareViews bounds the answers kept per flist, one per set of
// namespaces compared with.
const maxShareViews = 4

// maxCachedSums bounds the chunk fingerprints kept in memory (32 bytes
// each: 64 MiB).
const maxCachedSums = 2 << 20

// share computes d's sharing with every other flist a name holds. Flists
// are immutable, so the answer changes only when the set of named flists
// does: it is cached per digest with a hash of that set, and recomputed
// by reading each other flist's chunk table (kept in memory) once.
//
// Only flists that names the viewer may read count: the page must not
// tell who may not read a private namespace how many flists it holds, or
// which chunks they share.
func (w *web) share(ctx context.Context, d digest.ID, fr *flist.Reader, mayRead func(ns string) (bool, error)) (shareStats, error) {
	named := map[digest.ID]bool{}
	readable := map[string]bool{}
	err := w.h.b.Objects.List(ctx, refsPrefix, func(fi object.Info) error {
		parts := nsOf(fi.Name, refsPrefix)
		if len(parts) != 3 {
			return nil
		}
		id, err := digest.Parse(parts[0])
		if err != nil || id == d || named[id] {
			return nil
		}
		ok, seen := readable[parts[1]]
		if !seen {
			if ok, err = mayRead(parts[1]); err != nil {
				return err
			}
			readable[parts[1]] = ok
		}
		if ok {
			named[id] = true
		}
		return nil
	})
	if err != nil {
		return shareStats{}, err
	}
	others := make([]digest.ID, 0, len(named))
	for id := range named {
		others = append(others, id)
	}
	sort.Slice(others, func(i, j int) bool { return bytes.Compare(others[i][:], others[j][:]) < 0 })
	h := digest.New()
	for _, id := range others {
		h.Write(id[:])
	}
	gen := digest.FromHash(h)

	c := &w.shares
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, res := range c.results[d] {
		if res.gen == gen {
			return res.st, nil
		}
	}
	mine := map[digest.ID]uint32{}
	for _, ch := range fr.Chunks() {
		mine[ch.Sum] = ch.Size
	}
	st := shareStats{Unique: len(mine)}
	for _, size := range mine {
		st.UniqueBytes += uint64(size)
	}
	shared := map[digest.ID]bool{}
	for _, o := range others {
		if len(shared) == len(mine) {
			break
		}
		sums, err := w.chunkSums(ctx, o)
		if isNotFound(err) {
			continue // removed meanwhile
		}
		if err != nil {
			return shareStats{}, err
		}
		for _, s := range sums {
			if size, ok := mine[s]; ok && !shared[s] {
				shared[s] = true
				st.Shared++
				st.SharedBytes += uint64(size)
			}
		}
	}
	st.Others = len(others)
	if c.results == nil {
		c.results = map[digest.ID][]shareResult{}
	}
	// A few answers per flist: viewers who may read different sets of
	// namespaces (anonymous, the owner of a private one) see different ones.
	rs := append(c.results[d], shareResult{gen: gen, st: st})
	if len(rs) > maxShareViews {
		rs = rs[len(rs)-maxShareViews:]
	}
	c.results[d] = rs
	return st, nil
}

// chunkSums returns the distinct chunk fingerprints of flist d; the caller
// holds shares.mu.
func (w *web) chunkSums(ctx context.Context, d digest.ID) ([]digest.ID, error) {
	c := &w.shares
	if s, ok := c.sums[d]; ok {
		return s, nil
	}
	fr := w.readers.get(d)
	if fr == nil {
		var err error
		if fr, err = w.h.storedFlist(ctx, d); err != nil {
			return nil, err
		}
	}
	seen := make(map[digest.ID]bool, len(fr.Chunks()))
	sums := make([]digest.ID, 0, len(fr.Chunks()))
	for _, ch := range fr.Chunks() {
		if !seen[ch.Sum] {
			seen[ch.Sum] = true
			sums = append(sums, ch.Sum)
		}
	}
	if c.sums == nil {
		c.sums = map[digest.ID][]digest.ID{}
	}
	for id, s := range c.sums { // over budget: drop arbitrary entries
		if c.nsums+len(sums) <= maxCachedSums {
			break
		}
		c.nsums -= len(s)
		delete(c.sums, id)
	}
	if len(sums) <= maxCachedSums {
		c.sums[d] = sums
		c.nsums += len(sums)
	}
	return sums, nil
}

// humanSize formats a byte count in binary units.
func humanSize(v any) string {
	var n float64
	switch x := v.(type) {
	case int:
		n = float64(x)
	case int64:
		n = float64(x)
	case uint64:
		n = float64(x)
	case uint32:
		n = float64(x)
	default:
		return fmt.Sprint(v)
	}
	if n < 1024 {
		return strconv.FormatFloat(n, 'f', 0, 64) + " B"
	}
	units := []string{"KiB", "MiB", "GiB", "TiB", "PiB"}
	i := -1
	for n >= 1024 && i < len(units)-1 {
		n /= 1024
		i++
	}
	return strconv.FormatFloat(n, 'f', 1, 64) + " " + units[i]
}
