package spec

import (
	"fmt"
	"net/netip"
	"net/url"
	"path"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Limits (docs/SPEC.md, "Fields").
const (
	maxWorkloads   = 256
	maxRequests    = 64
	maxSignatures  = 256
	maxMounts      = 64
	maxAttachments = 8
	maxPorts       = 64
	maxStores      = 16
	maxEntrypoint  = 64
	maxArgs        = 256
	maxEnv         = 256
	maxDescription = 4096
	maxArg         = 4096
	maxEnvValue    = 32 << 10
	maxArgv        = 128 << 10 // entrypoint, args and env together
	maxPath        = 4096
	maxWeight      = 1_000_000

	minCPU, maxCPU       = 1, 1_024_000
	minMemory, maxMemory = 4 << 20, 4 << 40
	minPids, maxPids     = 1, 4_194_304
	minVolume, maxVolume = 1 << 20, 64 << 40
)

var (
	envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,254}$`)
	userRE    = regexp.MustCompile(`^([0-9]{1,10}|[a-z_][a-z0-9_-]{0,31})(:([0-9]{1,10}|[a-z_][a-z0-9_-]{0,31}))?$`)
	hubNSRE   = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)
	hubNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)
	hubTagRE  = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$`)
	rangeRE   = regexp.MustCompile(`^([0-9a-f]{2})-([0-9a-f]{2})=`)
)

// private address ranges a network subnet must lie in.
var privateV4 = []netip.Prefix{
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
}
var privateV6 = netip.MustParsePrefix("fc00::/7")

// Validate checks every rule of docs/SPEC.md that Parse does not enforce
// while reading; Parse calls it. A Deployment built in Go must hold every
// field explicitly (Validate fills no defaults). Its errors wrap ErrInvalid.
func (d *Deployment) Validate() error {
	var errs errList
	if len(d.Workloads) > maxWorkloads || len(d.Requirement.Requests) > maxRequests || len(d.Signatures) > maxSignatures {
		errs.add("", "more than %d workloads, %d requests or %d signatures", maxWorkloads, maxRequests, maxSignatures)
		return errs.err()
	}
	if d.Version == 0 {
		errs.add("version", "required, >= 1")
	}
	if d.Owner == 0 {
		errs.add("owner", "required: the owner's twin id (>= 1)")
	}
	if len(d.Description) > maxDescription {
		errs.add("description", "%d bytes, more than the limit %d", len(d.Description), maxDescription)
	}
	checkString(&errs, "description", d.Description)
	if len(d.Workloads) == 0 {
		errs.add("workloads", "required: at least one workload")
	}

	names := make([]string, len(d.Workloads))
	byName := map[string]*Workload{}
	for i := range d.Workloads {
		w := &d.Workloads[i]
		names[i] = w.Name
		if _, dup := byName[w.Name]; dup && isLabel(w.Name) {
			errs.add(fmt.Sprintf("workloads[%d].name", i), "%q is used by another workload", w.Name)
		}
		byName[w.Name] = w
	}
	paths := workloadPaths(names)
	for i := range d.Workloads {
		w := &d.Workloads[i]
		p := paths[i]
		if !isLabel(w.Name) {
			errs.add(join(p, "name"), "%q is not a DNS label (1..63 of a-z, 0-9 and -, starting and ending with a letter or digit)", w.Name)
		}
		bodies := 0
		for _, b := range []bool{w.Container != nil, w.Volume != nil, w.Network != nil, w.Gateway != nil} {
			if b {
				bodies++
			}
		}
		ok := false
		switch w.Kind {
		case KindContainer:
			ok = w.Container != nil
		case KindVolume:
			ok = w.Volume != nil
		case KindNetwork:
			ok = w.Network != nil
		case KindGateway:
			ok = w.Gateway != nil
		default:
			errs.add(join(p, "kind"), "%q is not a workload kind (container, volume, network, gateway)", string(w.Kind))
			continue
		}
		if !ok || bodies != 1 {
			errs.add(p, "a %s workload has exactly one body, under the key %q", w.Kind, string(w.Kind))
			continue
		}
		switch w.Kind {
		case KindContainer:
			w.Container.validate(join(p, "container"), byName, &errs)
		case KindVolume:
			if s := w.Volume.Size; s < minVolume || s > maxVolume {
				errs.add(join(p, "volume.size"), "%d bytes is outside %d (1 MiB)..%d (64 TiB)", s, uint64(minVolume), uint64(maxVolume))
			}
		case KindNetwork:
			validateSubnet(join(p, "network.subnet"), w.Network.Subnet, &errs)
		case KindGateway:
			w.Gateway.validate(join(p, "gateway"), byName, &errs)
		}
	}
	d.validateNetworks(paths, &errs)
	d.validateGateways(paths, &errs)
	d.Requirement.validate(&errs)
	for i, s := range d.Signatures {
		if s.Twin == 0 {
			errs.add(fmt.Sprintf("signatures[%d].twin", i), "required, >= 1")
		}
	}
	return errs.err()
}

