package spec

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/key"
)

// MaxInput is the largest spec Parse reads, in bytes.
const MaxInput = 1 << 20

// maxDepth bounds the nesting of the input; a spec needs 6 levels.
const maxDepth = 32

// Defaults filled by Parse (docs/SPEC.md).
const (
	DefaultCPU    = 1000      // millicores: one core
	DefaultMemory = 256 << 20 // bytes
	DefaultPids   = 1024
)

// The input as written: pointers where a default is filled in, so that an
// explicit zero stays a zero (and is refused) instead of becoming the default.
type rawDeployment struct {
	Version     u64             `yaml:"version"`
	Owner       u32             `yaml:"owner"`
	Description string          `yaml:"description"`
	Workloads   []rawWorkload   `yaml:"workloads"`
	Requirement *rawRequirement `yaml:"signature_requirement"`
	Signatures  []rawSignature  `yaml:"signatures"`
}

type rawWorkload struct {
	Name      string        `yaml:"name"`
	Kind      string        `yaml:"kind"`
	Container *rawContainer `yaml:"container"`
	Volume    *rawVolume    `yaml:"volume"`
	Network   *rawNetwork   `yaml:"network"`
	Gateway   *rawGateway   `yaml:"gateway"`
}

type rawContainer struct {
	Image      rawImage          `yaml:"image"`
	Entrypoint []string          `yaml:"entrypoint"`
	Args       []string          `yaml:"args"`
	Env        map[string]string `yaml:"env"`
	Workdir    string            `yaml:"workdir"`
	User       string            `yaml:"user"`
	CPU        *u64              `yaml:"cpu"`
	Memory     *size             `yaml:"memory"`
	Pids       *u64              `yaml:"pids"`
	Mounts     []rawMount        `yaml:"mounts"`
	Networks   []rawAttachment   `yaml:"networks"`
	Ports      []rawPort         `yaml:"ports"`
}

type rawImage struct {
	Digest string   `yaml:"digest"`
	Hub    string   `yaml:"hub"`
	Ref    string   `yaml:"ref"`
	URL    string   `yaml:"url"`
	Stores []string `yaml:"stores"`
}

type rawMount struct {
	Volume   string `yaml:"volume"`
	Path     string `yaml:"path"`
	ReadOnly bool   `yaml:"read_only"`
}

type rawAttachment struct {
	Network string `yaml:"network"`
	IP      string `yaml:"ip"`
}

type rawPort struct {
	Port     u64    `yaml:"port"`
	Protocol string `yaml:"protocol"`
}

type rawVolume struct {
	Size size `yaml:"size"`
}

type rawNetwork struct {
	Subnet string `yaml:"subnet"`
}

type rawGateway struct {
	Host      string `yaml:"host"`
	Container string `yaml:"container"`
	Port      u64    `yaml:"port"`
}

type rawRequirement struct {
	Requests       []rawRequest `yaml:"requests"`
	WeightRequired u64          `yaml:"weight_required"`
}

type rawRequest struct {
	Twin     u32  `yaml:"twin"`
	Weight   *u64 `yaml:"weight"`
	Required bool `yaml:"required"`
}

type rawSignature struct {
	Twin u32    `yaml:"twin"`
	Key  string `yaml:"key"`
	Sig  string `yaml:"sig"`
}

// size is a byte count written as an integer or as N + a binary unit.
type size uint64

var sizeRE = regexp.MustCompile(`^([0-9]+) ?(B|KiB|MiB|GiB|TiB)$`)

func (s *size) UnmarshalYAML(n *yaml.Node) error {
	bad := func(why string) error {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: size %.40q: %s", n.Line, n.Value, why)}}
	}
	if n.Kind != yaml.ScalarNode {
		return bad("want a number of bytes or a string like 512MiB")
	}
	if n.Tag == "!!int" || n.Tag == "!!float" {
		u, err := wholeNumber(n, math.MaxUint64)
		*s = size(u)
		return err
	}
	m := sizeRE.FindStringSubmatch(n.Value)
	if m == nil {
		return bad("want a number of bytes or N with a unit B, KiB, MiB, GiB or TiB")
	}
	u, err := strconv.ParseUint(m[1], 10, 64)
	shift := map[string]uint{"B": 0, "KiB": 10, "MiB": 20, "GiB": 30, "TiB": 40}[m[2]]
	if err != nil || u > math.MaxUint64>>shift {
		return bad("too large")
	}
	*s = size(u << shift)
	return nil
}

