package node

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/zosgrid/zos/internal/auth"
	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/key"
	"github.com/zosgrid/zos/internal/node/nodeclient"
)

// HistoryDomain is the signing domain of a history record's hash.
const HistoryDomain = "zos node history v1"

var (
	bucketMeta        = []byte("meta")
	bucketDeployments = []byte("deployments")
	bucketHistory     = []byte("history")
	keyNextID         = []byte("next-id")
)

// ErrLocked is wrapped by OpenDB's error when another process (a running
// agent) holds the state file.
var ErrLocked = errors.New("state file locked by another process")

// Event is one record of the history.
type Event = nodeclient.Event

// ErrTampered is wrapped by VerifyHistory's error for a record that does
// not chain, hash or verify.
var ErrTampered = errors.New("history tampered")

// record is a deployment as stored: the accepted spec in canonical form
// (with its signatures), so it can be verified again at any time.
type record struct {
	ID       uint64    `json:"id"`
	Owner    uint32    `json:"owner"`
	Version  uint64    `json:"version"`
	State    string    `json:"state"`
	Accepted time.Time `json:"accepted"`
	Spec     []byte    `json:"spec"`
	// Contract is the ledger contract the deployment was made from (0: a
	// deployment through the API).
	Contract uint64 `json:"contract,omitempty"`
}

// DB is the agent's state: deployments and the hash-chained history, in
// one bbolt file. Every change is one bbolt transaction.
type DB struct {
	bolt *bolt.DB
	key  key.Secret
	now  func() time.Time
}

// OpenDB opens (creating) the database at path; sec signs history records.
// timeout bounds the wait for the file lock another process holds.
func OpenDB(path string, sec key.Secret, readOnly bool, timeout time.Duration) (*DB, error) {
	b, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout, ReadOnly: readOnly})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("state %s: %w", path, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("state %s: %w", path, err)
	}
	db := &DB{bolt: b, key: sec, now: time.Now}
	if !readOnly {
		err = b.Update(func(tx *bolt.Tx) error {
			for _, n := range [][]byte{bucketMeta, bucketDeployments, bucketHistory} {
				if _, err := tx.CreateBucketIfNotExists(n); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Close()
			return nil, fmt.Errorf("state %s: %w", path, err)
		}
	}
	return db, nil
}

// Close closes the file.
func (db *DB) Close() error { return db.bolt.Close() }

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

// hashEvent is the BLAKE3 of the event's JSON with Hash and Sig empty.
func hashEvent(e nodeclient.Event) digest.ID {
	e.Hash, e.Sig = "", ""
	b, _ := json.Marshal(e)
	return digest.Sum(b)
}

// appendEvent adds e to the history inside tx, chained to the last record.
func (db *DB) appendEvent(tx *bolt.Tx, e nodeclient.Event) (nodeclient.Event, error) {
	h := tx.Bucket(bucketHistory)
	e.Prev = digest.ID{}.String()
	if k, v := h.Cursor().Last(); k != nil {
		var last nodeclient.Event
		if err := json.Unmarshal(v, &last); err != nil {
			return e, fmt.Errorf("history record %d: %w", binary.BigEndian.Uint64(k), err)
		}
		e.Prev = last.Hash
	}
	seq, err := h.NextSequence()
	if err != nil {
		return e, err
	}
	e.Seq = seq
	if e.Time.IsZero() {
		e.Time = db.now().UTC()
	}
	sum := hashEvent(e)
	e.Hash = sum.String()
	e.Sig = hex.EncodeToString(db.key.Sign(HistoryDomain, sum[:]))
	b, err := json.Marshal(e)
	if err != nil {
		return e, err
	}
	return e, h.Put(u64(seq), b)
}

// Record appends one event to the history.
func (db *DB) Record(e nodeclient.Event) (nodeclient.Event, error) {
	var out nodeclient.Event
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		var err error
		out, err = db.appendEvent(tx, e)
		return err
	})
	return out, err
}

// History returns the records of deployment dep (every record when dep is
// 0), oldest first.
func (db *DB) History(dep uint64) ([]nodeclient.Event, error) {
	var out []nodeclient.Event
	err := db.bolt.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketHistory).ForEach(func(k, v []byte) error {
			var e nodeclient.Event
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("history record %d: %w: %v", binary.BigEndian.Uint64(k), ErrTampered, err)
			}
			if dep == 0 || e.Deployment == dep {
				out = append(out, e)
			}
			return nil
		})
	})
	return out, err
}

