package object

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// Dir keeps objects as files under a root directory: name a/b is the file
// ROOT/a/b. Writes go through a temporary file in ROOT/.tmp, then a rename
// (Put) or a hard link, which fails if the name exists (Create).
type Dir struct{ root string }

var _ Store = (*Dir)(nil)

// NewDir opens (creating) a directory store.
func NewDir(root string) (*Dir, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(abs, ".tmp"), 0o755); err != nil {
		return nil, fmt.Errorf("object dir: %w", err)
	}
	return &Dir{root: abs}, nil
}

func (d *Dir) String() string { return "dir://" + d.root }
func (d *Dir) Close() error   { return nil }

func (d *Dir) path(name string) (string, error) {
	if err := CheckName(name); err != nil {
		return "", err
	}
	return filepath.Join(d.root, filepath.FromSlash(name)), nil
}

func notFound(name string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s: %w", name, ErrNotFound)
	}
	return err
}

func (d *Dir) Get(_ context.Context, name string) ([]byte, error) {
	p, err := d.path(name)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(p)
	return b, notFound(name, err)
}

func (d *Dir) Open(_ context.Context, name string) (io.ReadCloser, Info, error) {
	p, err := d.path(name)
	if err != nil {
		return nil, Info{}, err
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, Info{}, notFound(name, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, Info{}, err
	}
	return f, Info{Name: name, Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

func (d *Dir) Stat(_ context.Context, name string) (Info, error) {
	p, err := d.path(name)
	if err != nil {
		return Info{}, err
	}
	fi, err := os.Stat(p)
	if err != nil {
		return Info{}, notFound(name, err)
	}
	return Info{Name: name, Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

// temp writes data to a new temporary file and returns its path.
func (d *Dir) temp(data []byte) (string, error) {
	f, err := os.CreateTemp(filepath.Join(d.root, ".tmp"), "o-")
	if err != nil {
		return "", err
	}
	_, err = f.Write(data)
	if serr := f.Sync(); err == nil {
		err = serr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

func (d *Dir) Put(_ context.Context, name string, data []byte) error {
	return d.place(name, data, true)
}

func (d *Dir) Create(_ context.Context, name string, data []byte) error {
	return d.place(name, data, false)
}

// place writes data to a temporary file and publishes it under name: a
// rename if replace, else a hard link, which fails with ErrExist if the
// name exists. Delete removes directories left empty, so a concurrent
// Delete can remove one under MkdirAll (which then fails with EEXIST or
// ENOENT) or between MkdirAll and the publication (ENOENT: the temporary
// file's directory, .tmp, is never removed); both are tried again.
func (d *Dir) place(name string, data []byte, replace bool) (err error) {
	p, err := d.path(name)
	if err != nil {
		return err
	}
	tmp, err := d.temp(data)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil || !replace {
			os.Remove(tmp)
		}
	}()
	op := os.Link
	if replace {
		op = os.Rename
	}
	for try := 1; ; try++ {
		err = os.MkdirAll(filepath.Dir(p), 0o755)
		raced := errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrExist)
		if err == nil {
			err = op(tmp, p)
			if !replace && errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("%s: %w", name, ErrExist)
			}
			raced = errors.Is(err, fs.ErrNotExist)
		}
		if !raced || try == placeTries {
			return err
		}
	}
}

// placeTries bounds the tries of a write that raced a Delete.
const placeTries = 10

func (d *Dir) Delete(_ context.Context, name string) error {
	p, err := d.path(name)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	// Drop directories left empty (nonce minutes, removed repositories);
	// Remove fails on a non-empty one, which is the stop condition.
	for dir := filepath.Dir(p); dir != d.root && strings.HasPrefix(dir, d.root); dir = filepath.Dir(dir) {
		if os.Remove(dir) != nil {
			break
		}
	}
	return nil
}

func (d *Dir) List(ctx context.Context, prefix string, fn func(Info) error) error {
	// Walk the deepest directory that holds every match.
	base := prefix
	if !strings.HasSuffix(base, "/") {
		base = path.Dir(base)
	}
	base = strings.Trim(base, "/")
	if base == "." {
		base = ""
	}
	start := filepath.Join(d.root, filepath.FromSlash(base))
	err := filepath.WalkDir(start, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed while walking, or no such prefix
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, _ := filepath.Rel(d.root, p)
		rel = filepath.ToSlash(rel)
		if de.IsDir() {
			if rel == ".tmp" {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasPrefix(rel, prefix) {
			return nil
		}
		fi, err := de.Info()
		if err != nil {
			return nil // removed while walking
		}
		return fn(Info{Name: rel, Size: fi.Size(), ModTime: fi.ModTime()})
	})
	return err
}

// Root returns the directory.
func (d *Dir) Root() string { return d.root }
