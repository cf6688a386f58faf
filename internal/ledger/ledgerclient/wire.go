package ledgerclient

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/zosgrid/zos/internal/ledger"
)

// Paths of the chain API (docs/LEDGER.md, "Chain API"), shared with the
// server.
const (
	PathInfo      = "/v1/info"
	PathTwins     = "/v1/twins"
	PathNodes     = "/v1/nodes"
	PathContracts = "/v1/contracts"
	PathTx        = "/v1/tx"
)

// Status is the answer of GET /v1/info: the ledger's own info (its last
// committed block) and the answering validator's view of the chain.
type Status struct {
	ledger.InfoView
	Node       string      `json:"node"` // the validator's p2p id
	Peers      int         `json:"peers"`
	CatchingUp bool        `json:"catching_up"`
	Validators []Validator `json:"validators"`
}

// Validator is one member of the validator set.
type Validator struct {
	Address string `json:"address"` // hex, as CometBFT prints it
	Power   int64  `json:"power"`
}

// Result is a committed transaction's outcome. Hash is SHA-256 of the
// transaction's bytes (TxHash), the name CometBFT and GET /v1/tx/{hash}
// know it by. A Result with Code 0 applied; Submit turns any other into a
// *RefusedError, a lookup (Tx) returns it as it is.
type Result struct {
	Hash   []byte
	Height int64
	Code   uint32
	Log    string
	Events []ledger.Event
}

// resultJSON is Result on the wire: the hash in hex, events with
// lower-case keys.
type resultJSON struct {
	Hash   string      `json:"hash"`
	Height int64       `json:"height"`
	Code   uint32      `json:"code"`
	Log    string      `json:"log"`
	Events []eventJSON `json:"events"`
}

type eventJSON struct {
	Type string `json:"type"`
	ID   string `json:"id"`
}

// MarshalJSON implements json.Marshaler.
func (r Result) MarshalJSON() ([]byte, error) {
	j := resultJSON{Hash: hex.EncodeToString(r.Hash), Height: r.Height, Code: r.Code, Log: r.Log, Events: []eventJSON{}}
	for _, e := range r.Events {
		j.Events = append(j.Events, eventJSON(e))
	}
	return json.Marshal(j)
}

// UnmarshalJSON implements json.Unmarshaler.
func (r *Result) UnmarshalJSON(b []byte) error {
	var j resultJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	h, err := hex.DecodeString(j.Hash)
	if err != nil {
		return fmt.Errorf("result hash: %w", err)
	}
	*r = Result{Hash: h, Height: j.Height, Code: j.Code, Log: j.Log}
	for _, e := range j.Events {
		r.Events = append(r.Events, ledger.Event(e))
	}
	return nil
}

// Event returns the ID of the first event of type typ, "" if none: the
// id of what the transaction created ("twin.created", "node.registered",
// "contract.created").
func (r Result) Event(typ string) string {
	for _, e := range r.Events {
		if e.Type == typ {
			return e.ID
		}
	}
	return ""
}

// TxHash is the name CometBFT gives tx: SHA-256 of its bytes.
func TxHash(tx []byte) []byte {
	h := sha256.Sum256(tx)
	return h[:]
}

// ErrorBody is the JSON of every error answer. A refused transaction
// (422) also carries its hash, its ledger result code and log, and the
// height of its block when it was refused in one (0: refused at
// CheckTx, it entered no block). A 504 carries the hash to look up.
type ErrorBody struct {
	Error  string `json:"error"`
	Hash   string `json:"hash,omitempty"`
	Height int64  `json:"height,omitempty"`
	Code   uint32 `json:"code,omitempty"`
	Log    string `json:"log,omitempty"`
}

// ErrRefused reports a transaction the ledger refused; the error is a
// *RefusedError.
var ErrRefused = errors.New("transaction refused")

// ErrPending reports a transaction whose outcome Submit could not learn
// before its context ended: it may still commit. Look it up by hash.
var ErrPending = errors.New("transaction outcome unknown")

// RefusedError is a transaction the ledger refused: at CheckTx (Height
// 0: it entered no mempool and no block) or in its block. Code is the
// ledger's result code (ledger.Code*), Log its one-line reason.
type RefusedError struct {
	Code   uint32
	Log    string
	Hash   []byte
	Height int64
}

func (e *RefusedError) Error() string {
	if name := codeNames[e.Code]; name != "" {
		return fmt.Sprintf("transaction refused (code %d, %s): %s", e.Code, name, e.Log)
	}
	return fmt.Sprintf("transaction refused (code %d): %s", e.Code, e.Log)
}

// Is makes errors.Is true for ErrRefused and for the ledger's sentinel of
// the code (ledger.ErrNonce for CodeNonce, ...), so a caller tells a
// replay from a forgery without reading the log.
func (e *RefusedError) Is(target error) bool {
	if target == ErrRefused {
		return true
	}
	s, ok := codeSentinels[e.Code]
	return ok && target == s
}

var codeSentinels = map[uint32]error{
	ledger.CodeMalformed: ledger.ErrMalformed,
	ledger.CodeChain:     ledger.ErrChain,
	ledger.CodeSignature: ledger.ErrSignature,
	ledger.CodeSigner:    ledger.ErrSigner,
	ledger.CodeNonce:     ledger.ErrNonce,
	ledger.CodeDenied:    ledger.ErrDenied,
	ledger.CodeNotFound:  ledger.ErrNotFound,
	ledger.CodeInvalid:   ledger.ErrInvalid,
	ledger.CodeConflict:  ledger.ErrConflict,
}

var codeNames = map[uint32]string{
	ledger.CodeMalformed: "malformed",
	ledger.CodeChain:     "wrong chain",
	ledger.CodeSignature: "bad signature",
	ledger.CodeSigner:    "unknown signer",
	ledger.CodeNonce:     "stale nonce",
	ledger.CodeDenied:    "denied",
	ledger.CodeNotFound:  "not found",
	ledger.CodeInvalid:   "invalid",
	ledger.CodeConflict:  "conflict",
}

// StatusError is an answer with an error status other than a refused
// transaction. A 404 wraps ledger.ErrNotFound, a 400 ledger.ErrInvalid.
type StatusError struct {
	Status int
	Body   ErrorBody
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("chain api: %d: %s", e.Status, e.Body.Error)
}

func (e *StatusError) Unwrap() error {
	switch e.Status {
	case 404:
		return ledger.ErrNotFound
	case 400:
		return ledger.ErrInvalid
	}
	return nil
}

// retryable reports a status worth trying a read again for.
func (e *StatusError) retryable() bool { return e.Status >= 500 }
