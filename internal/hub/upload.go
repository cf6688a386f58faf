package hub

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"path/filepath"

	"github.com/zosgrid/zos/internal/auth"
	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/hub/hubclient"
	"github.com/zosgrid/zos/internal/oci"
)

// An uploaded docker-archive (`docker save`) is converted like a registry
// image, from a spool file under ConvertOptions.TempDir. The body can be
// gigabytes, so everything that can refuse the request is checked before
// a byte of it is read: the signature (over the body hash the client
// announces in Zos-Body-Hash), the key's limits and permission, the size
// it declares, and a free place in the queue. The body is then spooled
// with a size cap while hashed; only a body with the signed hash has its
// nonce recorded and becomes a job, which removes the spool when it ends.

// uploadPrefix names spool files; a hub starting removes the ones no live
// hub holds (sweepUploads).
const uploadPrefix = "zos-upload-"

// spooled is an uploaded archive on disk, locked (flock) while a hub holds
// it, so that a hub starting over the same directory leaves it alone.
type spooled struct {
	path string
	f    *os.File
}

// remove deletes the spool file, once; nil is nothing to remove.
func (s *spooled) remove() {
	if s == nil || s.f == nil {
		return
	}
	os.Remove(s.path) // before the lock goes with the descriptor
	s.f.Close()
	s.f = nil
}

// sweepUploads removes spool files left by a hub that died with them.
func (c *converter) sweepUploads() {
	names, _ := filepath.Glob(filepath.Join(c.opt.TempDir, uploadPrefix+"*"))
	for _, n := range names {
		f, err := os.Open(n)
		if err != nil {
			continue
		}
		if tryLock(f) {
			if err := os.Remove(n); err == nil {
				c.h.log.Info("removed an upload left by a stopped hub", "file", n)
			}
		}
		f.Close()
	}
}

