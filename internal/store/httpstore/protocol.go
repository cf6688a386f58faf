package httpstore

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/zosgrid/zos/internal/chunk"
	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/key"
)

// Protocol constants (docs/STORE-HTTP.md).
const (
	// MaxBlobSize bounds a blob body: the largest sealed chunk is
	// chunk.MaxSize plus 37 bytes of header, tag and check.
	MaxBlobSize = chunk.MaxSize + 64
	// MaxMissingBatch is the most IDs one missing request may hold.
	MaxMissingBatch = 10000
	// MaxSkew is how far a write's timestamp may be from the server's clock.
	MaxSkew = 5 * time.Minute

	signDomain    = "zos store write v1"
	authScheme    = "ZOS-Ed25519"
	protoHeader   = "Zos-Store-Protocol"
	protoVersion  = "v1"
	errorHeader   = "Zos-Error"
	errCorrupt    = "corrupt"
	missingPath   = "/.zos/v1/missing"
	listPath      = "/.zos/v1/list"
	listEnd       = "end"
	listErrPrefix = "error "
	nonceLen      = 32 // hex digits
	maxMissingLen = MaxMissingBatch*(2*digest.Size+1) + 10000
)

// ErrUnauthorized reports a write the server refused to authenticate.
var ErrUnauthorized = errors.New("store refused the write's signature")

// errAuth reports a malformed Authorization header; the server answers 401.
var errAuth = errors.New("malformed authorization")

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

// auth is a parsed Authorization header.
type auth struct {
	key   key.Public
	ts    int64
	nonce string
	sig   []byte
}

// message returns the signed message for a request.
func message(method, path string, ts int64, nonce string, bodySum digest.ID) []byte {
	return fmt.Appendf(nil, "%s\n%s\n%d\n%s\n%s", method, path, ts, nonce, bodySum)
}

// sign returns an Authorization header value for a request.
func sign(sec key.Secret, method, path string, ts int64, nonce string, bodySum digest.ID) string {
	sig := sec.Sign(signDomain, message(method, path, ts, nonce, bodySum))
	return fmt.Sprintf("%s key=%s, ts=%d, nonce=%s, sig=%s",
		authScheme, sec.Public(), ts, nonce, base64.RawURLEncoding.EncodeToString(sig))
}

func newNonce() string {
	var b [nonceLen / 2]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// parseAuth parses an Authorization header value strictly: one spelling
// per header, so that what is verified is what was sent.
func parseAuth(v string) (auth, error) {
	var a auth
	rest, ok := strings.CutPrefix(v, authScheme+" ")
	if !ok {
		return a, fmt.Errorf("%w: want scheme %s", errAuth, authScheme)
	}
	parts := strings.Split(rest, ", ")
	names := [...]string{"key", "ts", "nonce", "sig"}
	if len(parts) != len(names) {
		return a, fmt.Errorf("%w: want key, ts, nonce, sig", errAuth)
	}
	var vals [len(names)]string
	for i, p := range parts {
		name, val, ok := strings.Cut(p, "=")
		if !ok || name != names[i] {
			return a, fmt.Errorf("%w: want parameter %s", errAuth, names[i])
		}
		vals[i] = val
	}
	var err error
	if a.key, err = key.ParsePublic(vals[0]); err != nil {
		return a, fmt.Errorf("%w: %v", errAuth, err)
	}
	ts := vals[1]
	if len(ts) == 0 || len(ts) > 19 || ts[0] == '0' || strings.Trim(ts, "0123456789") != "" {
		return a, fmt.Errorf("%w: bad ts", errAuth)
	}
	if a.ts, err = strconv.ParseInt(ts, 10, 64); err != nil {
		return a, fmt.Errorf("%w: bad ts", errAuth)
	}
	a.nonce = vals[2]
	if len(a.nonce) != nonceLen || strings.Trim(a.nonce, "0123456789abcdef") != "" {
		return a, fmt.Errorf("%w: bad nonce", errAuth)
	}
	if len(vals[3]) != 86 {
		return a, fmt.Errorf("%w: bad sig", errAuth)
	}
	if a.sig, err = base64.RawURLEncoding.Strict().DecodeString(vals[3]); err != nil {
		return a, fmt.Errorf("%w: bad sig", errAuth)
	}
	return a, nil
}
