// Package hubclient is the hub's HTTP API as a client and its wire types, so
// that a node or a CLI fetches and publishes images without importing the
// server. docs/HUB.md is the API's description; this package follows it.
//
// # References
//
// An flist on a hub is named NAMESPACE/NAME, optionally with a tag
// (NAMESPACE/NAME:TAG, "latest" when none is given) or a digest
// (NAMESPACE/NAME@DIGEST, immutable). Tags move; digests do not.
//
// # Trust
//
// Pull checks that the bytes it receives are an flist whose digest is the
// one the hub announced, and the one asked for when the reference has a
// digest. Whether its signatures are trusted is the caller's decision
// (flist.Reader.VerifySignatures with the keys it trusts).
package hubclient

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/key"
)

// Headers on flist downloads.
const (
	HeaderDigest  = "Zos-Flist-Digest"  // the flist's digest (hex)
	HeaderSigners = "Zos-Flist-Signers" // keys with a valid signature, comma-separated
	HeaderRef     = "Zos-Flist-Ref"     // where a reference resolved to: NS/NAME@DIGEST
	// HeaderBodyHash is the BLAKE3-256 (hex) of an upload's body, the hash
	// its signature covers, so that the hub checks the signature before
	// it reads the body (docs/HUB.md, "Conversion").
	HeaderBodyHash = "Zos-Body-Hash"
	// ContentType is the media type of an flist file.
	ContentType = "application/vnd.zos.flist"
	// DefaultTag is the tag of a reference that names none.
	DefaultTag = "latest"
	// MaxFlistSize bounds an uploaded flist (body and signatures).
	MaxFlistSize = 256 << 20
	// MaxTraceSize bounds an uploaded prefetch trace: a few bytes per
	// chunk read at start, so a million chunks and more.
	MaxTraceSize = 16 << 20
	// MaxBundleSize bounds a start bundle (docs/BUNDLE.md) that a hub
	// builds and a client accepts: the bytes a program reads at start,
	// compressed (the four start commands of bench/mount.sh on a Debian
	// image with python, gcc, node and java: 19 MB).
	MaxBundleSize = 256 << 20
)

// TraceInfo answers a trace upload.
type TraceInfo struct {
	Flist  digest.ID `json:"flist"`
	Chunks int       `json:"chunks"`
	Size   int64     `json:"size"`
	// Bundle describes the start bundle the hub built from the trace;
	// BundleError says why it built none (the trace is stored anyway).
	Bundle      *BundleInfo `json:"bundle,omitempty"`
	BundleError string      `json:"bundle_error,omitempty"`
}

// BundleInfo describes a start bundle.
type BundleInfo struct {
	Size   int64 `json:"size"`   // bytes
	Chunks int   `json:"chunks"` // entries
	Plain  int64 `json:"plain"`  // plaintext bytes of the ranges it carries
	Proofs int64 `json:"proofs"` // bytes of tree nodes carried with them
}

