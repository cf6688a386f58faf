package hub

import (
	"net/http"
	"strconv"

	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/flist"
	"github.com/zosgrid/zos/internal/hub/hubclient"
	"github.com/zosgrid/zos/internal/key"
	"github.com/zosgrid/zos/internal/mount"
)

// A flist's prefetch trace (docs/TRACE.md) is kept beside it, so that a
// node mounting the image fetches first the chunks its program reads at
// start, in that order, instead of finding them one read at a time.
const tracesPrefix = "traces/"

func traceObj(d digest.ID) string { return tracesPrefix + d.String() }

// putTrace stores the trace of flist d (PUT /v1/traces/{digest}). The
// request is signed by a key that may write a namespace holding d; the
// trace must be well formed and recorded on d. A later one replaces it.
func (h *Hub) putTrace(w http.ResponseWriter, r *http.Request) {
	var t *mount.Trace
	d, k, body, err := h.traceWrite(w, r, hubclient.MaxTraceSize, func(d digest.ID, body []byte) error {
		var err error
		if t, err = mount.ParseTrace(body); err != nil {
			return errorf(http.StatusBadRequest, "%v", err)
		}
		b, err := h.b.Objects.Get(r.Context(), flistObj(d))
		if err != nil {
			return err
		}
		fl, err := flist.Open(b)
		if err != nil {
			return err
		}
		if err := t.Check(fl); err != nil {
			return errorf(http.StatusBadRequest, "%v", err)
		}
		return nil
	})
	if err == nil {
		err = h.b.Objects.Put(r.Context(), traceObj(d), body)
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.log.Info("trace stored", "flist", d, "chunks", len(t.Chunks), "by", k)
	writeJSON(w, http.StatusCreated, hubclient.TraceInfo{Flist: d, Chunks: len(t.Chunks), Size: int64(len(body))})
}

// removeTrace deletes the trace of flist d (DELETE /v1/traces/{digest}),
// for a key that may write a namespace holding d.
func (h *Hub) removeTrace(w http.ResponseWriter, r *http.Request) {
	d, k, _, err := h.traceWrite(w, r, maxJSON, nil)
	if err == nil {
		if err = h.b.Objects.Delete(r.Context(), traceObj(d)); isNotFound(err) {
			err = errorf(http.StatusNotFound, "flist %s has no trace", d)
		}
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.log.Info("trace removed", "flist", d, "by", k)
	w.WriteHeader(http.StatusNoContent)
}

// traceWrite checks a signed write to the trace of the flist the path
// names: the signer may write a namespace holding it, and check (if any)
// accepts the body.
func (h *Hub) traceWrite(w http.ResponseWriter, r *http.Request, limit int64, check func(digest.ID, []byte) error) (digest.ID, key.Public, []byte, error) {
	d, err := digest.Parse(r.PathValue("digest"))
	if err != nil {
		return d, key.Public{}, nil, errorf(http.StatusBadRequest, "%v", err)
	}
	k, body, err := h.signed(w, r, limit, func(k key.Public, body []byte) error {
		held, err := h.holder(r.Context(), d, func(ns string) error { return h.mayWrite(r.Context(), k, ns) })
		if err != nil {
			return err
		}
		if held == "" {
			return errorf(http.StatusNotFound, "no name you may write holds flist %s (push it first)", d)
		}
		if check != nil {
			return check(d, body)
		}
		return nil
	})
	return d, k, body, err
}

// getTrace serves the trace of flist d (GET /v1/traces/{digest}) to
// whoever may read a name holding d.
func (h *Hub) getTrace(w http.ResponseWriter, r *http.Request) {
	d, err := digest.Parse(r.PathValue("digest"))
	if err != nil {
		h.fail(w, r, errorf(http.StatusBadRequest, "%v", err))
		return
	}
	v, err := h.reader(w, r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	held, err := h.holder(r.Context(), d, func(ns string) error { return h.mayRead(r.Context(), v, ns) })
	if err == nil && held == "" {
		err = errorf(http.StatusNotFound, "no name you may read holds flist %s", d)
	}
	if err == nil {
		err = h.spend(r.Context(), v)
	}
	var b []byte
	if err == nil {
		if b, err = h.b.Objects.Get(r.Context(), traceObj(d)); isNotFound(err) {
			err = errorf(http.StatusNotFound, "flist %s has no trace", d)
		}
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", "application/octet-stream")
	hd.Set("Content-Length", strconv.Itoa(len(b)))
	hd.Set("Cache-Control", "no-cache") // a later trace replaces it
	w.Write(b)
}