// u64 and u32 are whole numbers: a YAML float that is not one (1.5) is
// refused, where the decoder would truncate it; a string is not a number.
type (
	u64 uint64
	u32 uint32
)

func (v *u64) UnmarshalYAML(n *yaml.Node) error {
	x, err := wholeNumber(n, math.MaxUint64)
	*v = u64(x)
	return err
}

func (v *u32) UnmarshalYAML(n *yaml.Node) error {
	x, err := wholeNumber(n, math.MaxUint32)
	*v = u32(x)
	return err
}

func wholeNumber(n *yaml.Node, limit uint64) (uint64, error) {
	bad := func() (uint64, error) {
		return 0, &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %.40q is not a whole number in 0..%d", n.Line, n.Value, limit)}}
	}
	if n.Kind != yaml.ScalarNode {
		return bad()
	}
	var x uint64
	switch n.Tag {
	case "!!int":
		if n.Decode(&x) != nil {
			return bad()
		}
	case "!!float":
		// Exact only below 2^53; YAML writes bigger integers without a point.
		f, err := strconv.ParseFloat(n.Value, 64)
		if err != nil || f != math.Trunc(f) || f < 0 || f > 1<<53 {
			return bad()
		}
		x = uint64(f)
	default:
		return bad()
	}
	if x > limit {
		return bad()
	}
	return x, nil
}

// Parse reads a deployment in YAML or JSON (JSON when the first non-blank
// byte is '{'), strictly, fills its defaults and validates it. Its errors
// wrap ErrInvalid.
func Parse(in []byte) (*Deployment, error) {
	var raw rawDeployment
	if err := decode(in, &raw); err != nil {
		return nil, err
	}
	d, err := raw.convert()
	if err != nil {
		return nil, err
	}
	if err := d.Validate(); err != nil {
		return nil, err
	}
	return d, nil
}

func isJSON(in []byte) bool {
	t := bytes.TrimLeft(in, " \t\r\n")
	return len(t) > 0 && t[0] == '{'
}

func invalid(format string, args ...any) error {
	return &FieldError{Msg: fmt.Sprintf(format, args...)}
}

// decode reads in strictly into v.
func decode(in []byte, v any) error {
	if len(in) > MaxInput {
		return invalid("spec is %d bytes, more than the limit %d", len(in), MaxInput)
	}
	if !utf8.Valid(in) {
		return invalid("spec is not valid UTF-8")
	}
	if isJSON(in) {
		n, err := jsonToNode(in)
		if err != nil {
			return err
		}
		// The strict decoder (unknown fields) reads text, not nodes: write
		// the JSON as YAML, which keeps every value and type.
		if in, err = yaml.Marshal(n); err != nil {
			return invalid("json: %v", err)
		}
	} else {
		var n yaml.Node
		dec := yaml.NewDecoder(bytes.NewReader(in))
		if err := dec.Decode(&n); err != nil {
			if errors.Is(err, io.EOF) {
				return invalid("spec is empty")
			}
			return yamlError(err)
		}
		var more yaml.Node
		if err := dec.Decode(&more); !errors.Is(err, io.EOF) {
			return invalid("yaml: more than one document")
		}
		if err := checkNode(&n, 0); err != nil {
			return err
		}
	}
	dec := yaml.NewDecoder(bytes.NewReader(in))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		return yamlError(err)
	}
	return nil
}

var goTypeRE = regexp.MustCompile(` (in|into) (type )?(spec\.)?(raw[A-Za-z]*|size|\[\]spec\.raw[A-Za-z]*|\*?spec\.[A-Za-z]+|u?int[0-9]*|string|bool)\b`)

// yamlError rewords the decoder's errors without Go type names.
func yamlError(err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	msg = strings.ReplaceAll(msg, "unmarshal errors:\n  ", "")
	msg = strings.ReplaceAll(msg, "\n  ", "; ")
	msg = goTypeRE.ReplaceAllStringFunc(msg, func(s string) string {
		into := strings.HasPrefix(s, " into")
		t := s[strings.LastIndexAny(s, " .]")+1:]
		switch {
		case !into:
			return ""
		case strings.HasPrefix(t, "uint"):
			return " into a non-negative integer"
		case strings.HasPrefix(t, "int"):
			return " into an integer"
		case t == "string":
			return " into a string"
		case t == "bool":
			return " into a boolean"
		case strings.HasPrefix(t, "raw"), t == "size":
			return " here"
		}
		return ""
	})
	return invalid("%s", msg)
}