// VerifyEvents checks that events form one chain from the first record:
// consecutive sequence numbers, each Prev the hash of the record before,
// each Hash the hash of its record, each Sig the node key's signature.
// It returns the number checked and an error wrapping ErrTampered naming
// the first record that fails.
func VerifyEvents(events []nodeclient.Event, node key.Public) (int, error) {
	prev := digest.ID{}.String()
	for i, e := range events {
		bad := func(why string) (int, error) {
			return i, fmt.Errorf("record %d (%s, deployment %d): %w: %s", e.Seq, e.Kind, e.Deployment, ErrTampered, why)
		}
		if e.Seq != uint64(i)+1 {
			return bad(fmt.Sprintf("sequence number %d where %d was due (a record was removed or inserted)", e.Seq, i+1))
		}
		if e.Prev != prev {
			return bad("does not chain to the record before it")
		}
		sum := hashEvent(e)
		if e.Hash != sum.String() {
			return bad("content does not match its hash (the record was changed)")
		}
		sig, err := hex.DecodeString(e.Sig)
		if err != nil || !node.Verify(HistoryDomain, sum[:], sig) {
			return bad("signature is not the node's")
		}
		prev = e.Hash
	}
	return len(events), nil
}

// VerifyHistory verifies the whole stored history (VerifyEvents).
func (db *DB) VerifyHistory() (int, error) {
	ev, err := db.History(0)
	if err != nil {
		return 0, err
	}
	return VerifyEvents(ev, db.key.Public())
}

// create stores a new deployment with the next id and records events
// with it, in one transaction.
func (db *DB) create(r record, events ...nodeclient.Event) (record, error) {
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		var err error
		r, err = db.createIn(tx, r, events)
		return err
	})
	return r, err
}

// createIn is create inside tx.
func (db *DB) createIn(tx *bolt.Tx, r record, events []nodeclient.Event) (record, error) {
	m := tx.Bucket(bucketMeta)
	id := uint64(1)
	if v := m.Get(keyNextID); v != nil {
		id = binary.BigEndian.Uint64(v)
	}
	if err := m.Put(keyNextID, u64(id+1)); err != nil {
		return r, err
	}
	r.ID = id
	return r, db.put(tx, r, events)
}

// put stores r (replacing) and records events for it in one transaction.
func (db *DB) put(tx *bolt.Tx, r record, events []nodeclient.Event) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if err := tx.Bucket(bucketDeployments).Put(u64(r.ID), b); err != nil {
		return err
	}
	for _, e := range events {
		e.Deployment = r.ID
		if _, err := db.appendEvent(tx, e); err != nil {
			return err
		}
	}
	return nil
}

// update changes deployment id with fn inside one transaction, recording
// the events fn returns.
func (db *DB) update(id uint64, fn func(r *record) ([]nodeclient.Event, error)) (record, error) {
	var r record
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketDeployments).Get(u64(id))
		if v == nil {
			return errNoDeployment
		}
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("deployment %d: %w", id, err)
		}
		ev, err := fn(&r)
		if err != nil {
			return err
		}
		return db.put(tx, r, ev)
	})
	return r, err
}

var errNoDeployment = errors.New("no such deployment")

// get returns deployment id.
func (db *DB) get(id uint64) (record, error) {
	var r record
	err := db.bolt.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketDeployments).Get(u64(id))
		if v == nil {
			return errNoDeployment
		}
		return json.Unmarshal(v, &r)
	})
	return r, err
}

// list returns every stored deployment, by id.
func (db *DB) list() ([]record, error) {
	var out []record
	err := db.bolt.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketDeployments).ForEach(func(_, v []byte) error {
			var r record
			if err := json.Unmarshal(v, &r); err != nil {
				return err
			}
			out = append(out, r)
			return nil
		})
	})
	return out, err
}

var bucketNonces = []byte("nonces")

// Use records a request nonce (auth.NonceStore), so that a request is
// accepted once even across restarts of the agent. Expired nonces are
// swept now and then in the same transaction.
func (db *DB) Use(_ context.Context, k key.Public, nonce string, until time.Time) error {
	id := append(append([]byte{}, k[:]...), nonce...)
	return db.bolt.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketNonces)
		if err != nil {
			return err
		}
		if b.Get(id) != nil {
			return auth.ErrReplay
		}
		now := db.now()
		if now.Unix()%64 == 0 { // about once a minute, bounded by the request rate
			c := b.Cursor()
			for k, v := c.First(); k != nil; k, v = c.Next() {
				if len(v) == 8 && int64(binary.BigEndian.Uint64(v)) < now.Unix() {
					if err := c.Delete(); err != nil {
						return err
					}
				}
			}
		}
		return b.Put(id, u64(uint64(until.Unix())))
	})
}
