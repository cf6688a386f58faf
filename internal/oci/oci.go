package oci

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	kgzip "github.com/klauspost/compress/gzip"
)

// MetaConfig is the flist META key that holds an image's run configuration
// (Config.Canonical).
const MetaConfig = "zos.oci.config"

// Reference prefixes.
const (
	Docker        = "docker://"
	Layout        = "oci:"
	DockerArchive = "docker-archive:"
)

// IsRef reports whether s names an image rather than a directory.
func IsRef(s string) bool {
	return strings.HasPrefix(s, Docker) || strings.HasPrefix(s, Layout) || strings.HasPrefix(s, DockerArchive)
}

// Options tune Open. The zero value pulls anonymously or with the
// credentials of ~/.docker/config.json, over HTTPS except on loopback.
type Options struct {
	// Username and Password, if set, authenticate to the registry;
	// otherwise the default keychain ($DOCKER_CONFIG or
	// ~/.docker/config.json, and its credential helpers) is asked.
	Username, Password string
	// Insecure allows plain HTTP and unverified TLS to any registry.
	// Without it plain HTTP is used only for loopback addresses.
	Insecure bool
	// Platform is "os/arch[/variant]", default linux/GOARCH.
	Platform string
	// Transport is the HTTP transport (default a clone of
	// http.DefaultTransport).
	Transport http.RoundTripper
}

// Image is an opened image: its layers, bottom first, and its config.
type Image struct {
	ref    string
	layers []v1.Layer
	config Config
	size   int64 // compressed bytes of the layers, as the manifest says
	// blobs: a layer's Compressed stream is its stored blob (a registry,
	// a layout), not something the library would compress on the fly.
	blobs bool
}

// Open resolves ref (see the package doc) to one image for the platform.
// It reads the manifest and config; layers are read by OpenLayer.
func Open(ctx context.Context, ref string, opt Options) (*Image, error) {
	plat, err := platform(opt.Platform)
	if err != nil {
		return nil, err
	}
	var img v1.Image
	switch {
	case strings.HasPrefix(ref, Docker):
		img, err = openRemote(ctx, strings.TrimPrefix(ref, Docker), plat, opt)
	case strings.HasPrefix(ref, Layout):
		img, err = openLayout(strings.TrimPrefix(ref, Layout), plat)
	case strings.HasPrefix(ref, DockerArchive):
		img, err = openArchive(strings.TrimPrefix(ref, DockerArchive))
	default:
		return nil, fmt.Errorf("oci: %q is not an image reference (docker://REF, oci:DIR[:TAG] or docker-archive:FILE)", ref)
	}
	if err != nil {
		return nil, fmt.Errorf("oci: %s: %w", ref, err)
	}
	m, err := fromImage(img, plat)
	if err != nil {
		return nil, fmt.Errorf("oci: %s: %w", ref, err)
	}
	m.ref = ref
	m.blobs = !strings.HasPrefix(ref, DockerArchive)
	return m, nil
}

func platform(s string) (v1.Platform, error) {
	if s == "" {
		return v1.Platform{OS: "linux", Architecture: runtime.GOARCH}, nil
	}
	p, err := v1.ParsePlatform(s)
	if err != nil || p.OS == "" || p.Architecture == "" {
		return v1.Platform{}, fmt.Errorf("oci: platform %q: want os/arch[/variant]", s)
	}
	return *p, nil
}

func openRemote(ctx context.Context, ref string, plat v1.Platform, opt Options) (v1.Image, error) {
	var nopts []name.Option
	if opt.Insecure {
		nopts = append(nopts, name.Insecure)
	}
	r, err := name.ParseReference(ref, nopts...)
	if err != nil {
		return nil, err
	}
	tr := opt.Transport
	if tr == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		if opt.Insecure {
			t.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // asked for with --insecure
		}
		tr = t
	}
	ropts := []remote.Option{
		remote.WithContext(ctx),
		remote.WithPlatform(plat),
		remote.WithTransport(plainOnlyLoopback{tr, opt.Insecure}),
		remote.WithUserAgent("zos"),
	}
	if opt.Username != "" || opt.Password != "" {
		ropts = append(ropts, remote.WithAuth(&authn.Basic{Username: opt.Username, Password: opt.Password}))
	} else {
		ropts = append(ropts, remote.WithAuthFromKeychain(authn.DefaultKeychain))
	}
	return remote.Image(r, ropts...)
}

// plainOnlyLoopback refuses plain HTTP to anything but a loopback address
// unless insecure: the registry client would also use it for private
// networks, where a man in the middle could change the image.
type plainOnlyLoopback struct {
	rt       http.RoundTripper
	insecure bool
}

func (p plainOnlyLoopback) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme == "http" && !p.insecure && !loopback(req.URL.Hostname()) {
		return nil, fmt.Errorf("plain HTTP to %s refused: pass --insecure to allow it", req.URL.Host)
	}
	return p.rt.RoundTrip(req)
}

