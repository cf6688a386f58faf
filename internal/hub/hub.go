// Package hub is the zos hub server: it stores and serves flists and their
// chunks over HTTP (docs/HUB.md). Clients use package hubclient.
//
// # Backend
//
// A hub keeps no state of its own: chunks live in a chunk store, and
// everything else (users, flist files, names, tags, links, nonces, the
// garbage collector's marker) in an object store beside it (Backend). Over
// S3 several hubs behind a load balancer serve the same data; every
// decision two hubs could race on is a create-if-absent in the bucket.
//
// # Namespaces
//
// A user is an ed25519 key with a name, the namespace it writes to.
// Registration is a signed request naming the namespace: first come,
// first served, unless the hub only lets its admins register users.
// Admins (keys given to the server) may act in every namespace.
//
// # Flists
//
// An flist is stored once per digest (flists/DIGEST, the file with its
// signatures) and named as NS/NAME versions with movable tags. A push is
// refused unless the flist validates, its signatures verify and the hub
// holds every chunk it needs, delta bases included: the hub never names an
// image it cannot serve. Links are names that forward to another
// reference; promote copies what a reference resolves to into a namespace.
//
// # Conversion
//
// A signed convert request starts a job that pulls a registry image
// (package oci), or reads an uploaded docker-archive (upload.go), packs
// its layers into the hub's chunk store (pack.Layers, with the flist the
// target tag held as the base of deltas) and publishes the flist as a
// push would. Jobs are bounded (workers and a
// queue; 429 beyond), recorded in the backend so that any hub answers for
// them, and reported failed when the hub running one stops writing it.
// Jobs connect only to public addresses unless told otherwise: a hub must
// not fetch its users' URLs inside the network it runs in (convert.go).
//
// # Garbage
//
// GC deletes chunks that no stored flist needs and flist files that no
// name refers to, safely while pushes and uploads run (gc.go and
// docs/HUB.md give the argument).
package hub

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/zosgrid/zos/internal/auth"
	"github.com/zosgrid/zos/internal/key"
	"github.com/zosgrid/zos/internal/store/httpstore"
)

// Options configure a Hub.
type Options struct {
	// Hosts are the names clients address the hub by ("hub.example",
	// "127.0.0.1:8080"); a request signed for another host is refused.
	// Empty accepts any host (see auth.Verifier.Hosts).
	Hosts []string
	// Admins may register users, act in every namespace and run GC.
	Admins []key.Public
	// AdminRegistration lets only admins register users; by default anyone
	// may register a free namespace for their key.
	AdminRegistration bool
	// FenceWait bounds how long a push waits for a garbage collector's
	// sweep to end before answering 503; default 20s.
	FenceWait time.Duration
	// Logger receives structured logs; nil discards.
	Logger *slog.Logger
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
	// Convert configures conversion jobs (convert.go).
	Convert ConvertOptions
	// Limits bound the writes and refusals of one key or address (limit.go).
	Limits RateLimits
	// RecompressLevel, if not 0, is the zstd level at which Run re-seals
	// the whole chunks of stored flists in the background (recompress.go;
	// `zos hub serve` uses DefaultRecompressLevel).
	RecompressLevel int
}

// Hub serves one Backend. Create it with New; it is an http.Handler.
type Hub struct {
	b       *Backend
	opt     Options
	log     *slog.Logger
	v       *auth.Verifier
	admins  map[key.Public]bool
	metrics *metrics
	mux     *http.ServeMux
	handler http.Handler
	conv    *converter
	lim     *limiter
	builds  chan struct{} // start bundles being built (trace.go)
	rc      *recompressor // nil: chunks are not recompressed
}

// New returns a hub over b.
func New(b *Backend, opt Options) *Hub {
	h := &Hub{b: b, opt: opt, log: opt.Logger, admins: map[key.Public]bool{}, builds: make(chan struct{}, 1)}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if h.opt.FenceWait <= 0 {
		h.opt.FenceWait = 20 * time.Second
	}
	if h.opt.Now == nil {
		h.opt.Now = time.Now
	}
	for _, k := range opt.Admins {
		h.admins[k] = true
	}
	h.lim = newLimiter(opt.Limits, h.opt.Now)
	h.v = &auth.Verifier{Hosts: opt.Hosts, Nonces: &objectNonces{o: b.Objects}, Now: h.opt.Now}
	h.metrics = newMetrics()
	h.conv = newConverter(h, h.metrics.reg)
	h.rc = newRecompressor(h, opt.RecompressLevel)
	h.routes()
	h.handler = h.observe(h.mux)
	return h
}

// ServeHTTP implements http.Handler.
func (h *Hub) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.handler.ServeHTTP(w, r) }

// Close ends the conversion jobs this hub runs (they are recorded as
// failed) and waits for them.
func (h *Hub) Close() { h.conv.close() }

// RecompressIdle reports that no flist waits to be recompressed or is
// being recompressed (always true without recompression).
func (h *Hub) RecompressIdle() bool { return h.rc == nil || h.rc.idle() }

