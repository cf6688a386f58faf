package ledger

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/key"
	"github.com/zosgrid/zos/internal/spec"
)

// authenticate checks a decoded transaction against the state: its chain,
// its own rules, its signer, signature and nonce. It is all CheckTx asks.
func (s *state) authenticate(t *Tx, chain string) error {
	if chain == "" {
		return refuse(ErrChain, "the ledger has no chain id yet (InitChain)")
	}
	if t.Chain != chain {
		return refuse(ErrChain, "transaction for chain %q, this is %q", t.Chain, chain)
	}
	if err := t.Validate(); err != nil {
		return err
	}
	var pub key.Public
	var last uint64
	switch {
	case t.Signer.Key != nil:
		pub = *t.Signer.Key
		if id := s.twinOfKey(pub); id != 0 {
			return refuse(ErrConflict, "key %s is already registered (twin %d)", pub, id)
		}
	case t.Signer.Twin != 0:
		tw, err := s.twin(t.Signer.Twin)
		if errors.Is(err, ErrNotFound) {
			return refuse(ErrSigner, "twin %d is not registered", t.Signer.Twin)
		} else if err != nil {
			return err
		}
		pub, last = tw.Key, tw.Nonce
	default:
		n, err := s.node(t.Signer.Node)
		if errors.Is(err, ErrNotFound) {
			return refuse(ErrSigner, "node %d is not registered", t.Signer.Node)
		} else if err != nil {
			return err
		}
		pub, last = n.Key, n.Nonce
	}
	if !t.VerifySig(pub) {
		return refuse(ErrSignature, "transaction signature does not verify with the key of %s", t.Signer)
	}
	if t.Nonce <= last {
		return refuse(ErrNonce, "nonce %d is not above %s's last %d (a replay, or sent out of order)", t.Nonce, t.Signer, last)
	}
	return nil
}

// apply decodes, authenticates and applies one transaction on s, and
// returns the events. On an error the caller drops s's writes.
func (s *state) apply(b []byte, chain string) ([]Event, error) {
	t, err := DecodeTx(b)
	if err != nil {
		return nil, err
	}
	if err := s.authenticate(t, chain); err != nil {
		return nil, err
	}
	var ev []Event
	switch body := t.Body.(type) {
	case *TwinCreate:
		ev, err = s.twinCreate(t)
	case *TwinRotate:
		ev, err = s.twinRotate(t, body)
	case *NodeRegister:
		ev, err = s.nodeRegister(t, body)
	case *NodeUpdate:
		ev, err = s.nodeUpdate(t, body)
	case *NodeReport:
		ev, err = s.nodeReport(t, body)
	case *ContractCreate:
		ev, err = s.contractCreate(t, body)
	case *ContractApprove:
		ev, err = s.contractApprove(t, body)
	case *ContractUpdate:
		ev, err = s.contractUpdate(t, body)
	case *ContractCancel:
		ev, err = s.contractCancel(t, body)
	default:
		err = refuse(ErrMalformed, "type %s has no rule", t.Type()) // unreachable: DecodeTx knows the types
	}
	if err != nil {
		return nil, err
	}
	return ev, s.advanceNonce(t)
}

// advanceNonce records the transaction's nonce as its signer's last.
func (s *state) advanceNonce(t *Tx) error {
	switch {
	case t.Signer.Key != nil: // twinCreate set it
		return nil
	case t.Signer.Twin != 0:
		tw, err := s.twin(t.Signer.Twin)
		if err != nil {
			return err
		}
		tw.Nonce = t.Nonce
		s.putTwin(tw)
	default:
		n, err := s.node(t.Signer.Node)
		if err != nil {
			return err
		}
		n.Nonce = t.Nonce
		s.putNode(n)
	}
	return nil
}

func event(typ string, id uint64) Event { return Event{Type: typ, ID: strconv.FormatUint(id, 10)} }

func (s *state) twinCreate(t *Tx) ([]Event, error) {
	id, err := s.nextID(metaNextTwin, 1<<32-1)
	if err != nil {
		return nil, err
	}
	k := *t.Signer.Key
	tw := &TwinView{ID: uint32(id), Key: k, Keys: []KeyView{{k, s.height}}, Nonce: t.Nonce}
	s.putTwin(tw)
	s.put(bucketTwinKeys, k[:], u32(tw.ID))
	return []Event{event("twin.created", id)}, nil
}

