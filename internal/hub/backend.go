package hub

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/zosgrid/zos/internal/chunk"
	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/hub/object"
	"github.com/zosgrid/zos/internal/store"
	"github.com/zosgrid/zos/internal/store/dir"
	"github.com/zosgrid/zos/internal/store/s3"
)

// Backend is where a hub keeps everything: chunks in a chunk store, and
// every other thing (flists, users, names, nonces) in an object store
// beside it. Hubs sharing a Backend serve the same data.
type Backend struct {
	Chunks  store.Store
	Objects object.Store
	chunks  chunkMeta
}

// OpenBackend opens the data location of `zos hub serve --data`: a local
// directory (chunks in DIR/chunks, objects in DIR/meta) or an S3 URL
// (s3://ACCESS:SECRET@host:port/bucket/prefix?tls=false: chunks under
// prefix/chunks, objects under prefix/meta).
func OpenBackend(ctx context.Context, data string) (*Backend, error) {
	if strings.HasPrefix(data, "s3://") {
		opt, err := s3.ParseURL(data)
		if err != nil {
			return nil, err
		}
		if opt.AccessKey == "" && opt.SecretKey == "" {
			opt.AccessKey = os.Getenv("AWS_ACCESS_KEY_ID")
			opt.SecretKey = os.Getenv("AWS_SECRET_ACCESS_KEY")
		}
		base := opt.Prefix
		opt.Prefix = join(base, "chunks")
		cs, err := s3.New(ctx, opt)
		if err != nil {
			return nil, err
		}
		meta := join(base, "meta")
		objs, err := object.NewS3(ctx, cs.Client(), opt.Bucket, meta,
			strings.TrimSuffix(cs.String(), "/chunks")+" (meta)")
		if err != nil {
			cs.Close()
			return nil, err
		}
		return &Backend{Chunks: cs, Objects: objs, chunks: s3Meta{cs}}, nil
	}
	root := strings.TrimPrefix(data, "dir://")
	cs, err := dir.New(filepath.Join(root, "chunks"))
	if err != nil {
		return nil, err
	}
	objs, err := object.NewDir(filepath.Join(root, "meta"))
	if err != nil {
		return nil, err
	}
	return &Backend{Chunks: cs, Objects: objs, chunks: dirMeta{cs}}, nil
}

// NewBackend pairs a chunk store and an object store. Garbage collection
// needs blob ages, which only dir and s3 chunk stores give; with any other,
// GC deletes nothing.
func NewBackend(chunks store.Store, objects object.Store) *Backend {
	b := &Backend{Chunks: chunks, Objects: objects, chunks: genericMeta{chunks}}
	switch s := chunks.(type) {
	case *dir.Store:
		b.chunks = dirMeta{s}
	case *s3.Store:
		b.chunks = s3Meta{s}
	}
	return b
}

// Close closes both stores.
func (b *Backend) Close() error {
	return errors.Join(b.Chunks.Close(), b.Objects.Close())
}

func join(a, b string) string {
	if a == "" {
		return b
	}
	return a + "/" + b
}

// blobInfo is a stored chunk as a garbage collector sees it.
type blobInfo struct {
	id    digest.ID
	size  int64
	mtime time.Time
}

// chunkMeta is what the hub needs of a chunk store beyond store.Store: ages
// for the GC's grace period, and blob headers (delta bases) without reading
// whole blobs.
type chunkMeta interface {
	listAged(ctx context.Context, fn func(blobInfo) error) error
	// bases returns the delta bases named in id's header, or an error
	// wrapping store.ErrNotFound.
	bases(ctx context.Context, id digest.ID) ([]digest.ID, error)
}

// headLen is enough of a blob to hold the longest header: magic, method,
// depth, count and two base IDs.
const headLen = 4 + 1 + 2 + chunk.MaxBases*digest.Size