func (c *Container) validate(p string, byName map[string]*Workload, errs *errList) {
	c.Image.validate(join(p, "image"), errs)
	if len(c.Entrypoint) > maxEntrypoint {
		errs.add(join(p, "entrypoint"), "%d strings, more than the limit %d", len(c.Entrypoint), maxEntrypoint)
	}
	if len(c.Args) > maxArgs {
		errs.add(join(p, "args"), "%d strings, more than the limit %d", len(c.Args), maxArgs)
	}
	if len(c.Env) > maxEnv {
		errs.add(join(p, "env"), "%d variables, more than the limit %d", len(c.Env), maxEnv)
	}
	total := 0
	for i, a := range c.Entrypoint {
		total += len(a) + 1
		checkArg(errs, fmt.Sprintf("%s.entrypoint[%d]", p, i), a, maxArg)
	}
	for i, a := range c.Args {
		total += len(a) + 1
		checkArg(errs, fmt.Sprintf("%s.args[%d]", p, i), a, maxArg)
	}
	for k, v := range c.Env {
		total += len(k) + len(v) + 2
		if !envNameRE.MatchString(k) {
			errs.add(join(p, "env"), "%q is not a variable name ([A-Za-z_][A-Za-z0-9_]*, at most 255)", k)
			continue
		}
		checkArg(errs, join(p, "env", k), v, maxEnvValue)
	}
	if total > maxArgv {
		errs.add(p, "entrypoint, args and env take %d bytes, more than the limit %d", total, maxArgv)
	}
	if c.Workdir != "" {
		checkPath(errs, join(p, "workdir"), c.Workdir)
	}
	if c.User != "" {
		if !userRE.MatchString(c.User) {
			errs.add(join(p, "user"), "%q: want USER[:GROUP], each a number or a name [a-z_][a-z0-9_-]*", c.User)
		} else {
			for _, part := range strings.Split(c.User, ":") {
				if n, err := strconv.ParseUint(part, 10, 64); err == nil && n > 1<<32-1 {
					errs.add(join(p, "user"), "id %s is more than 32 bits", part)
				}
			}
		}
	}
	if c.CPU < minCPU || c.CPU > maxCPU {
		errs.add(join(p, "cpu"), "%d millicores is outside %d..%d", c.CPU, minCPU, maxCPU)
	}
	if c.Memory < minMemory || c.Memory > maxMemory {
		errs.add(join(p, "memory"), "%d bytes is outside %d (4 MiB)..%d (4 TiB)", c.Memory, uint64(minMemory), uint64(maxMemory))
	}
	if c.Pids < minPids || c.Pids > maxPids {
		errs.add(join(p, "pids"), "%d is outside %d..%d", c.Pids, minPids, maxPids)
	}
	if len(c.Mounts) > maxMounts || len(c.Networks) > maxAttachments || len(c.Ports) > maxPorts {
		errs.add(p, "too many mounts (limit %d), networks (limit %d) or ports (limit %d)", maxMounts, maxAttachments, maxPorts)
		return
	}
	mountPaths := map[string]bool{}
	for i, m := range c.Mounts {
		mp := fmt.Sprintf("%s.mounts[%d]", p, i)
		if w := byName[m.Volume]; w == nil || w.Kind != KindVolume {
			errs.add(join(mp, "volume"), "%q is not a volume workload of this deployment", m.Volume)
		}
		if checkPath(errs, join(mp, "path"), m.Path) {
			if m.Path == "/" {
				errs.add(join(mp, "path"), "cannot mount over /")
			}
			if mountPaths[m.Path] {
				errs.add(join(mp, "path"), "%q is mounted twice", m.Path)
			}
			mountPaths[m.Path] = true
		}
	}
	nets := map[string]bool{}
	for i, a := range c.Networks {
		ap := fmt.Sprintf("%s.networks[%d]", p, i)
		w := byName[a.Network]
		if w == nil || w.Kind != KindNetwork {
			errs.add(join(ap, "network"), "%q is not a network workload of this deployment", a.Network)
			continue
		}
		if nets[a.Network] {
			errs.add(join(ap, "network"), "%q is attached twice", a.Network)
		}
		nets[a.Network] = true
		if a.IP.IsValid() && w.Network != nil && w.Network.Subnet.IsValid() {
			checkHostIP(errs, join(ap, "ip"), a.IP, w.Network.Subnet)
		}
	}
	ports := map[Port]bool{}
	for i, pt := range c.Ports {
		pp := fmt.Sprintf("%s.ports[%d]", p, i)
		if pt.Port == 0 {
			errs.add(join(pp, "port"), "0 is not a port (1..65535)")
		}
		if pt.Protocol != "tcp" && pt.Protocol != "udp" {
			errs.add(join(pp, "protocol"), "%q: want tcp or udp", pt.Protocol)
		}
		if ports[pt] {
			errs.add(pp, "%d/%s is exposed twice", pt.Port, pt.Protocol)
		}
		ports[pt] = true
	}
}