func (s *state) twinRotate(t *Tx, b *TwinRotate) ([]Event, error) {
	if id := s.twinOfKey(b.Key); id != 0 {
		return nil, refuse(ErrConflict, "key %s is or was twin %d's: keys are never reused", b.Key, id)
	}
	tw, err := s.twin(t.Signer.Twin)
	if err != nil {
		return nil, err
	}
	if len(tw.Keys) >= MaxKeys {
		return nil, refuse(ErrConflict, "twin %d has had %d keys, the limit", tw.ID, MaxKeys)
	}
	tw.Key = b.Key
	tw.Keys = append(tw.Keys, KeyView{b.Key, s.height})
	s.putTwin(tw)
	s.put(bucketTwinKeys, b.Key[:], u32(tw.ID))
	return []Event{event("twin.rotated", uint64(tw.ID))}, nil
}

func (s *state) nodeRegister(t *Tx, b *NodeRegister) ([]Event, error) {
	if v := s.get(bucketNodeKeys, b.Key[:]); v != nil {
		return nil, refuse(ErrConflict, "node key %s is already registered", b.Key)
	}
	id, err := s.nextID(metaNextNode, 1<<32-1)
	if err != nil {
		return nil, err
	}
	n := &NodeView{ID: uint32(id), Owner: t.Signer.Twin, Key: b.Key, Capacity: b.Capacity,
		Endpoint: b.Endpoint, Created: s.stamp(), Updated: s.stamp()}
	s.putNode(n)
	s.put(bucketNodeKeys, b.Key[:], u32(n.ID))
	return []Event{event("node.registered", id)}, nil
}

func (s *state) nodeUpdate(t *Tx, b *NodeUpdate) ([]Event, error) {
	n, err := s.node(b.Node)
	if err != nil {
		return nil, err
	}
	if n.Owner != t.Signer.Twin {
		return nil, refuse(ErrDenied, "node %d is twin %d's, not twin %d's", n.ID, n.Owner, t.Signer.Twin)
	}
	n.Capacity, n.Endpoint, n.Updated = b.Capacity, b.Endpoint, s.stamp()
	s.putNode(n)
	return []Event{event("node.updated", uint64(n.ID))}, nil
}

func (s *state) nodeReport(t *Tx, b *NodeReport) ([]Event, error) {
	c, err := s.contract(b.Contract)
	if err != nil {
		return nil, err
	}
	if c.Node != t.Signer.Node {
		return nil, refuse(ErrDenied, "contract %d is assigned to node %d, not node %d", c.ID, c.Node, t.Signer.Node)
	}
	s.putJSON(bucketReports, u64(c.ID), &Report{State: b.State, Detail: b.Detail, Version: b.Version, At: s.stamp()})
	return []Event{event("contract.reported", c.ID)}, nil
}

// checkApproval checks one approval of d (whose challenge is ch): its twin
// is listed, registered, the key is the twin's and the signature verifies.
func (s *state) checkApproval(d *spec.Deployment, ch digest.ID, a spec.Signature) error {
	if !listed(d.Requirement, a.Twin) {
		return refuse(ErrDenied, "twin %d is not listed in the spec's signature requirement", a.Twin)
	}
	tw, err := s.twin(a.Twin)
	if err != nil {
		return err
	}
	if tw.Key != a.Key {
		return refuse(ErrSignature, "approval of twin %d is made with %s, not the twin's registered key", a.Twin, a.Key)
	}
	if !a.Key.Verify(spec.Domain, ch[:], a.Sig[:]) {
		return refuse(ErrSignature, "approval of twin %d does not verify against the spec's challenge %s (another version or content, or a forgery)", a.Twin, ch.Short())
	}
	return nil
}

func listed(r spec.Requirement, twin uint32) bool {
	return slices.ContainsFunc(r.Requests, func(q spec.Request) bool { return q.Twin == twin })
}

// checkApprovals checks a spec's first approvals (those of a create or
// update) and returns them, by twin.
func (s *state) checkApprovals(d *spec.Deployment) (digest.ID, []Approval, error) {
	ch, err := d.Challenge()
	if err != nil {
		return ch, nil, refuse(ErrInvalid, "spec: %v", err)
	}
	out := make([]Approval, 0, len(d.Signatures))
	for _, g := range d.Signatures {
		if err := s.checkApproval(d, ch, g); err != nil {
			return ch, nil, err
		}
		out = append(out, approval(g))
	}
	slices.SortFunc(out, func(a, b Approval) int { return cmp.Compare(a.Twin, b.Twin) })
	return ch, out, nil
}

