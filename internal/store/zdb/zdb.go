// Package zdb is a chunk store on a server speaking the Redis protocol:
// ThreeFold's 0-db (zdb), the backend rfs uses, or a plain redis-server.
//
// # URL
//
//	zdb://[:password@]host[:port]/namespace    0-db, port 9900 by default
//	redis://[[user]:password@]host[:port]/db   redis-server, port 6379 by default
//
// String gives the URL without the password.
//
// # Dialects
//
// Both dialects store a blob under its raw 32-byte ID (0-db in user-key mode
// takes binary keys) with SET, GET, EXISTS and DEL. They differ in how a
// connection picks its keyspace and in how keys are walked:
//
//   - 0-db: every pooled connection sends SELECT namespace [password] when it
//     connects (the namespace password goes there, not to AUTH, which is
//     0-db's admin login); an empty namespace with no password stays in
//     "default". SET of an unchanged value answers nil and writes nothing, so
//     Put is a plain SET. List walks with 0-db's SCAN: no argument starts at
//     the oldest entry, each reply carries an opaque binary cursor and
//     [key, size, timestamp] entries, and the error "No more data" ends the
//     walk. Since the walk follows the append-only index, a key may show up
//     once per write; List drops repeats and checks EXISTS for each new key.
//   - redis: AUTH and SELECT db are sent on connect by go-redis itself. Put is
//     SET NX, so a present blob is never rewritten. List uses redis SCAN with
//     a numeric cursor and MATCH of 32 single-byte wildcards.
//
// 0-db is not packaged in Debian, so the tests here run the zdb dialect
// against a real redis-server through the commands both share: a numeric
// namespace makes 0-db's SELECT a redis SELECT of that database. Its SCAN
// walk is tested only on the reply shape 0-db documents.
//
// # Integrity
//
// Get verifies every blob; one that fails its check is deleted (best
// effort, as the dir store removes a torn file), because a redis Put trusts
// a present key and would otherwise never replace it.
package zdb

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/zosgrid/zos/internal/chunk"
	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/store"
)

// Dialect says which server the store talks to.
type Dialect int

const (
	// ZDB is ThreeFold's 0-db in user-key mode.
	ZDB Dialect = iota
	// Redis is redis-server (or a compatible server).
	Redis
)

// Default ports when a URL names none.
const (
	DefaultZDBPort   = "9900"
	DefaultRedisPort = "6379"
)

// Options say where the store is and how to reach it.
type Options struct {
	Dialect  Dialect
	Addr     string // host:port
	Username string // redis ACL user; unused by 0-db
	Password string // 0-db: the namespace password, sent with SELECT; redis: AUTH
	// Namespace is the 0-db namespace; empty means "default".
	Namespace string
	// DB is the redis database number.
	DB int
	// PoolSize bounds open connections; zero takes go-redis's default.
	PoolSize int
}

// Store is a keyspace of blobs on one server.
type Store struct {
	rdb *redis.Client
	opt Options
}

var _ store.Store = (*Store)(nil)

// New connects to the server and checks that it answers (and, for 0-db,
// that the namespace can be selected).
func New(ctx context.Context, opt Options) (*Store, error) {
	ro := &redis.Options{
		Addr:                  opt.Addr,
		Protocol:              2, // 0-db speaks RESP2 only; its replies are what List parses
		DisableIdentity:       true,
		ContextTimeoutEnabled: true,
		PoolSize:              opt.PoolSize,
	}
	switch opt.Dialect {
	case Redis:
		ro.Username, ro.Password, ro.DB = opt.Username, opt.Password, opt.DB
	case ZDB:
		if opt.Namespace != "" || opt.Password != "" {
			args := []any{"SELECT", cmp.Or(opt.Namespace, "default")}
			if opt.Password != "" {
				args = append(args, opt.Password)
			}
			// go-redis runs OnConnect on every new pooled connection, so
			// no command ever runs outside the namespace.
			ro.OnConnect = func(ctx context.Context, cn *redis.Conn) error {
				if err := cn.Do(ctx, args...).Err(); err != nil {
					return fmt.Errorf("select namespace %q: %w", opt.Namespace, err)
				}
				return nil
			}
		}
	default:
		return nil, fmt.Errorf("zdb store: unknown dialect %d", opt.Dialect)
	}
	s := &Store{rdb: redis.NewClient(ro), opt: opt}
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		s.rdb.Close()
		return nil, fmt.Errorf("zdb store %s: %w", s, err)
	}
	return s, nil
}

