package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"

	"github.com/zosgrid/zos/internal/auth"
	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/flist"
	"github.com/zosgrid/zos/internal/hub/hubclient"
	"github.com/zosgrid/zos/internal/hub/object"
	"github.com/zosgrid/zos/internal/key"
)

// maxJSON bounds a JSON request body.
const maxJSON = 64 << 10

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}

// fail answers err; it is the boundary, so server-side failures are logged
// here and only here.
func (h *Hub) fail(w http.ResponseWriter, r *http.Request, err error) {
	var he *httpError
	body := hubclient.ErrorBody{Error: err.Error()}
	code := http.StatusInternalServerError
	switch {
	case errors.As(err, &he):
		code = he.code
		body = he.body
		body.Error = he.msg
		if code == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", auth.Scheme)
		}
		if he.retry > 0 {
			w.Header().Set("Retry-After", retryAfter(he.retry))
		}
	case errors.Is(err, auth.ErrUnauthorized):
		code = http.StatusUnauthorized
		w.Header().Set("WWW-Authenticate", auth.Scheme)
	case errors.Is(err, errForbidden):
		code = http.StatusForbidden
	case errors.Is(err, ErrSweeping):
		code = http.StatusConflict
	case errors.Is(err, errBusy):
		code = http.StatusServiceUnavailable
		w.Header().Set("Retry-After", "2")
	case isNotFound(err):
		code = http.StatusNotFound
	case r.Context().Err() != nil:
		return // the client left
	}
	if code == http.StatusInternalServerError {
		h.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		body.Error = "internal error (see the hub's log)"
	} else {
		h.log.Debug("request refused", "method", r.Method, "path", r.URL.Path, "status", code, "why", err)
	}
	writeJSON(w, code, body)
}

// readBody reads at most limit bytes of body.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	if r.ContentLength > limit {
		return nil, errorf(http.StatusRequestEntityTooLarge, "body over %d bytes", limit)
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, errorf(http.StatusRequestEntityTooLarge, "body over %d bytes", limit)
		}
		return nil, errorf(http.StatusBadRequest, "reading body: %v", err)
	}
	return b, nil
}

// signed reads the body of a signed request (at most limit bytes) and
// verifies it, cheapest refusals first, and records its nonce only once
// the request is known to be served:
//
//  1. an address refused too often lately is answered 429 at once;
//  2. the signature is checked (a failure is charged to the address);
//  3. a key refused too often, or over its write rate, is answered 429;
//  4. allow (if not nil) decodes the body and says whether the key may do
//     what it asks (a refusal is charged to the key);
//  5. the nonce is recorded (a replay is charged to the address).
//
// So a validly signed request its key may not make costs no write.
func (h *Hub) signed(w http.ResponseWriter, r *http.Request, limit int64, allow func(key.Public, []byte) error) (key.Public, []byte, error) {
	addr := addrBucket(h.lim.client(r))
	if wait := h.lim.refused(addr); wait > 0 {
		h.metrics.limited.WithLabelValues("failures").Inc()
		return key.Public{}, nil, errTooMany(wait, "refused requests from this address")
	}
	body, err := readBody(w, r, limit)
	if err != nil {
		return key.Public{}, nil, err
	}
	hd, err := h.v.Check(r, body)
	if err != nil {
		h.lim.fail(addr)
		return key.Public{}, nil, err
	}
	k := hd.Key
	if err := h.keyLimits(k); err != nil {
		return k, nil, err
	}
	if allow != nil {
		if err := allow(k, body); err != nil {
			if refusal(err) {
				h.lim.fail(keyBucket(k))
			}
			return k, nil, err
		}
	}
	if err := h.v.Use(r.Context(), hd); err != nil {
		if errors.Is(err, auth.ErrUnauthorized) {
			h.lim.fail(addr)
		}
		return k, nil, err
	}
	return k, body, nil
}

