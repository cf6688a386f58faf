package ledger

import (
	"bytes"
	"cmp"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/zosgrid/zos/internal/key"
	"github.com/zosgrid/zos/internal/spec"
)

// Wire format constants (docs/LEDGER.md, "Transactions").
const (
	// TxVersion is the "v" of version 1 transactions.
	TxVersion = 1
	// TxDomain is the key domain of transaction signatures.
	TxDomain = "zos ledger tx v1"
	// KeyProofDomain is the key domain of a new key's proof of possession.
	KeyProofDomain = "zos ledger key proof v1"

	MaxTx       = 256 << 10 // bytes of a transaction
	MaxSpec     = 128 << 10 // bytes of the stripped spec inside one
	MaxSigs     = 64        // spec signatures in a contract.create or update (a requirement lists <= 64 twins)
	MaxDetail   = 256       // bytes of a report's detail
	MaxEndpoint = 256       // bytes of a node's endpoint URL
	MaxChainID  = 50        // bytes of a chain id (CometBFT's limit)
	MaxKeys     = 64        // keys a twin may have had
	MaxCPU      = 1 << 32   // millicores of a node
	MaxBytes    = 1 << 62   // memory or disk of a node
)

// Transaction types.
const (
	TypeTwinCreate      = "twin.create"
	TypeTwinRotate      = "twin.rotate"
	TypeNodeRegister    = "node.register"
	TypeNodeUpdate      = "node.update"
	TypeNodeReport      = "node.report"
	TypeContractCreate  = "contract.create"
	TypeContractApprove = "contract.approve"
	TypeContractUpdate  = "contract.update"
	TypeContractCancel  = "contract.cancel"
)

// Report states a node may record.
const (
	ReportDeployed = "deployed"
	ReportRunning  = "running"
	ReportFailed   = "failed"
	ReportRemoved  = "removed"
)

var b64 = base64.RawURLEncoding.Strict()

// Sig is an ed25519 signature; its text form is 86 base64url characters.
type Sig [ed25519.SignatureSize]byte

func (s Sig) String() string { return b64.EncodeToString(s[:]) }

// MarshalText implements encoding.TextMarshaler.
func (s Sig) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler, strictly: one
// spelling per signature.
func (s *Sig) UnmarshalText(b []byte) error {
	v, err := parseSig(string(b))
	*s = v
	return err
}

func parseSig(t string) (Sig, error) {
	var s Sig
	b, err := b64.DecodeString(t)
	if err != nil || len(b) != len(s) || len(t) != 86 {
		return s, fmt.Errorf("signature %.20q is not 86 base64url characters", t)
	}
	copy(s[:], b)
	return s, nil
}

// SignerID names who signed a transaction: exactly one of its fields is
// set. Key is the new twin's own key, and only signs twin.create.
type SignerID struct {
	Twin uint32
	Node uint32
	Key  *key.Public
}

func (s SignerID) String() string {
	switch {
	case s.Twin != 0:
		return fmt.Sprintf("twin %d", s.Twin)
	case s.Node != 0:
		return fmt.Sprintf("node %d", s.Node)
	case s.Key != nil:
		return "key " + s.Key.String()
	}
	return "nobody"
}

func (s SignerID) tree() obj {
	switch {
	case s.Twin != 0:
		return obj{"twin": s.Twin}
	case s.Node != 0:
		return obj{"node": s.Node}
	case s.Key != nil:
		return obj{"key": s.Key.String()}
	}
	return obj{}
}

// Tx is a decoded transaction.
type Tx struct {
	Chain  string
	Signer SignerID
	Nonce  uint64
	Body   Body
	Sig    Sig
}

// Type returns the body's transaction type.
func (t *Tx) Type() string { return t.Body.Type() }

// Body is a transaction's typed body: one of TwinCreate, TwinRotate,
// NodeRegister, NodeUpdate, NodeReport, ContractCreate, ContractApprove,
// ContractUpdate, ContractCancel.
type Body interface {
	Type() string
	tree() (obj, error)
	// validate checks what the body can say about itself, without state.
	validate(t *Tx) error
}