// depsOfHead parses the bases out of the first bytes of a blob.
func depsOfHead(id digest.ID, head []byte) ([]digest.ID, error) {
	// chunk.Deps strips the 16-byte check off the end; give it room.
	b := append(head[:len(head):len(head)], make([]byte, 16)...)
	_, bases, err := chunk.Deps(b)
	if err != nil {
		return nil, fmt.Errorf("chunk %s: %w", id.Short(), err)
	}
	return bases, nil
}

type dirMeta struct{ s *dir.Store }

func (m dirMeta) listAged(ctx context.Context, fn func(blobInfo) error) error {
	root := m.s.Root()
	shards, err := os.ReadDir(root)
	if err != nil {
		return err
	}
	for _, sh := range shards {
		if !sh.IsDir() || len(sh.Name()) != 2 {
			continue
		}
		ents, err := os.ReadDir(filepath.Join(root, sh.Name()))
		if err != nil {
			return err
		}
		for _, e := range ents {
			id, err := digest.Parse(e.Name())
			if err != nil || !strings.HasPrefix(e.Name(), sh.Name()) {
				continue
			}
			fi, err := e.Info()
			if err != nil {
				continue // removed meanwhile
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := fn(blobInfo{id, fi.Size(), fi.ModTime()}); err != nil {
				return err
			}
		}
	}
	return nil
}

func (m dirMeta) bases(_ context.Context, id digest.ID) ([]digest.ID, error) {
	f, err := os.Open(m.s.Path(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", id.Short(), store.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	head := make([]byte, headLen)
	n, err := io.ReadFull(f, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return nil, err
	}
	return depsOfHead(id, head[:n])
}

type s3Meta struct{ s *s3.Store }

func (m s3Meta) prefix() string {
	return strings.TrimSuffix(m.s.Key(digest.ID{}), digest.ID{}.String()[:2]+"/"+digest.ID{}.String())
}

func (m s3Meta) listAged(ctx context.Context, fn func(blobInfo) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	prefix := m.prefix()
	for obj := range m.s.Client().ListObjects(ctx, m.s.Bucket(), minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if obj.Err != nil {
			return obj.Err
		}
		shard, name, ok := strings.Cut(strings.TrimPrefix(obj.Key, prefix), "/")
		if !ok || len(shard) != 2 || !strings.HasPrefix(name, shard) {
			continue
		}
		id, err := digest.Parse(name)
		if err != nil {
			continue
		}
		if err := fn(blobInfo{id, obj.Size, obj.LastModified}); err != nil {
			return err
		}
	}
	return ctx.Err()
}

func (m s3Meta) bases(ctx context.Context, id digest.ID) ([]digest.ID, error) {
	opts := minio.GetObjectOptions{}
	opts.SetRange(0, headLen-1)
	obj, err := m.s.Client().GetObject(ctx, m.s.Bucket(), m.s.Key(id), opts)
	if err != nil {
		return nil, m.fail(id, err)
	}
	defer obj.Close()
	head, err := io.ReadAll(io.LimitReader(obj, headLen))
	if err != nil {
		return nil, m.fail(id, err)
	}
	return depsOfHead(id, head)
}

func (m s3Meta) fail(id digest.ID, err error) error {
	if minio.ToErrorResponse(err).Code == minio.NoSuchKey {
		return fmt.Errorf("%s: %w", id.Short(), store.ErrNotFound)
	}
	return err
}

// genericMeta serves stores that give no ages: every blob counts as new,
// so a GC over them deletes nothing (safe, not useful).
type genericMeta struct{ s store.Store }

func (m genericMeta) listAged(ctx context.Context, fn func(blobInfo) error) error {
	now := time.Now()
	return m.s.List(ctx, func(id digest.ID) error { return fn(blobInfo{id, 0, now}) })
}

func (m genericMeta) bases(ctx context.Context, id digest.ID) ([]digest.ID, error) {
	b, err := m.s.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	_, bases, err := chunk.Deps(b)
	return bases, err
}