func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// openLayout opens an OCI layout: the manifest tagged tag (the
// org.opencontainers.image.ref.name annotation), or the only one.
func openLayout(ref string, plat v1.Platform) (v1.Image, error) {
	dir, tag := ref, ""
	if fi, err := os.Stat(ref); err != nil || !fi.IsDir() {
		if i := strings.LastIndexByte(ref, ':'); i >= 0 && !strings.Contains(ref[i+1:], "/") {
			dir, tag = ref[:i], ref[i+1:]
		}
	}
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return nil, err
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	var descs []v1.Descriptor
	var tags []string
	for _, d := range im.Manifests {
		t := d.Annotations["org.opencontainers.image.ref.name"]
		tags = append(tags, t)
		if tag == "" || t == tag {
			descs = append(descs, d)
		}
	}
	if len(descs) == 0 {
		return nil, fmt.Errorf("no image tagged %q (tags: %q)", tag, tags)
	}
	return pick(idx, descs, plat)
}

// pick chooses the image for plat among descs of idx, descending into
// nested indexes.
func pick(idx v1.ImageIndex, descs []v1.Descriptor, plat v1.Platform) (v1.Image, error) {
	var images []v1.Descriptor
	var seen []string
	for _, d := range descs {
		if d.MediaType.IsIndex() {
			child, err := idx.ImageIndex(d.Digest)
			if err != nil {
				return nil, err
			}
			cm, err := child.IndexManifest()
			if err != nil {
				return nil, err
			}
			img, err := pick(child, cm.Manifests, plat)
			if err == nil {
				return img, nil
			}
			seen = append(seen, err.Error())
			continue
		}
		if !d.MediaType.IsImage() {
			continue
		}
		if d.Platform != nil {
			seen = append(seen, d.Platform.String())
			if !d.Platform.Satisfies(plat) {
				continue
			}
		}
		images = append(images, d)
	}
	switch {
	case len(images) == 1:
		return idx.Image(images[0].Digest)
	case len(images) == 0:
		return nil, fmt.Errorf("no image for %s (found: %s)", plat, strings.Join(seen, ", "))
	}
	// Several: only those that say they are for plat.
	var exact []v1.Descriptor
	for _, d := range images {
		if d.Platform != nil {
			exact = append(exact, d)
		}
	}
	if len(exact) == 1 {
		return idx.Image(exact[0].Digest)
	}
	return nil, fmt.Errorf("%d images match %s: name one with oci:DIR:TAG", len(images), plat)
}

func openArchive(ref string) (v1.Image, error) {
	file, tagName := ref, ""
	if _, err := os.Stat(ref); err != nil {
		if i := strings.LastIndexByte(ref, ':'); i >= 0 {
			if _, err := os.Stat(ref[:i]); err == nil {
				file, tagName = ref[:i], ref[i+1:]
			}
		}
	}
	var tag *name.Tag
	if tagName != "" {
		t, err := name.NewTag(tagName)
		if err != nil {
			return nil, err
		}
		tag = &t
	}
	return tarball.ImageFromPath(file, tag)
}

func fromImage(img v1.Image, plat v1.Platform) (*Image, error) {
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if (cf.OS != "" && cf.OS != plat.OS) || (cf.Architecture != "" && cf.Architecture != plat.Architecture) {
		return nil, fmt.Errorf("the image is for %s/%s, not %s", cf.OS, cf.Architecture, plat)
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, fmt.Errorf("layers: %w", err)
	}
	m := &Image{layers: layers, config: configOf(cf)}
	for _, l := range layers {
		if n, err := l.Size(); err == nil {
			m.size += n
		}
	}
	return m, nil
}

// String returns the reference the image was opened from.
func (m *Image) String() string { return m.ref }

// NumLayers returns how many layers the image has.
func (m *Image) NumLayers() int { return len(m.layers) }

// Size returns the compressed size of the layers.
func (m *Image) Size() int64 { return m.size }

// Config returns the image's run configuration.
func (m *Image) Config() Config { return m.config }

// Meta returns the flist META the image contributes: its configuration.
func (m *Image) Meta() map[string][]byte {
	return map[string][]byte{MetaConfig: m.config.Canonical()}
}

// ErrDiffID reports a layer whose content is not what the image names.
var ErrDiffID = errors.New("oci: layer content does not match its diff id")

// OpenLayer returns layer i's uncompressed tar stream, which checks itself
// against the layer's DiffID at its end (ErrDiffID).
func (m *Image) OpenLayer(ctx context.Context, i int) (io.ReadCloser, error) {
	if i < 0 || i >= len(m.layers) {
		return nil, fmt.Errorf("oci: no layer %d", i)
	}
	l := m.layers[i]
	want, err := l.DiffID()
	if err != nil {
		return nil, fmt.Errorf("oci: layer %d: diff id: %w", i+1, err)
	}
	if want.Algorithm != "sha256" {
		return nil, fmt.Errorf("oci: layer %d: diff id %s: only sha256 is supported", i+1, want)
	}
	rc, err := m.uncompressed(l)
	if err != nil {
		return nil, fmt.Errorf("oci: layer %d: %w", i+1, err)
	}
	return &verified{ctx: ctx, rc: rc, h: sha256.New(), want: want.Hex, layer: i + 1}, nil
}

