package zdb

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/store"
	"github.com/zosgrid/zos/internal/store/storetest"
)

// raw opens a plain client on db, to look behind the store's back.
func raw(t *testing.T, addr string, db int) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, DB: db, Protocol: 2})
	t.Cleanup(func() { c.Close() })
	return c
}

func TestConformanceRedis(t *testing.T) {
	addr := storetest.StartRedis(t)
	n := 0
	storetest.Run(t, storetest.Harness{
		Remote: true,
		New: func(t *testing.T) store.Store {
			n++
			db := n % 16 // each subtest in a database of its own, through SELECT
			if err := raw(t, addr, db).FlushDB(context.Background()).Err(); err != nil {
				t.Fatal(err)
			}
			s, err := FromURL(context.Background(), fmt.Sprintf("redis://%s/%d", addr, db))
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
		Corrupt: func(t *testing.T, st store.Store, id digest.ID, blob []byte) {
			s := st.(*Store)
			if err := raw(t, addr, s.opt.DB).Set(context.Background(), key(id), blob, 0).Err(); err != nil {
				t.Fatal(err)
			}
		},
	})
}

// TestZDBDialect runs the zdb dialect against redis-server through the
// commands both servers share. The namespace "7" makes 0-db's SELECT
// namespace a redis SELECT 7, so the test also proves that every pooled
// connection selects it: all writes must land in database 7.
func TestZDBDialect(t *testing.T) {
	ctx := context.Background()
	addr := storetest.StartRedis(t)
	s, err := New(ctx, Options{Dialect: ZDB, Addr: addr, Namespace: "7", PoolSize: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got, want := s.String(), "zdb://"+addr+"/7"; got != want {
		t.Fatalf("String = %q, want %q", got, want)
	}

	var wg sync.WaitGroup
	errs := make(chan error, 32)
	var ids []digest.ID
	for i := 0; i < 32; i++ {
		_, id, blob := storetest.Blob(fmt.Sprint("z", i), 3000+i)
		ids = append(ids, id)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 2; j++ { // the second Put is a no-op
				if err := s.Put(ctx, id, blob); err != nil {
					errs <- err
					return
				}
			}
			if ok, err := s.Has(ctx, id); err != nil || !ok {
				errs <- fmt.Errorf("Has = %v, %v", ok, err)
				return
			}
			if got, err := s.Get(ctx, id); err != nil || !bytes.Equal(got, blob) {
				errs <- fmt.Errorf("Get = %d bytes, %v", len(got), err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := raw(t, addr, 7).DBSize(ctx).Val(); n != 32 {
		t.Fatalf("database 7 holds %d keys, want 32", n)
	}
	if n := raw(t, addr, 0).DBSize(ctx).Val(); n != 0 {
		t.Fatalf("database 0 holds %d keys: a pooled connection skipped SELECT", n)
	}
	if err := s.Delete(ctx, ids[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, ids[0]); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get after Delete: %v", err)
	}

	// A rotten blob is refused and dropped, so the next Put heals it.
	_, id, blob := storetest.Blob("rot", 2000)
	bad := []byte(strings.Repeat("x", 100))
	if err := raw(t, addr, 7).Set(ctx, key(id), bad, 0).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, id); err == nil {
		t.Fatal("rotten blob served")
	}
	if err := s.Put(ctx, id, blob); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, id); err != nil {
		t.Fatalf("after re-put: %v", err)
	}

	// The namespace password goes with SELECT, on connect: redis refuses
	// SELECT's third argument, which shows the hook ran before New returned.
	if _, err := FromURL(ctx, "zdb://:nspass@"+addr+"/7"); err == nil || strings.Contains(err.Error(), "nspass") {
		t.Fatalf("zdb with a namespace password on redis-server: err = %v, want a SELECT error without the password", err)
	}
}

func TestRedisPassword(t *testing.T) {
	ctx := context.Background()
	addr := storetest.StartRedis(t)
	if err := raw(t, addr, 0).ConfigSet(ctx, "requirepass", "s3cret").Err(); err != nil {
		t.Fatal(err)
	}
	s, err := FromURL(ctx, "redis://:s3cret@"+addr+"/2")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got, want := s.String(), "redis://"+addr+"/2"; got != want {
		t.Fatalf("String = %q, want %q", got, want)
	}
	_, id, blob := storetest.Blob("pw", 100)
	if err := s.Put(ctx, id, blob); err != nil {
		t.Fatal(err)
	}
	_, err = FromURL(ctx, "redis://:wrong@"+addr+"/2")
	if err == nil || strings.Contains(err.Error(), "wrong@") {
		t.Fatalf("wrong password: err = %v", err)
	}
}

func TestParseURL(t *testing.T) {
	for _, tc := range []struct {
		url  string
		want Options
		str  string
		err  bool
	}{
		{url: "zdb://h:9901/ns", want: Options{Dialect: ZDB, Addr: "h:9901", Namespace: "ns"}, str: "zdb://h:9901/ns"},
		{url: "zdb://:pw@h/ns", want: Options{Dialect: ZDB, Addr: "h:9900", Namespace: "ns", Password: "pw"}, str: "zdb://h:9900/ns"},
		{url: "zdb://[::1]", want: Options{Dialect: ZDB, Addr: "[::1]:9900"}, str: "zdb://[::1]:9900"},
		{url: "redis://h", want: Options{Dialect: Redis, Addr: "h:6379"}, str: "redis://h:6379"},
		{url: "redis://u:pw@h:1/3", want: Options{Dialect: Redis, Addr: "h:1", Username: "u", Password: "pw", DB: 3}, str: "redis://u@h:1/3"},
		{url: "redis://h/x", err: true},
		{url: "redis://h/-1", err: true},
		{url: "zdb://u:pw@h/ns", err: true},
		{url: "zdb://h/a/b", err: true},
		{url: "zdb://h/ns?x=1", err: true},
		{url: "zdb:///ns", err: true},
		{url: "http://h/ns", err: true},
	} {
		t.Run(tc.url, func(t *testing.T) {
			got, err := ParseURL(tc.url)
			if tc.err {
				if err == nil {
					t.Fatalf("ParseURL = %+v, want error", got)
				}
				if strings.Contains(err.Error(), "pw") {
					t.Fatalf("error leaks the password: %v", err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseURL = %+v, %v; want %+v", got, err, tc.want)
			}
			if s := (&Store{opt: got}).String(); s != tc.str {
				t.Fatalf("String = %q, want %q", s, tc.str)
			}
		})
	}
}

// TestParseScan reads replies shaped as 0-db's SCAN sends them (documented
// in 0-db's README; go-redis decodes bulk strings as string, integers as
// int64).
func TestParseScan(t *testing.T) {
	id := digest.Sum([]byte("a"))
	reply := []any{
		"\x87\x00\x00\x00\x10\x00\x00\xcd4\x00\x00\x87E{\x88",
		[]any{
			[]any{string(id[:]), int64(16), int64(1535361488)},
			[]any{"\x01\x02\x03", int64(6), int64(1535361485)}, // not a chunk key
		},
	}
	cursor, keys, err := parseScan(reply)
	if err != nil || cursor != reply[0] || len(keys) != 1 || keys[0] != id {
		t.Fatalf("parseScan = %q, %v, %v", cursor, keys, err)
	}
	for _, bad := range []any{nil, "x", []any{"c"}, []any{int64(1), []any{}}, []any{"c", "x"}, []any{"c", []any{"k"}}} {
		if _, _, err := parseScan(bad); err == nil {
			t.Errorf("parseScan(%#v) accepted", bad)
		}
	}
}
