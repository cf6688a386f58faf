package httpstore

import (
	"errors"
	"io"
	"io/fs"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/zosgrid/zos/internal/digest"
)

// filer is what a store on a local filesystem offers (the dir store): the
// file that holds a blob. The handler then sends blobs it has checked
// before straight from the file (sendfile on Linux), never reading them
// into memory.
type filer interface {
	Path(id digest.ID) string
}

// getFile serves id from its file when that file, as it is now (same size
// and modification time), was served and checked before by this handler.
// It reports false, having written nothing, when the caller must go the
// store's way: read the blob, check it, serve it from memory (and record
// the check). So every version of every file is checked once per process,
// as the store's Get would check it, and a torn, rewritten or truncated
// file is checked again; a file that rots in place after its check is
// served as it is, to clients that verify every blob they receive anyway
// (docs/STORE-HTTP.md).
func (h *handler) getFile(w http.ResponseWriter, r *http.Request, id digest.ID, path string) bool {
	f, err := openBlob(path)
	if errors.Is(err, fs.ErrNotExist) {
		http.Error(w, "not found", http.StatusNotFound)
		return true
	}
	if err != nil {
		return false
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() || !h.verified.has(id, fi) {
		return false
	}
	blobHeaders(w, fi.Size())
	w.WriteHeader(http.StatusOK)
	// Sent headers spare ReadFrom its first 512 bytes read and written
	// by hand; the limit ends sendfile at the size instead of one more call
	// that returns 0. io.Copy hands the reader to the ResponseWriter's
	// ReadFrom, which sends it with sendfile.
	http.NewResponseController(w).Flush()
	if _, err := io.Copy(w, &io.LimitedReader{R: f, N: fi.Size()}); err != nil && r.Context().Err() == nil {
		h.log.Debug("sending blob failed", "id", id, "err", err)
	}
	return true
}

// maxVerified is how many checked file versions a handler remembers per
// generation (two generations: at most twice this, about 100 bytes each).
const maxVerified = 1 << 17

// verifiedFiles remembers which versions of blob files (ID, size,
// modification time) passed their check: two generations of a map, the
// older dropped when the newer fills, so what is served often stays.
type verifiedFiles struct {
	mu       sync.Mutex
	cur, old map[fileVersion]struct{}
}

type fileVersion struct {
	id    digest.ID
	size  int64
	mtime int64
}

func versionOf(id digest.ID, fi fs.FileInfo) fileVersion {
	return fileVersion{id, fi.Size(), fi.ModTime().UnixNano()}
}

func (v *verifiedFiles) has(id digest.ID, fi fs.FileInfo) bool {
	k := versionOf(id, fi)
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, ok := v.cur[k]; ok {
		return true
	}
	if _, ok := v.old[k]; ok {
		v.add(k) // still in use: keep it in the next generation
		return true
	}
	return false
}

// checked records that the blob now at path passed its check (the store's
// Get just returned it). A file replaced between that read and this stat
// is recorded under its new version without having been checked; that
// takes a writer racing a reader with different bytes for one ID, and
// clients verify what they receive.
func (v *verifiedFiles) checked(path string, id digest.ID) {
	fi, err := os.Stat(path)
	if err != nil || !fi.Mode().IsRegular() {
		return
	}
	// A file modified within the clock's granularity of its check could
	// change again without a new mtime: do not trust it yet.
	if time.Since(fi.ModTime()) < 2*time.Second {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.add(versionOf(id, fi))
}

func (v *verifiedFiles) add(k fileVersion) {
	if v.cur == nil {
		v.cur = map[fileVersion]struct{}{}
	}
	if len(v.cur) >= maxVerified {
		v.old, v.cur = v.cur, make(map[fileVersion]struct{}, maxVerified/4)
	}
	v.cur[k] = struct{}{}
}
