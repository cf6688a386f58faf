// Package storeurl opens chunk stores by URL, the form users and flists
// name them in.
//
// # URLs
//
//	dir:///path          a local directory (a bare path means the same)
//	http://host/base     a static or zos HTTP store (https too)
//	s3://KEY:SECRET@host:port/bucket/prefix?tls=false&region=R
//	zdb://[:pass@]host:port/namespace     0-db
//	redis://[:pass@]host:port/db          Redis
//
// A URL may be prefixed by a first-byte range, "00-7f=URL"; several URLs
// make a router (package router) that writes to every store whose range
// matches and reads from any.
package storeurl

import (
	"context"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"

	"github.com/zosgrid/zos/internal/key"
	"github.com/zosgrid/zos/internal/store"
	"github.com/zosgrid/zos/internal/store/dir"
	"github.com/zosgrid/zos/internal/store/httpstore"
	"github.com/zosgrid/zos/internal/store/router"
	"github.com/zosgrid/zos/internal/store/s3"
	"github.com/zosgrid/zos/internal/store/zdb"
)

// Options are what opening a store may need besides its URL.
type Options struct {
	Key *key.Secret // signs writes to http stores
}

// Open opens one store URL (without a range prefix).
func Open(ctx context.Context, raw string, opt Options) (store.Store, error) {
	if strings.HasPrefix(raw, "/") || strings.HasPrefix(raw, ".") {
		return dir.New(raw)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("store URL %q: %w", Redact(raw), err)
	}
	switch u.Scheme {
	case "dir", "file":
		p := u.Path
		if u.Host != "" { // dir://relative/path
			p = filepath.Join(u.Host, u.Path)
		}
		return dir.New(p)
	case "http", "https":
		return httpstore.New(raw, httpstore.Options{Key: opt.Key})
	case "s3":
		return s3.FromURL(ctx, raw)
	case "zdb", "redis":
		return zdb.FromURL(ctx, raw)
	}
	return nil, fmt.Errorf("store URL %q: unknown scheme %q (use dir, http, https, s3, zdb or redis)", Redact(raw), u.Scheme)
}

// OpenAll opens the stores named by specs ("[LO-HI=]URL") as one store.
func OpenAll(ctx context.Context, specs []string, opt Options) (store.Store, error) {
	if len(specs) == 0 {
		return nil, fmt.Errorf("no store given: pass --store URL (for example --store dir:///var/lib/zos/store)")
	}
	var routes []router.Route
	for _, spec := range specs {
		lo, hi, raw, err := router.ParseRoute(spec)
		if err != nil {
			return nil, err
		}
		s, err := Open(ctx, raw, opt)
		if err != nil {
			for _, r := range routes {
				r.Store.Close()
			}
			return nil, err
		}
		if len(specs) == 1 && lo == 0 && hi == 0xff {
			return s, nil
		}
		routes = append(routes, router.Route{Lo: lo, Hi: hi, Store: s})
	}
	r, err := router.New(routes)
	if err != nil {
		for _, rt := range routes {
			rt.Store.Close()
		}
		return nil, err
	}
	return r, nil
}

// Redact removes passwords and secret query parameters from a store spec,
// keeping its range prefix; the result is what flists record.
func Redact(spec string) string {
	prefix := ""
	if len(spec) >= 6 && spec[2] == '-' && spec[5] == '=' {
		prefix, spec = spec[:6], spec[6:]
	}
	if strings.HasPrefix(spec, "/") || strings.HasPrefix(spec, ".") {
		if abs, err := filepath.Abs(spec); err == nil {
			return prefix + "dir://" + abs
		}
		return prefix + spec
	}
	u, err := url.Parse(spec)
	if err != nil {
		return prefix + "<unparseable store URL>"
	}
	u.User = nil
	q := u.Query()
	for k := range q {
		switch strings.ToLower(k) {
		case "secret", "password", "token", "key", "access_key", "secret_key", "x-amz-signature", "x-amz-credential":
			q.Del(k)
		}
	}
	u.RawQuery = q.Encode()
	return prefix + u.String()
}
