package ledger

import (
	"errors"
	"time"
)

// Machine is a deterministic replicated state machine as the consensus
// engine (internal/ledger/engine, CometBFT) drives it. Every validator
// runs the same blocks through its own Machine; the same blocks must give
// the same results and app hashes, byte for byte, on every machine.
//
// The engine calls it from one goroutine at a time for blocks (Info at
// start, then FinalizeBlock and Commit per block), while CheckTx and Query
// may come from other goroutines: an implementation guards its state.
type Machine interface {
	// Info returns the height and app hash of the last committed block
	// (0 and nil for a new state). The engine replays the blocks after it.
	Info() (height int64, appHash []byte)
	// CheckTx decides whether tx may enter the mempool, judged against the
	// committed state: a nil error admits it. It changes nothing.
	CheckTx(tx []byte) error
	// FinalizeBlock applies a block's transactions in order and returns
	// one result per transaction and the app hash after the block. A
	// refused transaction changes nothing and gets a non-zero Code. The
	// block is not durable until Commit.
	FinalizeBlock(height int64, time time.Time, txs [][]byte) ([]TxResult, []byte)
	// Commit makes the last finalized block durable; after a crash, Info
	// reports the last committed block.
	Commit() error
	// Query reads the committed state. path names what ("contract/7",
	// "contracts"); data carries path-specific arguments. An unknown path
	// or a missing object is an error wrapping ErrNotFound.
	Query(path string, data []byte) ([]byte, error)
}

// TxResult is the outcome of one transaction in a block.
type TxResult struct {
	Code uint32 // 0: applied; otherwise refused, and Log says why
	Log  string
	// Events name what the transaction changed, for subscribers: for
	// example {"contract.activated", "7"}.
	Events []Event
}

// Event is one change a transaction made.
type Event struct {
	Type string
	ID   string
}

// ErrNotFound reports a query for something the ledger does not hold.
var ErrNotFound = errors.New("not found")
