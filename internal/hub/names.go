package hub

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/zosgrid/zos/internal/chunk"
	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/flist"
	"github.com/zosgrid/zos/internal/hub/hubclient"
	"github.com/zosgrid/zos/internal/hub/object"
	"github.com/zosgrid/zos/internal/key"
	"github.com/zosgrid/zos/internal/store"
)

// Object names (docs/HUB.md, "Backend layout").
const (
	sweepName     = "gc/sweep"
	pendingPrefix = "pending/"
	flistsPrefix  = "flists/"
	refsPrefix    = "refs/"
	reposPrefix   = "repos/"
	usersPrefix   = "users/"
	keysPrefix    = "keys/"
)

func userObj(ns string) string                       { return usersPrefix + ns }
func keyObj(k key.Public) string                     { return keysPrefix + hex.EncodeToString(k[:]) }
func flistObj(d digest.ID) string                    { return flistsPrefix + d.String() }
func repoObj(ns, name string) string                 { return reposPrefix + ns + "/" + name + "/" }
func versionObj(ns, name string, d digest.ID) string { return repoObj(ns, name) + "v/" + d.String() }
func tagObj(ns, name, tag string) string             { return repoObj(ns, name) + "t/" + tag }
func linkObj(ns, name string) string                 { return repoObj(ns, name) + "link" }
func refObj(d digest.ID, ns, name string) string {
	return refsPrefix + d.String() + "/" + ns + "/" + name
}

// httpError is an error with the status it maps to at the boundary.
type httpError struct {
	code  int
	msg   string
	body  hubclient.ErrorBody
	retry time.Duration // 429: Retry-After
}

func (e *httpError) Error() string { return e.msg }

func errorf(code int, format string, args ...any) error {
	return &httpError{code: code, msg: fmt.Sprintf(format, args...)}
}

var (
	errForbidden = errors.New("forbidden")
	// errBusy: a garbage collector is sweeping; try again shortly.
	errBusy = errors.New("a garbage collection is sweeping; try again shortly")
)

// isNotFound reports an absent object or chunk, or a refusal that says
// "not found" (404), such as a hidden private namespace.
func isNotFound(err error) bool {
	var he *httpError
	return errors.Is(err, object.ErrNotFound) || errors.Is(err, store.ErrNotFound) ||
		errors.As(err, &he) && he.code == http.StatusNotFound
}

func (h *Hub) getJSON(ctx context.Context, name string, v any) error {
	b, err := h.b.Objects.Get(ctx, name)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("object %s: %w", name, err)
	}
	return nil
}

func (h *Hub) putJSON(ctx context.Context, name string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return h.b.Objects.Put(ctx, name, b)
}

func (h *Hub) user(ctx context.Context, ns string) (hubclient.User, error) {
	var u hubclient.User
	if hubclient.CheckNamespace(ns) != nil {
		return u, errorf(http.StatusNotFound, "no user %q", ns)
	}
	err := h.getJSON(ctx, userObj(ns), &u)
	if isNotFound(err) {
		return u, errorf(http.StatusNotFound, "no user %q", ns)
	}
	return u, err
}

func (h *Hub) userByKey(ctx context.Context, k key.Public) (hubclient.User, error) {
	ns, err := h.b.Objects.Get(ctx, keyObj(k))
	if err != nil {
		return hubclient.User{}, err
	}
	return h.user(ctx, string(ns))
}

// hidden is the answer to anyone but its owner (and the admins) about a
// private namespace, and to everyone about an absent one: the same 404 with
// the same words, so that a refusal does not tell one from the other.
func hidden(ns string) error {
	return errorf(http.StatusNotFound, "no namespace %q (a private namespace answers only requests signed by its owner)", ns)
}