// convertArchive answers POST /v1/convert/archive?target=NS/NAME[:TAG]
// [&platform=OS/ARCH] with a docker-archive of one image as body.
func (h *Hub) convertArchive(w http.ResponseWriter, r *http.Request) {
	c := h.conv
	addr := addrBucket(h.lim.client(r))
	if wait := h.lim.refused(addr); wait > 0 {
		h.metrics.limited.WithLabelValues("failures").Inc()
		h.fail(w, r, errTooMany(wait, "refused requests from this address"))
		return
	}
	sum, err := digest.Parse(r.Header.Get(hubclient.HeaderBodyHash))
	if err != nil {
		h.fail(w, r, errorf(http.StatusBadRequest, "an upload names its body's BLAKE3 in %s: %v", hubclient.HeaderBodyHash, err))
		return
	}
	hd, err := h.v.CheckSum(r, sum)
	if err != nil {
		h.lim.fail(addr)
		h.fail(w, r, err)
		return
	}
	k := hd.Key
	if err := h.keyLimits(k); err != nil {
		h.fail(w, r, err)
		return
	}
	q := r.URL.Query()
	target, err := parseTarget(q.Get("target"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if err := h.mayWrite(r.Context(), k, target.NS); err != nil {
		if refusal(err) {
			h.lim.fail(keyBucket(k))
		}
		h.fail(w, r, err)
		return
	}
	if r.ContentLength > c.opt.MaxUpload {
		h.fail(w, r, errorf(http.StatusRequestEntityTooLarge, "an upload of %d bytes: this hub takes archives of at most %d bytes", r.ContentLength, c.opt.MaxUpload))
		return
	}
	if err := c.slot(w); err != nil {
		h.fail(w, r, err)
		return
	}
	sp, got, err := c.spoolUpload(w, r)
	if err == nil && got != sum {
		h.lim.fail(addr)
		err = fmt.Errorf("%w: the body is not the one signed (its BLAKE3 is %s, the signed one %s)", auth.ErrUnauthorized, got, sum)
	}
	if err == nil {
		// Last, as for every signed write: only a request served costs a
		// nonce.
		if err = h.v.Use(r.Context(), hd); errors.Is(err, auth.ErrUnauthorized) {
			h.lim.fail(addr)
		}
	}
	if err != nil {
		sp.remove()
		<-c.slots
		h.fail(w, r, err)
		return
	}
	src := jobSource{
		open:     oci.DockerArchive + sp.path,
		shown:    oci.DockerArchive + "upload/" + sum.String(),
		platform: q.Get("platform"),
		spool:    sp,
	}
	c.admit(w, r, k, target, src)
}

// spoolUpload copies the body to a locked spool file, at most MaxUpload
// bytes, and returns it with the body's hash.
func (c *converter) spoolUpload(w http.ResponseWriter, r *http.Request) (*spooled, digest.ID, error) {
	f, err := os.CreateTemp(c.opt.TempDir, uploadPrefix+"*.tar")
	if err != nil {
		return nil, digest.ID{}, fmt.Errorf("spooling an upload: %w", err)
	}
	sp := &spooled{path: f.Name(), f: f}
	if err := lock(f); err != nil {
		sp.remove()
		return nil, digest.ID{}, fmt.Errorf("spooling an upload: %w", err)
	}
	// A hub starting in between could have removed it before the lock.
	if fi, serr := os.Stat(sp.path); serr != nil || !sameFile(f, fi) {
		sp.remove()
		return nil, digest.ID{}, errorf(http.StatusServiceUnavailable, "the upload's spool file went away; try again")
	}
	hs := digest.New()
	_, err = io.Copy(io.MultiWriter(f, hs), http.MaxBytesReader(w, r.Body, c.opt.MaxUpload))
	if err == nil {
		err = f.Sync()
	}
	if err != nil {
		sp.remove()
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, digest.ID{}, errorf(http.StatusRequestEntityTooLarge, "an upload over %d bytes: this hub takes archives of at most that", c.opt.MaxUpload)
		}
		if r.Context().Err() != nil {
			return nil, digest.ID{}, errorf(http.StatusBadRequest, "the upload was cut short: %v", err)
		}
		if errors.Is(err, io.ErrUnexpectedEOF) || isReadErr(err) {
			return nil, digest.ID{}, errorf(http.StatusBadRequest, "reading the upload: %v", err)
		}
		return nil, digest.ID{}, fmt.Errorf("spooling an upload: %w", err)
	}
	return sp, digest.FromHash(hs), nil
}

// isReadErr reports whether err came from reading the request (the
// client), not from writing the spool (the hub's disk).
func isReadErr(err error) bool {
	var pe *os.PathError
	return !errors.As(err, &pe)
}

func sameFile(f *os.File, fi os.FileInfo) bool {
	mine, err := f.Stat()
	return err == nil && os.SameFile(mine, fi)
}

// maxArchiveJSON bounds the manifest and config files of an uploaded
// archive: the archive reader reads them whole into memory.
const maxArchiveJSON = 16 << 20

// checkArchive refuses an archive whose manifest.json or image configs
// are not regular files of at most maxArchiveJSON bytes, before the
// archive reader loads them (the first entry of a name is the one read).
func checkArchive(file string) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	sizes := map[string]int64{}
	tr := tar.NewReader(f) // f seeks: entries' content is skipped, not read
	var manifest []byte
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("docker-archive: %w", err)
		}
		p := path.Clean(hdr.Name)
		if _, seen := sizes[p]; seen {
			continue
		}
		sizes[p] = hdr.Size
		if hdr.Typeflag != tar.TypeReg {
			sizes[p] = -1
		}
		if p == "manifest.json" && sizes[p] >= 0 && hdr.Size <= maxArchiveJSON {
			if manifest, err = io.ReadAll(tr); err != nil {
				return fmt.Errorf("docker-archive: manifest.json: %w", err)
			}
		}
	}
	if manifest == nil {
		return fmt.Errorf("docker-archive: no manifest.json (a regular file of at most %d bytes) in the upload", maxArchiveJSON)
	}
	var m []struct{ Config string }
	if err := json.Unmarshal(manifest, &m); err != nil {
		return fmt.Errorf("docker-archive: manifest.json: %w", err)
	}
	for _, d := range m {
		if n, ok := sizes[path.Clean(d.Config)]; !ok || n < 0 || n > maxArchiveJSON {
			return fmt.Errorf("docker-archive: config %q is not a regular file of at most %d bytes", d.Config, maxArchiveJSON)
		}
	}
	return nil
}