// met reports whether d with approvals as its signatures meets its
// requirement against the twins' current keys. The rule is spec.Verify's,
// not a copy of it: what activates a contract here is exactly what a node
// accepts.
func (s *state) met(d *spec.Deployment, approvals []Approval) (bool, error) {
	v := *d
	v.Signatures = nil
	keys := map[uint32]key.Public{}
	for _, a := range approvals {
		v.Signatures = append(v.Signatures, a.Signature())
		tw, err := s.twin(a.Twin)
		if err != nil {
			return false, err
		}
		keys[a.Twin] = tw.Key
	}
	_, err := spec.Verify(&v, keys)
	switch {
	case errors.Is(err, spec.ErrSignature):
		return false, nil
	case err != nil:
		return false, refuse(ErrInvalid, "spec: %v", err)
	}
	return true, nil
}

func (s *state) contractCreate(t *Tx, b *ContractCreate) ([]Event, error) {
	d := b.Spec
	if d.Owner != t.Signer.Twin {
		return nil, refuse(ErrDenied, "the spec's owner is twin %d, not twin %d: only the owner creates its contract", d.Owner, t.Signer.Twin)
	}
	if _, err := s.node(b.Node); err != nil {
		return nil, err
	}
	ch, approvals, err := s.checkApprovals(d)
	if err != nil {
		return nil, err
	}
	stripped, err := d.Stripped()
	if err != nil {
		return nil, refuse(ErrInvalid, "spec: %v", err)
	}
	id, err := s.nextID(metaNextContract, 1<<63)
	if err != nil {
		return nil, err
	}
	c := &ContractView{ID: id, Owner: d.Owner, Node: b.Node, State: StatePending, Version: d.Version,
		Digest: ch, Spec: stripped, Approvals: approvals, Created: s.stamp()}
	ev := []Event{event("contract.created", id)}
	ok, err := s.met(d, approvals)
	if err != nil {
		return nil, err
	}
	if ok {
		c.State, c.Since = StateActive, s.height
		ev = append(ev, event("contract.activated", id))
	}
	s.putContract(c)
	s.put(bucketNodeContracts, append(u32(c.Node), u64(id)...), []byte{})
	s.put(bucketOwnerContracts, append(u32(c.Owner), u64(id)...), []byte{})
	return ev, nil
}

// live returns a contract that is not cancelled.
func (s *state) live(id uint64) (*ContractView, error) {
	c, err := s.contract(id)
	if err != nil {
		return nil, err
	}
	if c.State == StateCancelled {
		return nil, refuse(ErrConflict, "contract %d is cancelled", id)
	}
	return c, nil
}

func (s *state) contractApprove(t *Tx, b *ContractApprove) ([]Event, error) {
	c, err := s.live(b.Contract)
	if err != nil {
		return nil, err
	}
	if b.Approval.Twin != t.Signer.Twin {
		return nil, refuse(ErrDenied, "twin %d may not send twin %d's approval", t.Signer.Twin, b.Approval.Twin)
	}
	target, approvals := c.Spec, &c.Approvals
	what := "spec"
	if c.State == StateActive {
		if c.Revision == nil {
			return nil, refuse(ErrConflict, "contract %d is active and has no pending revision to approve", c.ID)
		}
		target, approvals, what = c.Revision.Spec, &c.Revision.Approvals, "revision"
	}
	d, err := spec.Parse(target)
	if err != nil {
		return nil, fmt.Errorf("contract %d: %w: %v", c.ID, errCorrupt, err)
	}
	ch, err := d.Challenge()
	if err != nil {
		return nil, fmt.Errorf("contract %d: %w: %v", c.ID, errCorrupt, err)
	}
	if err := s.checkApproval(d, ch, b.Approval); err != nil {
		return nil, fmt.Errorf("contract %d %s version %d: %w", c.ID, what, d.Version, err)
	}
	if slices.ContainsFunc(*approvals, func(a Approval) bool { return a.Twin == b.Approval.Twin }) {
		return nil, refuse(ErrConflict, "twin %d already approved contract %d's %s", b.Approval.Twin, c.ID, what)
	}
	*approvals = append(*approvals, approval(b.Approval))
	slices.SortFunc(*approvals, func(a, b Approval) int { return cmp.Compare(a.Twin, b.Twin) })
	ev := []Event{event("contract.approved", c.ID)}
	ok, err := s.met(d, *approvals)
	if err != nil {
		return nil, err
	}
	if ok {
		ev = append(ev, s.activate(c))
	}
	s.putContract(c)
	return ev, nil
}

