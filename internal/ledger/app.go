package ledger

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"go.etcd.io/bbolt"

	"github.com/zosgrid/zos/internal/digest"
)

// AppHashContext is the BLAKE3 derive_key context of the app hash.
const AppHashContext = "zos ledger app hash v1"

// App is the ledger's state machine on a bbolt file: twins, nodes and
// contracts, changed by signed transactions (docs/LEDGER.md). It is a
// Machine; safe for concurrent use as Machine says (blocks from one
// goroutine, CheckTx and Query from any).
type App struct {
	db *bbolt.DB

	mu      sync.Mutex // guards the fields below
	chain   string
	height  int64
	hash    []byte
	pending *block // finalized, not committed
}

var _ Machine = (*App)(nil)

// block is a finalized block waiting for Commit.
type block struct {
	height int64
	time   time.Time
	hash   []byte
	writes []write // sorted by bucket, key
}

type write struct {
	wkey
	value []byte
}

// Open opens the ledger in the bbolt file at path, creating an empty one
// (height 0, no chain id: see InitChain) if there is none.
func Open(path string) (*App, error) {
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("ledger %s: %w", path, err)
	}
	a := &App{db: db}
	err = db.Update(func(tx *bbolt.Tx) error {
		for _, b := range allBuckets() {
			if _, err := tx.CreateBucketIfNotExists([]byte(b)); err != nil {
				return err
			}
		}
		m := tx.Bucket([]byte(bucketMeta))
		a.chain = string(m.Get([]byte(metaChain)))
		if h := m.Get([]byte(metaHeight)); len(h) == 8 {
			a.height = int64(binary.BigEndian.Uint64(h))
		}
		a.hash = bytes.Clone(m.Get([]byte(metaAppHash)))
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("ledger %s: %w", path, err)
	}
	return a, nil
}

// Close closes the file. A block finalized but not committed is lost, as
// in a crash.
func (a *App) Close() error { return a.db.Close() }

// InitChain records the chain id the ledger's transactions must name
// (ABCI's InitChain). It is recorded once, at height 0; calling it again
// with the same id does nothing, with another id is an error.
func (a *App) InitChain(chainID string) error {
	if err := checkChainID(chainID); err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case a.chain == chainID:
		return nil
	case a.chain != "":
		return fmt.Errorf("ledger is chain %q, not %q", a.chain, chainID)
	case a.height != 0:
		return fmt.Errorf("ledger at height %d has no chain id", a.height)
	}
	err := a.db.Update(func(tx *bbolt.Tx) error {
		return tx.Bucket([]byte(bucketMeta)).Put([]byte(metaChain), []byte(chainID))
	})
	if err != nil {
		return fmt.Errorf("init chain: %w", err)
	}
	a.chain = chainID
	return nil
}

// ChainID returns the chain id, "" before InitChain.
func (a *App) ChainID() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.chain
}

// Info returns the last committed height and app hash.
func (a *App) Info() (int64, []byte) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.height, bytes.Clone(a.hash)
}

// CheckTx decodes tx and checks it against the committed state: chain,
// form, body rules, signer, signature, nonce. Its error's Code is the
// result code.
func (a *App) CheckTx(b []byte) error {
	chain := a.ChainID()
	t, err := DecodeTx(b)
	if err != nil {
		return err
	}
	return a.db.View(func(rtx *bbolt.Tx) error {
		s := &state{rtx: rtx}
		return s.authenticate(t, chain)
	})
}

