package spec

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/key"
)

// Sign returns twin's signature of d's challenge with sec. It refuses an
// invalid deployment and a twin the requirement does not list.
func Sign(d *Deployment, sec key.Secret, twin uint32) (Signature, error) {
	ch, err := d.Challenge()
	if err != nil {
		return Signature{}, err
	}
	if _, ok := d.Requirement.request(twin); !ok {
		return Signature{}, fmt.Errorf("twin %d is not in the signature requirement: its signature would not count", twin)
	}
	s := Signature{Twin: twin, Key: sec.Public()}
	copy(s.Sig[:], sec.Sign(Domain, ch[:]))
	return s, nil
}

// Result is what Verify found.
type Result struct {
	Challenge      digest.ID
	Requests       []RequestStatus // in the requirement's order
	Weight         uint64          // of the twins whose signature counts
	WeightRequired uint64
	Missing        []uint32  // required twins without a valid signature
	Ignored        []Ignored // signature entries that do not count
	Met            bool
}

// RequestStatus is one request and whether it is signed.
type RequestStatus struct {
	Request
	Signed bool
}

// Ignored is a signature entry that does not count, and why.
type Ignored struct {
	Index  int // position in the signatures as parsed (in Deployment.Signatures if not parsed)
	Twin   uint32
	Reason string
}

// SignatureError is Verify's refusal: which required twins did not sign,
// and the weight reached.
type SignatureError struct {
	Missing        []uint32
	Weight         uint64
	WeightRequired uint64
}

func (e *SignatureError) Error() string {
	var parts []string
	if len(e.Missing) > 0 {
		ts := make([]string, len(e.Missing))
		for i, t := range e.Missing {
			ts[i] = fmt.Sprint(t)
		}
		parts = append(parts, "required twins not signed: "+strings.Join(ts, ", "))
	}
	if e.Weight < e.WeightRequired {
		parts = append(parts, fmt.Sprintf("weight %d of %d required", e.Weight, e.WeightRequired))
	}
	return ErrSignature.Error() + ": " + strings.Join(parts, "; ")
}

// Unwrap returns ErrSignature.
func (e *SignatureError) Unwrap() error { return ErrSignature }

// Verify checks d's signatures against the twins' registered keys and
// reports whether its requirement is met (docs/SPEC.md, "Verifying"). A
// signature counts when its twin is listed, its key is keys[twin] and it
// verifies against d's challenge; each twin counts once; everything else is
// ignored, with its reason in the Result. When the requirement is not met
// the error is a *SignatureError; an invalid d gives an error wrapping
// ErrInvalid. The Result is filled in both cases (but for an invalid d).
func Verify(d *Deployment, keys map[uint32]key.Public) (Result, error) {
	return verify(d, func(twin uint32, declared key.Public) string {
		k, ok := keys[twin]
		switch {
		case !ok:
			return "no registered key for the twin"
		case k != declared:
			return "key is not the twin's registered key"
		}
		return ""
	})
}

// VerifyDeclared is Verify trusting each signature's declared key. It
// checks that signatures match the deployment, not who made them: use it
// to show a spec's status before the twins' keys are known, never to
// authorize.
func VerifyDeclared(d *Deployment) (Result, error) {
	return verify(d, func(uint32, key.Public) string { return "" })
}

func verify(d *Deployment, keyOK func(twin uint32, declared key.Public) string) (Result, error) {
	ch, err := d.Challenge()
	if err != nil {
		return Result{}, err
	}
	r := Result{Challenge: ch, WeightRequired: d.Requirement.WeightRequired}
	signed := map[uint32]bool{}
	for i, s := range d.Signatures {
		reason := func() string {
			if _, listed := d.Requirement.request(s.Twin); !listed {
				return "twin not in the signature requirement"
			}
			if why := keyOK(s.Twin, s.Key); why != "" {
				return why
			}
			if !s.Key.Verify(Domain, ch[:], s.Sig[:]) {
				return "signature invalid for this deployment (another version or content, or another key)"
			}
			if signed[s.Twin] {
				return "duplicate: the twin already signed"
			}
			return ""
		}()
		if reason != "" {
			idx := i
			if len(d.sigIndex) == len(d.Signatures) {
				idx = d.sigIndex[i]
			}
			r.Ignored = append(r.Ignored, Ignored{Index: idx, Twin: s.Twin, Reason: reason})
			continue
		}
		signed[s.Twin] = true
	}
	r.Ignored = append(r.Ignored, d.Malformed...)
	sort.SliceStable(r.Ignored, func(i, j int) bool { return r.Ignored[i].Index < r.Ignored[j].Index })
	for _, q := range d.Requirement.Requests {
		ok := signed[q.Twin]
		r.Requests = append(r.Requests, RequestStatus{Request: q, Signed: ok})
		if ok {
			r.Weight += q.Weight
		} else if q.Required {
			r.Missing = append(r.Missing, q.Twin)
		}
	}
	r.Met = len(r.Missing) == 0 && r.Weight >= r.WeightRequired
	if !r.Met {
		return r, &SignatureError{Missing: slices.Clone(r.Missing), Weight: r.Weight, WeightRequired: r.WeightRequired}
	}
	return r, nil
}