// uncompressed opens a layer's tar stream. A gzip blob is decompressed
// with klauspost/compress (about 1.35x the standard library's speed here,
// and decompression is the one serial stage of a conversion); anything
// else goes through the registry library, which knows every format.
func (m *Image) uncompressed(l v1.Layer) (io.ReadCloser, error) {
	mt, err := l.MediaType()
	if !m.blobs || err != nil || (mt != types.DockerLayer && mt != types.OCILayer) {
		return l.Uncompressed()
	}
	blob, err := l.Compressed()
	if err != nil {
		return nil, err
	}
	br := bufio.NewReaderSize(blob, 1<<20)
	if magic, err := br.Peek(2); err != nil || magic[0] != 0x1f || magic[1] != 0x8b {
		// Labelled gzip but not gzip: the library sniffs the format.
		blob.Close()
		return l.Uncompressed()
	}
	zr, err := kgzip.NewReader(br)
	if err != nil {
		blob.Close()
		return nil, err
	}
	return &gunzipped{zr: zr, rest: br, blob: blob}, nil
}

// gunzipped is a gzip layer's tar stream. At its end the rest of the blob
// is read too, so that the registry client checks the blob's digest.
type gunzipped struct {
	zr   *kgzip.Reader
	rest io.Reader
	blob io.ReadCloser
}

func (g *gunzipped) Read(b []byte) (int, error) {
	n, err := g.zr.Read(b)
	if errors.Is(err, io.EOF) {
		if _, derr := io.Copy(io.Discard, g.rest); derr != nil {
			return n, derr
		}
	}
	return n, err
}

func (g *gunzipped) Close() error { return errors.Join(g.zr.Close(), g.blob.Close()) }

// verified hashes what it reads and compares at EOF.
type verified struct {
	ctx   context.Context
	rc    io.ReadCloser
	h     hash.Hash
	want  string
	layer int
	done  bool
}

func (v *verified) Read(b []byte) (int, error) {
	if err := context.Cause(v.ctx); err != nil {
		return 0, err
	}
	n, err := v.rc.Read(b)
	v.h.Write(b[:n])
	if errors.Is(err, io.EOF) && !v.done {
		v.done = true
		if got := fmt.Sprintf("%x", v.h.Sum(nil)); got != v.want {
			return n, fmt.Errorf("%w: layer %d is sha256:%s, the config says sha256:%s", ErrDiffID, v.layer, got, v.want)
		}
	}
	return n, err
}

func (v *verified) Close() error { return v.rc.Close() }

// Config is what an image says about running it (the OCI image config's
// "config" object, less what a node decides).
type Config struct {
	Entrypoint   []string          `json:"entrypoint,omitempty"`
	Cmd          []string          `json:"cmd,omitempty"`
	Env          []string          `json:"env,omitempty"`
	WorkingDir   string            `json:"workdir,omitempty"`
	User         string            `json:"user,omitempty"`
	ExposedPorts []string          `json:"exposed_ports,omitempty"` // "80/tcp", sorted
	Volumes      []string          `json:"volumes,omitempty"`       // sorted
	StopSignal   string            `json:"stop_signal,omitempty"`
	Labels       map[string]string `json:"labels,omitempty"`
	OS           string            `json:"os,omitempty"`
	Architecture string            `json:"architecture,omitempty"`
}

func configOf(cf *v1.ConfigFile) Config {
	c := Config{
		Entrypoint:   cf.Config.Entrypoint,
		Cmd:          cf.Config.Cmd,
		Env:          cf.Config.Env,
		WorkingDir:   cf.Config.WorkingDir,
		User:         cf.Config.User,
		StopSignal:   cf.Config.StopSignal,
		Labels:       cf.Config.Labels,
		OS:           cf.OS,
		Architecture: cf.Architecture,
	}
	for p := range cf.Config.ExposedPorts {
		c.ExposedPorts = append(c.ExposedPorts, p)
	}
	slices.Sort(c.ExposedPorts)
	for v := range cf.Config.Volumes {
		c.Volumes = append(c.Volumes, v)
	}
	slices.Sort(c.Volumes)
	return c
}

// Canonical encodes c as JSON with fields in a fixed order, map keys and
// sets sorted and no HTML escaping: equal configs give equal bytes.
func (c Config) Canonical() []byte {
	var b strings.Builder
	e := json.NewEncoder(&b)
	e.SetEscapeHTML(false)
	if err := e.Encode(c); err != nil {
		panic(err) // strings and string slices always encode
	}
	return []byte(strings.TrimSuffix(b.String(), "\n"))
}

// ParseConfig decodes what Canonical encoded.
func ParseConfig(b []byte) (Config, error) {
	var c Config
	d := json.NewDecoder(strings.NewReader(string(b)))
	if err := d.Decode(&c); err != nil {
		return Config{}, fmt.Errorf("oci: config: %w", err)
	}
	return c, nil
}