// FinalizeBlock applies txs in order on a working copy of the committed
// state and returns their results and the app hash. A block finalized
// again before Commit replaces the earlier one (both build on the
// committed state).
func (a *App) FinalizeBlock(height int64, t time.Time, txs [][]byte) ([]TxResult, []byte) {
	a.mu.Lock()
	chain, prev := a.chain, a.hash
	a.pending = nil
	a.mu.Unlock()

	t = blockTime(t)
	results := make([]TxResult, len(txs))
	writes := map[wkey][]byte{}
	err := a.db.View(func(rtx *bbolt.Tx) error {
		for i, b := range txs {
			s := &state{rtx: rtx, block: writes, tx: map[wkey][]byte{}, height: height, time: t}
			ev, err := s.apply(b, chain)
			if err != nil {
				results[i] = TxResult{Code: Code(err), Log: oneLine(err.Error())}
				continue
			}
			for k, v := range s.tx {
				writes[k] = v
			}
			results[i] = TxResult{Events: ev}
		}
		return nil
	})
	if err != nil { // the file is closed: nothing can apply
		for i := range results {
			results[i] = TxResult{Code: CodeMalformed, Log: oneLine("ledger: " + err.Error())}
		}
		clear(writes)
	}
	ws := make([]write, 0, len(writes))
	for k, v := range writes {
		ws = append(ws, write{k, v})
	}
	slices.SortFunc(ws, func(x, y write) int {
		return cmp.Or(strings.Compare(x.bucket, y.bucket), strings.Compare(x.key, y.key))
	})
	hash := appHash(prev, height, t, txs, results, ws)
	if len(txs) == 0 && len(prev) > 0 {
		// An empty block leaves the hash as it was: CometBFT makes the
		// next block at once after one whose app hash changed, so a hash
		// moved by every empty block's height and time would keep an idle
		// chain making a block per block time forever.
		hash = prev
	}

	a.mu.Lock()
	a.pending = &block{height: height, time: t, hash: hash, writes: ws}
	a.mu.Unlock()
	return results, bytes.Clone(hash)
}

// Commit writes the last finalized block in one bbolt transaction.
func (a *App) Commit() error {
	a.mu.Lock()
	p := a.pending
	a.mu.Unlock()
	if p == nil {
		return errors.New("ledger: commit without a finalized block")
	}
	err := a.db.Update(func(tx *bbolt.Tx) error {
		for _, w := range p.writes {
			if err := tx.Bucket([]byte(w.bucket)).Put([]byte(w.key), w.value); err != nil {
				return err
			}
		}
		m := tx.Bucket([]byte(bucketMeta))
		tb, _ := p.time.MarshalText() // blockTime keeps it marshalable
		if err := m.Put([]byte(metaHeight), u64(uint64(p.height))); err != nil {
			return err
		}
		if err := m.Put([]byte(metaAppHash), p.hash); err != nil {
			return err
		}
		return m.Put([]byte(metaTime), tb)
	})
	if err != nil {
		return fmt.Errorf("ledger: commit block %d: %w", p.height, err)
	}
	a.mu.Lock()
	a.height, a.hash, a.pending = p.height, p.hash, nil
	a.mu.Unlock()
	return nil
}

// blockTime is t in UTC, or the Unix epoch for a time outside years
// 1..9999 (which JSON cannot hold): every validator records the same.
func blockTime(t time.Time) time.Time {
	t = t.UTC().Round(0)
	if y := t.Year(); y < 1 || y > 9999 {
		return time.Unix(0, 0).UTC()
	}
	return t
}

// oneLine keeps a log on one line (a spec error lists several problems).
func oneLine(s string) string { return strings.ReplaceAll(s, "\n", "; ") }

// appHash is docs/LEDGER.md's "App hash".
func appHash(prev []byte, height int64, t time.Time, txs [][]byte, results []TxResult, ws []write) []byte {
	var b []byte
	b = append(b, prev...)
	b = binary.BigEndian.AppendUint64(b, uint64(height))
	b = binary.BigEndian.AppendUint64(b, uint64(t.Unix()))
	b = binary.BigEndian.AppendUint32(b, uint32(t.Nanosecond()))
	b = binary.BigEndian.AppendUint32(b, uint32(len(txs)))
	lv := func(s string) {
		b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
		b = append(b, s...)
	}
	for i, tx := range txs {
		h := digest.Sum(tx)
		b = append(b, h[:]...)
		b = binary.BigEndian.AppendUint32(b, results[i].Code)
		b = binary.BigEndian.AppendUint32(b, uint32(len(results[i].Events)))
		for _, e := range results[i].Events {
			lv(e.Type)
			lv(e.ID)
		}
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(ws)))
	for _, w := range ws {
		lv(w.bucket)
		lv(w.key)
		lv(string(w.value))
	}
	h := digest.Derive(AppHashContext, b)
	return h[:]
}