func (im *Image) validate(p string, errs *errList) {
	if im.Digest.IsZero() {
		errs.add(join(p, "digest"), "required: the flist digest pins the image")
	}
	if im.Hub == "" && im.URL == "" {
		errs.add(p, "say where to fetch the flist: hub (with ref) or url")
	}
	if im.Hub != "" {
		if u := checkURL(errs, join(p, "hub"), im.Hub, "http", "https"); u != nil && (u.RawQuery != "" || u.Fragment != "") {
			errs.add(join(p, "hub"), "a hub URL has no query or fragment")
		}
		if im.Ref == "" {
			errs.add(join(p, "ref"), "required with hub: NS/NAME[:TAG] or NS/NAME@DIGEST")
		}
	}
	if im.Ref != "" {
		if im.Hub == "" {
			errs.add(join(p, "ref"), "a hub reference needs hub")
		}
		im.validateRef(join(p, "ref"), errs)
	}
	if im.URL != "" {
		checkURL(errs, join(p, "url"), im.URL, "http", "https")
	}
	if len(im.Stores) > maxStores {
		errs.add(join(p, "stores"), "%d stores, more than the limit %d", len(im.Stores), maxStores)
		return
	}
	seen := map[string]bool{}
	for i, s := range im.Stores {
		sp := fmt.Sprintf("%s.stores[%d]", p, i)
		if seen[s] {
			errs.add(sp, "%q is listed twice", s)
		}
		seen[s] = true
		rest := s
		if m := rangeRE.FindStringSubmatch(s); m != nil {
			if m[1] > m[2] {
				errs.add(sp, "range %s-%s is empty", m[1], m[2])
			}
			rest = s[len(m[0]):]
		}
		checkURL(errs, sp, rest, "dir", "http", "https", "s3", "zdb", "redis")
	}
}

func (im *Image) validateRef(p string, errs *errList) {
	ns, rest, ok := strings.Cut(im.Ref, "/")
	if !ok || !hubNSRE.MatchString(ns) {
		errs.add(p, "%q: want NS/NAME[:TAG] or NS/NAME@DIGEST", im.Ref)
		return
	}
	name, dg, hasDigest := strings.Cut(rest, "@")
	if hasDigest {
		if dg != im.Digest.String() {
			errs.add(p, "%q pins another digest than image.digest", im.Ref)
		}
	} else {
		var tag string
		var hasTag bool
		name, tag, hasTag = strings.Cut(rest, ":")
		if hasTag && !hubTagRE.MatchString(tag) {
			errs.add(p, "%q: bad tag", im.Ref)
		}
	}
	if !hubNameRE.MatchString(name) {
		errs.add(p, "%q: bad name", im.Ref)
	}
}

