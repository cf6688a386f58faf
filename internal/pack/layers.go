package pack

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/zosgrid/zos/internal/chunker"
	"github.com/zosgrid/zos/internal/flist"
	"github.com/zosgrid/zos/internal/store"
)

// LayerSource is an image's filesystem layers, bottom first. Package oci
// opens them from a registry, an OCI layout or a docker save tarball.
type LayerSource interface {
	// NumLayers returns how many layers the image has.
	NumLayers() int
	// OpenLayer returns layer i's uncompressed tar stream. Reading it to
	// the end verifies it: an error there means the layer is not the one
	// the image names, and nothing read from it may be used.
	OpenLayer(ctx context.Context, i int) (io.ReadCloser, error)
}

// ErrLayer marks a layer that cannot be applied: a malformed tar, an entry
// that would change the root's type, a hard link to nothing, a name that
// is not a valid file name. Errors wrap it with the layer and entry.
var ErrLayer = errors.New("invalid layer")

// Layers applies src's layers in order into one tree, the way `umoci
// unpack` (and so a container runtime) would, and packs that tree: the
// flist has the digest `pack.Dir` gives for the unpacked root filesystem
// (docs/FORMAT.md, "Converting OCI images", says what may differ).
//
// Layers stream: large files (>= the chunker's average) are chunked and
// stored while their layer is read, because they start and end on a cut
// wherever they land in the content stream; content that a later layer
// replaces leaves orphan chunks in the store. Small files share chunks
// with their neighbours in the final entry order, so their content is
// kept (in memory, then in a temporary file under Options.TempDir) until
// the final tree is known, then streamed like pack.Dir streams a tree.
//
// With Options.Base, a new chunk of a large file is stored as a delta
// against the base chunks at the same place of the file at the same path
// (the path where its layer put it), and a chunk of the final stream as
// Dir does it.
func Layers(ctx context.Context, src LayerSource, st store.Store, opt Options) ([]byte, Stats, error) {
	start := time.Now()
	opt, ck, err := opt.withDefaults()
	if err != nil {
		return nil, Stats{}, err
	}
	var base *baseIndex
	if opt.Base != nil {
		if base, err = newBaseIndex(opt.Base); err != nil {
			return nil, Stats{}, fmt.Errorf("pack: base image: %w", err)
		}
	}
	if opt.spoolMemory == 0 {
		opt.spoolMemory = spoolMemory
	}
	sp := newSpool(opt.TempDir, opt.spoolMemory)
	defer sp.close()
	sl := newSealer(ctx, st, opt, base, start)
	t := newTree(ck, sl, sp)
	t.large.base = base
	n := src.NumLayers()
	sl.layers.Store(int64(n))
	var aerr error
	for i := 0; i < n && aerr == nil; i++ {
		sl.layer.Store(int64(i + 1))
		aerr = t.applyLayer(sl.ctx, src, i, &sl.bytesRead)
	}
	var entries []flist.Entry
	var s *streamer
	if aerr == nil {
		var nodes []*flist.Node
		var ts *treeSource
		entries, nodes, ts = t.flatten(base != nil)
		sl.setTree(entries)
		s = &streamer{ck: ck, sl: sl, read: new(atomic.Int64), base: base, paths: ts.paths}
		aerr = s.run(entries, nodes, ts)
	}
	refs, err := sl.finish(aerr)
	if err != nil {
		return nil, Stats{}, err
	}
	used := make([]bool, len(refs))
	for _, slot := range s.order {
		used[slot] = true
	}
	orphans := 0
	for _, u := range used {
		if !u {
			orphans++
		}
	}
	return sl.encode(entries, s, refs, opt, func(st *Stats) {
		st.Orphans = orphans
		st.Chunks = len(s.order)
	})
}

// fnode is one file (an inode) of the tree being built; hard links are several names
// for one inode. A directory's children are here too (directories are never
// hard-linked).
type fnode struct {
	e     flist.Entry       // Mode, UID, GID, Mtime, Nsec, Size, Target, Rdev, Xattrs
	kids  map[string]*fnode // directories
	spool int64             // small regular files: the content's place in the spool
	slots []int             // large regular files: the chunks' sealer slots
}

func (n *fnode) isDir() bool { return n.e.Kind() == flist.KindDir }

// tree is the root filesystem as the layers applied so far leave it.
type tree struct {
	root  *fnode
	large *streamer // chunks large files as they stream by
	sp    *spool
	small []byte // scratch for a small file's content
	avg   int64
}

