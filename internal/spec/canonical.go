package spec

import (
	"bytes"
	"cmp"
	"encoding/base64"
	"slices"

	"github.com/zosgrid/zos/internal/canon"
	"github.com/zosgrid/zos/internal/digest"
)

// Canonical returns the canonical form of d (docs/SPEC.md, "Canonical
// encoding"), signatures included. It validates d first.
func (d *Deployment) Canonical() ([]byte, error) {
	if err := d.Validate(); err != nil {
		return nil, err
	}
	return encode(d.tree(true)), nil
}

// Challenge returns what signers sign: BLAKE3-256 derive_key with the
// context ChallengeContext of the canonical form without signatures.
func (d *Deployment) Challenge() (digest.ID, error) {
	b, err := d.Stripped()
	if err != nil {
		return digest.ID{}, err
	}
	return digest.Derive(ChallengeContext, b), nil
}

// Stripped returns the canonical form without the "signatures" key: the
// bytes the challenge hashes.
func (d *Deployment) Stripped() ([]byte, error) {
	if err := d.Validate(); err != nil {
		return nil, err
	}
	return encode(d.tree(false)), nil
}

// obj is a JSON object; encode writes its keys sorted.
type obj = canon.Obj

// encode writes v canonically (internal/canon). v holds only obj, []any,
// string, uint64 and bool.
func encode(v any) []byte { return canon.Encode(v) }

func strs(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}

// tree builds the canonical value of d: every field present, sets sorted.
func (d *Deployment) tree(withSigs bool) obj {
	ws := slices.Clone(d.Workloads)
	slices.SortFunc(ws, func(a, b Workload) int { return cmp.Compare(a.Name, b.Name) })
	wl := make([]any, len(ws))
	for i, w := range ws {
		o := obj{"name": w.Name, "kind": string(w.Kind)}
		switch w.Kind {
		case KindContainer:
			o["container"] = w.Container.tree()
		case KindVolume:
			o["volume"] = obj{"size": w.Volume.Size}
		case KindNetwork:
			o["network"] = obj{"subnet": w.Network.Subnet.String()}
		case KindGateway:
			g := w.Gateway
			o["gateway"] = obj{"host": g.Host, "container": g.Container, "port": uint64(g.Port)}
		}
		wl[i] = o
	}
	rq := slices.Clone(d.Requirement.Requests)
	slices.SortFunc(rq, func(a, b Request) int { return cmp.Compare(a.Twin, b.Twin) })
	reqs := make([]any, len(rq))
	for i, q := range rq {
		reqs[i] = obj{"twin": uint64(q.Twin), "weight": q.Weight, "required": q.Required}
	}
	t := obj{
		"version":     d.Version,
		"owner":       uint64(d.Owner),
		"description": d.Description,
		"workloads":   wl,
		"signature_requirement": obj{
			"requests":        reqs,
			"weight_required": d.Requirement.WeightRequired,
		},
	}
	if withSigs {
		ss := slices.Clone(d.Signatures)
		slices.SortFunc(ss, func(a, b Signature) int {
			return cmp.Or(cmp.Compare(a.Twin, b.Twin), bytes.Compare(a.Key[:], b.Key[:]), bytes.Compare(a.Sig[:], b.Sig[:]))
		})
		sigs := make([]any, len(ss))
		for i, s := range ss {
			sigs[i] = obj{"twin": uint64(s.Twin), "key": s.Key.String(), "sig": base64.RawURLEncoding.EncodeToString(s.Sig[:])}
		}
		t["signatures"] = sigs
	}
	return t
}

func (c *Container) tree() obj {
	env := obj{}
	for k, v := range c.Env {
		env[k] = v
	}
	ms := slices.Clone(c.Mounts)
	slices.SortFunc(ms, func(a, b Mount) int { return cmp.Compare(a.Path, b.Path) })
	mounts := make([]any, len(ms))
	for i, m := range ms {
		mounts[i] = obj{"volume": m.Volume, "path": m.Path, "read_only": m.ReadOnly}
	}
	ns := slices.Clone(c.Networks)
	slices.SortFunc(ns, func(a, b Attachment) int { return cmp.Compare(a.Network, b.Network) })
	nets := make([]any, len(ns))
	for i, a := range ns {
		ip := ""
		if a.IP.IsValid() {
			ip = a.IP.String()
		}
		nets[i] = obj{"network": a.Network, "ip": ip}
	}
	ps := slices.Clone(c.Ports)
	slices.SortFunc(ps, func(a, b Port) int { return cmp.Or(cmp.Compare(a.Port, b.Port), cmp.Compare(a.Protocol, b.Protocol)) })
	ports := make([]any, len(ps))
	for i, p := range ps {
		ports[i] = obj{"port": uint64(p.Port), "protocol": p.Protocol}
	}
	return obj{
		"image": obj{
			"digest": c.Image.Digest.String(),
			"hub":    c.Image.Hub,
			"ref":    c.Image.Ref,
			"url":    c.Image.URL,
			"stores": strs(c.Image.Stores),
		},
		"entrypoint": strs(c.Entrypoint),
		"args":       strs(c.Args),
		"env":        env,
		"workdir":    c.Workdir,
		"user":       c.User,
		"cpu":        c.CPU,
		"memory":     c.Memory,
		"pids":       c.Pids,
		"mounts":     mounts,
		"networks":   nets,
		"ports":      ports,
	}
}