// tree is the transaction's canonical value; without the signature when
// !signed, which is what the signature covers.
func (t *Tx) tree(signed bool) (obj, error) {
	body, err := t.Body.tree()
	if err != nil {
		return nil, err
	}
	o := obj{
		"v":      uint64(TxVersion),
		"chain":  t.Chain,
		"signer": t.Signer.tree(),
		"nonce":  t.Nonce,
		"type":   t.Body.Type(),
		"body":   body,
	}
	if signed {
		o["sig"] = t.Sig.String()
	}
	return o, nil
}

// SigningBytes returns what the transaction's signature signs (under
// TxDomain): its canonical encoding without "sig".
func (t *Tx) SigningBytes() ([]byte, error) {
	o, err := t.tree(false)
	if err != nil {
		return nil, err
	}
	return encode(o), nil
}

// Encode returns the transaction's canonical encoding: its wire form.
func (t *Tx) Encode() ([]byte, error) {
	o, err := t.tree(true)
	if err != nil {
		return nil, err
	}
	return encode(o), nil
}

// VerifySig reports whether the transaction's signature is pub's.
func (t *Tx) VerifySig(pub key.Public) bool {
	b, err := t.SigningBytes()
	return err == nil && pub.Verify(TxDomain, b, t.Sig[:])
}

// Signer signs transactions: a twin (Twin set), a node (Node set), or
// neither for twin.create, which the new twin's key signs itself.
type Signer struct {
	Secret key.Secret
	Twin   uint32
	Node   uint32
}

// NewTx builds, checks and signs a transaction, and returns its wire form.
// body is a value of one of the body types.
func NewTx(chainID string, s Signer, nonce uint64, body Body) ([]byte, error) {
	t, err := signTx(chainID, s, nonce, body)
	if err != nil {
		return nil, err
	}
	if err := t.Validate(); err != nil {
		return nil, err
	}
	return t.Encode()
}

// signTx builds and signs without validating the body (tests use it to
// make transactions the ledger must refuse).
func signTx(chainID string, s Signer, nonce uint64, body Body) (*Tx, error) {
	if body == nil {
		return nil, fmt.Errorf("no body")
	}
	t := &Tx{Chain: chainID, Nonce: nonce, Body: body}
	switch {
	case s.Twin != 0 && s.Node != 0:
		return nil, fmt.Errorf("signer is both twin %d and node %d", s.Twin, s.Node)
	case s.Twin != 0:
		t.Signer.Twin = s.Twin
	case s.Node != 0:
		t.Signer.Node = s.Node
	default:
		pub := s.Secret.Public()
		t.Signer.Key = &pub
	}
	b, err := t.SigningBytes()
	if err != nil {
		return nil, err
	}
	copy(t.Sig[:], s.Secret.Sign(TxDomain, b))
	enc, err := t.Encode()
	if err != nil {
		return nil, err
	}
	if len(enc) > MaxTx {
		return nil, refuse(ErrMalformed, "transaction is %d bytes, more than %d", len(enc), MaxTx)
	}
	return t, nil
}