// mayWrite reports whether k may change namespace ns: its owner or an
// admin. Another key is refused with 403 in a public namespace, and told
// that a private one does not exist.
func (h *Hub) mayWrite(ctx context.Context, k key.Public, ns string) error {
	u, err := h.user(ctx, ns)
	if err != nil {
		if isNotFound(err) {
			return hidden(ns)
		}
		return err
	}
	if u.Key == k || h.admins[k] {
		return nil
	}
	if u.Private {
		return hidden(ns)
	}
	return fmt.Errorf("%w: namespace %s belongs to another key", errForbidden, ns)
}

// mayRead reports whether v (nil: anonymous) may read ns. A private
// namespace is readable by its owner and the admins only; to anyone else
// it does not exist (hidden).
func (h *Hub) mayRead(ctx context.Context, v *viewer, ns string) error {
	u, err := h.user(ctx, ns)
	if err != nil {
		if isNotFound(err) {
			return hidden(ns)
		}
		return err
	}
	if h.visible(v, u) {
		return nil
	}
	return hidden(ns)
}

// visible reports whether u's namespace shows to v (nil: anonymous), and
// notes in v when it is its signature that shows it.
func (h *Hub) visible(v *viewer, u hubclient.User) bool {
	if !u.Private {
		return true
	}
	if v == nil {
		return false
	}
	if v.tokens[u.Name] || v.signed && (v.key == u.Key || h.admins[v.key]) {
		v.need = true
		return true
	}
	return false
}

// resolved is where a reference leads.
type resolved struct {
	ns, name string
	digest   digest.ID
	version  hubclient.Version
}

// maxLinkHops bounds link chains (and so link cycles).
const maxLinkHops = 8

// resolve follows links and tags from ref to a version, checking that
// reader may read every namespace on the way.
func (h *Hub) resolve(ctx context.Context, ref hubclient.Ref, reader *viewer) (resolved, error) {
	for hop := 0; ; hop++ {
		if hop > maxLinkHops {
			return resolved{}, errorf(http.StatusConflict, "%s: more than %d links (a cycle?)", ref, maxLinkHops)
		}
		if err := h.mayRead(ctx, reader, ref.NS); err != nil {
			return resolved{}, err
		}
		var l hubclient.LinkRequest
		err := h.getJSON(ctx, linkObj(ref.NS, ref.Name), &l)
		if err == nil {
			next, err := hubclient.ParseRef(l.Target)
			if err != nil {
				return resolved{}, fmt.Errorf("link %s/%s: %w", ref.NS, ref.Name, err)
			}
			if next.Tag == "" && next.Digest.IsZero() { // the link forwards the tag or digest
				next.Tag, next.Digest = ref.Tag, ref.Digest
			}
			ref = next
			continue
		}
		if !isNotFound(err) {
			return resolved{}, err
		}
		d := ref.Digest
		if d.IsZero() {
			tag := ref.Tag
			if tag == "" {
				tag = hubclient.DefaultTag
			}
			var t hubclient.TagRequest
			err := h.getJSON(ctx, tagObj(ref.NS, ref.Name, tag), &t)
			if isNotFound(err) {
				return resolved{}, errorf(http.StatusNotFound, "no %s/%s:%s", ref.NS, ref.Name, tag)
			}
			if err != nil {
				return resolved{}, err
			}
			d = t.Digest
		}
		var v hubclient.Version
		err = h.getJSON(ctx, versionObj(ref.NS, ref.Name, d), &v)
		if isNotFound(err) {
			return resolved{}, errorf(http.StatusNotFound, "no %s/%s@%s", ref.NS, ref.Name, d)
		}
		if err != nil {
			return resolved{}, err
		}
		return resolved{ns: ref.NS, name: ref.Name, digest: d, version: v}, nil
	}
}

// errBadFlist marks a stored flist file that does not parse or is not
// the digest it is stored under: reading it again will not help.
var errBadFlist = errors.New("is corrupt")