// checkURL checks that s is a URL with one of schemes and no credentials:
// a spec is public.
func checkURL(errs *errList, p, s string, schemes ...string) *url.URL {
	if !checkString(errs, p, s) {
		return nil
	}
	u, err := url.Parse(s)
	if err != nil {
		errs.add(p, "%q is not a URL", s)
		return nil
	}
	ok := false
	for _, sc := range schemes {
		ok = ok || u.Scheme == sc
	}
	if !ok {
		errs.add(p, "%q: want a URL with scheme %s", s, strings.Join(schemes, ", "))
		return nil
	}
	if u.Scheme == "dir" {
		if u.Host != "" || u.Path == "" {
			errs.add(p, "%q: want dir:///absolute/path", s)
		}
	} else if u.Host == "" {
		errs.add(p, "%q has no host", s)
	}
	if u.User != nil {
		errs.add(p, "credentials do not belong in a spec (it is public): give them to the node")
		return nil
	}
	for k := range u.Query() {
		switch strings.ToLower(k) {
		case "secret", "password", "token", "key", "access_key", "secret_key", "x-amz-signature", "x-amz-credential":
			errs.add(p, "query parameter %q looks like a credential; credentials do not belong in a spec", k)
			return nil
		}
	}
	return u
}

func (g *Gateway) validate(p string, byName map[string]*Workload, errs *errList) {
	if !isHostName(g.Host) {
		errs.add(join(p, "host"), "%q is not a lower-case DNS name of two or more labels", g.Host)
	}
	w := byName[g.Container]
	if w == nil || w.Kind != KindContainer || w.Container == nil {
		errs.add(join(p, "container"), "%q is not a container workload of this deployment", g.Container)
		return
	}
	if g.Port == 0 {
		errs.add(join(p, "port"), "required: a tcp port the container exposes")
		return
	}
	for _, pt := range w.Container.Ports {
		if pt.Port == g.Port && pt.Protocol == "tcp" {
			return
		}
	}
	errs.add(join(p, "port"), "container %q does not expose %d/tcp in its ports", g.Container, g.Port)
}

func (d *Deployment) validateGateways(paths []string, errs *errList) {
	hosts := map[string]bool{}
	for i, w := range d.Workloads {
		if w.Kind != KindGateway || w.Gateway == nil {
			continue
		}
		if hosts[w.Gateway.Host] {
			errs.add(join(paths[i], "gateway.host"), "%q is served by another gateway", w.Gateway.Host)
		}
		hosts[w.Gateway.Host] = true
	}
}

// validateNetworks refuses overlapping subnets and an address given to two
// containers.
func (d *Deployment) validateNetworks(paths []string, errs *errList) {
	type net struct {
		i int
		p netip.Prefix
	}
	var nets []net
	for i, w := range d.Workloads {
		if w.Kind == KindNetwork && w.Network != nil && w.Network.Subnet.IsValid() {
			for _, o := range nets {
				if o.p.Overlaps(w.Network.Subnet) {
					errs.add(join(paths[i], "network.subnet"), "%s overlaps %s of %s", w.Network.Subnet, o.p, d.Workloads[o.i].Name)
				}
			}
			nets = append(nets, net{i, w.Network.Subnet})
		}
	}
	type use struct {
		network string
		ip      netip.Addr
	}
	used := map[use]string{}
	for i, w := range d.Workloads {
		if w.Kind != KindContainer || w.Container == nil {
			continue
		}
		for j, a := range w.Container.Networks {
			if !a.IP.IsValid() {
				continue
			}
			u := use{a.Network, a.IP}
			if other, ok := used[u]; ok && other != w.Name {
				errs.add(fmt.Sprintf("%s.container.networks[%d].ip", paths[i], j), "%s is also given to %s", a.IP, other)
			}
			used[u] = w.Name
		}
	}
}

func validateSubnet(p string, s netip.Prefix, errs *errList) {
	if !s.IsValid() {
		errs.add(p, "required: a private CIDR prefix such as 10.20.0.0/24")
		return
	}
	if s.Masked() != s {
		errs.add(p, "%s has host bits set; did you mean %s?", s, s.Masked())
		return
	}
	a := s.Addr()
	switch {
	case a.Is4():
		in := false
		for _, r := range privateV4 {
			in = in || (s.Bits() >= r.Bits() && r.Contains(a))
		}
		if !in {
			errs.add(p, "%s is not private (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16)", s)
		} else if s.Bits() > 29 {
			errs.add(p, "%s is too small: at most /29", s)
		}
	case a.Is4In6():
		errs.add(p, "%s: write an IPv4 subnet in IPv4 form", s)
	default:
		if s.Bits() < privateV6.Bits() || !privateV6.Contains(a) {
			errs.add(p, "%s is not private (fc00::/7)", s)
		} else if s.Bits() < 48 || s.Bits() > 120 {
			errs.add(p, "%s: an IPv6 subnet is /48../120", s)
		}
	}
}

