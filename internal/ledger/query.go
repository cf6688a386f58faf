package ledger

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/bbolt"
)

// Query limits: a list answers at most this many objects.
const (
	DefaultLimit      = 100
	MaxLimit          = 1000
	MaxContractsLimit = 100 // a contract view carries its spec (up to MaxSpec)
)

// InfoView is the "info" query's answer.
type InfoView struct {
	Chain   string    `json:"chain"`
	Height  int64     `json:"height"`
	AppHash string    `json:"app_hash"` // hex
	Time    time.Time `json:"time"`     // of the last committed block
}

// Page selects a range of a list by id: ids above After, at most Limit
// (0: DefaultLimit).
type Page struct {
	After uint64 `json:"after,omitempty"`
	Limit int    `json:"limit,omitempty"`
}

// ContractFilter selects contracts; zero fields select all.
type ContractFilter struct {
	Node  uint32 `json:"node,omitempty"`
	Owner uint32 `json:"owner,omitempty"`
	State string `json:"state,omitempty"`
	Page
}

// Query answers path (docs/LEDGER.md, "Queries") from the committed state
// with JSON. An unknown path or a missing object wraps ErrNotFound; bad
// data wraps ErrInvalid.
func (a *App) Query(path string, data []byte) ([]byte, error) {
	kind, id, hasID := strings.Cut(path, "/")
	var v any
	var err error
	switch {
	case kind == "info" && !hasID:
		v, err = a.InfoView()
	case (kind == "twins" || kind == "nodes") && !hasID:
		var p Page
		if err := strictJSON(data, &p); err != nil {
			return nil, err
		}
		if kind == "twins" {
			v, err = a.Twins(p)
		} else {
			v, err = a.Nodes(p)
		}
	case kind == "contracts" && !hasID:
		var f ContractFilter
		if err := strictJSON(data, &f); err != nil {
			return nil, err
		}
		v, err = a.Contracts(f)
	case hasID && (kind == "twin" || kind == "node" || kind == "contract"):
		n, perr := strconv.ParseUint(id, 10, 64)
		if perr != nil || strconv.FormatUint(n, 10) != id || n == 0 {
			return nil, fmt.Errorf("query %.80q: %w", path, ErrNotFound)
		}
		switch {
		case kind == "contract":
			v, err = a.Contract(n)
		case n > 1<<32-1:
			return nil, fmt.Errorf("query %.80q: %w", path, ErrNotFound)
		case kind == "twin":
			v, err = a.Twin(uint32(n))
		default:
			v, err = a.Node(uint32(n))
		}
	default:
		return nil, fmt.Errorf("query %.80q: no such path: %w", path, ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	return marshal(v), nil
}

// strictJSON decodes a query's optional data, refusing unknown fields.
func strictJSON(data []byte, v any) error {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("query data: %w: %v", ErrInvalid, err)
	}
	if dec.More() {
		return fmt.Errorf("query data: %w: more than one JSON value", ErrInvalid)
	}
	return nil
}

func (a *App) view(f func(s *state) error) error {
	return a.db.View(func(rtx *bbolt.Tx) error { return f(&state{rtx: rtx}) })
}

// InfoView returns the chain id, height, app hash and time of the last
// committed block.
func (a *App) InfoView() (InfoView, error) {
	var v InfoView
	err := a.view(func(s *state) error {
		m := s.rtx.Bucket([]byte(bucketMeta))
		v.Chain = string(m.Get([]byte(metaChain)))
		if h := m.Get([]byte(metaHeight)); len(h) == 8 {
			v.Height = int64(bytesU64(h))
		}
		v.AppHash = hex.EncodeToString(m.Get([]byte(metaAppHash)))
		if t := m.Get([]byte(metaTime)); t != nil {
			if err := v.Time.UnmarshalText(t); err != nil {
				return fmt.Errorf("%w: meta time: %v", errCorrupt, err)
			}
		}
		return nil
	})
	return v, err
}

func bytesU64(b []byte) uint64 {
	var v uint64
	for _, c := range b {
		v = v<<8 | uint64(c)
	}
	return v
}

// Twin returns twin id.
func (a *App) Twin(id uint32) (*TwinView, error) {
	var t *TwinView
	err := a.view(func(s *state) (err error) { t, err = s.twin(id); return })
	return t, err
}

// Node returns node id.
func (a *App) Node(id uint32) (*NodeView, error) {
	var n *NodeView
	err := a.view(func(s *state) (err error) { n, err = s.node(id); return })
	return n, err
}

// Contract returns contract id.
func (a *App) Contract(id uint64) (*ContractView, error) {
	var c *ContractView
	err := a.view(func(s *state) (err error) { c, err = s.contract(id); return })
	return c, err
}

func limit(l, max int) (int, error) {
	switch {
	case l == 0:
		return min(DefaultLimit, max), nil
	case l < 0 || l > max:
		return 0, fmt.Errorf("limit %d: %w: want 1..%d", l, ErrInvalid, max)
	}
	return l, nil
}

// Twins lists twins by id.
func (a *App) Twins(p Page) ([]TwinView, error) {
	out := []TwinView{}
	err := list(a, bucketTwins, p, MaxLimit, 4, func(v TwinView) bool { out = append(out, v); return true })
	return out, err
}

// Nodes lists nodes by id.
func (a *App) Nodes(p Page) ([]NodeView, error) {
	out := []NodeView{}
	err := list(a, bucketNodes, p, MaxLimit, 4, func(v NodeView) bool { out = append(out, v); return true })
	return out, err
}

// list walks a bucket of records keyed by big-endian ids of size bytes,
// from above p.After, giving each to keep until limit are kept.
func list[T any](a *App, bucket string, p Page, max, size int, keep func(T) bool) error {
	n, err := limit(p.Limit, max)
	if err != nil {
		return err
	}
	if size == 4 && p.After >= 1<<32-1 || p.After == 1<<64-1 {
		return nil // nothing above
	}
	return a.db.View(func(rtx *bbolt.Tx) error {
		c := rtx.Bucket([]byte(bucket)).Cursor()
		start := u64(p.After + 1)[8-size:]
		kept := 0
		for k, v := c.Seek(start); k != nil && kept < n; k, v = c.Next() {
			var t T
			if err := json.Unmarshal(v, &t); err != nil {
				return fmt.Errorf("%w %s/%x: %v", errCorrupt, bucket, k, err)
			}
			if keep(t) {
				kept++
			}
		}
		return nil
	})
}

// Contracts lists contracts by id, filtered: a node asks for
// {Node: itself, State: "active"}. The node and owner filters use indexes.
func (a *App) Contracts(f ContractFilter) ([]ContractView, error) {
	switch f.State {
	case "", StatePending, StateActive, StateCancelled:
	default:
		return nil, fmt.Errorf("state %.40q: %w: want pending, active or cancelled", f.State, ErrInvalid)
	}
	n, err := limit(f.Limit, MaxContractsLimit)
	if err != nil {
		return nil, err
	}
	match := func(c *ContractView) bool {
		return (f.Node == 0 || c.Node == f.Node) && (f.Owner == 0 || c.Owner == f.Owner) &&
			(f.State == "" || c.State == f.State)
	}
	out := []ContractView{}
	index, prefix := bucketContracts, []byte{}
	switch {
	case f.Node != 0:
		index, prefix = bucketNodeContracts, u32(f.Node)
	case f.Owner != 0:
		index, prefix = bucketOwnerContracts, u32(f.Owner)
	}
	err = a.view(func(s *state) error {
		if f.After == 1<<64-1 {
			return nil
		}
		cur := s.rtx.Bucket([]byte(index)).Cursor()
		for k, _ := cur.Seek(append(bytes.Clone(prefix), u64(f.After+1)...)); k != nil && bytes.HasPrefix(k, prefix) && len(out) < n; k, _ = cur.Next() {
			c, err := s.contract(bytesU64(k[len(prefix):]))
			if err != nil {
				return err
			}
			if match(c) {
				out = append(out, *c)
			}
		}
		return nil
	})
	return out, err
}