// DecodeTx reads a transaction strictly: it must be exactly its own
// canonical encoding (docs/LEDGER.md, "One spelling"), at most MaxTx
// bytes. It checks the form, not the signature, the state or the body's
// rules (Validate). Errors wrap ErrMalformed, or ErrInvalid for a spec
// that does not parse.
func DecodeTx(b []byte) (*Tx, error) {
	if len(b) > MaxTx {
		return nil, refuse(ErrMalformed, "transaction is %d bytes, more than %d", len(b), MaxTx)
	}
	var r struct {
		V      uint64 `json:"v"`
		Chain  string `json:"chain"`
		Signer struct {
			Twin *uint32 `json:"twin"`
			Node *uint32 `json:"node"`
			Key  *string `json:"key"`
		} `json:"signer"`
		Nonce uint64          `json:"nonce"`
		Type  string          `json:"type"`
		Body  json.RawMessage `json:"body"`
		Sig   string          `json:"sig"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, refuse(ErrMalformed, "%v", err)
	}
	if r.V != TxVersion {
		return nil, refuse(ErrMalformed, "version %d, want %d", r.V, TxVersion)
	}
	t := &Tx{Chain: r.Chain, Nonce: r.Nonce}
	n := 0
	if p := r.Signer.Twin; p != nil {
		n++
		t.Signer.Twin = *p
	}
	if p := r.Signer.Node; p != nil {
		n++
		t.Signer.Node = *p
	}
	if p := r.Signer.Key; p != nil {
		n++
		k, err := key.ParsePublic(*p)
		if err != nil {
			return nil, refuse(ErrMalformed, "signer: %v", err)
		}
		t.Signer.Key = &k
	}
	if n != 1 || (r.Signer.Twin != nil && *r.Signer.Twin == 0) || (r.Signer.Node != nil && *r.Signer.Node == 0) {
		return nil, refuse(ErrMalformed, "signer must be one of a twin, a node or a key")
	}
	var err error
	if t.Sig, err = parseSig(r.Sig); err != nil {
		return nil, refuse(ErrMalformed, "sig: %v", err)
	}
	if t.Body, err = decodeBody(r.Type, r.Body); err != nil {
		return nil, err
	}
	enc, err := t.Encode()
	if err != nil {
		return nil, refuse(ErrMalformed, "%v", err)
	}
	if !bytes.Equal(enc, b) {
		return nil, refuse(ErrMalformed, "not in canonical form (build transactions with ledger.NewTx)")
	}
	return t, nil
}

// Validate checks what a transaction says about itself, without state:
// the chain id's form, the nonce, which kind of signer its type needs, and
// its body's rules, key proofs included. Errors wrap ErrInvalid or
// ErrSignature.
func (t *Tx) Validate() error {
	if err := checkChainID(t.Chain); err != nil {
		return refuse(ErrInvalid, "%v", err)
	}
	if t.Nonce == 0 {
		return refuse(ErrInvalid, "nonce 0: nonces start at 1")
	}
	want := "twin"
	switch t.Body.Type() {
	case TypeTwinCreate:
		want = "key"
	case TypeNodeReport:
		want = "node"
	}
	got := "twin"
	switch {
	case t.Signer.Key != nil:
		got = "key"
	case t.Signer.Node != 0:
		got = "node"
	}
	if got != want {
		return refuse(ErrInvalid, "%s is signed by a %s, not a %s", t.Body.Type(), want, got)
	}
	return t.Body.validate(t)
}

// checkChainID checks the form of a chain id: 1..MaxChainID bytes of
// [A-Za-z0-9._-].
func checkChainID(id string) error {
	if id == "" || len(id) > MaxChainID {
		return fmt.Errorf("chain id %.60q is not 1..%d bytes", id, MaxChainID)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("chain id %q has a byte outside [A-Za-z0-9._-]", id)
		}
	}
	return nil
}

func decodeBody(typ string, b []byte) (Body, error) {
	var body Body
	switch typ {
	case TypeTwinCreate:
		body = &TwinCreate{}
	case TypeTwinRotate:
		body = &TwinRotate{}
	case TypeNodeRegister:
		body = &NodeRegister{}
	case TypeNodeUpdate:
		body = &NodeUpdate{}
	case TypeNodeReport:
		body = &NodeReport{}
	case TypeContractCreate:
		body = &ContractCreate{}
	case TypeContractApprove:
		body = &ContractApprove{}
	case TypeContractUpdate:
		body = &ContractUpdate{}
	case TypeContractCancel:
		body = &ContractCancel{}
	default:
		return nil, refuse(ErrMalformed, "unknown type %.40q", typ)
	}
	if err := json.Unmarshal(b, body); err != nil {
		var r *refusal
		if errors.As(err, &r) {
			return nil, err // from an embedded spec, already saying what is wrong
		}
		return nil, refuse(ErrMalformed, "body: %v", err)
	}
	return body, nil
}

// KeyProof returns the proof that the holder of sec agrees to become the
// key of a twin.rotate or node.register: sec's signature, in
// KeyProofDomain, of the chain id, the type, the signing twin and the
// nonce of that transaction, so that it serves once.
func KeyProof(sec key.Secret, chainID, txType string, twin uint32, nonce uint64) Sig {
	var s Sig
	copy(s[:], sec.Sign(KeyProofDomain, keyProofMessage(chainID, txType, twin, nonce)))
	return s
}

func keyProofMessage(chainID, txType string, twin uint32, nonce uint64) []byte {
	b := make([]byte, 0, len(chainID)+len(txType)+14)
	b = append(append(b, chainID...), 0)
	b = append(append(b, txType...), 0)
	b = binary.BigEndian.AppendUint32(b, twin)
	return binary.BigEndian.AppendUint64(b, nonce)
}

func checkKeyProof(t *Tx, k key.Public, proof Sig) error {
	if !k.Verify(KeyProofDomain, keyProofMessage(t.Chain, t.Body.Type(), t.Signer.Twin, t.Nonce), proof[:]) {
		return refuse(ErrSignature, "key proof of %s does not verify (it must be made by that key for this chain, type, twin and nonce)", k)
	}
	return nil
}

// Capacity is what a node offers.
type Capacity struct {
	CPU    uint64 `json:"cpu"`    // millicores
	Memory uint64 `json:"memory"` // bytes
	Disk   uint64 `json:"disk"`   // bytes
}

func (c Capacity) check() error {
	switch {
	case c.CPU < 1 || c.CPU > MaxCPU:
		return refuse(ErrInvalid, "cpu %d millicores is not in 1..%d", c.CPU, uint64(MaxCPU))
	case c.Memory < 1 || c.Memory > MaxBytes:
		return refuse(ErrInvalid, "memory %d is not in 1..%d bytes", c.Memory, uint64(MaxBytes))
	case c.Disk > MaxBytes:
		return refuse(ErrInvalid, "disk %d is more than %d bytes", c.Disk, uint64(MaxBytes))
	}
	return nil
}

// checkEndpoint checks a node's API URL: http or https, a host, nothing
// that could carry a credential or a second meaning (user info, query,
// fragment), printable ASCII so that it shows as it is.
func checkEndpoint(s string) error {
	if s == "" || len(s) > MaxEndpoint {
		return refuse(ErrInvalid, "endpoint is not 1..%d bytes", MaxEndpoint)
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return refuse(ErrInvalid, "endpoint %q has a byte that is not printable ASCII", s)
		}
	}
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return refuse(ErrInvalid, "endpoint %q: %v", s, err)
	case u.Scheme != "http" && u.Scheme != "https":
		return refuse(ErrInvalid, "endpoint %q is not http or https", s)
	case u.Host == "" || u.Hostname() == "":
		return refuse(ErrInvalid, "endpoint %q has no host", s)
	case u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.Opaque != "":
		return refuse(ErrInvalid, "endpoint %q has user info, a query or a fragment", s)
	}
	return nil
}

// TwinCreate registers a new twin; its key signs the transaction.
type TwinCreate struct{}

func (*TwinCreate) Type() string         { return TypeTwinCreate }
func (*TwinCreate) tree() (obj, error)   { return obj{}, nil }
func (*TwinCreate) validate(t *Tx) error { return nil }

// TwinRotate replaces the signing twin's key with Key; Proof is
// KeyProof(new secret, chain, TypeTwinRotate, twin, nonce).
type TwinRotate struct {
	Key   key.Public `json:"key"`
	Proof Sig        `json:"proof"`
}

func (*TwinRotate) Type() string { return TypeTwinRotate }
func (b *TwinRotate) tree() (obj, error) {
	return obj{"key": b.Key.String(), "proof": b.Proof.String()}, nil
}
func (b *TwinRotate) validate(t *Tx) error { return checkKeyProof(t, b.Key, b.Proof) }

// NodeRegister registers a node owned by the signing twin. Key is the
// node's identity; Proof is KeyProof(node secret, chain,
// TypeNodeRegister, owner twin, nonce).
type NodeRegister struct {
	Key   key.Public `json:"key"`
	Proof Sig        `json:"proof"`
	Capacity
	Endpoint string `json:"endpoint"`
}

func (*NodeRegister) Type() string { return TypeNodeRegister }
func (b *NodeRegister) tree() (obj, error) {
	return obj{"key": b.Key.String(), "proof": b.Proof.String(), "cpu": b.CPU, "memory": b.Memory,
		"disk": b.Disk, "endpoint": b.Endpoint}, nil
}
func (b *NodeRegister) validate(t *Tx) error {
	if err := b.Capacity.check(); err != nil {
		return err
	}
	if err := checkEndpoint(b.Endpoint); err != nil {
		return err
	}
	return checkKeyProof(t, b.Key, b.Proof)
}

// NodeUpdate replaces a node's capacity and endpoint; by its owner.
type NodeUpdate struct {
	Node uint32 `json:"node"`
	Capacity
	Endpoint string `json:"endpoint"`
}

func (*NodeUpdate) Type() string { return TypeNodeUpdate }
func (b *NodeUpdate) tree() (obj, error) {
	return obj{"node": b.Node, "cpu": b.CPU, "memory": b.Memory, "disk": b.Disk, "endpoint": b.Endpoint}, nil
}
func (b *NodeUpdate) validate(t *Tx) error {
	if err := b.Capacity.check(); err != nil {
		return err
	}
	return checkEndpoint(b.Endpoint)
}

// NodeReport records a node's observation of a contract assigned to it.
type NodeReport struct {
	Contract uint64 `json:"contract"`
	State    string `json:"state"` // a Report* constant
	Detail   string `json:"detail"`
	Version  uint64 `json:"version"` // of the spec the node runs
}

func (*NodeReport) Type() string { return TypeNodeReport }
func (b *NodeReport) tree() (obj, error) {
	return obj{"contract": b.Contract, "state": b.State, "detail": b.Detail, "version": b.Version}, nil
}
func (b *NodeReport) validate(t *Tx) error {
	switch b.State {
	case ReportDeployed, ReportRunning, ReportFailed, ReportRemoved:
	default:
		return refuse(ErrInvalid, "report state %.40q is not one of deployed, running, failed, removed", b.State)
	}
	if len(b.Detail) > MaxDetail || !utf8.ValidString(b.Detail) || strings.ContainsFunc(b.Detail, isControl) {
		return refuse(ErrInvalid, "report detail is not at most %d bytes of UTF-8 without control characters", MaxDetail)
	}
	return nil
}

func isControl(r rune) bool {
	return r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == 0x2028 || r == 0x2029
}

// ContractCreate asks for a contract on Node. Spec is the deployment; its
// Signatures travel with it as the first approvals.
type ContractCreate struct {
	Node uint32
	Spec *spec.Deployment
}

func (*ContractCreate) Type() string { return TypeContractCreate }
func (b *ContractCreate) tree() (obj, error) {
	s, sigs, err := specTree(b.Spec)
	if err != nil {
		return nil, err
	}
	return obj{"node": b.Node, "spec": s, "sigs": sigs}, nil
}
func (b *ContractCreate) validate(t *Tx) error { return nil }

func (b *ContractCreate) UnmarshalJSON(in []byte) error {
	var r struct {
		Node uint32          `json:"node"`
		Spec json.RawMessage `json:"spec"`
		Sigs []approvalJSON  `json:"sigs"`
	}
	if err := json.Unmarshal(in, &r); err != nil {
		return err
	}
	d, err := parseSpec(r.Spec, r.Sigs)
	b.Node, b.Spec = r.Node, d
	return err
}

// ContractUpdate proposes a higher version of a contract's spec; by its
// owner. Spec's Signatures travel with it as the first approvals.
type ContractUpdate struct {
	Contract uint64
	Spec     *spec.Deployment
}

func (*ContractUpdate) Type() string { return TypeContractUpdate }
func (b *ContractUpdate) tree() (obj, error) {
	s, sigs, err := specTree(b.Spec)
	if err != nil {
		return nil, err
	}
	return obj{"contract": b.Contract, "spec": s, "sigs": sigs}, nil
}
func (b *ContractUpdate) validate(t *Tx) error { return nil }

func (b *ContractUpdate) UnmarshalJSON(in []byte) error {
	var r struct {
		Contract uint64          `json:"contract"`
		Spec     json.RawMessage `json:"spec"`
		Sigs     []approvalJSON  `json:"sigs"`
	}
	if err := json.Unmarshal(in, &r); err != nil {
		return err
	}
	d, err := parseSpec(r.Spec, r.Sigs)
	b.Contract, b.Spec = r.Contract, d
	return err
}

// ContractApprove records Approval, a spec signature of the contract's
// pending spec or revision; the signing twin must be Approval.Twin.
type ContractApprove struct {
	Contract uint64
	Approval spec.Signature
}

func (*ContractApprove) Type() string { return TypeContractApprove }
func (b *ContractApprove) tree() (obj, error) {
	return obj{"contract": b.Contract, "approval": sigTree(b.Approval)}, nil
}
func (b *ContractApprove) validate(t *Tx) error { return nil }

func (b *ContractApprove) UnmarshalJSON(in []byte) error {
	var r struct {
		Contract uint64       `json:"contract"`
		Approval approvalJSON `json:"approval"`
	}
	if err := json.Unmarshal(in, &r); err != nil {
		return err
	}
	b.Contract = r.Contract
	var err error
	b.Approval, err = r.Approval.signature()
	return err
}

// ContractCancel cancels a pending contract (its owner) or votes to cancel
// an active one (a twin its requirement lists).
type ContractCancel struct {
	Contract uint64 `json:"contract"`
}

func (*ContractCancel) Type() string           { return TypeContractCancel }
func (b *ContractCancel) tree() (obj, error)   { return obj{"contract": b.Contract}, nil }
func (b *ContractCancel) validate(t *Tx) error { return nil }

// approvalJSON is a spec signature's wire form, as in the spec's canonical
// form: {"key":"ed25519:...","sig":"...","twin":N}.
type approvalJSON struct {
	Key  string `json:"key"`
	Sig  string `json:"sig"`
	Twin uint32 `json:"twin"`
}

func (a approvalJSON) signature() (spec.Signature, error) {
	k, err := key.ParsePublic(a.Key)
	if err != nil {
		return spec.Signature{}, err
	}
	s, err := parseSig(a.Sig)
	if err != nil {
		return spec.Signature{}, err
	}
	if a.Twin == 0 {
		return spec.Signature{}, fmt.Errorf("signature of twin 0")
	}
	return spec.Signature{Twin: a.Twin, Key: k, Sig: s}, nil
}

func sigTree(s spec.Signature) obj {
	return obj{"twin": s.Twin, "key": s.Key.String(), "sig": Sig(s.Sig).String()}
}

// specTree is a spec's stripped canonical form and its signatures, sorted
// by twin, one per twin.
func specTree(d *spec.Deployment) (raw, []any, error) {
	if d == nil {
		return nil, nil, fmt.Errorf("no spec")
	}
	s, err := d.Stripped()
	if err != nil {
		return nil, nil, err
	}
	if len(s) > MaxSpec {
		return nil, nil, refuse(ErrInvalid, "spec is %d bytes in canonical form, more than %d", len(s), MaxSpec)
	}
	sigs := slices.Clone(d.Signatures)
	slices.SortStableFunc(sigs, func(a, b spec.Signature) int { return cmp.Compare(a.Twin, b.Twin) })
	if len(sigs) > MaxSigs {
		return nil, nil, refuse(ErrInvalid, "%d signatures, more than %d", len(sigs), MaxSigs)
	}
	out := make([]any, len(sigs))
	for i, g := range sigs {
		if i > 0 && sigs[i-1].Twin == g.Twin {
			return nil, nil, refuse(ErrInvalid, "twin %d signed twice", g.Twin)
		}
		out[i] = sigTree(g)
	}
	return raw(s), out, nil
}

// parseSpec reads an embedded stripped spec. The caller's canonical check
// (DecodeTx) refuses any other spelling of it.
func parseSpec(s json.RawMessage, sigs []approvalJSON) (*spec.Deployment, error) {
	if len(s) > MaxSpec {
		return nil, refuse(ErrInvalid, "spec is %d bytes, more than %d", len(s), MaxSpec)
	}
	if len(s) == 0 || s[0] != '{' {
		return nil, refuse(ErrMalformed, "spec is not a JSON object")
	}
	if len(sigs) > MaxSigs {
		return nil, refuse(ErrInvalid, "%d signatures, more than %d", len(sigs), MaxSigs)
	}
	d, err := spec.Parse(s)
	if err != nil {
		return nil, refuse(ErrInvalid, "spec: %v", err)
	}
	for i, a := range sigs {
		g, err := a.signature()
		if err != nil {
			return nil, refuse(ErrMalformed, "sigs[%d]: %v", i, err)
		}
		d.Signatures = append(d.Signatures, g)
	}
	return d, nil
}
