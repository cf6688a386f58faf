package engine

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"time"

	"github.com/zosgrid/zos/internal/ledger"
)

// kvMachine is a small deterministic ledger.Machine for the engine's
// tests: a transaction "k=v" sets k to v; one starting with "bad" or
// without "=" is refused, one starting with "old" as a stale nonce
// (ledger.ErrNonce). The app hash chains: the hash of the previous
// one, the height and every applied transaction.
//
// Its committed states stay in memory across engine restarts, standing
// for a Machine's durable state; forget drops the last commits, as a
// Machine that crashed before its writes reached the disk.
type kvMachine struct {
	mu        sync.Mutex
	committed []kvState // committed[0] is the empty state at height 0
	pending   *kvState
	// onFinalize, when set, sees every block's transactions.
	onFinalize func(txs [][]byte)
	// chainID is what InitChain was given; refuseChain makes it fail.
	chainID     string
	refuseChain bool
}

type kvState struct {
	height int64
	hash   []byte
	kv     map[string]string
}

var (
	_ ledger.Machine = (*kvMachine)(nil)
	_ ChainIniter    = (*kvMachine)(nil)
)

// InitChain records the genesis chain id, as ledger.App does.
func (m *kvMachine) InitChain(chainID string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.refuseChain {
		return errors.New("this machine refuses every chain")
	}
	m.chainID = chainID
	return nil
}

func (m *kvMachine) chain() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.chainID
}

func newKV() *kvMachine {
	return &kvMachine{committed: []kvState{{kv: map[string]string{}}}}
}

func (m *kvMachine) last() kvState { return m.committed[len(m.committed)-1] }

func (m *kvMachine) Info() (int64, []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.last()
	return s.height, s.hash
}

func checkKV(tx []byte) (k, v string, err error) {
	s := string(tx)
	if strings.HasPrefix(s, "bad") {
		return "", "", fmt.Errorf("refused %q: bad transaction", s)
	}
	if strings.HasPrefix(s, "old") {
		return "", "", fmt.Errorf("refused %q: %w", s, ledger.ErrNonce)
	}
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return "", "", fmt.Errorf("refused %q: not k=v", s)
	}
	return k, v, nil
}

func (m *kvMachine) CheckTx(tx []byte) error {
	_, _, err := checkKV(tx)
	return err
}

func (m *kvMachine) FinalizeBlock(height int64, _ time.Time, txs [][]byte) ([]ledger.TxResult, []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.onFinalize != nil {
		m.onFinalize(txs)
	}
	prev := m.last()
	next := kvState{height: height, kv: maps.Clone(prev.kv)}
	h := sha256.New()
	h.Write(prev.hash)
	binary.Write(h, binary.BigEndian, height)
	results := make([]ledger.TxResult, len(txs))
	for i, tx := range txs {
		k, v, err := checkKV(tx)
		if err != nil {
			results[i] = ledger.TxResult{Code: 7, Log: err.Error()}
			continue
		}
		next.kv[k] = v
		h.Write(tx)
		h.Write([]byte{0})
		results[i] = ledger.TxResult{Events: []ledger.Event{{Type: "kv.set", ID: k}}}
	}
	next.hash = h.Sum(nil)
	m.pending = &next
	return results, next.hash
}

func (m *kvMachine) Commit() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.pending == nil {
		return errors.New("commit without a finalized block")
	}
	m.committed = append(m.committed, *m.pending)
	m.pending = nil
	return nil
}

func (m *kvMachine) Query(path string, data []byte) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if path != "get" {
		return nil, fmt.Errorf("path %q: %w", path, ledger.ErrNotFound)
	}
	v, ok := m.last().kv[string(data)]
	if !ok {
		return nil, fmt.Errorf("key %q: %w", data, ledger.ErrNotFound)
	}
	return []byte(v), nil
}

// forget drops the last n commits.
func (m *kvMachine) forget(n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.committed = m.committed[:len(m.committed)-n]
	m.pending = nil
}

// hashAt returns the app hash committed at height h, if the machine has it.
func (m *kvMachine) hashAt(h int64) ([]byte, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range m.committed {
		if s.height == h {
			return bytes.Clone(s.hash), true
		}
	}
	return nil, false
}
