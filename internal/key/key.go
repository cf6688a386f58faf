// Package key holds zos identities: ed25519 key pairs, their text forms,
// and domain-separated signatures.
//
// # Text forms
//
// A public key is "ed25519:" followed by 43 characters of unpadded
// base64url (32 bytes). A secret key file holds one line,
// "zos-secret-key-v1:" followed by the 32-byte seed in unpadded base64url;
// it is written with mode 0600. Parsing is strict: one spelling per key.
//
// # Domains
//
// Sign and Verify prefix the message with a domain string and a zero byte,
// so a signature made for one purpose (an flist digest, a store write, a
// deployment) can never be replayed as another.
package key

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"
)

const (
	pubPrefix    = "ed25519:"
	secretPrefix = "zos-secret-key-v1:"
)

// ErrSyntax reports a key text that does not parse.
var ErrSyntax = errors.New("key: malformed")

var b64 = base64.RawURLEncoding

// Public is an ed25519 public key.
type Public [ed25519.PublicKeySize]byte

// Secret is an ed25519 private key.
type Secret struct{ priv ed25519.PrivateKey }

// Generate returns a new random key pair.
func Generate() (Secret, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return Secret{}, err
	}
	return Secret{priv}, nil
}

// FromSeed returns the key pair for a 32-byte seed (for tests and fixtures).
func FromSeed(seed []byte) Secret { return Secret{ed25519.NewKeyFromSeed(seed)} }

// Public returns the secret's public half.
func (s Secret) Public() Public { return Public(s.priv.Public().(ed25519.PublicKey)) }

// Sign signs msg under domain.
func (s Secret) Sign(domain string, msg []byte) []byte {
	return ed25519.Sign(s.priv, framed(domain, msg))
}

// String is the secret's file form. Keep it out of logs.
func (s Secret) String() string { return secretPrefix + b64.EncodeToString(s.priv.Seed()) }

// Verify reports whether sig is p's signature of msg under domain.
func (p Public) Verify(domain string, msg, sig []byte) bool {
	return len(sig) == ed25519.SignatureSize && ed25519.Verify(p[:], framed(domain, msg), sig)
}

func (p Public) String() string { return pubPrefix + b64.EncodeToString(p[:]) }

// MarshalText implements encoding.TextMarshaler.
func (p Public) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (p *Public) UnmarshalText(b []byte) error {
	v, err := ParsePublic(string(b))
	*p = v
	return err
}

func framed(domain string, msg []byte) []byte {
	b := make([]byte, 0, len(domain)+1+len(msg))
	b = append(append(append(b, domain...), 0), msg...)
	return b
}

// ParsePublic parses "ed25519:<base64url>".
func ParsePublic(s string) (Public, error) {
	var p Public
	rest, ok := strings.CutPrefix(s, pubPrefix)
	if !ok || len(rest) != 43 {
		return p, fmt.Errorf("%w public key %q (want ed25519:<43 base64url chars>)", ErrSyntax, s)
	}
	b, err := b64.Strict().DecodeString(rest)
	if err != nil || len(b) != len(p) {
		return p, fmt.Errorf("%w public key %q", ErrSyntax, s)
	}
	return Public(b), nil
}

// ParseSecret parses a secret key's file form.
func ParseSecret(s string) (Secret, error) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(s), secretPrefix)
	if !ok {
		return Secret{}, fmt.Errorf("%w secret key (want a line %s<seed>)", ErrSyntax, secretPrefix)
	}
	b, err := b64.Strict().DecodeString(rest)
	if err != nil || len(b) != ed25519.SeedSize {
		return Secret{}, fmt.Errorf("%w secret key seed", ErrSyntax)
	}
	return FromSeed(b), nil
}

// Load reads a secret key file.
func Load(path string) (Secret, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Secret{}, err
	}
	s, err := ParseSecret(string(b))
	if err != nil {
		return Secret{}, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// Save writes s to path with mode 0600, refusing to overwrite a file.
func (s Secret) Save(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(f, s.String())
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
