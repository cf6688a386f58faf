package s3

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"golang.org/x/sync/errgroup"

	"github.com/zosgrid/zos/internal/digest"
	"github.com/zosgrid/zos/internal/store"
	"github.com/zosgrid/zos/internal/store/storetest"
)

func TestConformance(t *testing.T) {
	endpoint, access, secret := storetest.StartMinIO(t)
	for _, prefix := range []string{"", "zos/chunks"} {
		t.Run(fmt.Sprintf("prefix=%q", prefix), func(t *testing.T) {
			n := 0
			storetest.Run(t, storetest.Harness{
				Remote: true,
				New: func(t *testing.T) store.Store {
					n++ // a fresh bucket per subtest, created by New
					s, err := New(context.Background(), Options{
						Endpoint: endpoint, Bucket: fmt.Sprintf("conf-%d-%d", len(prefix), n), Prefix: prefix,
						AccessKey: access, SecretKey: secret,
					})
					if err != nil {
						t.Fatal(err)
					}
					return s
				},
				Corrupt: func(t *testing.T, st store.Store, id digest.ID, blob []byte) {
					s := st.(*Store)
					_, err := s.Client().PutObject(context.Background(), s.Bucket(), s.Key(id),
						bytes.NewReader(blob), int64(len(blob)), minio.PutObjectOptions{})
					if err != nil {
						t.Fatal(err)
					}
				},
			})
		})
	}
}

