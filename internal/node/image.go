package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"

	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/flist"
	"github.com/zosgrid/zos/internal/hub/hubclient"
	"github.com/zosgrid/zos/internal/mount"
	"github.com/zosgrid/zos/internal/oci"
	"github.com/zosgrid/zos/internal/spec"
)

// ErrImageChanged is wrapped when the flist found where a spec says to
// fetch its image has another digest than the spec pins.
var ErrImageChanged = errors.New("image changed: its digest is not the one the deployment pins")

// imageConfig is the run configuration a converted image carries.
type imageConfig = oci.Config

// image returns the path of container w's flist, verified against the
// spec's digest (fetched once, then kept in Data/images), the image's run
// configuration and the chunk stores to read it from.
func (a *Agent) image(ctx context.Context, dep uint64, w *spec.Workload) (path string, cfg imageConfig, stores []string, err error) {
	im := w.Container.Image
	path = filepath.Join(a.opts.Data, "images", im.Digest.String()+".fl")
	if stores, err = imageStores(im); err != nil {
		return "", cfg, nil, err
	}
	// Verified once per agent: a pass over many containers does not parse
	// their flists again every time.
	a.mu.Lock()
	cached, ok := a.images[im.Digest]
	a.mu.Unlock()
	if ok {
		return path, cached, stores, nil
	}
	b, err := os.ReadFile(path)
	fetched := false
	if errors.Is(err, os.ErrNotExist) {
		if b, err = a.fetch(ctx, im); err != nil {
			return "", cfg, nil, err
		}
		fetched = true
	} else if err != nil {
		return "", cfg, nil, err
	}
	r, err := flist.Open(b)
	if err != nil {
		return "", cfg, nil, fmt.Errorf("%s: %w", path, err)
	}
	if r.Digest() != im.Digest {
		os.Remove(path) // damaged on disk: fetched again next pass
		return "", cfg, nil, fmt.Errorf("%s: %w: kept copy is %s", path, ErrImageChanged, r.Digest())
	}
	if fetched {
		// The trace first: the image's mount picks up FL.trace when it
		// starts, and the flist file is what says the fetch is done.
		detail := fmt.Sprintf("%s (%d bytes of metadata)", im.Digest, len(b))
		if t, err := a.fetchTrace(ctx, im, r, path+".trace"); err != nil {
			a.log.Warn("image trace not used", "image", im.Digest, "err", err)
		} else if t != nil && len(t.Chunks) > 0 {
			detail += fmt.Sprintf(", a trace of %d chunks to prefetch", len(t.Chunks))
			if t.Ranges != nil {
				detail += " and the hub's start bundle to stream"
			}
		}
		if err := writeAtomic(path, b); err != nil {
			return "", cfg, nil, err
		}
		a.event(dep, w.Name, "image-fetched", detail)
	}
	if v, ok := r.Meta(oci.MetaConfig); ok {
		if err := json.Unmarshal(v, &cfg); err != nil {
			return "", cfg, nil, fmt.Errorf("image %s: run configuration: %w", im.Digest, err)
		}
	}
	a.mu.Lock()
	a.images[im.Digest] = cfg
	a.mu.Unlock()
	return path, cfg, stores, nil
}

