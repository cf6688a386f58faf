package httpstore

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	"github.com/zosgrid/zos/internal/auth"
	"github.com/zosgrid/zos/internal/chunk"
	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/key"
	"github.com/zosgrid/zos/internal/store"
)

// HandlerOptions configures Handler.
type HandlerOptions struct {
	// Writers are the keys allowed to PUT and DELETE.
	Writers []key.Public
	// Allow, if set, is asked about a signing key that is not among
	// Writers; it returns nil to let the key write. With neither Writers
	// nor Allow the handler is read-only (writes answer 405).
	Allow func(ctx context.Context, k key.Public) error
	// Verifier checks signatures: the host names the server answers to and
	// the nonce store it shares with other servers. Nil verifies with a
	// memory nonce store and accepts any host (see auth.Verifier.Hosts).
	Verifier *auth.Verifier
	// Logger receives server-side failures and refused writes; nil discards.
	Logger *slog.Logger
	// Looked, if set, is told of each ID a batched get answered: whether
	// the blob was there (a GET's or HEAD's outcome shows in its status).
	Looked func(found bool)
}

// Handler serves s with zos store protocol v2: public reads, missing and
// list queries, and signed writes by one of opts.Writers or a key that
// opts.Allow accepts. Mount it at the store's base path (with
// http.StripPrefix when that is not the root): the handler sees store
// paths, and checks signatures over the request target as sent.
func Handler(s store.Store, opts HandlerOptions) http.Handler {
	h := &handler{s: s, log: opts.Logger, writers: map[key.Public]bool{}, allow: opts.Allow, v: opts.Verifier, looked: opts.Looked}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if h.v == nil {
		h.v = &auth.Verifier{Nonces: &auth.MemoryNonces{}}
	}
	for _, k := range opts.Writers {
		h.writers[k] = true
	}
	return h
}

type handler struct {
	s        store.Store
	log      *slog.Logger
	writers  map[key.Public]bool
	allow    func(context.Context, key.Public) error
	v        *auth.Verifier
	verified verifiedFiles
	looked   func(found bool)
}

// missinger is what a backing store offers when it can answer a batched
// membership query more cheaply than one Has per ID (another http store).
type missinger interface {
	Missing(ctx context.Context, ids []digest.ID) ([]digest.ID, error)
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set(protoHeader, protoVersion)
	switch r.URL.Path {
	case missingPath:
		if r.Method != http.MethodPost {
			notAllowed(w, http.MethodPost)
			return
		}
		h.missing(w, r)
		return
	case getPath:
		if r.Method != http.MethodPost {
			notAllowed(w, http.MethodPost)
			return
		}
		h.getBatch(w, r)
		return
	case listPath:
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			notAllowed(w, http.MethodGet, http.MethodHead)
			return
		}
		h.list(w, r)
		return
	}
	id, ok := parseBlobPath(r.URL.Path)
	if !ok {
		http.Error(w, "not a blob path", http.StatusNotFound)
		return
	}
	switch r.Method {
	case http.MethodGet:
		h.get(w, r, id)
	case http.MethodHead:
		h.head(w, r, id)
	case http.MethodPut, http.MethodDelete:
		h.write(w, r, id)
	default:
		notAllowed(w, http.MethodGet, http.MethodHead, http.MethodPut, http.MethodDelete)
	}
}

func notAllowed(w http.ResponseWriter, methods ...string) {
	w.Header().Set("Allow", strings.Join(methods, ", "))
	http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
}

// fail answers a backing store failure; it is the boundary, so it logs.
func (h *handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		return // the client left; nobody reads the answer
	}
	h.log.Error("store request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	http.Error(w, "store failure", http.StatusInternalServerError)
}

func (h *handler) get(w http.ResponseWriter, r *http.Request, id digest.ID) {
	if f, ok := h.s.(filer); ok && h.getFile(w, r, id, f.Path(id)) {
		return
	}
	blob, err := h.s.Get(r.Context(), id)
	var inv *chunk.Invalid
	switch {
	case errors.Is(err, store.ErrNotFound):
		http.Error(w, "not found", http.StatusNotFound)
		return
	case errors.As(err, &inv):
		h.log.Error("stored blob fails its check", "id", id, "err", err)
		w.Header().Set(errorHeader, errCorrupt)
		http.Error(w, "stored blob is corrupt", http.StatusInternalServerError)
		return
	case err != nil:
		h.fail(w, r, err)
		return
	}
	if f, ok := h.s.(filer); ok {
		// Before the answer, so that a client's next request finds it.
		h.verified.checked(f.Path(id), id)
	}
	blobHeaders(w, int64(len(blob)))
	w.Write(blob)
}