// checkNode refuses aliases, anchors, merge keys and deep nesting.
func checkNode(n *yaml.Node, depth int) error {
	if depth > maxDepth {
		return invalid("yaml: nested more than %d levels", maxDepth)
	}
	if n.Kind == yaml.AliasNode || n.Anchor != "" {
		return invalid("yaml: line %d: anchors and aliases are not allowed in a spec", n.Line)
	}
	if n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Tag == "!!merge" {
				return invalid("yaml: line %d: merge keys are not allowed in a spec", n.Content[i].Line)
			}
		}
	}
	for _, c := range n.Content {
		if err := checkNode(c, depth+1); err != nil {
			return err
		}
	}
	return nil
}

// jsonToNode reads one JSON object into a YAML node tree, refusing
// duplicate keys (which encoding/json silently merges) and trailing data.
func jsonToNode(in []byte) (*yaml.Node, error) {
	dec := json.NewDecoder(bytes.NewReader(in))
	dec.UseNumber()
	n, err := jsonValue(dec, 0)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, invalid("json: data after the top-level object")
	}
	return n, nil
}

func jsonValue(dec *json.Decoder, depth int) (*yaml.Node, error) {
	if depth > maxDepth {
		return nil, invalid("json: nested more than %d levels", maxDepth)
	}
	tok, err := dec.Token()
	if err != nil {
		return nil, invalid("json: %v", err)
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			n := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
			seen := map[string]bool{}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, invalid("json: %v", err)
				}
				k, ok := kt.(string)
				if !ok {
					return nil, invalid("json: object key is not a string")
				}
				if seen[k] {
					return nil, invalid("json: duplicate key %q", k)
				}
				seen[k] = true
				v, err := jsonValue(dec, depth+1)
				if err != nil {
					return nil, err
				}
				n.Content = append(n.Content, strNode(k), v)
			}
			if _, err := dec.Token(); err != nil {
				return nil, invalid("json: %v", err)
			}
			return n, nil
		case '[':
			n := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
			for dec.More() {
				v, err := jsonValue(dec, depth+1)
				if err != nil {
					return nil, err
				}
				n.Content = append(n.Content, v)
			}
			if _, err := dec.Token(); err != nil {
				return nil, invalid("json: %v", err)
			}
			return n, nil
		}
		return nil, invalid("json: unexpected %v", t)
	case string:
		return strNode(t), nil
	case json.Number:
		tag := "!!int"
		if strings.ContainsAny(string(t), ".eE") {
			tag = "!!float"
		}
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: string(t)}, nil
	case bool:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: strconv.FormatBool(t)}, nil
	case nil:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: "null"}, nil
	}
	return nil, invalid("json: unexpected token %v", tok)
}

func strNode(s string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s, Style: yaml.DoubleQuotedStyle}
}