// fetchTrace saves the prefetch trace the image's hub keeps for it, if
// any, at path, checked against r, and returns it (nil: none). A trace
// with ranges (version 2) is one the hub builds a start bundle from.
func (a *Agent) fetchTrace(ctx context.Context, im spec.Image, r *flist.Reader, path string) (*mount.Trace, error) {
	if im.Hub == "" {
		return nil, nil
	}
	c, err := hubclient.New(im.Hub, nil)
	if err != nil {
		return nil, err
	}
	b, err := c.PullTrace(ctx, im.Digest)
	if errors.Is(err, hubclient.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	t, err := mount.ParseTraceFor(b, r)
	if err != nil {
		return nil, err
	}
	return t, writeAtomic(path, b)
}

// bundleURL returns where the image's hub serves its start bundle
// (docs/BUNDLE.md) if the trace kept beside fl, fetched from that hub, has
// the ranges a bundle is built from; "" if not. The mount streams it from
// there as the container starts (a hub that built none costs one 404).
func bundleURL(im spec.Image, fl string) string {
	if im.Hub == "" {
		return ""
	}
	b, err := os.ReadFile(fl + ".trace")
	if err != nil {
		return ""
	}
	if t, err := mount.ParseTrace(b); err != nil || t.Ranges == nil {
		return ""
	}
	c, err := hubclient.New(im.Hub, nil)
	if err != nil {
		return ""
	}
	return c.BundleURL(im.Digest)
}

// imageStores returns the chunk stores a spec names for its image: its
// stores, else its hub's.
func imageStores(im spec.Image) ([]string, error) {
	if len(im.Stores) > 0 || im.Hub == "" {
		return im.Stores, nil
	}
	c, err := hubclient.New(im.Hub, nil)
	if err != nil {
		return nil, err
	}
	return []string{c.ChunksURL()}, nil
}

// imageDir is where image id is mounted, once for every container of it.
func (a *Agent) imageDir(id digest.ID) string {
	return filepath.Join(a.opts.Data, "images", "mnt", id.String())
}

// ensureImage makes sure image id (flist fl) is mounted at dir and
// answers, mounting it (again) if not, and returns the mount's unique ID.
// It works once per image per pass: the outcome is kept in want.
func (a *Agent) ensureImage(ctx context.Context, im spec.Image, fl string, want *desired) (uint64, error) {
	dir := a.imageDir(im.Digest)
	if m, ok := want.images[dir]; ok && (m.id != 0 || m.err != nil) {
		return m.id, m.err
	}
	mid, err := a.mountImage(ctx, im, fl, dir, want)
	want.images[dir] = imageMount{id: mid, err: err}
	return mid, err
}

func (a *Agent) mountImage(ctx context.Context, im spec.Image, fl, dir string, want *desired) (uint64, error) {
	id := im.Digest
	if mid, ok := a.opts.Mounter.Alive(dir, want.points); ok {
		return mid, nil
	}
	if want.points[dir] {
		a.log.Warn("image mount died: mounting it again", "image", id)
		if err := a.opts.Mounter.Unmount(ctx, dir); err != nil {
			return 0, fmt.Errorf("unmount dead image mount: %w", err)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, err
	}
	m := Mount{Flist: fl, Dir: dir, Stores: want.stores[id], Bundle: bundleURL(im, fl), Cache: a.opts.Cache, Log: dir + ".log"}
	if err := a.opts.Mounter.MountImage(ctx, m); err != nil {
		return 0, fmt.Errorf("mount image: %w", err)
	}
	mid, ok := a.opts.Mounter.Alive(dir, nil)
	if !ok {
		return 0, fmt.Errorf("image mounted at %s does not answer", dir)
	}
	a.log.Info("image mounted", "image", id, "stores", m.Stores, "bundle", m.Bundle)
	return mid, nil
}

// fetch downloads an image's flist from where the spec says and checks
// its digest: from a hub by reference (so a tag that moved is noticed and
// refused) or by digest, or from a URL.
func (a *Agent) fetch(ctx context.Context, im spec.Image) ([]byte, error) {
	var b []byte
	switch {
	case im.Hub != "":
		c, err := hubclient.New(im.Hub, nil)
		if err != nil {
			return nil, err
		}
		var p hubclient.Pulled
		if im.Ref != "" {
			ref, err := hubclient.ParseRef(im.Ref)
			if err != nil {
				return nil, err
			}
			if p, err = c.Pull(ctx, ref); err != nil {
				if errors.Is(err, flist.ErrCorrupt) && !ref.Digest.IsZero() {
					return nil, fmt.Errorf("%s on %s: %w (%v)", im.Ref, im.Hub, ErrImageChanged, err)
				}
				return nil, err
			}
		} else if p, err = c.PullDigest(ctx, im.Digest); err != nil {
			return nil, err
		}
		if p.Digest != im.Digest {
			return nil, fmt.Errorf("%s on %s is %s: %w %s", im.Ref, im.Hub, p.Digest, ErrImageChanged, im.Digest)
		}
		b = p.Flist
	case im.URL != "":
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, im.URL, nil)
		if err != nil {
			return nil, err
		}
		resp, err := a.opts.HTTP.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("%s: HTTP %d", im.URL, resp.StatusCode)
		}
		if b, err = io.ReadAll(io.LimitReader(resp.Body, hubclient.MaxFlistSize+1)); err != nil {
			return nil, fmt.Errorf("%s: %w", im.URL, err)
		}
		if len(b) > hubclient.MaxFlistSize {
			return nil, fmt.Errorf("%s: larger than %d bytes", im.URL, hubclient.MaxFlistSize)
		}
		r, err := flist.Open(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", im.URL, err)
		}
		if r.Digest() != im.Digest {
			return nil, fmt.Errorf("%s is %s: %w %s", im.URL, r.Digest(), ErrImageChanged, im.Digest)
		}
	default:
		return nil, errors.New("the spec says neither a hub nor a URL for the image")
	}
	return b, nil
}

func writeAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
