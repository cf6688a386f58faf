package flist

import (
	"errors"
	"fmt"

	"github.com/zosgrid/zos/internal/key"
)

// signDomain separates flist signatures from every other zos signature.
const signDomain = "zos flist digest v1"

// ErrSignature reports a missing, invalid or untrusted signature.
var ErrSignature = errors.New("flist signature")

// Sign returns the flist with s's signature of its digest added (replacing
// an earlier signature by the same key). The body, and so the digest, is
// unchanged.
func Sign(r *Reader, s key.Secret) []byte {
	pub := s.Public()
	sig := Signature{Key: pub}
	copy(sig.Sig[:], s.Sign(signDomain, r.digest[:]))
	sigs := []Signature{sig}
	for _, o := range r.sigs {
		if o.Key != sig.Key {
			sigs = append(sigs, o)
		}
	}
	out := append([]byte(nil), r.body...)
	return append(out, encodeSignatures(sigs)...)
}

// VerifySignatures checks every signature in the trailer and requires at
// least one valid signature by a key in trusted (any valid one when trusted
// is empty). It returns the keys whose signatures are valid.
func (r *Reader) VerifySignatures(trusted ...key.Public) ([]key.Public, error) {
	if len(r.sigs) == 0 {
		return nil, fmt.Errorf("%w: flist %s is not signed", ErrSignature, r.digest.Short())
	}
	var valid []key.Public
	for _, s := range r.sigs {
		p := key.Public(s.Key)
		if !p.Verify(signDomain, r.digest[:], s.Sig[:]) {
			return nil, fmt.Errorf("%w: signature by %s does not match digest %s (the flist was changed after signing)", ErrSignature, p, r.digest.Short())
		}
		valid = append(valid, p)
	}
	if len(trusted) == 0 {
		return valid, nil
	}
	for _, v := range valid {
		for _, t := range trusted {
			if v == t {
				return valid, nil
			}
		}
	}
	return valid, fmt.Errorf("%w: no signature by a trusted key (signed by %v)", ErrSignature, valid)
}
