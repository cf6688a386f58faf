package object

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
)

// S3 keeps objects in a bucket under a prefix: name a/b is the key
// PREFIX/a/b. Create is a conditional PUT (If-None-Match: *), which MinIO
// and AWS S3 honour atomically; a server that ignores the condition would
// break the exclusivity the hub relies on (nonces, registrations), so
// NewS3 checks it once.
type S3 struct {
	client *minio.Client
	bucket string
	prefix string // "" or ending in "/"
	name   string
}

var _ Store = (*S3)(nil)

// NewS3 returns a store over bucket/prefix with an existing client (the
// hub shares the chunk store's), after checking that the server refuses a
// conditional create of a present key.
func NewS3(ctx context.Context, client *minio.Client, bucket, prefix, name string) (*S3, error) {
	prefix = strings.Trim(prefix, "/")
	if prefix != "" {
		prefix += "/"
	}
	s := &S3{client: client, bucket: bucket, prefix: prefix, name: name}
	probe := "probe/create-if-absent"
	if err := s.Put(ctx, probe, nil); err != nil {
		return nil, err
	}
	if err := s.Create(ctx, probe, nil); err == nil {
		return nil, fmt.Errorf("object store %s: the server ignores If-None-Match on PUT, so several hubs cannot share it safely", s)
	} else if !errors.Is(err, ErrExist) {
		return nil, err
	}
	return s, nil
}

func (s *S3) String() string { return s.name }
func (s *S3) Close() error   { return nil }

func (s *S3) key(name string) (string, error) {
	if err := CheckName(name); err != nil {
		return "", err
	}
	return s.prefix + name, nil
}

func (s *S3) fail(op, name string, err error) error {
	switch minio.ToErrorResponse(err).Code {
	case minio.NoSuchKey:
		return fmt.Errorf("%s: %w", name, ErrNotFound)
	case minio.PreconditionFailed:
		return fmt.Errorf("%s: %w", name, ErrExist)
	}
	return fmt.Errorf("object store %s: %s %s: %w", s, op, name, err)
}

func (s *S3) Get(ctx context.Context, name string) ([]byte, error) {
	k, err := s.key(name)
	if err != nil {
		return nil, err
	}
	obj, err := s.client.GetObject(ctx, s.bucket, k, minio.GetObjectOptions{})
	if err != nil {
		return nil, s.fail("get", name, err)
	}
	defer obj.Close()
	b, err := io.ReadAll(obj)
	if err != nil {
		return nil, s.fail("get", name, err)
	}
	return b, nil
}

func (s *S3) Open(ctx context.Context, name string) (io.ReadCloser, Info, error) {
	k, err := s.key(name)
	if err != nil {
		return nil, Info{}, err
	}
	obj, err := s.client.GetObject(ctx, s.bucket, k, minio.GetObjectOptions{})
	if err != nil {
		return nil, Info{}, s.fail("get", name, err)
	}
	oi, err := obj.Stat() // the first request: a missing key fails here
	if err != nil {
		obj.Close()
		return nil, Info{}, s.fail("get", name, err)
	}
	return obj, Info{Name: name, Size: oi.Size, ModTime: oi.LastModified}, nil
}

func (s *S3) Stat(ctx context.Context, name string) (Info, error) {
	k, err := s.key(name)
	if err != nil {
		return Info{}, err
	}
	oi, err := s.client.StatObject(ctx, s.bucket, k, minio.StatObjectOptions{})
	if err != nil {
		return Info{}, s.fail("stat", name, err)
	}
	return Info{Name: name, Size: oi.Size, ModTime: oi.LastModified}, nil
}

func (s *S3) put(ctx context.Context, name string, data []byte, create bool) error {
	k, err := s.key(name)
	if err != nil {
		return err
	}
	opts := minio.PutObjectOptions{ContentType: "application/octet-stream", DisableMultipart: true}
	if create {
		opts.SetMatchETagExcept("*")
	}
	for try := 1; ; try++ {
		_, err = s.client.PutObject(ctx, s.bucket, k, bytes.NewReader(data), int64(len(data)), opts)
		if err == nil {
			return nil
		}
		if !prefixRace(err) || try == putTries {
			return s.fail("put", name, err)
		}
		select {
		case <-ctx.Done():
			return s.fail("put", name, err)
		case <-time.After(time.Duration(try) * 10 * time.Millisecond):
		}
	}
}

// putTries bounds the tries of a PUT that prefixRace failed.
const putTries = 5

// prefixRace reports an answer to a PUT that MinIO gives when a concurrent
// delete removes the directory of the key's emptied prefix under it
// (AccessDenied or NoSuchKey: minio/minio#12914, #15157); the hub's
// pending markers, created and deleted side by side, meet it. A PUT tried
// again then lands. A real permission error fails after putTries tries.
func prefixRace(err error) bool {
	switch minio.ToErrorResponse(err).Code {
	case "AccessDenied", minio.NoSuchKey:
		return true
	}
	return false
}

func (s *S3) Put(ctx context.Context, name string, data []byte) error {
	return s.put(ctx, name, data, false)
}

func (s *S3) Create(ctx context.Context, name string, data []byte) error {
	return s.put(ctx, name, data, true)
}

func (s *S3) Delete(ctx context.Context, name string) error {
	k, err := s.key(name)
	if err != nil {
		return err
	}
	err = s.client.RemoveObject(ctx, s.bucket, k, minio.RemoveObjectOptions{})
	if err != nil && minio.ToErrorResponse(err).Code != minio.NoSuchKey {
		return s.fail("delete", name, err)
	}
	return nil
}

func (s *S3) List(ctx context.Context, prefix string, fn func(Info) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // stops the client's listing goroutine when fn stops early
	for obj := range s.client.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: s.prefix + prefix, Recursive: true}) {
		if obj.Err != nil {
			return fmt.Errorf("object store %s: list %s: %w", s, prefix, obj.Err)
		}
		name := strings.TrimPrefix(obj.Key, s.prefix)
		if CheckName(name) != nil {
			continue // not ours
		}
		if err := fn(Info{Name: name, Size: obj.Size, ModTime: obj.LastModified}); err != nil {
			return err
		}
	}
	return ctx.Err()
}