// storedFlist reads and parses the stored flist file of d. A missing file
// is an error wrapping object.ErrNotFound; a corrupt one wraps errBadFlist.
func (h *Hub) storedFlist(ctx context.Context, d digest.ID) (*flist.Reader, error) {
	b, err := h.b.Objects.Get(ctx, flistObj(d))
	if err != nil {
		return nil, err
	}
	r, err := flist.Open(b)
	if err == nil && r.Digest() != d {
		err = fmt.Errorf("its digest is %s", r.Digest().Short())
	}
	if err != nil {
		return nil, fmt.Errorf("stored flist %s %w: %v", d.Short(), errBadFlist, err)
	}
	return r, nil
}

// storeFlist writes the flist file for r, or, if one is stored, adds the
// signatures r has that it lacks. (Two concurrent merges may keep only one
// side's new signatures; a later push restores them.)
func (h *Hub) storeFlist(ctx context.Context, r *flist.Reader) error {
	name := flistObj(r.Digest())
	err := h.b.Objects.Create(ctx, name, r.Bytes())
	if !errors.Is(err, object.ErrExist) {
		return err
	}
	old, err := h.b.Objects.Get(ctx, name)
	if isNotFound(err) {
		return h.b.Objects.Put(ctx, name, r.Bytes())
	}
	if err != nil {
		return err
	}
	or, err := flist.Open(old)
	if err != nil || or.Digest() != r.Digest() {
		h.log.Error("stored flist is corrupt; replacing it", "digest", r.Digest(), "err", err)
		return h.b.Objects.Put(ctx, name, r.Bytes())
	}
	sigs := map[[32]byte]flist.Signature{}
	for _, s := range or.Signatures() {
		sigs[s.Key] = s
	}
	added := false
	for _, s := range r.Signatures() {
		if o, ok := sigs[s.Key]; !ok || o != s {
			sigs[s.Key], added = s, true
		}
	}
	if !added {
		return nil
	}
	merged := append(append([]byte(nil), r.Body()...), trailer(sigs)...)
	if _, err := flist.Open(merged); err != nil {
		return fmt.Errorf("merging signatures: %w", err)
	}
	return h.b.Objects.Put(ctx, name, merged)
}

// trailer encodes a signature trailer (docs/FORMAT.md): magic, count,
// (key, signature) sorted by key.
func trailer(sigs map[[32]byte]flist.Signature) []byte {
	list := make([]flist.Signature, 0, len(sigs))
	for _, s := range sigs {
		list = append(list, s)
	}
	sort.Slice(list, func(i, j int) bool { return bytes.Compare(list[i].Key[:], list[j].Key[:]) < 0 })
	b := append([]byte("zossigs\x00"), 0, 0)
	binary.LittleEndian.PutUint16(b[8:], uint16(len(list)))
	for _, s := range list {
		b = append(append(b, s.Key[:]...), s.Sig[:]...)
	}
	return b
}