func newTree(ck *chunker.Chunker, sl *sealer, sp *spool) *tree {
	return &tree{
		root:  newDir(),
		large: &streamer{ck: ck, sl: sl, read: new(atomic.Int64)},
		sp:    sp,
		avg:   int64(ck.Params().Avg),
	}
}

// newDir is a directory no header described (the root, or a parent a layer
// left out): 0755 root:root at the epoch. umoci gives such a directory the
// time of the unpack, which no flist can reproduce.
func newDir() *fnode {
	return &fnode{e: flist.Entry{Mode: uint32(flist.KindDir) | 0o755}, kids: map[string]*fnode{}}
}

// countReader counts the bytes read through it.
type countReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c countReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n.Add(int64(n))
	return n, err
}

func (t *tree) applyLayer(ctx context.Context, src LayerSource, i int, read *atomic.Int64) error {
	rc, err := src.OpenLayer(ctx, i)
	if err != nil {
		return fmt.Errorf("layer %d: %w", i+1, err)
	}
	defer rc.Close()
	r := countReader{r: rc, n: read}
	if err := t.apply(ctx, tar.NewReader(r)); err != nil {
		return fmt.Errorf("layer %d: %w", i+1, err)
	}
	// Read to the end: that is where the source verifies the layer.
	if _, err := io.Copy(io.Discard, r); err != nil {
		return fmt.Errorf("layer %d: %w", i+1, err)
	}
	return nil
}

// apply applies one layer's tar stream.
func (t *tree) apply(ctx context.Context, tr *tar.Reader) error {
	// upper holds the paths this layer created and their ancestors
	// (resolved, slash-separated, relative to the root): whiteouts never
	// remove them, whatever the order of entries (umoci's rule).
	upper := map[string]struct{}{}
	for {
		if err := context.Cause(ctx); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%w: %w", ErrLayer, err)
		}
		if err := t.entry(hdr, tr, upper); err != nil {
			return fmt.Errorf("%q: %w", hdr.Name, err)
		}
	}
}

// errSparse refuses sparse files: a few bytes of layer could expand to
// terabytes of holes, and no image builder writes them.
var errSparse = fmt.Errorf("%w: sparse files are not supported", ErrLayer)

// cleanPath makes a tar name relative to the root as umoci does: ".."
// cannot climb above the root, and an absolute name is rooted there. It
// returns the components; none means the root.
func cleanPath(name string) []string {
	p := path.Clean("/" + name)
	if p == "/" {
		return nil
	}
	return strings.Split(p[1:], "/")
}

// maxDepth bounds how deep a tree goes: no path deeper than this fits
// Linux's PATH_MAX (4096 bytes), so no unpacker could create it either.
const maxDepth = 2048

// maxLinks bounds the symlinks followed resolving one name (as securejoin).
const maxLinks = 255

// resolve follows dir, a list of names from the root, through the tree:
// a symlink among them is replaced by its target (absolute targets start
// again at the root, ".." never climbs above it), as umoci resolves the
// parent of every entry with securejoin, so that nothing lands outside the
// root. Missing names are kept as they are. It returns the resolved names
// and the inode they lead to, or nil if missing.
func (t *tree) resolve(dir []string) ([]string, *fnode, error) {
	names := make([]string, 0, len(dir))
	nodes := []*fnode{t.root} // nodes[k] is the inode at names[:k], or nil
	todo := slices.Clone(dir)
	links := 0
	for len(todo) > 0 {
		p := todo[0]
		todo = todo[1:]
		switch p {
		case "", ".":
			continue
		case "..":
			if len(names) > 0 {
				names, nodes = names[:len(names)-1], nodes[:len(nodes)-1]
			}
			continue
		}
		var next *fnode
		if cur := nodes[len(nodes)-1]; cur != nil && cur.isDir() {
			next = cur.kids[p]
		}
		if next != nil && next.e.Kind() == flist.KindSymlink {
			if links++; links > maxLinks {
				return nil, nil, fmt.Errorf("%w: too many levels of symbolic links", ErrLayer)
			}
			target := next.e.Target
			if strings.HasPrefix(target, "/") {
				names, nodes = names[:0], nodes[:1]
			}
			todo = append(strings.Split(target, "/"), todo...)
			continue
		}
		names = append(names, p)
		nodes = append(nodes, next)
	}
	return names, nodes[len(nodes)-1], nil
}