// FromURL parses a zdb:// or redis:// URL (see the package comment) and
// calls New.
func FromURL(ctx context.Context, rawurl string) (*Store, error) {
	opt, err := ParseURL(rawurl)
	if err != nil {
		return nil, err
	}
	return New(ctx, opt)
}

// ParseURL turns a zdb:// or redis:// URL into Options.
func ParseURL(rawurl string) (Options, error) {
	u, err := url.Parse(rawurl)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // url.Error quotes the URL, password and all
		}
		return Options{}, fmt.Errorf("zdb store: bad URL: %w", err)
	}
	bad := func(format string, a ...any) (Options, error) {
		return Options{}, fmt.Errorf("zdb store: %s: %s", redact(u), fmt.Sprintf(format, a...))
	}
	var opt Options
	port := ""
	switch u.Scheme {
	case "zdb":
		opt.Dialect, port = ZDB, DefaultZDBPort
	case "redis":
		opt.Dialect, port = Redis, DefaultRedisPort
	default:
		return bad("scheme is not zdb or redis")
	}
	if u.Hostname() == "" {
		return bad("no host")
	}
	if u.Port() != "" {
		port = u.Port()
	}
	opt.Addr = net.JoinHostPort(u.Hostname(), port)
	if u.User != nil {
		opt.Username = u.User.Username()
		opt.Password, _ = u.User.Password()
		if opt.Dialect == ZDB && opt.Username != "" {
			return bad("0-db has no users: write zdb://:password@host/namespace")
		}
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return bad("no query or fragment expected")
	}
	path := strings.TrimPrefix(u.Path, "/")
	switch opt.Dialect {
	case ZDB:
		if strings.Contains(path, "/") || len(path) > 128 {
			return bad("namespace %q is not one name of at most 128 bytes", path)
		}
		opt.Namespace = path
	case Redis:
		if path != "" {
			db, err := strconv.Atoi(path)
			if err != nil || db < 0 {
				return bad("database %q is not a number", path)
			}
			opt.DB = db
		}
	}
	return opt, nil
}

func redact(u *url.URL) string {
	v := *u
	v.User = nil
	return v.String()
}

// key is the server key for id: its 32 raw bytes.
func key(id digest.ID) string { return string(id[:]) }

func (s *Store) Get(ctx context.Context, id digest.ID) ([]byte, error) {
	b, err := s.rdb.Get(ctx, key(id)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("%s in %s: %w", id.Short(), s, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("zdb store %s: get %s: %w", s, id.Short(), err)
	}
	if err := store.Verify(s, id, b); err != nil {
		if errors.Is(err, chunk.ErrCorrupt) {
			// Best effort: a read-only 0-db namespace refuses, and the
			// error to report is the corruption.
			s.rdb.Del(ctx, key(id))
		}
		return nil, err
	}
	return b, nil
}

func (s *Store) Has(ctx context.Context, id digest.ID) (bool, error) {
	n, err := s.rdb.Exists(ctx, key(id)).Result()
	if err != nil {
		return false, fmt.Errorf("zdb store %s: exists %s: %w", s, id.Short(), err)
	}
	return n > 0, nil
}

func (s *Store) Put(ctx context.Context, id digest.ID, blob []byte) error {
	args := []any{"SET", key(id), blob}
	if s.opt.Dialect == Redis {
		args = append(args, "NX")
	}
	// A nil reply means "not written": the key is present (redis NX) or
	// holds these bytes already (0-db). Both are success.
	if err := s.rdb.Do(ctx, args...).Err(); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("zdb store %s: put %s: %w", s, id.Short(), err)
	}
	return nil
}

func (s *Store) Delete(ctx context.Context, id digest.ID) error {
	if err := s.rdb.Del(ctx, key(id)).Err(); err != nil {
		return fmt.Errorf("zdb store %s: delete %s: %w", s, id.Short(), err)
	}
	return nil
}

// List walks the keyspace and calls fn once per stored 32-byte key. Both
// SCANs may return a key more than once (redis while its table resizes,
// 0-db once per write), so List remembers the keys it has reported: 32
// bytes plus map overhead per chunk, small beside the blobs the server
// holds in memory (redis) or per entry in its index (0-db).
func (s *Store) List(ctx context.Context, fn func(digest.ID) error) error {
	seen := map[digest.ID]struct{}{}
	emit := func(id digest.ID) error {
		if _, ok := seen[id]; ok {
			return nil
		}
		seen[id] = struct{}{}
		return fn(id)
	}
	if s.opt.Dialect == ZDB {
		return s.listZDB(ctx, seen, emit)
	}
	return s.listRedis(ctx, emit)
}

