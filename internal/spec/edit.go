package spec

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"

	"go.yaml.in/yaml/v3"

	"github.com/zosgrid/zos/internal/key"
)

// Cosign adds twin's signature with sec to the spec file in, replacing an
// earlier signature of the same twin and key and keeping every other one,
// and returns the new file. A YAML file keeps its comments and key order
// (only its signatures list changes); a JSON file comes back in its
// canonical form, indented. The result is parsed again and must have the
// same challenge, so an edit can never change what was signed.
func Cosign(in []byte, sec key.Secret, twin uint32) ([]byte, error) {
	d, err := Parse(in)
	if err != nil {
		return nil, err
	}
	sig, err := Sign(d, sec, twin)
	if err != nil {
		return nil, err
	}
	var out []byte
	if isJSON(in) {
		d.AddSignature(sig)
		c, err := d.Canonical()
		if err != nil {
			return nil, err
		}
		var buf bytes.Buffer
		json.Indent(&buf, c, "", "  ") // c is valid JSON
		buf.WriteByte('\n')
		out = buf.Bytes()
	} else if out, err = cosignYAML(in, sig); err != nil {
		return nil, err
	}
	back, err := Parse(out)
	if err != nil {
		return nil, fmt.Errorf("signed spec does not parse again (a bug): %w", err)
	}
	before, _ := d.Challenge()
	after, err := back.Challenge()
	if err != nil || after != before {
		return nil, fmt.Errorf("signing changed the spec's challenge (a bug)")
	}
	return out, nil
}

func cosignYAML(in []byte, sig Signature) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(in, &doc); err != nil {
		return nil, yamlError(err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, invalid("yaml: the spec is not a mapping")
	}
	root := doc.Content[0]
	var list *yaml.Node
	at := findKey(root, "signatures")
	if at >= 0 {
		list = root.Content[at+1]
	}
	if list == nil || list.Kind != yaml.SequenceNode {
		list = &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
		if at >= 0 {
			root.Content[at+1] = list // was null
		} else {
			root.Content = append(root.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: "signatures"}, list)
		}
	}
	kept := list.Content[:0:0]
	for _, item := range list.Content {
		var rs rawSignature
		if item.Decode(&rs) == nil && uint32(rs.Twin) == sig.Twin && rs.Key == sig.Key.String() {
			continue // renewed below
		}
		kept = append(kept, item)
	}
	str := func(s string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s} }
	entry := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Content: []*yaml.Node{
		str("twin"), {Kind: yaml.ScalarNode, Tag: "!!int", Value: strconv.FormatUint(uint64(sig.Twin), 10)},
		str("key"), str(sig.Key.String()),
		str("sig"), str(base64.RawURLEncoding.EncodeToString(sig.Sig[:])),
	}}
	list.Content = append(kept, entry)
	list.Style = 0 // block style, one signature per entry
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return nil, invalid("yaml: %v", err)
	}
	enc.Close()
	return buf.Bytes(), nil
}

func findKey(m *yaml.Node, k string) int {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == k {
			return i
		}
	}
	return -1
}