// Run prunes expired nonces once a minute, and old conversion job records
// once an hour, until ctx ends (every instance may run it; deletes are
// idempotent). With Options.RecompressLevel it also recompresses the
// chunks of stored flists, those of new pushes as they come.
func (h *Hub) Run(ctx context.Context) {
	if h.rc != nil {
		go h.rc.run(ctx)
	}
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			h.lim.prune()
			if err := pruneNonces(ctx, h.b.Objects, h.opt.Now(), false); err != nil && ctx.Err() == nil {
				h.log.Warn("pruning nonces", "err", err)
			}
			if n%60 == 0 {
				if err := pruneJobs(ctx, h.b.Objects, h.opt.Now()); err != nil && ctx.Err() == nil {
					h.log.Warn("pruning conversion jobs", "err", err)
				}
			}
		}
	}
}

func (h *Hub) routes() {
	m := http.NewServeMux()
	chunks := httpstore.Handler(h.b.Chunks, httpstore.HandlerOptions{
		Allow:    h.allowChunkWriter,
		Verifier: h.v,
		Logger:   h.log,
		Looked:   h.metrics.looked,
	})
	m.Handle("/chunks/", http.StripPrefix("/chunks", h.limitChunks(chunks)))
	m.HandleFunc("GET /healthz", h.healthz)
	m.Handle("GET /metrics", h.metrics.handler())

	m.HandleFunc("POST /v1/users", h.register)
	m.HandleFunc("GET /v1/users", h.listUsers)
	m.HandleFunc("GET /v1/users/{ns}", h.getUser)
	m.HandleFunc("POST /v1/users/{ns}", h.updateUser)

	m.HandleFunc("GET /v1/repos/{ns}", h.listRepos)
	m.HandleFunc("GET /v1/repos/{ns}/{name}", h.getRepo)

	m.HandleFunc("PUT /v1/flists/{ns}/{ref}", h.push)
	m.HandleFunc("GET /v1/flists/{ns}/{ref}", h.pull)
	m.HandleFunc("HEAD /v1/flists/{ns}/{ref}", h.pull)
	m.HandleFunc("DELETE /v1/flists/{ns}/{ref}", h.remove)
	m.HandleFunc("GET /v1/digests/{digest}", h.pullDigest)
	m.HandleFunc("HEAD /v1/digests/{digest}", h.pullDigest)

	m.HandleFunc("PUT /v1/traces/{digest}", h.putTrace)
	m.HandleFunc("GET /v1/traces/{digest}", h.getTrace)
	m.HandleFunc("DELETE /v1/traces/{digest}", h.removeTrace)
	m.HandleFunc("GET /v1/bundles/{digest}", h.getBundle)
	m.HandleFunc("PUT /v1/tags/{ns}/{name}/{tag}", h.tag)
	m.HandleFunc("PUT /v1/links/{ns}/{name}", h.link)
	m.HandleFunc("POST /v1/promote/{ns}/{ref}", h.promote)
	m.HandleFunc("POST /v1/gc", h.gcEndpoint)
	m.HandleFunc("POST /v1/convert", h.convert)
	m.HandleFunc("POST /v1/convert/archive", h.convertArchive)
	m.HandleFunc("GET /v1/jobs/{id}", h.getJob)
	h.webRoutes(m)
	h.mux = m
}

func (h *Hub) healthz(w http.ResponseWriter, r *http.Request) {
	// Healthy means the backend answers: one cheap read of each store.
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	_, err := h.b.Objects.Stat(ctx, "healthz")
	if err == nil || isNotFound(err) {
		_, err = h.b.Chunks.Has(ctx, [32]byte{})
	}
	if err != nil {
		h.log.Error("health check failed", "err", err)
		http.Error(w, "backend unavailable", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write([]byte("ok\n"))
}

// allowChunkWriter lets any registered user (and the admins) write chunks,
// within the key's limits (limitChunks turns those refusals into 429).
func (h *Hub) allowChunkWriter(ctx context.Context, k key.Public) error {
	st, _ := ctx.Value(chunkWriteKey{}).(*chunkWrite)
	if st == nil {
		st = &chunkWrite{} // limits off
	}
	if wait := h.lim.refused(keyBucket(k)); wait > 0 {
		h.metrics.limited.WithLabelValues("failures").Inc()
		st.wait = wait
		return errors.New("refused too often lately")
	}
	if wait := h.lim.write(k); wait > 0 {
		h.metrics.limited.WithLabelValues("writes").Inc()
		st.wait = wait
		return errors.New("over its write rate")
	}
	if h.admins[k] {
		return nil
	}
	_, err := h.userByKey(ctx, k)
	if isNotFound(err) {
		st.refused = true
		h.lim.fail(keyBucket(k))
		return errors.New("not a registered user (zos hub register)")
	}
	return err
}

// routeOf is the metrics label of a request: its pattern's fixed prefix.
func routeOf(pattern string) string {
	_, p, _ := strings.Cut(pattern, " ")
	if p == "" {
		p = pattern
	}
	switch {
	case p == "":
		return "other"
	case strings.HasPrefix(p, "/chunks/"):
		return "chunks"
	}
	if i := strings.Index(p, "{"); i > 0 {
		p = p[:i]
	}
	if p = strings.TrimSuffix(p, "/"); p == "" {
		return "/" // the web page's home
	}
	return p
}

const (
	slogInfo  = slog.LevelInfo
	slogDebug = slog.LevelDebug
)