func blobHeaders(w http.ResponseWriter, n int64) {
	hd := w.Header()
	hd["Content-Type"] = contentTypeBlob
	hd["Cache-Control"] = cacheImmutable
	hd.Set("Content-Length", strconv.FormatInt(n, 10))
}

var (
	contentTypeBlob = []string{"application/octet-stream"}
	cacheImmutable  = []string{"public, max-age=31536000, immutable"}
)

func (h *handler) head(w http.ResponseWriter, r *http.Request, id digest.ID) {
	ok, err := h.s.Has(r.Context(), id)
	switch {
	case err != nil:
		h.fail(w, r, err)
	case !ok:
		w.WriteHeader(http.StatusNotFound)
	default:
		w.WriteHeader(http.StatusOK)
	}
}

func (h *handler) write(w http.ResponseWriter, r *http.Request, id digest.ID) {
	if len(h.writers) == 0 && h.allow == nil {
		http.Error(w, "read-only store", http.StatusMethodNotAllowed)
		return
	}
	if r.ContentLength > MaxBlobSize {
		http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
		return
	}
	if r.Header.Get("Authorization") == "" {
		h.refuse(w, r, auth.ErrMissing)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBlobSize))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "reading body: "+err.Error(), http.StatusBadRequest)
		return
	}
	a, err := h.v.Check(r, body)
	if err == nil && !h.writers[a.Key] {
		if h.allow == nil {
			err = fmt.Errorf("key %s may not write here", a.Key)
		} else if aerr := h.allow(r.Context(), a.Key); aerr != nil {
			err = fmt.Errorf("key %s may not write here: %w", a.Key, aerr)
		}
	}
	if err == nil {
		err = h.v.Use(r.Context(), a)
		if err != nil && !errors.Is(err, auth.ErrUnauthorized) {
			h.fail(w, r, err)
			return
		}
	}
	if err != nil {
		h.refuse(w, r, err)
		return
	}
	if r.Method == http.MethodPut {
		if err := chunk.Check(id, body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		err = h.s.Put(r.Context(), id, body)
	} else {
		err = h.s.Delete(r.Context(), id)
	}
	if errors.Is(err, store.ErrReadOnly) {
		http.Error(w, "read-only store", http.StatusMethodNotAllowed)
		return
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *handler) refuse(w http.ResponseWriter, r *http.Request, why error) {
	h.log.Debug("write refused", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr, "why", why)
	w.Header().Set("WWW-Authenticate", auth.Scheme)
	http.Error(w, "unauthorized: "+why.Error(), http.StatusUnauthorized)
}

func (h *handler) missing(w http.ResponseWriter, r *http.Request) {
	ids, ok := readIDs(w, r, maxMissingLen, MaxMissingBatch)
	if !ok {
		return
	}
	lack, err := h.lacking(r.Context(), ids)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := make([]byte, 0, len(lack)*(2*digest.Size+1))
	for _, id := range lack {
		out = append(hex.AppendEncode(out, id[:]), '\n')
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(out)))
	w.Write(out)
}

// readIDs reads a request body of IDs, one per line, of at most maxLen
// bytes and max IDs, answering the request itself when it cannot.
func readIDs(w http.ResponseWriter, r *http.Request, maxLen int64, max int) ([]digest.ID, bool) {
	if r.ContentLength > maxLen {
		http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
		return nil, false
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxLen))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
			return nil, false
		}
		http.Error(w, "reading body: "+err.Error(), http.StatusBadRequest)
		return nil, false
	}
	var ids []digest.ID
	for line := range strings.Lines(string(body)) {
		id, err := digest.Parse(strings.TrimSuffix(line, "\n"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return nil, false
		}
		ids = append(ids, id)
	}
	if len(ids) > max {
		http.Error(w, fmt.Sprintf("more than %d IDs", max), http.StatusBadRequest)
		return nil, false
	}
	return ids, true
}

func (h *handler) lacking(ctx context.Context, ids []digest.ID) ([]digest.ID, error) {
	if m, ok := h.s.(missinger); ok {
		return m.Missing(ctx, ids)
	}
	return store.MissingByHas(ctx, h.s, ids, 16)
}

func (h *handler) list(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if r.Method == http.MethodHead {
		return
	}
	bw := bufio.NewWriterSize(w, 32<<10)
	var line [2*digest.Size + 1]byte
	line[len(line)-1] = '\n'
	err := h.s.List(r.Context(), func(id digest.ID) error {
		hex.Encode(line[:], id[:])
		_, err := bw.Write(line[:])
		return err
	})
	if err != nil {
		if r.Context().Err() != nil {
			return
		}
		h.log.Error("listing failed", "err", err)
		msg := strings.ReplaceAll(err.Error(), "\n", " ")
		fmt.Fprintf(bw, "%s%s\n", listErrPrefix, msg)
	} else {
		bw.WriteString(listEnd + "\n")
	}
	bw.Flush()
}