func (s *Store) listRedis(ctx context.Context, emit func(digest.ID) error) error {
	match := strings.Repeat("?", digest.Size) // keys of exactly 32 bytes
	var cursor uint64
	for {
		keys, next, err := s.rdb.Scan(ctx, cursor, match, 1000).Result()
		if err != nil {
			return fmt.Errorf("zdb store %s: scan: %w", s, err)
		}
		for _, k := range keys {
			if len(k) != digest.Size {
				continue
			}
			if err := emit(digest.ID([]byte(k))); err != nil {
				return err
			}
		}
		if next == 0 {
			return nil
		}
		cursor = next
	}
}

// errNoMoreData is how 0-db's SCAN says the walk is over.
const errNoMoreData = "No more data"

func (s *Store) listZDB(ctx context.Context, seen map[digest.ID]struct{}, emit func(digest.ID) error) error {
	args := []any{"SCAN"}
	for {
		reply, err := s.rdb.Do(ctx, args...).Result()
		if err != nil {
			var rerr redis.Error
			if errors.As(err, &rerr) && strings.HasPrefix(rerr.Error(), errNoMoreData) {
				return nil
			}
			return fmt.Errorf("zdb store %s: scan: %w", s, err)
		}
		cursor, keys, err := parseScan(reply)
		if err != nil {
			return fmt.Errorf("zdb store %s: scan: %w", s, err)
		}
		// The walk also passes deleted and overwritten entries: keep the
		// new keys that still exist.
		var fresh []digest.ID
		for _, id := range keys {
			if _, ok := seen[id]; !ok {
				fresh = append(fresh, id)
			}
		}
		if len(fresh) > 0 {
			cmds, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
				for _, id := range fresh {
					p.Exists(ctx, key(id))
				}
				return nil
			})
			if err != nil {
				return fmt.Errorf("zdb store %s: scan: exists: %w", s, err)
			}
			for i, c := range cmds {
				if c.(*redis.IntCmd).Val() == 0 {
					continue
				}
				if err := emit(fresh[i]); err != nil {
					return err
				}
			}
		}
		args = []any{"SCAN", cursor}
	}
}

// parseScan reads one 0-db SCAN reply: [cursor, [[key, size, timestamp]...]],
// keeping the keys that can be chunk IDs.
func parseScan(reply any) (cursor string, keys []digest.ID, err error) {
	top, ok := reply.([]any)
	if !ok || len(top) != 2 {
		return "", nil, fmt.Errorf("unexpected reply %T of %d", reply, lenOf(reply))
	}
	cursor, ok = top[0].(string)
	if !ok || cursor == "" {
		return "", nil, fmt.Errorf("unexpected cursor %T", top[0])
	}
	entries, ok := top[1].([]any)
	if !ok {
		return "", nil, fmt.Errorf("unexpected entries %T", top[1])
	}
	for _, e := range entries {
		fields, ok := e.([]any)
		if !ok || len(fields) < 1 {
			return "", nil, fmt.Errorf("unexpected entry %T", e)
		}
		k, ok := fields[0].(string)
		if !ok {
			return "", nil, fmt.Errorf("unexpected key %T", fields[0])
		}
		if len(k) == digest.Size {
			keys = append(keys, digest.ID([]byte(k)))
		}
	}
	return cursor, keys, nil
}

func lenOf(v any) int {
	if a, ok := v.([]any); ok {
		return len(a)
	}
	return -1
}

// String returns the store's URL without the password.
func (s *Store) String() string {
	u := url.URL{Host: s.opt.Addr}
	switch s.opt.Dialect {
	case ZDB:
		u.Scheme = "zdb"
		if s.opt.Namespace != "" {
			u.Path = "/" + s.opt.Namespace
		}
	default:
		u.Scheme = "redis"
		if s.opt.DB != 0 {
			u.Path = "/" + strconv.Itoa(s.opt.DB)
		}
		if s.opt.Username != "" {
			u.User = url.User(s.opt.Username)
		}
	}
	return u.String()
}

// Close closes the store's connections.
func (s *Store) Close() error { return s.rdb.Close() }
