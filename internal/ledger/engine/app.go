package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	abci "github.com/cometbft/cometbft/abci/types"

	"github.com/zosgrid/zos/internal/ledger"
)

// ABCI result codes the engine gives. A Machine's FinalizeBlock chooses its
// own non-zero codes for refused transactions; these are the engine's for
// the answers it builds itself.
const (
	// CodeOK is a transaction admitted or applied, a query answered.
	CodeOK uint32 = abci.CodeTypeOK
	// CodeRefused is a query that failed for another reason than a
	// missing object, and a transaction the Machine's CheckTx refused
	// with an error that carries no ledger result code (ledger.Code gives
	// the same 1 for those; a ledger refusal keeps its own code).
	CodeRefused uint32 = 1
	// CodeNotFound is a query for something the ledger does not hold
	// (ledger.ErrNotFound), kept apart so that a remote client can tell
	// "absent" from "broken".
	CodeNotFound uint32 = 2
)

// eventIDKey is the attribute under which a ledger.Event's ID travels in
// an ABCI event. It is indexed so that "contract.activated.id='7'" finds
// the transaction that activated contract 7.
const eventIDKey = "id"

// app adapts a ledger.Machine to CometBFT's ABCI 2.0 Application.
//
// CometBFT calls it on separate connections (consensus, mempool, query),
// each serialised on its own but not with each other: the Machine guards
// its state, and app guards the heights it keeps.
type app struct {
	abci.BaseApplication // snapshots and vote extensions: not used

	m   ledger.Machine
	log *slog.Logger
	// prepare, when set, rewrites the transactions of the blocks this
	// validator proposes. Tests use it to put in a block a transaction
	// that never passed CheckTx, as a faulty proposer would.
	prepare func(txs [][]byte) [][]byte

	// The Machine's last commit, as its Info said at start and after each
	// Commit. The Machine's contract lets only CheckTx and Query come from
	// other goroutines than the block's, so ABCI Info requests at run time
	// (RPC abci_info) and Node.Status read this copy, never the Machine.
	mu        sync.Mutex
	committed int64
	appHash   []byte
	changed   chan struct{} // closed and replaced when committed moves
}

var _ abci.Application = (*app)(nil)

func newApp(m ledger.Machine, log *slog.Logger) *app {
	h, hash := m.Info()
	return &app{m: m, log: log, committed: h, appHash: bytes.Clone(hash), changed: make(chan struct{})}
}

// height returns the last committed height and a channel closed when it
// changes.
func (a *app) height() (int64, <-chan struct{}) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.committed, a.changed
}

// last returns the last committed height and app hash.
func (a *app) last() (int64, []byte) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.committed, a.appHash
}

func (a *app) setCommitted(h int64, hash []byte) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.committed, a.appHash = h, bytes.Clone(hash)
	close(a.changed)
	a.changed = make(chan struct{})
}

// Info tells CometBFT where the Machine stands. CometBFT compares it with
// its block store at start and replays the blocks the Machine lacks
// (see the Replay section of the package doc).
func (a *app) Info(context.Context, *abci.InfoRequest) (*abci.InfoResponse, error) {
	h, hash := a.last()
	return &abci.InfoResponse{
		Data:             "zos ledger",
		LastBlockHeight:  h,
		LastBlockAppHash: hash,
	}, nil
}

// ChainIniter is a Machine that must learn the chain id from genesis
// before its first block: ledger.App refuses every transaction until it
// knows the chain its transactions must name.
type ChainIniter interface {
	InitChain(chainID string) error
}

// InitChain hands the genesis chain id to a Machine that wants it, and
// accepts the genesis validators as they are: validators are chosen in
// genesis.json, not by the Machine. The Machine's state starts empty, so
// the genesis app hash is empty too. CometBFT calls it once per Machine
// with nothing committed (a new chain, or a wiped Machine about to replay
// every block); a refusal stops the start.
func (a *app) InitChain(_ context.Context, req *abci.InitChainRequest) (*abci.InitChainResponse, error) {
	if ci, ok := a.m.(ChainIniter); ok {
		if err := ci.InitChain(req.ChainId); err != nil {
			return nil, fmt.Errorf("init chain %q: %w", req.ChainId, err)
		}
	}
	return &abci.InitChainResponse{}, nil
}