// mkdirAll returns the directory at names, creating the missing ones.
func (t *tree) mkdirAll(names []string) (*fnode, error) {
	d := t.root
	for i, p := range names {
		k := d.kids[p]
		if k == nil {
			if err := flist.ValidName(p); err != nil {
				return nil, fmt.Errorf("%w: %w", ErrLayer, err)
			}
			k = newDir()
			d.kids[p] = k
		} else if !k.isDir() {
			return nil, fmt.Errorf("%w: %s is not a directory", ErrLayer, strings.Join(names[:i+1], "/"))
		}
		d = k
	}
	return d, nil
}

const (
	whPrefix = ".wh."
	whOpaque = ".wh..wh..opq"
)

// entry applies one tar entry.
func (t *tree) entry(hdr *tar.Header, r io.Reader, upper map[string]struct{}) error {
	switch hdr.Typeflag {
	case tar.TypeXGlobalHeader:
		return nil // metadata of the archive (git archive writes one), not a file
	case tar.TypeGNUSparse:
		return errSparse
	}
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return errSparse
		}
	}
	comps := cleanPath(hdr.Name)
	if len(comps) == 0 {
		// The root: umoci applies its attributes, and refuses another type
		// (which could make the root a symlink to follow).
		if hdr.Typeflag != tar.TypeDir {
			return fmt.Errorf("%w: refusing to change the type of the root directory", ErrLayer)
		}
		return setMeta(t.root, hdr)
	}
	dirNames, _, err := t.resolve(comps[:len(comps)-1])
	if err != nil {
		return err
	}
	if len(dirNames) >= maxDepth {
		return fmt.Errorf("%w: more than %d levels of directories", ErrLayer, maxDepth)
	}
	file := comps[len(comps)-1]
	if strings.HasPrefix(file, whPrefix) {
		return t.whiteout(dirNames, file, upper)
	}
	if err := flist.ValidName(file); err != nil {
		return fmt.Errorf("%w: %w", ErrLayer, err)
	}
	dir, err := t.mkdirAll(dirNames)
	if err != nil {
		return err
	}
	// What was there goes, unless a directory meets a directory: then the
	// header's attributes apply and the children stay.
	old := dir.kids[file]
	var n *fnode
	if old != nil && old.isDir() && hdr.Typeflag == tar.TypeDir {
		n = old
	} else {
		delete(dir.kids, file)
	}
	switch hdr.Typeflag {
	case tar.TypeReg:
		n = &fnode{e: flist.Entry{Mode: uint32(flist.KindRegular), Size: uint64(hdr.Size)}}
		if err := t.content(n, r, hdr.Size, dirNames, file); err != nil {
			return err
		}
	case tar.TypeDir:
		if n == nil {
			n = newDir()
		}
	case tar.TypeSymlink:
		if hdr.Linkname == "" || len(hdr.Linkname) > flist.MaxTarget || strings.IndexByte(hdr.Linkname, 0) >= 0 {
			return fmt.Errorf("%w: symlink target of %d bytes", ErrLayer, len(hdr.Linkname))
		}
		n = &fnode{e: flist.Entry{Mode: uint32(flist.KindSymlink) | 0o777, Target: hdr.Linkname}}
	case tar.TypeLink:
		// A hard link names the inode now at the target (whose parent is
		// resolved like any name, but not the target itself: a link to a
		// symlink is a link to the symlink). It keeps that inode even if a
		// later layer replaces the target.
		if n = t.linkTarget(hdr.Linkname); n == nil {
			return fmt.Errorf("%w: hard link to %q, which does not exist", ErrLayer, hdr.Linkname)
		}
		if n.isDir() {
			return fmt.Errorf("%w: hard link to directory %q", ErrLayer, hdr.Linkname)
		}
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		kind := map[byte]flist.Kind{tar.TypeChar: flist.KindChar, tar.TypeBlock: flist.KindBlock, tar.TypeFifo: flist.KindFIFO}[hdr.Typeflag]
		n = &fnode{e: flist.Entry{Mode: uint32(kind)}}
		if kind != flist.KindFIFO {
			if hdr.Devmajor < 0 || hdr.Devmajor > 1<<32-1 || hdr.Devminor < 0 || hdr.Devminor > 1<<32-1 {
				return fmt.Errorf("%w: device %d:%d", ErrLayer, hdr.Devmajor, hdr.Devminor)
			}
			n.e.Rdev = mkdev(uint64(hdr.Devmajor), uint64(hdr.Devminor))
		}
	default:
		return fmt.Errorf("%w: unsupported entry type %q", ErrLayer, hdr.Typeflag)
	}
	if hdr.Typeflag != tar.TypeLink {
		if err := setMeta(n, hdr); err != nil {
			return err
		}
	}
	dir.kids[file] = n
	p := strings.Join(append(dirNames, file), "/")
	for {
		upper[p] = struct{}{}
		i := strings.LastIndexByte(p, '/')
		if i < 0 {
			break
		}
		p = p[:i]
	}
	return nil
}