// convert turns the input into a Deployment, filling defaults and parsing
// the values that have a text form (digests, addresses, keys).
func (r *rawDeployment) convert() (*Deployment, error) {
	var errs errList
	if n := len(r.Workloads); n > maxWorkloads {
		errs.add("workloads", "%d workloads, more than the limit %d", n, maxWorkloads)
		return nil, errs.err()
	}
	if r.Requirement != nil && len(r.Requirement.Requests) > maxRequests {
		errs.add("signature_requirement.requests", "%d requests, more than the limit %d", len(r.Requirement.Requests), maxRequests)
		return nil, errs.err()
	}
	if n := len(r.Signatures); n > maxSignatures {
		errs.add("signatures", "%d signatures, more than the limit %d", n, maxSignatures)
		return nil, errs.err()
	}
	d := &Deployment{Version: uint64(r.Version), Owner: uint32(r.Owner), Description: r.Description}
	names := make([]string, len(r.Workloads))
	for i, w := range r.Workloads {
		names[i] = w.Name
	}
	paths := workloadPaths(names)
	for i, rw := range r.Workloads {
		p := paths[i]
		w := Workload{Name: rw.Name, Kind: Kind(rw.Kind)}
		if rw.Container != nil {
			w.Container = rw.Container.convert(join(p, "container"), &errs)
		}
		if rw.Volume != nil {
			w.Volume = &Volume{Size: uint64(rw.Volume.Size)}
		}
		if rw.Network != nil {
			w.Network = &Network{}
			if rw.Network.Subnet != "" {
				pfx, err := netip.ParsePrefix(rw.Network.Subnet)
				if err != nil {
					errs.add(join(p, "network.subnet"), "%q is not a CIDR prefix", rw.Network.Subnet)
				}
				w.Network.Subnet = pfx
			}
		}
		if g := rw.Gateway; g != nil {
			w.Gateway = &Gateway{Host: g.Host, Container: g.Container, Port: port(uint64(g.Port), join(p, "gateway.port"), &errs)}
		}
		d.Workloads = append(d.Workloads, w)
	}
	if rq := r.Requirement; rq != nil {
		d.Requirement.WeightRequired = uint64(rq.WeightRequired)
		for _, q := range rq.Requests {
			w := uint64(1)
			if q.Weight != nil {
				w = uint64(*q.Weight)
			}
			d.Requirement.Requests = append(d.Requirement.Requests, Request{Twin: uint32(q.Twin), Weight: w, Required: q.Required})
		}
	} else {
		d.Requirement = Requirement{Requests: []Request{{Twin: uint32(r.Owner), Weight: 1, Required: true}}, WeightRequired: 1}
	}
	for i, rs := range r.Signatures {
		s := Signature{Twin: uint32(rs.Twin)}
		var why []string
		if s.Twin == 0 {
			why = append(why, "twin: required, >= 1")
		}
		var err error
		if s.Key, err = key.ParsePublic(rs.Key); err != nil {
			why = append(why, "key: want ed25519:<43 base64url characters>")
		}
		if b, err := base64.RawURLEncoding.Strict().DecodeString(rs.Sig); err != nil || len(b) != len(s.Sig) {
			why = append(why, "sig: want 86 base64url characters (a 64-byte ed25519 signature)")
		} else {
			copy(s.Sig[:], b)
		}
		if len(why) > 0 {
			d.Malformed = append(d.Malformed, Ignored{Index: i, Twin: s.Twin, Reason: "malformed: " + strings.Join(why, "; ")})
			continue
		}
		d.Signatures = append(d.Signatures, s)
		d.sigIndex = append(d.sigIndex, i)
	}
	if err := errs.err(); err != nil {
		return nil, err
	}
	return d, nil
}

func (rc *rawContainer) convert(p string, errs *errList) *Container {
	c := &Container{
		Image: Image{
			Hub: rc.Image.Hub, Ref: rc.Image.Ref, URL: rc.Image.URL,
			Stores: orEmpty(rc.Image.Stores),
		},
		Entrypoint: orEmpty(rc.Entrypoint),
		Args:       orEmpty(rc.Args),
		Env:        rc.Env,
		Workdir:    rc.Workdir,
		User:       rc.User,
		CPU:        DefaultCPU,
		Memory:     DefaultMemory,
		Pids:       DefaultPids,
	}
	if c.Env == nil {
		c.Env = map[string]string{}
	}
	if rc.Image.Digest == "" {
		errs.add(join(p, "image.digest"), "required: the flist digest pins the image")
	} else if id, err := digest.Parse(rc.Image.Digest); err != nil {
		errs.add(join(p, "image.digest"), "%q is not 64 lower-case hex digits", rc.Image.Digest)
	} else {
		c.Image.Digest = id
	}
	if rc.CPU != nil {
		c.CPU = uint64(*rc.CPU)
	}
	if rc.Memory != nil {
		c.Memory = uint64(*rc.Memory)
	}
	if rc.Pids != nil {
		c.Pids = uint64(*rc.Pids)
	}
	if len(rc.Mounts) > maxMounts || len(rc.Networks) > maxAttachments || len(rc.Ports) > maxPorts {
		errs.add(p, "too many mounts (limit %d), networks (limit %d) or ports (limit %d)", maxMounts, maxAttachments, maxPorts)
		return c
	}
	for _, m := range rc.Mounts {
		c.Mounts = append(c.Mounts, Mount(m))
	}
	for i, a := range rc.Networks {
		at := Attachment{Network: a.Network}
		if a.IP != "" {
			ip, err := netip.ParseAddr(a.IP)
			if err != nil {
				errs.add(fmt.Sprintf("%s.networks[%d].ip", p, i), "%q is not an IP address", a.IP)
			}
			at.IP = ip
		}
		c.Networks = append(c.Networks, at)
	}
	for i, rp := range rc.Ports {
		pr := rp.Protocol
		if pr == "" {
			pr = "tcp"
		}
		c.Ports = append(c.Ports, Port{Port: port(uint64(rp.Port), fmt.Sprintf("%s.ports[%d].port", p, i), errs), Protocol: pr})
	}
	return c
}

func port(v uint64, p string, errs *errList) uint16 {
	if v > math.MaxUint16 {
		errs.add(p, "%d is not a port (1..65535)", v)
		return 0
	}
	return uint16(v)
}

func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
