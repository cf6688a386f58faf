package hub

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/zosgrid/zos/internal/chunk"
	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/flist"
	"github.com/zosgrid/zos/internal/hub/hubclient"
	"github.com/zosgrid/zos/internal/hub/object"
	"github.com/zosgrid/zos/internal/key"
	"github.com/zosgrid/zos/internal/mount"
	"github.com/zosgrid/zos/internal/store"
)

// A flist's prefetch trace (docs/TRACE.md) is kept beside it, so that a
// node mounting the image fetches first the chunks its program reads at
// start, in that order, instead of finding them one read at a time.
const tracesPrefix = "traces/"

func traceObj(d digest.ID) string { return tracesPrefix + d.String() }

// A flist's start bundle (docs/BUNDLE.md), built by the hub from its
// version-2 trace: the bytes the traced program read, with their proofs.
const bundlesPrefix = "bundles/"

func bundleObj(d digest.ID) string { return bundlesPrefix + d.String() }

// putTrace stores the trace of flist d (PUT /v1/traces/{digest}). The
// request is signed by a key that may write a namespace holding d; the
// trace must be well formed and recorded on d. A later one replaces it.
// From a version-2 trace the hub builds the start bundle (buildBundle);
// the trace is stored even if it cannot, and the answer says why.
func (h *Hub) putTrace(w http.ResponseWriter, r *http.Request) {
	var t *mount.Trace
	var fl *flist.Reader
	d, k, body, err := h.traceWrite(w, r, hubclient.MaxTraceSize, func(d digest.ID, body []byte) error {
		var err error
		if t, err = mount.ParseTrace(body); err != nil {
			return errorf(http.StatusBadRequest, "%v", err)
		}
		if fl, err = h.storedFlist(r.Context(), d); err != nil {
			return err
		}
		if err := t.Check(fl); err != nil {
			return errorf(http.StatusBadRequest, "%v", err)
		}
		return nil
	})
	ti := hubclient.TraceInfo{Flist: d}
	var bundle []byte
	if err == nil {
		ti.Chunks, ti.Size = len(t.Chunks), int64(len(body))
		var berr error
		if bundle, ti.Bundle, berr = h.buildBundle(r.Context(), fl, t); berr != nil {
			ti.BundleError = berr.Error()
			h.log.Warn("start bundle not built", "flist", d, "err", berr)
		}
		err = h.b.Objects.Put(r.Context(), traceObj(d), body)
	}
	// The bundle after its trace: a node that reads the new trace and the
	// old bundle finds them apart and streams nothing (BUNDLE.md).
	if err == nil && bundle != nil {
		err = h.b.Objects.Put(r.Context(), bundleObj(d), bundle)
	} else if err == nil {
		err = h.b.Objects.Delete(r.Context(), bundleObj(d))
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.log.Info("trace stored", "flist", d, "chunks", len(t.Chunks), "bundle", len(bundle), "by", k)
	writeJSON(w, http.StatusCreated, ti)
}

// buildBundle builds the start bundle of trace t of flist fl (BUNDLE.md)
// from the hub's chunks, one build at a time. It builds none from a
// version-1 trace, none larger than MaxBundleSize, and none if a chunk
// the trace names is missing or damaged here.
func (h *Hub) buildBundle(ctx context.Context, fl *flist.Reader, t *mount.Trace) ([]byte, *hubclient.BundleInfo, error) {
	if t.Ranges == nil {
		return nil, nil, errors.New("a version-1 trace has no ranges to bundle: record it again with 'zos flist trace' for a start bundle")
	}
	select {
	case h.builds <- struct{}{}:
		defer func() { <-h.builds }()
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
	codec := chunk.NewCodec(0)
	buf := &cappedBuffer{max: hubclient.MaxBundleSize}
	st, err := mount.BuildBundle(ctx, buf, fl, t, func(ctx context.Context, k int) ([]byte, error) {
		return store.Fetch(ctx, h.b.Chunks, codec, fl.Chunks()[k])
	})
	if err != nil {
		return nil, nil, err
	}
	return buf.Bytes(), &hubclient.BundleInfo{Size: st.Bytes, Chunks: st.Chunks, Plain: st.Plain, Proofs: st.Proofs}, nil
}

// cappedBuffer is a buffer that refuses to grow past max bytes.
type cappedBuffer struct {
	bytes.Buffer
	max int
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	if b.Len()+len(p) > b.max {
		return 0, fmt.Errorf("the bundle would be larger than %d MiB", b.max>>20)
	}
	return b.Buffer.Write(p)
}

// removeTrace deletes the trace of flist d (DELETE /v1/traces/{digest}),
// for a key that may write a namespace holding d.
func (h *Hub) removeTrace(w http.ResponseWriter, r *http.Request) {
	d, k, _, err := h.traceWrite(w, r, maxJSON, nil)
	if err == nil {
		if _, err = h.b.Objects.Stat(r.Context(), traceObj(d)); isNotFound(err) {
			err = errorf(http.StatusNotFound, "flist %s has no trace", d)
		}
	}
	if err == nil {
		err = h.b.Objects.Delete(r.Context(), bundleObj(d))
	}
	if err == nil {
		err = h.b.Objects.Delete(r.Context(), traceObj(d))
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
	h.serveBeside(w, r, traceObj, "trace")
}

// getBundle serves the start bundle of flist d (GET /v1/bundles/{digest})
// to whoever may read a name holding d, streamed.
func (h *Hub) getBundle(w http.ResponseWriter, r *http.Request) {
	h.serveBeside(w, r, bundleObj, "start bundle")
}

// serveBeside serves the object obj names beside flist d, the request's
// digest, to whoever may read a name holding d.
func (h *Hub) serveBeside(w http.ResponseWriter, r *http.Request, obj func(digest.ID) string, what string) {
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
	var rc io.ReadCloser
	var fi object.Info
	if err == nil {
		if rc, fi, err = h.b.Objects.Open(r.Context(), obj(d)); isNotFound(err) {
			err = errorf(http.StatusNotFound, "flist %s has no %s", d, what)
		}
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	defer rc.Close()
	hd := w.Header()
	hd.Set("Content-Type", "application/octet-stream")
	hd.Set("Content-Length", strconv.FormatInt(fi.Size, 10))
	hd.Set("Cache-Control", "no-cache") // a later trace replaces it
	if r.Method == http.MethodHead {
		return
	}
	if _, err := io.Copy(w, rc); err != nil {
		h.log.Debug("serving cut short", "flist", d, "object", what, "err", err)
	}
}