// mkdev encodes a device number as Linux's stat does.
func mkdev(major, minor uint64) uint64 {
	return (major&0xfffff000)<<32 | (major&0xfff)<<8 | (minor&0xffffff00)<<12 | minor&0xff
}

// linkTarget returns the inode a hard link names, or nil.
func (t *tree) linkTarget(name string) *fnode {
	comps := cleanPath(name)
	if len(comps) == 0 {
		return t.root
	}
	_, dir, err := t.resolve(comps[:len(comps)-1])
	if err != nil || dir == nil || !dir.isDir() {
		return nil
	}
	return dir.kids[comps[len(comps)-1]]
}

// lookup returns the inode at names without following symlinks, or nil.
func (t *tree) lookup(names []string) *fnode {
	n := t.root
	for _, p := range names {
		if !n.isDir() {
			return nil
		}
		if n = n.kids[p]; n == nil {
			return nil
		}
	}
	return n
}

// whiteout removes what file (".wh.NAME", or ".wh..wh..opq" for all the
// directory's children) names in dir, except what this layer itself made:
// umoci's rule, which makes the order of a layer's entries irrelevant.
func (t *tree) whiteout(dirNames []string, file string, upper map[string]struct{}) error {
	dir := t.lookup(dirNames)
	key := strings.Join(dirNames, "/")
	if file == whOpaque {
		if dir != nil && dir.isDir() {
			purge(dir, key, upper)
		}
		return nil
	}
	name := strings.TrimPrefix(file, whPrefix)
	if err := flist.ValidName(name); err != nil {
		return fmt.Errorf("%w: whiteout %q: %w", ErrLayer, file, err)
	}
	if dir == nil || !dir.isDir() {
		return nil
	}
	k := dir.kids[name]
	if k == nil {
		return nil
	}
	if key != "" {
		key += "/"
	}
	key += name
	if _, ok := upper[key]; !ok {
		delete(dir.kids, name)
	} else if k.isDir() {
		purge(k, key, upper)
	}
	return nil
}

// purge removes d's children that are not in upper, recursively.
func purge(d *fnode, key string, upper map[string]struct{}) {
	if key != "" {
		key += "/"
	}
	for name, k := range d.kids {
		if _, ok := upper[key+name]; !ok {
			delete(d.kids, name)
		} else if k.isDir() {
			purge(k, key+name, upper)
		}
	}
}

// setMeta applies a header's owner, permissions (not a symlink's: Linux
// has none), time and xattrs (the header's replace the old ones).
func setMeta(n *fnode, hdr *tar.Header) error {
	if hdr.Uid < 0 || hdr.Uid > 1<<32-1 || hdr.Gid < 0 || hdr.Gid > 1<<32-1 {
		return fmt.Errorf("%w: owner %d:%d", ErrLayer, hdr.Uid, hdr.Gid)
	}
	n.e.UID, n.e.GID = uint32(hdr.Uid), uint32(hdr.Gid)
	if n.e.Kind() != flist.KindSymlink {
		n.e.Mode = uint32(n.e.Kind()) | uint32(hdr.Mode&0o7777)
	}
	n.e.Mtime, n.e.Nsec = hdr.ModTime.Unix(), uint32(hdr.ModTime.Nanosecond())
	var xs []flist.Xattr
	for k, v := range hdr.PAXRecords {
		name, ok := strings.CutPrefix(k, "SCHILY.xattr.")
		// umoci never sets SELinux labels (they belong to the host), and
		// like every Go unpacker (archive/tar's Header.Xattrs) it skips
		// an xattr whose value is empty.
		if !ok || name == "security.selinux" || v == "" {
			continue
		}
		if name == "" || len(name) > flist.MaxXattrName || strings.IndexByte(name, 0) >= 0 || len(v) > flist.MaxXattrValue {
			return fmt.Errorf("%w: xattr %.40q of %d bytes", ErrLayer, name, len(v))
		}
		xs = append(xs, flist.Xattr{Name: name, Value: []byte(v)})
	}
	if len(xs) > flist.MaxXattrs {
		return fmt.Errorf("%w: %d xattrs", ErrLayer, len(xs))
	}
	slices.SortFunc(xs, func(a, b flist.Xattr) int { return strings.Compare(a.Name, b.Name) })
	n.e.Xattrs = xs
	return nil
}

