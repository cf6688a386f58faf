package ledger

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	"go.etcd.io/bbolt"

	"github.com/zosgrid/zos/internal/key"
)

// Buckets of the bbolt file (docs/LEDGER.md, "Storage").
const (
	bucketMeta           = "meta"
	bucketTwins          = "twins"
	bucketNodes          = "nodes"
	bucketContracts      = "contracts"
	bucketTwinKeys       = "twinkeys"
	bucketNodeKeys       = "nodekeys"
	bucketNodeContracts  = "node_contracts"
	bucketOwnerContracts = "owner_contracts"
	bucketReports        = "reports"
)

func allBuckets() []string {
	return []string{bucketMeta, bucketTwins, bucketNodes, bucketContracts, bucketTwinKeys,
		bucketNodeKeys, bucketNodeContracts, bucketOwnerContracts, bucketReports}
}

// Meta keys. The next-id counters are state (written through the block
// and hashed); height, app hash and time describe the commit itself.
const (
	metaChain        = "chain"
	metaHeight       = "height"
	metaAppHash      = "app_hash"
	metaTime         = "time"
	metaNextTwin     = "next_twin"
	metaNextNode     = "next_node"
	metaNextContract = "next_contract"
)

// wkey names one record: its bucket and key.
type wkey struct{ bucket, key string }

// state is the ledger's state as one transaction sees it: the committed
// state (rtx), overlaid with the writes of the block so far, overlaid with
// its own writes. A refused transaction's writes are dropped; an applied
// one's join the block's. Nothing is ever deleted, so an overlay is only
// puts.
type state struct {
	rtx    *bbolt.Tx
	block  map[wkey][]byte // nil outside FinalizeBlock
	tx     map[wkey][]byte
	height int64
	time   time.Time
}

func (s *state) get(bucket string, k []byte) []byte {
	w := wkey{bucket, string(k)}
	if v, ok := s.tx[w]; ok {
		return v
	}
	if v, ok := s.block[w]; ok {
		return v
	}
	if b := s.rtx.Bucket([]byte(bucket)); b != nil {
		return b.Get(k)
	}
	return nil
}

func (s *state) put(bucket string, k, v []byte) {
	s.tx[wkey{bucket, string(k)}] = v
}

func (s *state) stamp() Stamp { return Stamp{Height: s.height, Time: s.time} }

// getJSON decodes the record at k into v; false if there is none.
func (s *state) getJSON(bucket string, k []byte, v any) (bool, error) {
	b := s.get(bucket, k)
	if b == nil {
		return false, nil
	}
	if err := json.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("%w %s/%x: %v", errCorrupt, bucket, k, err)
	}
	return true, nil
}

func (s *state) putJSON(bucket string, k []byte, v any) {
	s.put(bucket, k, marshal(v))
}

// marshal is the records' JSON: fixed structs, no HTML escaping (so an
// embedded spec keeps its canonical bytes). It cannot fail on them: every
// time is clamped to years 1..9999 by blockTime.
func marshal(v any) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		panic(fmt.Sprintf("ledger: encoding a record: %v", err)) // a bug: records are plain structs
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

func u32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

// nextID returns the next id of a counter and advances it; ids start at 1.
func (s *state) nextID(counter string, limit uint64) (uint64, error) {
	id := uint64(1)
	if b := s.get(bucketMeta, []byte(counter)); len(b) == 8 {
		id = binary.BigEndian.Uint64(b)
	}
	if id > limit {
		return 0, refuse(ErrConflict, "no %s left", counter)
	}
	s.put(bucketMeta, []byte(counter), u64(id+1))
	return id, nil
}

func (s *state) twin(id uint32) (*TwinView, error) {
	var t TwinView
	ok, err := s.getJSON(bucketTwins, u32(id), &t)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, refuse(ErrNotFound, "twin %d is not registered", id)
	}
	return &t, nil
}

func (s *state) putTwin(t *TwinView) { s.putJSON(bucketTwins, u32(t.ID), t) }

// twinOfKey returns the twin that has or had k, or 0.
func (s *state) twinOfKey(k key.Public) uint32 {
	if b := s.get(bucketTwinKeys, k[:]); len(b) == 4 {
		return binary.BigEndian.Uint32(b)
	}
	return 0
}

func (s *state) node(id uint32) (*NodeView, error) {
	var n NodeView
	ok, err := s.getJSON(bucketNodes, u32(id), &n)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, refuse(ErrNotFound, "node %d is not registered", id)
	}
	return &n, nil
}

func (s *state) putNode(n *NodeView) { s.putJSON(bucketNodes, u32(n.ID), n) }

func (s *state) contract(id uint64) (*ContractView, error) {
	var c ContractView
	ok, err := s.getJSON(bucketContracts, u64(id), &c)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, refuse(ErrNotFound, "contract %d does not exist", id)
	}
	var r Report
	if ok, err := s.getJSON(bucketReports, u64(id), &r); err != nil {
		return nil, err
	} else if ok {
		c.Report = &r
	}
	return &c, nil
}

// putContract writes a changed contract. Its report lives apart (reports
// are the most frequent transaction, and a contract record carries a spec
// of up to MaxSpec bytes that a report does not need to rewrite).
func (s *state) putContract(c *ContractView) {
	c.Updated = s.stamp()
	rec := *c
	rec.Report = nil
	s.putJSON(bucketContracts, u64(c.ID), &rec)
}
