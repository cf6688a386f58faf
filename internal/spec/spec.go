package spec

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/key"
)

const (
	// Domain is the key domain (package key) of deployment signatures.
	Domain = "zos deployment v1"
	// ChallengeContext is the BLAKE3 derive_key context of the challenge.
	ChallengeContext = "zos deployment challenge v1"
)

// ErrInvalid is wrapped by every parse and validation error.
var ErrInvalid = errors.New("invalid deployment")

// ErrSignature is wrapped by every refusal of Verify: the signature
// requirement is not met.
var ErrSignature = errors.New("deployment signature requirement not met")

// FieldError is one problem with one field. Path names the field as a user
// wrote it: "workloads[web].container.memory" (a workload is named by its
// index when its name is not usable).
type FieldError struct {
	Path string
	Msg  string
}

func (e *FieldError) Error() string {
	if e.Path == "" {
		return e.Msg
	}
	return e.Path + ": " + e.Msg
}

// Unwrap returns ErrInvalid.
func (e *FieldError) Unwrap() error { return ErrInvalid }

// Kind is a workload's type.
type Kind string

// Workload kinds.
const (
	KindContainer Kind = "container"
	KindVolume    Kind = "volume"
	KindNetwork   Kind = "network"
	KindGateway   Kind = "gateway"
)

// Deployment is a parsed deployment. Parse fills every default, so a
// Deployment holds exactly what its canonical form says.
type Deployment struct {
	Version     uint64 // >= 1, higher on every update
	Owner       uint32 // the owner's twin id
	Description string
	Workloads   []Workload
	Requirement Requirement
	Signatures  []Signature
	// Malformed are the signature entries Parse dropped because they could
	// not be decoded (a bad key or signature encoding, twin 0): a relay
	// can append garbage, which must not make the deployment invalid
	// (docs/SPEC.md, "Verifying"). Verify reports them as ignored; the
	// canonical form leaves them out.
	Malformed []Ignored

	sigIndex []int // Parse: each signature's position in the input
}

// Workload is one named unit of a deployment. Exactly the body of its Kind
// is non-nil.
type Workload struct {
	Name      string
	Kind      Kind
	Container *Container
	Volume    *Volume
	Network   *Network
	Gateway   *Gateway
}

// Container is a process tree on an flist root filesystem.
type Container struct {
	Image      Image
	Entrypoint []string // empty: the image's
	Args       []string // empty: the image's
	Env        map[string]string
	Workdir    string // empty: the image's
	User       string // USER[:GROUP]; empty: the image's
	CPU        uint64 // millicores
	Memory     uint64 // bytes
	Pids       uint64
	Mounts     []Mount
	Networks   []Attachment
	Ports      []Port
}

// Image pins a container's root filesystem by flist digest and says where
// to fetch it.
type Image struct {
	Digest digest.ID
	Hub    string   // hub base URL
	Ref    string   // NS/NAME[:TAG] or NS/NAME@DIGEST on Hub
	URL    string   // URL of the flist file
	Stores []string // chunk stores, "[LO-HI=]URL", in preference order
}

// Mount places a volume of the deployment in a container.
type Mount struct {
	Volume   string
	Path     string
	ReadOnly bool
}

// Attachment connects a container to a network of the deployment.
type Attachment struct {
	Network string
	IP      netip.Addr // invalid (zero): assigned by the node
}

// Port is an exposed port.
type Port struct {
	Port     uint16
	Protocol string // "tcp" or "udp"
}

// Volume is persistent storage, mounted by containers.
type Volume struct {
	Size uint64 // bytes
}

// Network is a private network between the deployment's containers.
type Network struct {
	Subnet netip.Prefix
}

// Gateway forwards HTTP for a host name to a container's port.
type Gateway struct {
	Host      string
	Container string
	Port      uint16
}

// Requirement says who must approve a deployment.
type Requirement struct {
	Requests       []Request
	WeightRequired uint64
}

// Request asks a twin for its signature.
type Request struct {
	Twin     uint32
	Weight   uint64
	Required bool
}

// Signature is one twin's signature of the challenge.
type Signature struct {
	Twin uint32
	Key  key.Public
	Sig  [ed25519.SignatureSize]byte
}

// request returns the request of twin, if listed.
func (r *Requirement) request(twin uint32) (Request, bool) {
	for _, q := range r.Requests {
		if q.Twin == twin {
			return q, true
		}
	}
	return Request{}, false
}

// Workload returns the workload called name, or nil.
func (d *Deployment) Workload(name string) *Workload {
	for i := range d.Workloads {
		if d.Workloads[i].Name == name {
			return &d.Workloads[i]
		}
	}
	return nil
}

// AddSignature adds s, replacing any signature of the same twin and key
// (a renewed signature after an update) and keeping every other one.
func (d *Deployment) AddSignature(s Signature) {
	out := d.Signatures[:0:0]
	for _, o := range d.Signatures {
		if o.Twin != s.Twin || o.Key != s.Key {
			out = append(out, o)
		}
	}
	d.Signatures = append(out, s)
}

// errList collects field errors, up to maxErrors.
type errList struct {
	errs  []error
	extra int
}

const maxErrors = 20

func (l *errList) add(path, format string, args ...any) {
	if len(l.errs) >= maxErrors {
		l.extra++
		return
	}
	l.errs = append(l.errs, &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
}

func (l *errList) err() error {
	if len(l.errs) == 0 {
		return nil
	}
	errs := l.errs
	if l.extra > 0 {
		errs = append(errs[:len(errs):len(errs)], &FieldError{Msg: fmt.Sprintf("and %d more problems", l.extra)})
	}
	if len(errs) == 1 {
		return errs[0]
	}
	return errors.Join(errs...)
}

func join(path string, parts ...string) string {
	if path == "" {
		return strings.Join(parts, ".")
	}
	return path + "." + strings.Join(parts, ".")
}
