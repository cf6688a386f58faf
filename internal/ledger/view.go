package ledger

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/key"
	"github.com/zosgrid/zos/internal/spec"
)

// The views are both what the ledger stores (as JSON, one record per
// object) and what queries return, so a client decodes exactly what the
// validators agreed on.

// Contract states.
const (
	StatePending   = "pending"
	StateActive    = "active"
	StateCancelled = "cancelled"
)

// Stamp is when something happened: a block's height and time.
type Stamp struct {
	Height int64     `json:"height"`
	Time   time.Time `json:"time"`
}

// TwinView is a twin.
type TwinView struct {
	ID    uint32     `json:"id"`
	Key   key.Public `json:"key"`
	Keys  []KeyView  `json:"keys"` // every key it had, oldest first; the last is Key
	Nonce uint64     `json:"nonce"`
}

// KeyView is a key a twin had, and the height from which it had it.
type KeyView struct {
	Key   key.Public `json:"key"`
	Since int64      `json:"since"`
}

// KeyAt returns the twin's key in force at height (its first key before
// that one existed).
func (t *TwinView) KeyAt(height int64) key.Public {
	k := t.Key
	for i := len(t.Keys) - 1; i >= 0; i-- {
		k = t.Keys[i].Key
		if t.Keys[i].Since <= height {
			break
		}
	}
	return k
}

// NodeView is a node.
type NodeView struct {
	ID    uint32     `json:"id"`
	Owner uint32     `json:"owner"`
	Key   key.Public `json:"key"`
	Capacity
	Endpoint string `json:"endpoint"`
	Nonce    uint64 `json:"nonce"`
	Created  Stamp  `json:"created"`
	Updated  Stamp  `json:"updated"`
}

// Approval is a twin's spec signature of a contract's spec.
type Approval struct {
	Twin uint32     `json:"twin"`
	Key  key.Public `json:"key"`
	Sig  Sig        `json:"sig"`
}

// Signature returns the approval as a spec signature.
func (a Approval) Signature() spec.Signature {
	return spec.Signature{Twin: a.Twin, Key: a.Key, Sig: a.Sig}
}

func approval(s spec.Signature) Approval { return Approval{Twin: s.Twin, Key: s.Key, Sig: s.Sig} }

// ContractView is a contract: the spec in force (pending or active) with
// its approvals, a proposed revision, cancel votes and the node's report.
type ContractView struct {
	ID      uint64    `json:"id"`
	Owner   uint32    `json:"owner"`
	Node    uint32    `json:"node"`
	State   string    `json:"state"` // a State* constant
	Version uint64    `json:"version"`
	Digest  digest.ID `json:"digest"` // the spec's challenge
	// Spec is the deployment's stripped canonical form (docs/SPEC.md).
	Spec      json.RawMessage `json:"spec"`
	Approvals []Approval      `json:"approvals"` // by twin
	// Since is the height at which Spec became active; 0 while pending.
	Since       int64     `json:"since"`
	Revision    *Revision `json:"revision"`     // a proposed update of an active contract
	CancelVotes []uint32  `json:"cancel_votes"` // of an active contract, by twin
	Report      *Report   `json:"report"`       // the node's last
	Created     Stamp     `json:"created"`
	Updated     Stamp     `json:"updated"`
}

// Revision is a proposed higher version of an active contract's spec,
// waiting for its approvals.
type Revision struct {
	Version   uint64          `json:"version"`
	Digest    digest.ID       `json:"digest"`
	Spec      json.RawMessage `json:"spec"`
	Approvals []Approval      `json:"approvals"`
	Created   Stamp           `json:"created"`
}

// Report is a node's observation of a contract.
type Report struct {
	State   string `json:"state"`
	Detail  string `json:"detail"`
	Version uint64 `json:"version"`
	At      Stamp  `json:"at"`
}

// Deployment rebuilds the contract's deployment with its approvals as
// signatures, so that its node can run spec.Verify on it itself.
func (c *ContractView) Deployment() (*spec.Deployment, error) {
	return deployment(c.Spec, c.Approvals)
}

// Deployment rebuilds the revision's deployment with its approvals.
func (r *Revision) Deployment() (*spec.Deployment, error) {
	return deployment(r.Spec, r.Approvals)
}

func deployment(s json.RawMessage, approvals []Approval) (*spec.Deployment, error) {
	d, err := spec.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("contract spec: %w", err)
	}
	for _, a := range approvals {
		d.Signatures = append(d.Signatures, a.Signature())
	}
	return d, nil
}

// Verify runs spec.Verify on the contract's deployment with twins' keys:
// for an active contract the keys in force when its spec became active,
// for a pending one their current keys. A node calls it with the twins it
// read from the ledger, so it checks the approvals itself instead of
// trusting the contract's state.
func (c *ContractView) Verify(twins map[uint32]TwinView) (spec.Result, error) {
	d, err := c.Deployment()
	if err != nil {
		return spec.Result{}, err
	}
	keys := map[uint32]key.Public{}
	for id, t := range twins {
		if c.Since > 0 {
			keys[id] = t.KeyAt(c.Since)
		} else {
			keys[id] = t.Key
		}
	}
	return spec.Verify(d, keys)
}

var errCorrupt = errors.New("corrupt record")