// keyLimits refuses (429) a signed write by a key refused too often
// lately or over its write rate, and otherwise takes a write token.
func (h *Hub) keyLimits(k key.Public) error {
	if wait := h.lim.refused(keyBucket(k)); wait > 0 {
		h.metrics.limited.WithLabelValues("failures").Inc()
		return errTooMany(wait, "refused requests by this key")
	}
	if wait := h.lim.write(k); wait > 0 {
		h.metrics.limited.WithLabelValues("writes").Inc()
		return errTooMany(wait, "writes by this key")
	}
	return nil
}

// refusal reports whether err refuses a request for what its key may do
// (as opposed to a bad request or a failure of the hub).
func refusal(err error) bool {
	var he *httpError
	return errors.Is(err, errForbidden) ||
		errors.As(err, &he) && (he.code == http.StatusForbidden || he.code == http.StatusNotFound)
}

// viewer is who reads: anonymous (nil), or the key of a request whose
// signature verified. Its nonce is recorded only when the answer depends
// on the signature (a private namespace was read through it): replaying a
// signed read of public things gives nothing an anonymous read does not.
type viewer struct {
	signed bool // key signed the request
	key    key.Public
	hd     auth.Header
	addr   string
	need   bool // the signature opened something: record the nonce
	spent  bool // the nonce is recorded (or there is none to record)
	// tokens are the namespaces a web page's view tokens open (no
	// signature, no nonce: the token is the credential).
	tokens map[string]bool
}

// reader verifies the signature of a read, if it has one: nil means
// anonymous.
func (h *Hub) reader(w http.ResponseWriter, r *http.Request) (*viewer, error) {
	if r.Header.Get("Authorization") == "" {
		return nil, nil
	}
	addr := addrBucket(h.lim.client(r))
	if wait := h.lim.refused(addr); wait > 0 {
		h.metrics.limited.WithLabelValues("failures").Inc()
		return nil, errTooMany(wait, "refused requests from this address")
	}
	body, err := readBody(w, r, maxJSON)
	if err != nil {
		return nil, err
	}
	hd, err := h.v.Check(r, body)
	if err != nil {
		h.lim.fail(addr)
		return nil, err
	}
	return &viewer{signed: true, key: hd.Key, hd: hd, addr: addr}, nil
}

// writer is the viewer of a signed write, whose nonce is spent.
func writer(k key.Public) *viewer { return &viewer{signed: true, key: k, spent: true} }

// spend records the viewer's nonce if its signature opened something.
func (h *Hub) spend(ctx context.Context, v *viewer) error {
	if v == nil || !v.need || v.spent || !v.signed {
		return nil
	}
	if err := h.v.Use(ctx, v.hd); err != nil {
		if errors.Is(err, auth.ErrUnauthorized) {
			h.lim.fail(v.addr)
		}
		return err
	}
	v.spent = true
	return nil
}

func decodeJSON(body []byte, v any) error {
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return errorf(http.StatusBadRequest, "bad JSON body: %v", err)
	}
	return nil
}

