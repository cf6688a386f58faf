package ledger

import (
	"errors"
	"fmt"
)

// Refusals of a transaction. Each maps to a result code (docs/LEDGER.md,
// "Results and events"), so that a client can tell a replay from a
// forgery without parsing the log.
var (
	ErrMalformed = errors.New("malformed")     // not a canonical transaction of this version
	ErrChain     = errors.New("wrong chain")   // signed for another chain
	ErrSignature = errors.New("bad signature") // tx, approval or key proof does not verify
	ErrSigner    = errors.New("unknown signer")
	ErrNonce     = errors.New("stale nonce") // not above the signer's last: a replay or out of order
	ErrDenied    = errors.New("denied")      // the signer may not do this
	ErrInvalid   = errors.New("invalid")     // the body breaks a rule of its own
	ErrConflict  = errors.New("conflict")    // the state does not allow it (any more)
)

// Result codes of refused transactions, by sentinel. 0 is success.
const (
	CodeOK uint32 = iota
	CodeMalformed
	CodeChain
	CodeSignature
	CodeSigner
	CodeNonce
	CodeDenied
	CodeNotFound
	CodeInvalid
	CodeConflict
)

// Code returns the result code of a transaction refused with err: 0 for
// nil, the sentinel's code, or CodeMalformed for anything else (an error
// without a sentinel is a bug in the ledger, and must still refuse).
func Code(err error) uint32 {
	if err == nil {
		return CodeOK
	}
	for code, kind := range []error{ErrMalformed, ErrChain, ErrSignature, ErrSigner, ErrNonce, ErrDenied, ErrNotFound, ErrInvalid, ErrConflict} {
		if errors.Is(err, kind) {
			return uint32(code) + CodeMalformed
		}
	}
	return CodeMalformed
}

// refusal is a sentinel with what went wrong: "denied: twin 3 is not ...".
type refusal struct {
	kind error
	msg  string
}

func (r *refusal) Error() string { return r.kind.Error() + ": " + r.msg }
func (r *refusal) Unwrap() error { return r.kind }

func refuse(kind error, format string, args ...any) error {
	return &refusal{kind, oneLine(fmt.Sprintf(format, args...))} // a log is one line
}