// activate makes the contract's pending spec, or its revision, the active
// one, and returns the event.
func (s *state) activate(c *ContractView) Event {
	if c.State == StatePending {
		c.State, c.Since = StateActive, s.height
		return event("contract.activated", c.ID)
	}
	r := c.Revision
	c.Version, c.Digest, c.Spec, c.Approvals = r.Version, r.Digest, r.Spec, r.Approvals
	c.Since, c.Revision, c.CancelVotes = s.height, nil, nil // the votes were against the old requirement
	return event("contract.updated", c.ID)
}

func (s *state) contractUpdate(t *Tx, b *ContractUpdate) ([]Event, error) {
	c, err := s.live(b.Contract)
	if err != nil {
		return nil, err
	}
	d := b.Spec
	switch {
	case c.Owner != t.Signer.Twin:
		return nil, refuse(ErrDenied, "contract %d is twin %d's: twin %d may not update it", c.ID, c.Owner, t.Signer.Twin)
	case d.Owner != c.Owner:
		return nil, refuse(ErrDenied, "the spec's owner is twin %d: contract %d stays twin %d's", d.Owner, c.ID, c.Owner)
	case d.Version <= c.Version:
		return nil, refuse(ErrConflict, "version %d is not above contract %d's version %d", d.Version, c.ID, c.Version)
	case c.Revision != nil && d.Version <= c.Revision.Version:
		return nil, refuse(ErrConflict, "version %d is not above contract %d's pending revision %d", d.Version, c.ID, c.Revision.Version)
	}
	ch, approvals, err := s.checkApprovals(d)
	if err != nil {
		return nil, err
	}
	stripped, err := d.Stripped()
	if err != nil {
		return nil, refuse(ErrInvalid, "spec: %v", err)
	}
	if c.State == StatePending {
		c.Version, c.Digest, c.Spec, c.Approvals = d.Version, ch, stripped, approvals
	} else {
		c.Revision = &Revision{Version: d.Version, Digest: ch, Spec: stripped, Approvals: approvals, Created: s.stamp()}
	}
	ev := []Event{event("contract.revised", c.ID)}
	ok, err := s.met(d, approvals)
	if err != nil {
		return nil, err
	}
	if ok {
		ev = append(ev, s.activate(c))
	}
	s.putContract(c)
	return ev, nil
}

func (s *state) contractCancel(t *Tx, b *ContractCancel) ([]Event, error) {
	c, err := s.live(b.Contract)
	if err != nil {
		return nil, err
	}
	voter := t.Signer.Twin
	if c.State == StatePending {
		if voter != c.Owner {
			return nil, refuse(ErrDenied, "pending contract %d is cancelled by its owner, twin %d, not twin %d", c.ID, c.Owner, voter)
		}
		c.State, c.Revision = StateCancelled, nil
		s.putContract(c)
		return []Event{event("contract.cancelled", c.ID)}, nil
	}
	d, err := spec.Parse(c.Spec)
	if err != nil {
		return nil, fmt.Errorf("contract %d: %w: %v", c.ID, errCorrupt, err)
	}
	if !listed(d.Requirement, voter) {
		return nil, refuse(ErrDenied, "twin %d is not listed in active contract %d's requirement: it has no cancel vote", voter, c.ID)
	}
	if slices.Contains(c.CancelVotes, voter) {
		return nil, refuse(ErrConflict, "twin %d already voted to cancel contract %d", voter, c.ID)
	}
	c.CancelVotes = append(c.CancelVotes, voter)
	slices.Sort(c.CancelVotes)
	ev := []Event{event("contract.cancel_voted", c.ID)}
	if votesMet(d.Requirement, c.CancelVotes) {
		c.State, c.Revision = StateCancelled, nil
		ev = append(ev, event("contract.cancelled", c.ID))
	}
	s.putContract(c)
	return ev, nil
}

// votesMet applies the requirement's rule (docs/SPEC.md, "Verifying":
// every required twin, and the weights reaching weight_required) to cancel
// votes. Votes are transactions, not spec signatures, so spec.Verify does
// not apply; the rule is the same.
func votesMet(r spec.Requirement, votes []uint32) bool {
	var weight uint64
	for _, q := range r.Requests {
		switch {
		case slices.Contains(votes, q.Twin):
			weight += q.Weight
		case q.Required:
			return false
		}
	}
	return weight >= r.WeightRequired
}
