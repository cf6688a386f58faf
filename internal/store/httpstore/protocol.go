package httpstore

import (
	"errors"

	"github.com/zosgrid/zos/internal/auth"
	"github.com/zosgrid/zos/internal/chunk"
	"github.com/zosgrid/zos/internal/digest"
)

// Protocol constants (docs/STORE-HTTP.md).
const (
	// MaxBlobSize bounds a blob body: the largest sealed chunk is
	// chunk.MaxSize plus 37 bytes of header, tag and check.
	MaxBlobSize = chunk.MaxSize + 64
	// MaxMissingBatch is the most IDs one missing request may hold.
	MaxMissingBatch = 10000
	// MaxGetBatch is the most IDs one batched get may hold.
	MaxGetBatch = 1024
	// MaxSkew is how far a write's timestamp may be from the server's clock.
	MaxSkew = auth.DefaultSkew

	protoHeader   = "Zos-Store-Protocol"
	protoVersion  = "v2"
	errorHeader   = "Zos-Error"
	errCorrupt    = "corrupt"
	missingPath   = "/.zos/v2/missing"
	listPath      = "/.zos/v2/list"
	getPath       = "/.zos/v2/get"
	listEnd       = "end"
	listErrPrefix = "error "
	maxMissingLen = MaxMissingBatch*(2*digest.Size+1) + 10000
	maxGetLen     = MaxGetBatch*(2*digest.Size+1) + 1024
	// maxGetAnswer is about where a server ends a batched get's answer:
	// it adds no frame once the blobs it holds reach this many bytes.
	maxGetAnswer = 16 << 20
	// maxGetMemory is about the most blob bytes one batched get holds in
	// memory (blobs read through the store rather than sent from checked
	// files: a store not on local disk, or blobs not yet checked), so
	// that a batch costs the server little more memory than a GET.
	maxGetMemory = 4 << 20
	frameMissing = "missing"
	frameCorrupt = "corrupt"
)

// ErrUnauthorized reports a write the server refused to authenticate.
var ErrUnauthorized = errors.New("store refused the write's signature")

// blobPath returns the store path of id: /h[0:2]/h.
func blobPath(id digest.ID) string {
	h := id.String()
	return "/" + h[:2] + "/" + h
}

// parseBlobPath is blobPath's inverse; it accepts nothing else.
func parseBlobPath(p string) (digest.ID, bool) {
	if len(p) != 1+2+1+2*digest.Size || p[0] != '/' || p[3] != '/' || p[1:3] != p[4:6] {
		return digest.ID{}, false
	}
	id, err := digest.Parse(p[4:])
	return id, err == nil
}