// content takes a regular file's content from the layer: a small file
// into the spool, a large one into chunks. dir and file name it (for
// delta bases).
func (t *tree) content(n *fnode, r io.Reader, size int64, dir []string, file string) error {
	if size == 0 {
		return nil
	}
	if size < t.avg {
		if cap(t.small) < int(size) {
			t.small = make([]byte, t.avg)
		}
		b := t.small[:size]
		if _, err := io.ReadFull(r, b); err != nil {
			return fmt.Errorf("%w: %w", ErrLayer, err)
		}
		off, err := t.sp.add(b)
		if err != nil {
			return err
		}
		n.spool = off
		return nil
	}
	s := t.large
	s.order = s.order[:0]
	if s.base != nil {
		// The previous file was cut to its end: this one starts at pos.
		s.spans = append(s.spans[:0], span{start: s.pos, size: uint64(size), path: strings.Join(append(slices.Clip(dir), file), "/")})
	}
	s.room(readPiece)
	got, err := s.readFrom(r)
	if err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			err = fmt.Errorf("%w: %w", ErrLayer, err)
		}
		return err
	}
	if got != uint64(size) {
		return fmt.Errorf("%w: %d bytes of %d", ErrLayer, got, size)
	}
	if err := s.cut(true); err != nil {
		return err
	}
	n.slots = slices.Clone(s.order)
	return nil
}

// treeSource gives the final streamer the content the layers left.
type treeSource struct {
	nodes  []*flist.Node
	paths  []string // nodes' paths from the root (with a base only)
	inodes map[*flist.Node]*fnode
	sp     *spool
}

func (ts *treeSource) small(i int, b []byte) (int, error) {
	n := ts.inodes[ts.nodes[i]]
	b = b[:n.e.Size]
	if err := ts.sp.readAt(b, n.spool); err != nil {
		return 0, err
	}
	return len(b), nil
}

// large places a file's chunks, cut when its layer streamed by: it starts
// and ends on a cut, so its chunks are the same wherever it lands.
func (ts *treeSource) large(s *streamer, i int) (uint64, error) {
	n := ts.inodes[ts.nodes[i]]
	s.order = append(s.order, n.slots...)
	s.pos += n.e.Size
	return n.e.Size, nil
}

func (ts *treeSource) name(i int) string { return ts.nodes[i].Name }

// flatten lays the tree out in the flist's order. An inode with several
// names becomes one entry and links, as pack.Dir records hard links. With
// paths, the source also names every entry by its path from the root.
func (t *tree) flatten(paths bool) ([]flist.Entry, []*flist.Node, *treeSource) {
	ts := &treeSource{inodes: map[*flist.Node]*fnode{}, sp: t.sp}
	first := map[*fnode]*flist.Node{}
	pathOf := map[*flist.Node]string{}
	var visit func(name, full string, ino *fnode) *flist.Node
	visit = func(name, full string, ino *fnode) *flist.Node {
		n := &flist.Node{Name: name}
		ts.inodes[n] = ino
		if paths {
			pathOf[n] = full
		}
		if !ino.isDir() {
			if f, ok := first[ino]; ok {
				n.LinkTo = f
				return n
			}
			first[ino] = n
		}
		n.Entry = ino.e
		if ino.isDir() {
			names := make([]string, 0, len(ino.kids))
			for k := range ino.kids {
				names = append(names, k)
			}
			slices.Sort(names)
			for _, k := range names {
				child := k
				if full != "" {
					child = full + "/" + k
				}
				n.Children = append(n.Children, visit(k, child, ino.kids[k]))
			}
		}
		return n
	}
	root := visit("", "", t.root)
	entries, nodes := flist.Flatten(root)
	ts.nodes = nodes
	if paths {
		ts.paths = make([]string, len(nodes))
		for i, n := range nodes {
			ts.paths[i] = pathOf[n]
		}
	}
	return entries, nodes, ts
}