var (
	nsRE   = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)
	nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)
	tagRE  = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$`)
)

// CheckNamespace reports whether s is a valid namespace (user) name: 1..63
// of [a-z0-9._-], starting with a letter or digit.
func CheckNamespace(s string) error {
	if !nsRE.MatchString(s) {
		return fmt.Errorf("namespace %q: want 1..63 of [a-z0-9._-], starting with a letter or digit", s)
	}
	return nil
}

// CheckName reports whether s is a valid flist name.
func CheckName(s string) error {
	if !nameRE.MatchString(s) {
		return fmt.Errorf("name %q: want 1..128 of [A-Za-z0-9._-], starting with a letter or digit", s)
	}
	return nil
}

// CheckTag reports whether s is a valid tag.
func CheckTag(s string) error {
	if !tagRE.MatchString(s) {
		return fmt.Errorf("tag %q: want 1..128 of [A-Za-z0-9._-], starting with a letter, digit or _", s)
	}
	return nil
}

// Ref names an flist on a hub. At most one of Tag and Digest is set.
type Ref struct {
	NS, Name string
	Tag      string
	Digest   digest.ID
}

// ParseRef parses NS/NAME, NS/NAME:TAG or NS/NAME@DIGEST.
func ParseRef(s string) (Ref, error) {
	ns, rest, ok := strings.Cut(s, "/")
	if !ok {
		return Ref{}, fmt.Errorf("reference %q: want NAMESPACE/NAME[:TAG|@DIGEST]", s)
	}
	r, err := ParseNameRef(rest)
	if err != nil {
		return Ref{}, fmt.Errorf("reference %q: %w", s, err)
	}
	r.NS = ns
	if err := CheckNamespace(ns); err != nil {
		return Ref{}, fmt.Errorf("reference %q: %w", s, err)
	}
	return r, nil
}

// ParseNameRef parses the part after the namespace: NAME[:TAG|@DIGEST].
func ParseNameRef(s string) (Ref, error) {
	var r Ref
	if name, d, ok := strings.Cut(s, "@"); ok {
		id, err := digest.Parse(d)
		if err != nil {
			return r, err
		}
		r.Name, r.Digest = name, id
	} else if name, tag, ok := strings.Cut(s, ":"); ok {
		if err := CheckTag(tag); err != nil {
			return r, err
		}
		r.Name, r.Tag = name, tag
	} else {
		r.Name = s
	}
	return r, CheckName(r.Name)
}

// String is the reference's text form.
func (r Ref) String() string { return r.NS + "/" + r.NameRef() }

// NameRef is the reference without its namespace.
func (r Ref) NameRef() string {
	switch {
	case !r.Digest.IsZero():
		return r.Name + "@" + r.Digest.String()
	case r.Tag != "":
		return r.Name + ":" + r.Tag
	}
	return r.Name
}

// User is a registered user: a namespace owned by one key.
type User struct {
	Name    string     `json:"name"`
	Key     key.Public `json:"key"`
	Private bool       `json:"private"` // reads need a request signed by the owner
	Created time.Time  `json:"created"`
}

// Register is the body of POST /v1/users.
type Register struct {
	Name string `json:"name"`
	// Key is the owner; nil means the key that signs the request. Only an
	// admin may register a namespace for another key.
	Key     *key.Public `json:"key,omitempty"`
	Private bool        `json:"private,omitempty"`
}

// UserUpdate is the body of POST /v1/users/NS.
type UserUpdate struct {
	Private bool `json:"private"`
}

// Version is one flist held under a name.
type Version struct {
	Digest  digest.ID    `json:"digest"`
	Size    int64        `json:"size"`
	Pushed  time.Time    `json:"pushed"`
	By      key.Public   `json:"by"`
	Signers []key.Public `json:"signers,omitempty"`
	From    string       `json:"from,omitempty"` // promoted from this reference
}

// Repo is a name in a namespace: versions and tags, or a link.
type Repo struct {
	NS       string               `json:"ns"`
	Name     string               `json:"name"`
	Link     string               `json:"link,omitempty"` // target reference, for a link
	Tags     map[string]digest.ID `json:"tags,omitempty"`
	Versions []Version            `json:"versions,omitempty"`
}

// Pushed answers a push or a promote.
type Pushed struct {
	Ref    string    `json:"ref"` // NS/NAME:TAG
	Digest digest.ID `json:"digest"`
	Size   int64     `json:"size"`
	// Signers are the keys whose signatures the hub verified.
	Signers []key.Public `json:"signers,omitempty"`
}

// TagRequest is the body of PUT /v1/tags/NS/NAME/TAG.
type TagRequest struct {
	Digest digest.ID `json:"digest"`
}

// LinkRequest is the body of PUT /v1/links/NS/NAME.
type LinkRequest struct {
	Target string `json:"target"` // NS/NAME[:TAG|@DIGEST]
}

// PromoteRequest is the body of POST /v1/promote/NS/NAME[:TAG].
type PromoteRequest struct {
	Source string `json:"source"` // NS/NAME[:TAG|@DIGEST]
}

// ErrorBody is the JSON body of every error answer.
type ErrorBody struct {
	Error string `json:"error"`
	// Missing lists (up to MaxMissingListed) chunk IDs the hub lacks, on a
	// 409 refusing an flist; MissingCount is how many there are in all.
	Missing      []digest.ID `json:"missing,omitempty"`
	MissingCount int         `json:"missing_count,omitempty"`
}

// MaxMissingListed bounds the IDs an error body lists.
const MaxMissingListed = 1000

// GCStats reports a garbage collection.
type GCStats struct {
	Flists        int           `json:"flists"`         // flist files examined
	Referenced    int           `json:"referenced"`     // flists some name refers to
	Chunks        int           `json:"chunks"`         // chunks listed
	Marked        int           `json:"marked"`         // chunks kept because an flist needs them (with delta bases)
	Young         int           `json:"young"`          // unreferenced chunks kept for being newer than the grace period
	Deleted       int           `json:"deleted"`        // chunks deleted
	DeletedBytes  int64         `json:"deleted_bytes"`  // their size
	DeletedFlists int           `json:"deleted_flists"` // unreferenced flist files deleted
	Elapsed       time.Duration `json:"elapsed_ns"`
	DryRun        bool          `json:"dry_run,omitempty"`
}

// ErrNotFound is wrapped by client errors for a 404.
var ErrNotFound = errors.New("not found on the hub")