func (h *Hub) register(w http.ResponseWriter, r *http.Request) {
	var reg hubclient.Register
	var owner key.Public
	k, _, err := h.signed(w, r, maxJSON, func(k key.Public, body []byte) error {
		if err := decodeJSON(body, &reg); err != nil {
			return err
		}
		if err := hubclient.CheckNamespace(reg.Name); err != nil {
			return errorf(http.StatusBadRequest, "%v", err)
		}
		owner = k
		if reg.Key != nil {
			owner = *reg.Key
		}
		switch {
		case owner != k && !h.admins[k]:
			return fmt.Errorf("%w: only an admin may register a namespace for another key", errForbidden)
		case h.opt.AdminRegistration && !h.admins[k]:
			return fmt.Errorf("%w: this hub registers users through its admins", errForbidden)
		}
		return nil
	})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	ctx := r.Context()
	// The key first: one namespace per key, decided by create-if-absent.
	if err := h.b.Objects.Create(ctx, keyObj(owner), []byte(reg.Name)); err != nil {
		if errors.Is(err, object.ErrExist) {
			ns, _ := h.b.Objects.Get(ctx, keyObj(owner))
			err = errorf(http.StatusConflict, "key %s already owns namespace %q", owner, ns)
		}
		h.fail(w, r, err)
		return
	}
	u := hubclient.User{Name: reg.Name, Key: owner, Private: reg.Private, Created: h.opt.Now().UTC()}
	b, _ := json.Marshal(u)
	if err := h.b.Objects.Create(ctx, userObj(reg.Name), b); err != nil {
		h.b.Objects.Delete(context.WithoutCancel(ctx), keyObj(owner))
		if errors.Is(err, object.ErrExist) {
			err = errorf(http.StatusConflict, "namespace %q is taken", reg.Name)
		}
		h.fail(w, r, err)
		return
	}
	h.log.Info("user registered", "ns", u.Name, "key", u.Key, "by", k)
	writeJSON(w, http.StatusCreated, u)
}

// Listings page by name: ?limit=N (default and most: pageDefault,
// pageMax) and ?after=NAME, the last name of the previous page. A page
// followed by more carries Link: <...?after=LAST&limit=N>; rel="next".
const (
	pageDefault = 100
	pageMax     = 1000
)

// pageOf reads a listing's limit and cursor.
func pageOf(r *http.Request) (after string, limit int, err error) {
	q := r.URL.Query()
	limit = pageDefault
	if s := q.Get("limit"); s != "" {
		if limit, err = strconv.Atoi(s); err != nil || limit < 1 || limit > pageMax {
			return "", 0, errorf(http.StatusBadRequest, "limit %q: want 1..%d", s, pageMax)
		}
	}
	after = q.Get("after")
	if len(after) > 256 {
		return "", 0, errorf(http.StatusBadRequest, "after: too long")
	}
	return after, limit, nil
}

// nextLink sets the Link header to the page after last.
func nextLink(w http.ResponseWriter, r *http.Request, last string, limit int) {
	q := url.Values{"after": {last}, "limit": {strconv.Itoa(limit)}}
	w.Header().Set("Link", "<"+r.URL.Path+"?"+q.Encode()+`>; rel="next"`)
}