// CheckTx gives a refusal the ledger's result code (ledger.Code), the same
// code the transaction would get in a block, so that a client tells a
// stale nonce from a forgery without reading the log.
func (a *app) CheckTx(_ context.Context, req *abci.CheckTxRequest) (*abci.CheckTxResponse, error) {
	if err := a.m.CheckTx(req.Tx); err != nil {
		return &abci.CheckTxResponse{Code: ledger.Code(err), Log: err.Error()}, nil
	}
	return &abci.CheckTxResponse{Code: CodeOK}, nil
}

func (a *app) PrepareProposal(ctx context.Context, req *abci.PrepareProposalRequest) (*abci.PrepareProposalResponse, error) {
	res, err := a.BaseApplication.PrepareProposal(ctx, req)
	if err != nil || a.prepare == nil {
		return res, err
	}
	res.Txs = a.prepare(res.Txs)
	return res, nil
}

// ProcessProposal accepts every well-formed block (BaseApplication): a
// transaction the Machine refuses is recorded in the block with its
// non-zero code, the same on every validator, rather than stalling the
// round by rejecting the proposal.

func (a *app) FinalizeBlock(_ context.Context, req *abci.FinalizeBlockRequest) (*abci.FinalizeBlockResponse, error) {
	results, hash := a.m.FinalizeBlock(req.Height, req.Time, req.Txs)
	if len(results) != len(req.Txs) {
		// CometBFT halts on this error: a result count that does not
		// match would make validators disagree on what each tx did.
		return nil, fmt.Errorf("machine gave %d results for %d txs at height %d", len(results), len(req.Txs), req.Height)
	}
	out := make([]*abci.ExecTxResult, len(results))
	for i, r := range results {
		out[i] = &abci.ExecTxResult{Code: r.Code, Log: r.Log, Events: toABCIEvents(r.Events)}
	}
	return &abci.FinalizeBlockResponse{TxResults: out, AppHash: hash}, nil
}

// Commit makes the finalized block durable. RetainHeight stays 0: every
// block is kept, because a node with a wiped Machine rebuilds its state by
// replaying them all (stateless nodes), and the ledger is an audit trail.
func (a *app) Commit(context.Context, *abci.CommitRequest) (*abci.CommitResponse, error) {
	if err := a.m.Commit(); err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	// The Machine is the authority on what it committed (a block replayed
	// at start goes through here too).
	a.setCommitted(a.m.Info())
	return &abci.CommitResponse{}, nil
}

func (a *app) Query(_ context.Context, req *abci.QueryRequest) (*abci.QueryResponse, error) {
	h, _ := a.last()
	v, err := a.m.Query(req.Path, req.Data)
	switch {
	case errors.Is(err, ledger.ErrNotFound):
		return &abci.QueryResponse{Code: CodeNotFound, Log: err.Error(), Height: h}, nil
	case err != nil:
		return &abci.QueryResponse{Code: CodeRefused, Log: err.Error(), Height: h}, nil
	}
	return &abci.QueryResponse{Code: CodeOK, Value: v, Height: h}, nil
}

func toABCIEvents(evs []ledger.Event) []abci.Event {
	if len(evs) == 0 {
		return nil
	}
	out := make([]abci.Event, len(evs))
	for i, e := range evs {
		out[i] = abci.Event{
			Type:       e.Type,
			Attributes: []abci.EventAttribute{{Key: eventIDKey, Value: e.ID, Index: true}},
		}
	}
	return out
}

func fromABCIEvents(evs []abci.Event) []ledger.Event {
	var out []ledger.Event
	for _, e := range evs {
		for _, a := range e.Attributes {
			if a.Key == eventIDKey {
				out = append(out, ledger.Event{Type: e.Type, ID: a.Value})
				break
			}
		}
	}
	return out
}