func TestLayout(t *testing.T) {
	endpoint, access, secret := storetest.StartMinIO(t)
	ctx := context.Background()
	s, err := New(ctx, Options{Endpoint: endpoint, Bucket: "layout", Prefix: "/a/b/", AccessKey: access, SecretKey: secret})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, id, blob := storetest.Blob("layout", 1000)
	if err := s.Put(ctx, id, blob); err != nil {
		t.Fatal(err)
	}
	h := id.String()
	want := "a/b/" + h[:2] + "/" + h
	if _, err := s.Client().StatObject(ctx, "layout", want, minio.StatObjectOptions{}); err != nil {
		t.Fatalf("object %s: %v", want, err)
	}
	// Objects that are not blobs, under and beside the prefix, are not listed.
	for _, k := range []string{"a/b/README", "a/b/" + h[:2] + "/junk", "a/bc/" + h[:2] + "/" + h, "a/b/xx/" + h} {
		if _, err := s.Client().PutObject(ctx, "layout", k, strings.NewReader("x"), 1, minio.PutObjectOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	var got []digest.ID
	if err := s.List(ctx, func(id digest.ID) error { got = append(got, id); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0] != id {
		t.Fatalf("List = %v, want [%s]", got, id.Short())
	}
}

func TestFromURL(t *testing.T) {
	endpoint, access, secret := storetest.StartMinIO(t)
	ctx := context.Background()
	_, id, blob := storetest.Blob("url", 1000)

	s, err := FromURL(ctx, "s3://"+access+":"+secret+"@"+endpoint+"/urls/p?tls=false")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Put(ctx, id, blob); err != nil {
		t.Fatal(err)
	}
	if got, want := s.String(), "s3://"+endpoint+"/urls/p?tls=false"; got != want {
		t.Fatalf("String = %q, want %q", got, want)
	}

	// Credentials from the environment when the URL has none.
	t.Setenv("AWS_ACCESS_KEY_ID", access)
	t.Setenv("AWS_SECRET_ACCESS_KEY", secret)
	s2, err := FromURL(ctx, s.String())
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if ok, err := s2.Has(ctx, id); err != nil || !ok {
		t.Fatalf("Has through env credentials = %v, %v", ok, err)
	}

	// Wrong credentials are refused, and the error does not leak the secret.
	t.Setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
	if _, err := FromURL(ctx, s.String()); err == nil {
		t.Fatal("wrong secret accepted")
	} else if strings.Contains(err.Error(), "wrong-secret") {
		t.Fatalf("error leaks the secret: %v", err)
	}
}

func TestParseURL(t *testing.T) {
	for _, tc := range []struct {
		url  string
		want Options
		str  string // String of a store with these options
		err  bool
	}{
		{url: "s3://k:s@minio:9000/b", want: Options{Endpoint: "minio:9000", Bucket: "b", AccessKey: "k", SecretKey: "s", Secure: true},
			str: "s3://minio:9000/b"},
		{url: "s3://h/b/p/q/?region=eu-1&tls=false", want: Options{Endpoint: "h", Bucket: "b", Prefix: "p/q", Region: "eu-1"},
			str: "s3://h/b/p/q?region=eu-1&tls=false"},
		{url: "s3://k:s%2Fx@h:1/b?tls=true", want: Options{Endpoint: "h:1", Bucket: "b", AccessKey: "k", SecretKey: "s/x", Secure: true},
			str: "s3://h:1/b"},
		{url: "s3://h/", err: true},
		{url: "s3:///b", err: true},
		{url: "http://h/b", err: true},
		{url: "s3://k:secret@h/b?tls=maybe", err: true},
	} {
		t.Run(tc.url, func(t *testing.T) {
			got, err := ParseURL(tc.url)
			if tc.err {
				if err == nil {
					t.Fatalf("ParseURL = %+v, want error", got)
				}
				if strings.Contains(err.Error(), "secret") {
					t.Fatalf("error leaks the secret: %v", err)
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

// TestPutKeepsPresent pins the conditional PUT: a present object is not
// rewritten (so Put costs no rewrite of what is there), and the rotten one
// Get drops is written again by the next Put.
func TestPutKeepsPresent(t *testing.T) {
	endpoint, access, secret := storetest.StartMinIO(t)
	ctx := context.Background()
	s, err := New(ctx, Options{Endpoint: endpoint, Bucket: "keep", AccessKey: access, SecretKey: secret})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, id, blob := storetest.Blob("keep", 3000)
	if _, err := s.Client().PutObject(ctx, "keep", s.Key(id), strings.NewReader("rot"), 3, minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, id, blob); err != nil {
		t.Fatal(err)
	}
	if info, err := s.Client().StatObject(ctx, "keep", s.Key(id), minio.StatObjectOptions{}); err != nil || info.Size != 3 {
		t.Fatalf("present object rewritten: size %d, %v", info.Size, err)
	}
	if _, err := s.Get(ctx, id); err == nil {
		t.Fatal("rotten object served")
	} else {
		t.Log(err)
	}
	if ok, err := s.Has(ctx, id); err != nil || ok {
		t.Fatalf("rotten object not dropped: Has = %v, %v", ok, err)
	}
	if err := s.Put(ctx, id, blob); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Get(ctx, id); err != nil || !bytes.Equal(got, blob) {
		t.Fatalf("after re-put: %d bytes, %v", len(got), err)
	}
}

// TestMissing checks the batched Missing against Has, for small batches
// (stats), shards dense with asked IDs (listings), and a shard far larger
// than what is asked of it (a listing that stops at its budget and leaves
// the rest to stats). It logs what listing and stats cost against MinIO.
func TestMissing(t *testing.T) {
	endpoint, access, secret := storetest.StartMinIO(t)
	ctx := context.Background()
	s, err := New(ctx, Options{Endpoint: endpoint, Bucket: "missing", Prefix: "p", AccessKey: access, SecretKey: secret})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// Objects are put straight under chosen keys: Missing looks at keys,
	// not contents. 4000 present IDs, every other one asked about with an
	// absent neighbour; shard 00 holds 2000 of them.
	id := func(shard byte, i int) digest.ID {
		var d digest.ID
		d[0], d[1], d[2], d[3] = shard, byte(i>>16), byte(i>>8), byte(i)
		return d
	}
	var present, asked []digest.ID
	for i := 0; i < 2000; i++ {
		present = append(present, id(0, 2*i), id(byte(1+i%255), 2*i))
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(32)
	for _, p := range present {
		g.Go(func() error {
			_, err := s.Client().PutObject(gctx, "missing", s.Key(p), strings.NewReader("x"), 1, minio.PutObjectOptions{})
			return err
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	next := func(p digest.ID) digest.ID { return id(p[0], int(p[1])<<16|int(p[2])<<8|int(p[3])+1) }
	var dense, sparse, spread []digest.ID
	for i, p := range present {
		if p[0] == 0 && (i/2)%15 == 0 { // all over shard 00: the listing stops half way
			spread = append(spread, p, next(p))
		}
		switch {
		case p[0] == 0 && i%8 == 0: // a quarter of shard 00, and beside each an absent one
			dense = append(dense, p, next(p))
		case p[0] == 0 && i%200 == 2: // a few, far apart
			sparse = append(sparse, p, next(p))
		case p[0] != 0 && i%4 == 1:
			asked = append(asked, p, next(p))
		}
	}
	asked = append(asked, dense...)
	want, err := store.MissingByHas(ctx, s, asked, 32)
	if err != nil {
		t.Fatal(err)
	}
	if len(want) != len(asked)/2 {
		t.Fatalf("Has says %d of %d are missing, want half", len(want), len(asked))
	}
	for _, tc := range []struct {
		name string
		ids  []digest.ID
	}{
		{"small batch", asked[:10]},
		{"dense shard 00", dense},
		{"everything", asked},
		{"sparse in a big shard", sparse},
		{"spread over a big shard", spread},
		{"duplicates", append(append([]digest.ID{}, asked[:40]...), asked[:40]...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			byHas, err := store.MissingByHas(ctx, s, tc.ids, statParallel)
			tHas := time.Since(start)
			if err != nil {
				t.Fatal(err)
			}
			start = time.Now()
			got, err := s.Missing(ctx, tc.ids)
			tMissing := time.Since(start)
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(byHas) {
				t.Fatalf("Missing = %d IDs, Has says %d", len(got), len(byHas))
			}
			t.Logf("%d IDs, %d missing: %d stats, %d at a time: %v; Missing: %v", len(tc.ids), len(got), len(tc.ids), statParallel, tHas, tMissing)
		})
	}
}