// names lists the distinct first segments of object names under prefix,
// sorted: from object names alone, no object is read.
func (h *Hub) names(ctx context.Context, prefix string) ([]string, error) {
	seen := map[string]bool{}
	err := h.b.Objects.List(ctx, prefix, func(fi object.Info) error {
		n, _, _ := strings.Cut(strings.TrimPrefix(fi.Name, prefix), "/")
		seen[n] = true
		return nil
	})
	out := make([]string, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	sort.Strings(out)
	return out, err
}

// usersPage returns up to limit users v may see, by name after after, and
// whether more follow. Only the users of the page are read.
func (h *Hub) usersPage(ctx context.Context, v *viewer, after string, limit int) ([]hubclient.User, bool, error) {
	names, err := h.names(ctx, usersPrefix)
	if err != nil {
		return nil, false, err
	}
	users := []hubclient.User{}
	for _, n := range names[sort.SearchStrings(names, after+"\x00"):] {
		var u hubclient.User
		if err := h.getJSON(ctx, userObj(n), &u); err != nil {
			if isNotFound(err) {
				continue
			}
			return nil, false, err
		}
		if !h.visible(v, u) {
			continue
		}
		if len(users) == limit {
			return users, true, nil
		}
		users = append(users, u)
	}
	return users, false, nil
}

// reposPage returns up to limit names of ns after after, and the cursor
// of the next page ("" when none follows). Only the names of the page are
// read.
func (h *Hub) reposPage(ctx context.Context, ns, after string, limit int) ([]hubclient.Repo, string, error) {
	names, err := h.names(ctx, reposPrefix+ns+"/")
	if err != nil {
		return nil, "", err
	}
	names = names[sort.SearchStrings(names, after+"\x00"):]
	next := ""
	if len(names) > limit {
		names = names[:limit]
		next = names[limit-1]
	}
	out := make([]hubclient.Repo, 0, len(names))
	for _, n := range names {
		rs, err := h.repos(ctx, ns, n)
		if err != nil {
			return nil, "", err
		}
		out = append(out, rs...) // none if removed meanwhile
	}
	return out, next, nil
}

// listUsers answers GET /v1/users: the public namespaces, and the private
// ones the signer may read (its own; every one for an admin), a page at a
// time.
func (h *Hub) listUsers(w http.ResponseWriter, r *http.Request) {
	after, limit, err := pageOf(r)
	var k *viewer
	if err == nil {
		k, err = h.reader(w, r)
	}
	var users []hubclient.User
	var more bool
	if err == nil {
		users, more, err = h.usersPage(r.Context(), k, after, limit)
	}
	if err == nil {
		err = h.spend(r.Context(), k)
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if more {
		nextLink(w, r, users[len(users)-1].Name, limit)
	}
	writeJSON(w, http.StatusOK, users)
}

func (h *Hub) getUser(w http.ResponseWriter, r *http.Request) {
	ns := r.PathValue("ns")
	k, err := h.reader(w, r)
	if err == nil {
		err = h.mayRead(r.Context(), k, ns)
	}
	var u hubclient.User
	if err == nil {
		u, err = h.user(r.Context(), ns)
	}
	if err == nil {
		err = h.spend(r.Context(), k)
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, u)
}

func (h *Hub) updateUser(w http.ResponseWriter, r *http.Request) {
	ns := r.PathValue("ns")
	var up hubclient.UserUpdate
	_, _, err := h.signed(w, r, maxJSON, func(k key.Public, body []byte) error {
		if err := h.mayWrite(r.Context(), k, ns); err != nil {
			return err
		}
		return decodeJSON(body, &up)
	})
	var u hubclient.User
	if err == nil {
		u, err = h.user(r.Context(), ns)
	}
	if err == nil {
		u.Private = up.Private
		err = h.putJSON(r.Context(), userObj(ns), u)
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, u)
}

// repos reads the names under ns (name "" for all of them).
func (h *Hub) repos(ctx context.Context, ns, name string) ([]hubclient.Repo, error) {
	prefix := reposPrefix + ns + "/"
	if name != "" {
		prefix = repoObj(ns, name)
	}
	byName := map[string]*hubclient.Repo{}
	get := func(n string) *hubclient.Repo {
		if byName[n] == nil {
			byName[n] = &hubclient.Repo{NS: ns, Name: n}
		}
		return byName[n]
	}
	err := h.b.Objects.List(ctx, prefix, func(fi object.Info) error {
		parts := nsOf(fi.Name, reposPrefix+ns+"/") // NAME, then link | v/D | t/TAG
		if len(parts) < 2 {
			return nil
		}
		repo := get(parts[0])
		var err error
		switch {
		case len(parts) == 2 && parts[1] == "link":
			var l hubclient.LinkRequest
			err = h.getJSON(ctx, fi.Name, &l)
			repo.Link = l.Target
		case len(parts) == 3 && parts[1] == "v":
			var v hubclient.Version
			if err = h.getJSON(ctx, fi.Name, &v); err == nil {
				repo.Versions = append(repo.Versions, v)
			}
		case len(parts) == 3 && parts[1] == "t":
			var t hubclient.TagRequest
			if err = h.getJSON(ctx, fi.Name, &t); err == nil {
				if repo.Tags == nil {
					repo.Tags = map[string]digest.ID{}
				}
				repo.Tags[parts[2]] = t.Digest
			}
		}
		if isNotFound(err) {
			return nil // removed while listing
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	out := make([]hubclient.Repo, 0, len(byName))
	for _, r := range byName {
		sort.Slice(r.Versions, func(i, j int) bool { return r.Versions[i].Pushed.Before(r.Versions[j].Pushed) })
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (h *Hub) listRepos(w http.ResponseWriter, r *http.Request) {
	ns := r.PathValue("ns")
	after, limit, err := pageOf(r)
	var k *viewer
	if err == nil {
		k, err = h.reader(w, r)
	}
	if err == nil {
		err = h.mayRead(r.Context(), k, ns)
	}
	var repos []hubclient.Repo
	var next string
	if err == nil {
		repos, next, err = h.reposPage(r.Context(), ns, after, limit)
	}
	if err == nil {
		err = h.spend(r.Context(), k)
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if next != "" {
		nextLink(w, r, next, limit)
	}
	writeJSON(w, http.StatusOK, repos)
}

func (h *Hub) getRepo(w http.ResponseWriter, r *http.Request) {
	ns, name := r.PathValue("ns"), r.PathValue("name")
	k, err := h.reader(w, r)
	if err == nil {
		err = hubclient.CheckName(name)
		if err != nil {
			err = errorf(http.StatusBadRequest, "%v", err)
		}
	}
	if err == nil {
		err = h.mayRead(r.Context(), k, ns)
	}
	var repos []hubclient.Repo
	if err == nil {
		repos, err = h.repos(r.Context(), ns, name)
	}
	if err == nil && len(repos) == 0 {
		err = errorf(http.StatusNotFound, "no %s/%s", ns, name)
	}
	if err == nil {
		err = h.spend(r.Context(), k)
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, repos[0])
}

// pathRef parses {ns}/{ref} of a request.
func pathRef(r *http.Request) (hubclient.Ref, error) {
	ref, err := hubclient.ParseRef(r.PathValue("ns") + "/" + r.PathValue("ref"))
	if err != nil {
		return ref, errorf(http.StatusBadRequest, "%v", err)
	}
	return ref, nil
}

func (h *Hub) push(w http.ResponseWriter, r *http.Request) {
	result := "error"
	defer func() { h.metrics.pushes.WithLabelValues(result).Inc() }()
	ref, err := pathRef(r)
	if err == nil && !ref.Digest.IsZero() {
		err = errorf(http.StatusBadRequest, "push to NS/NAME[:TAG], not to a digest")
	}
	if err != nil {
		result = "invalid"
		h.fail(w, r, err)
		return
	}
	k, body, err := h.signed(w, r, hubclient.MaxFlistSize, func(k key.Public, _ []byte) error {
		return h.mayWrite(r.Context(), k, ref.NS)
	})
	if err != nil {
		result = "refused"
		h.fail(w, r, err)
		return
	}
	pushed, result, err := h.publish(r.Context(), ref, body, k)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.log.Info("flist pushed", "ref", pushed.Ref, "digest", pushed.Digest, "by", k, "bytes", len(body))
	writeJSON(w, http.StatusCreated, pushed)
}

// publish checks the flist file body and makes ref hold it: a push, and
// the end of a conversion. result is the zos_hub_flist_pushes_total label.
func (h *Hub) publish(ctx context.Context, ref hubclient.Ref, body []byte, by key.Public) (_ hubclient.Pushed, result string, _ error) {
	fl, err := flist.Open(body)
	if err == nil {
		err = fl.Validate()
	}
	var signers []key.Public
	if err == nil && len(fl.Signatures()) > 0 {
		signers, err = fl.VerifySignatures()
	}
	if err != nil {
		return hubclient.Pushed{}, "invalid", errorf(http.StatusBadRequest, "not a valid flist: %v", err)
	}
	tag := ref.Tag
	if tag == "" {
		tag = hubclient.DefaultTag
	}
	v := hubclient.Version{Digest: fl.Digest(), Size: int64(len(body)), Pushed: h.opt.Now().UTC(), By: by, Signers: signers}
	if err := h.commit(ctx, ref.NS, ref.Name, tag, v, fl, true); err != nil {
		var he *httpError
		result = "error"
		switch {
		case errors.As(err, &he) && he.body.MissingCount > 0:
			result = "missing_chunks"
		case errors.Is(err, errBusy):
			result = "busy"
		}
		return hubclient.Pushed{}, result, err
	}
	return hubclient.Pushed{Ref: ref.NS + "/" + ref.Name + ":" + tag, Digest: v.Digest, Size: v.Size, Signers: signers}, "ok", nil
}

// serveFlist answers with the stored file of d.
func (h *Hub) serveFlist(w http.ResponseWriter, r *http.Request, d digest.ID, resolvedRef string) {
	fl, err := h.storedFlist(r.Context(), d)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	b := fl.Bytes()
	var signers []string
	for _, s := range fl.Signatures() {
		signers = append(signers, key.Public(s.Key).String()) // verified when stored
	}
	hd := w.Header()
	hd.Set("Content-Type", hubclient.ContentType)
	hd.Set("Content-Length", strconv.Itoa(len(b)))
	hd.Set(hubclient.HeaderDigest, d.String())
	hd.Set("ETag", `"`+d.String()+`"`)
	if len(signers) > 0 {
		hd.Set(hubclient.HeaderSigners, strings.Join(signers, ","))
	}
	if resolvedRef != "" {
		hd.Set(hubclient.HeaderRef, resolvedRef)
	}
	if r.Method == http.MethodHead {
		return
	}
	w.Write(b)
}

func (h *Hub) pull(w http.ResponseWriter, r *http.Request) {
	ref, err := pathRef(r)
	var k *viewer
	if err == nil {
		k, err = h.reader(w, r)
	}
	var res resolved
	if err == nil {
		res, err = h.resolve(r.Context(), ref, k)
	}
	if err == nil {
		err = h.spend(r.Context(), k)
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if ref.Digest.IsZero() {
		w.Header().Set("Cache-Control", "no-cache") // tags move
	} else {
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	}
	h.serveFlist(w, r, res.digest, res.ns+"/"+res.name+"@"+res.digest.String())
}

func (h *Hub) pullDigest(w http.ResponseWriter, r *http.Request) {
	d, err := digest.Parse(r.PathValue("digest"))
	if err != nil {
		h.fail(w, r, errorf(http.StatusBadRequest, "%v", err))
		return
	}
	k, err := h.reader(w, r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	readable, err := h.holder(r.Context(), d, func(ns string) error { return h.mayRead(r.Context(), k, ns) })
	if err == nil && readable == "" {
		err = errorf(http.StatusNotFound, "no name you may read holds flist %s", d)
	}
	if err == nil {
		err = h.spend(r.Context(), k)
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	h.serveFlist(w, r, d, readable)
}

// holder returns the first name ("NS/NAME@DIGEST") holding flist d whose
// namespace may passes, or "" for none. A private image's digest alone
// does not open it, and a digest held only by names one may not read (or
// write) is as absent as one no name holds.
func (h *Hub) holder(ctx context.Context, d digest.ID, may func(ns string) error) (string, error) {
	found := ""
	err := h.b.Objects.List(ctx, refsPrefix+d.String()+"/", func(fi object.Info) error {
		parts := nsOf(fi.Name, refsPrefix+d.String()+"/")
		if len(parts) != 2 || found != "" {
			return nil
		}
		if err := may(parts[0]); err != nil {
			if isNotFound(err) || errors.Is(err, errForbidden) {
				return nil
			}
			return err
		}
		found = parts[0] + "/" + parts[1] + "@" + d.String()
		return nil
	})
	return found, err
}

func (h *Hub) remove(w http.ResponseWriter, r *http.Request) {
	ref, err := pathRef(r)
	var k key.Public
	if err == nil {
		k, _, err = h.signed(w, r, 0, func(k key.Public, _ []byte) error {
			return h.mayWrite(r.Context(), k, ref.NS)
		})
	}
	if err == nil {
		err = h.removeRef(r.Context(), ref)
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.log.Info("removed", "ref", ref.String(), "by", k)
	w.WriteHeader(http.StatusNoContent)
}

// removeRef deletes a tag, a version (and its tags) or a whole name. The
// version record goes before its ref, so a GC never sees a version whose
// ref is gone.
func (h *Hub) removeRef(ctx context.Context, ref hubclient.Ref) error {
	o := h.b.Objects
	switch {
	case ref.Tag != "":
		if _, err := o.Stat(ctx, tagObj(ref.NS, ref.Name, ref.Tag)); err != nil {
			if isNotFound(err) {
				return errorf(http.StatusNotFound, "no %s", ref)
			}
			return err
		}
		return o.Delete(ctx, tagObj(ref.NS, ref.Name, ref.Tag))
	case !ref.Digest.IsZero():
		if _, err := o.Stat(ctx, versionObj(ref.NS, ref.Name, ref.Digest)); err != nil {
			if isNotFound(err) {
				return errorf(http.StatusNotFound, "no %s", ref)
			}
			return err
		}
		repos, err := h.repos(ctx, ref.NS, ref.Name)
		if err != nil {
			return err
		}
		for _, rp := range repos {
			for tag, d := range rp.Tags {
				if d == ref.Digest {
					if err := o.Delete(ctx, tagObj(ref.NS, ref.Name, tag)); err != nil {
						return err
					}
				}
			}
		}
		if err := o.Delete(ctx, versionObj(ref.NS, ref.Name, ref.Digest)); err != nil {
			return err
		}
		return o.Delete(ctx, refObj(ref.Digest, ref.NS, ref.Name))
	}
	var names []string
	if err := o.List(ctx, repoObj(ref.NS, ref.Name), func(fi object.Info) error {
		names = append(names, fi.Name)
		return nil
	}); err != nil {
		return err
	}
	if len(names) == 0 {
		return errorf(http.StatusNotFound, "no %s", ref)
	}
	for _, n := range names {
		if err := o.Delete(ctx, n); err != nil {
			return err
		}
		if d, ok := strings.CutPrefix(n, repoObj(ref.NS, ref.Name)+"v/"); ok {
			if id, err := digest.Parse(d); err == nil {
				if err := o.Delete(ctx, refObj(id, ref.NS, ref.Name)); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// signedWrite reads a signed request whose key may write in ns, and
// decodes its JSON body into v.
func (h *Hub) signedWrite(w http.ResponseWriter, r *http.Request, ns string, v any) (key.Public, error) {
	k, _, err := h.signed(w, r, maxJSON, func(k key.Public, body []byte) error {
		if err := h.mayWrite(r.Context(), k, ns); err != nil {
			return err
		}
		return decodeJSON(body, v)
	})
	return k, err
}

func (h *Hub) tag(w http.ResponseWriter, r *http.Request) {
	ns, name, tag := r.PathValue("ns"), r.PathValue("name"), r.PathValue("tag")
	err := errors.Join(hubclient.CheckNamespace(ns), hubclient.CheckName(name), hubclient.CheckTag(tag))
	if err != nil {
		err = errorf(http.StatusBadRequest, "%v", err)
	}
	var k key.Public
	var t hubclient.TagRequest
	if err == nil {
		k, err = h.signedWrite(w, r, ns, &t)
	}
	if err == nil {
		if _, serr := h.b.Objects.Stat(r.Context(), versionObj(ns, name, t.Digest)); isNotFound(serr) {
			err = errorf(http.StatusNotFound, "%s/%s has no version %s: push or promote it first", ns, name, t.Digest)
		} else {
			err = serr
		}
	}
	if err == nil {
		err = h.putJSON(r.Context(), tagObj(ns, name, tag), t)
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.log.Info("tagged", "ref", ns+"/"+name+":"+tag, "digest", t.Digest, "by", k)
	w.WriteHeader(http.StatusNoContent)
}

func (h *Hub) link(w http.ResponseWriter, r *http.Request) {
	ns, name := r.PathValue("ns"), r.PathValue("name")
	err := errors.Join(hubclient.CheckNamespace(ns), hubclient.CheckName(name))
	if err != nil {
		err = errorf(http.StatusBadRequest, "%v", err)
	}
	var k key.Public
	var l hubclient.LinkRequest
	if err == nil {
		k, err = h.signedWrite(w, r, ns, &l)
	}
	var target hubclient.Ref
	if err == nil {
		if target, err = hubclient.ParseRef(l.Target); err != nil {
			err = errorf(http.StatusBadRequest, "%v", err)
		} else if target.NS == ns && target.Name == name {
			err = errorf(http.StatusBadRequest, "a link cannot point at itself")
		}
	}
	if err == nil {
		// A link into a namespace the linker may not read would tell them
		// it exists; reads through the link check every hop anyway.
		err = h.mayRead(r.Context(), writer(k), target.NS)
	}
	if err == nil {
		repos, rerr := h.repos(r.Context(), ns, name)
		if rerr != nil {
			err = rerr
		} else if len(repos) > 0 && len(repos[0].Versions)+len(repos[0].Tags) > 0 {
			err = errorf(http.StatusConflict, "%s/%s holds flists; remove them first", ns, name)
		}
	}
	if err == nil {
		err = h.putJSON(r.Context(), linkObj(ns, name), hubclient.LinkRequest{Target: target.String()})
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.log.Info("linked", "name", ns+"/"+name, "target", target.String(), "by", k)
	w.WriteHeader(http.StatusNoContent)
}

func (h *Hub) promote(w http.ResponseWriter, r *http.Request) {
	result := "error"
	defer func() { h.metrics.pushes.WithLabelValues(result).Inc() }()
	dst, err := pathRef(r)
	if err == nil && !dst.Digest.IsZero() {
		err = errorf(http.StatusBadRequest, "promote to NS/NAME[:TAG], not to a digest")
	}
	var k key.Public
	var p hubclient.PromoteRequest
	if err == nil {
		k, err = h.signedWrite(w, r, dst.NS, &p)
	}
	var src hubclient.Ref
	if err == nil {
		if src, err = hubclient.ParseRef(p.Source); err != nil {
			err = errorf(http.StatusBadRequest, "%v", err)
		}
	}
	var res resolved
	if err == nil {
		res, err = h.resolve(r.Context(), src, writer(k))
	}
	tag := dst.Tag
	if tag == "" {
		tag = hubclient.DefaultTag
	}
	v := hubclient.Version{Digest: res.digest, Size: res.version.Size, Pushed: h.opt.Now().UTC(), By: k,
		Signers: res.version.Signers, From: res.ns + "/" + res.name + "@" + res.digest.String()}
	if err == nil {
		err = h.commit(r.Context(), dst.NS, dst.Name, tag, v, nil, false)
	}
	if err != nil {
		if errors.Is(err, errBusy) {
			result = "busy"
		}
		h.fail(w, r, err)
		return
	}
	result = "ok"
	h.log.Info("promoted", "ref", dst.NS+"/"+dst.Name+":"+tag, "from", v.From, "by", k)
	writeJSON(w, http.StatusCreated, hubclient.Pushed{Ref: dst.NS + "/" + dst.Name + ":" + tag, Digest: v.Digest, Size: v.Size, Signers: v.Signers})
}

func (h *Hub) gcEndpoint(w http.ResponseWriter, r *http.Request) {
	_, _, err := h.signed(w, r, 0, func(k key.Public, _ []byte) error {
		if !h.admins[k] {
			return fmt.Errorf("%w: only admins run garbage collection", errForbidden)
		}
		return nil
	})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	dry := r.URL.Query().Get("dry_run") == "1"
	stats, err := GC(r.Context(), h.b, GCOptions{DryRun: dry, Logger: h.log, Now: h.opt.Now})
	h.metrics.countGC(stats, err)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, stats)
}