// waitSweep returns once no garbage collector is sweeping (or its marker is
// stale), or errBusy after FenceWait. See gc.go for why pushes wait.
func (h *Hub) waitSweep(ctx context.Context) error {
	deadline := time.Now().Add(h.opt.FenceWait)
	for {
		fi, err := h.b.Objects.Stat(ctx, sweepName)
		if isNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		if h.opt.Now().Sub(fi.ModTime) > maxSweep {
			h.log.Warn("ignoring a stale garbage-collection marker", "since", fi.ModTime)
			return nil
		}
		if time.Now().After(deadline) {
			return errBusy
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// commit makes ns/name hold the flist digest d (stored, or stored from
// fl) and points tag at it, following the protocol that keeps a
// concurrent garbage collector from deleting what it needs (gc.go):
//
//  1. the flist file is stored (from here on, a GC that lists it keeps its chunks);
//  2. a pending marker names d (a GC that lists it keeps the file);
//  3. wait while a GC sweeps;
//  4. the file is still there (else stored again, or the promote fails);
//  5. with check, every chunk the flist needs is present, delta bases included;
//  6. the names are written: ref, version, tag;
//  7. the pending marker is removed.
func (h *Hub) commit(ctx context.Context, ns, name, tag string, v hubclient.Version, fl *flist.Reader, check bool) error {
	d := v.Digest
	if fl != nil {
		if err := h.storeFlist(ctx, fl); err != nil {
			return err
		}
	}
	var rnd [8]byte
	rand.Read(rnd[:])
	pending := pendingPrefix + d.String() + "." + hex.EncodeToString(rnd[:])
	if err := h.b.Objects.Create(ctx, pending, nil); err != nil {
		return err
	}
	defer h.b.Objects.Delete(context.WithoutCancel(ctx), pending)
	if err := h.waitSweep(ctx); err != nil {
		return err
	}
	if _, err := h.b.Objects.Stat(ctx, flistObj(d)); isNotFound(err) {
		if fl == nil {
			return errorf(http.StatusNotFound, "flist %s is gone", d)
		}
		if err := h.b.Objects.Put(ctx, flistObj(d), fl.Bytes()); err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	if check {
		missing, err := h.missingClosure(ctx, fl.Chunks())
		if err != nil {
			return err
		}
		if len(missing) > 0 {
			e := &httpError{code: http.StatusConflict,
				msg: fmt.Sprintf("the hub lacks %d chunks of flist %s: upload them first (zos flist pack --store HUB/chunks)", len(missing), d.Short())}
			e.body.Missing = missing[:min(len(missing), hubclient.MaxMissingListed)]
			e.body.MissingCount = len(missing)
			return e
		}
	}
	if _, err := h.b.Objects.Stat(ctx, linkObj(ns, name)); err == nil {
		return errorf(http.StatusConflict, "%s/%s is a link; remove it first", ns, name)
	} else if !isNotFound(err) {
		return err
	}
	if err := h.b.Objects.Put(ctx, refObj(d, ns, name), nil); err != nil {
		return err
	}
	var old hubclient.Version
	if err := h.getJSON(ctx, versionObj(ns, name, d), &old); err == nil {
		v.Pushed, v.By = old.Pushed, old.By // a version is pushed once; later pushes only tag it
	}
	if err := h.putJSON(ctx, versionObj(ns, name, d), v); err != nil {
		return err
	}
	if err := h.putJSON(ctx, tagObj(ns, name, tag), hubclient.TagRequest{Digest: d}); err != nil {
		return err
	}
	h.rc.add(d)
	return nil
}

// missingClosure returns the chunks (and delta bases of chunks, to any
// depth) that the hub lacks, reading only blob headers.
func (h *Hub) missingClosure(ctx context.Context, refs []flist.Chunk) ([]digest.ID, error) {
	seen := map[digest.ID]bool{}
	var frontier []digest.ID
	for _, c := range refs {
		id := chunkID(c)
		if !seen[id] {
			seen[id] = true
			frontier = append(frontier, id)
		}
	}
	var missing []digest.ID
	for depth := 0; len(frontier) > 0; depth++ {
		bases := make([][]digest.ID, len(frontier))
		lack := make([]bool, len(frontier))
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(32)
		for i, id := range frontier {
			g.Go(func() error {
				b, err := h.b.chunks.bases(gctx, id)
				if isNotFound(err) {
					lack[i] = true
					return nil
				}
				if err != nil {
					return err
				}
				bases[i] = b
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			return nil, err
		}
		var next []digest.ID
		for i, id := range frontier {
			if lack[i] {
				missing = append(missing, id)
			}
			for _, b := range bases[i] {
				if !seen[b] {
					seen[b] = true
					next = append(next, b)
				}
			}
		}
		frontier = next
	}
	return missing, nil
}

// nsOf splits "NS/..." object names (helper for listings).
func nsOf(name, prefix string) []string {
	return strings.Split(strings.TrimPrefix(name, prefix), "/")
}

func chunkID(c flist.Chunk) digest.ID { return chunk.ID(c.Sum) }