// checkHostIP checks that ip is a usable host address of subnet: not the
// network address, not the first host (the node's gateway), not the IPv4
// broadcast address.
func checkHostIP(errs *errList, p string, ip netip.Addr, subnet netip.Prefix) {
	if ip.Zone() != "" || !subnet.Contains(ip) {
		errs.add(p, "%s is not in the network's subnet %s", ip, subnet)
		return
	}
	first := subnet.Masked().Addr()
	gw := first.Next()
	if ip == first || ip == gw {
		errs.add(p, "%s is reserved (the network address and the first host, the node's gateway)", ip)
		return
	}
	if ip.Is4() {
		b := ip.As4()
		host := uint32(1)<<(32-subnet.Bits()) - 1
		v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
		if v&host == host {
			errs.add(p, "%s is the broadcast address of %s", ip, subnet)
		}
	}
}

func (r *Requirement) validate(errs *errList) {
	const p = "signature_requirement"
	if len(r.Requests) == 0 {
		errs.add(join(p, "requests"), "required: at least one twin")
	}
	var sum uint64
	seen := map[uint32]bool{}
	for i, q := range r.Requests {
		qp := fmt.Sprintf("%s.requests[%d]", p, i)
		if q.Twin == 0 {
			errs.add(join(qp, "twin"), "required, >= 1")
		}
		if seen[q.Twin] {
			errs.add(join(qp, "twin"), "twin %d is listed twice", q.Twin)
		}
		seen[q.Twin] = true
		if q.Weight > maxWeight {
			errs.add(join(qp, "weight"), "%d is more than the limit %d", q.Weight, maxWeight)
		} else {
			sum += q.Weight
		}
	}
	if r.WeightRequired == 0 {
		errs.add(join(p, "weight_required"), "required, >= 1")
	} else if len(r.Requests) > 0 && r.WeightRequired > sum {
		errs.add(join(p, "weight_required"), "%d is more than the requests' weights together (%d): it could never be met", r.WeightRequired, sum)
	}
}

func isLabel(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

func isHostName(s string) bool {
	if len(s) > 253 {
		return false
	}
	labels := strings.Split(s, ".")
	if len(labels) < 2 {
		return false
	}
	for _, l := range labels {
		if !isLabel(l) {
			return false
		}
	}
	return true
}

// checkString refuses invalid UTF-8 and NUL.
func checkString(errs *errList, p, s string) bool {
	if !utf8.ValidString(s) {
		errs.add(p, "not valid UTF-8")
		return false
	}
	if strings.IndexByte(s, 0) >= 0 {
		errs.add(p, "contains a NUL byte")
		return false
	}
	return true
}

func checkArg(errs *errList, p, s string, limit int) {
	if len(s) > limit {
		errs.add(p, "%d bytes, more than the limit %d", len(s), limit)
		return
	}
	checkString(errs, p, s)
}

// checkPath requires an absolute, clean path (so no "..").
func checkPath(errs *errList, p, s string) bool {
	if !checkString(errs, p, s) {
		return false
	}
	if len(s) > maxPath {
		errs.add(p, "%d bytes, more than the limit %d", len(s), maxPath)
		return false
	}
	if !strings.HasPrefix(s, "/") || path.Clean(s) != s {
		errs.add(p, "%q is not an absolute, clean path (no .., no // or trailing /)", s)
		return false
	}
	return true
}

// workloadPaths names each workload for error messages: by its name when
// that is a valid label given once, by its index otherwise.
func workloadPaths(names []string) []string {
	count := map[string]int{}
	for _, n := range names {
		count[n]++
	}
	out := make([]string, len(names))
	for i, n := range names {
		if isLabel(n) && count[n] == 1 {
			out[i] = "workloads[" + n + "]"
		} else {
			out[i] = fmt.Sprintf("workloads[%d]", i)
		}
	}
	return out
}
