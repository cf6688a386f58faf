package hub

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/zosgrid/zos/internal/auth"
	"github.com/zosgrid/zos/internal/hub/object"
	"github.com/zosgrid/zos/internal/key"
)

// objectNonces is the auth.NonceStore of a hub: one object per accepted
// nonce, nonces/MINUTE/KEYHEX.NONCE, made with create-if-absent so that of
// hubs sharing the backend exactly one accepts a request. MINUTE is when
// the nonce expires (its ts plus the skew window), in Unix minutes, so
// expired nonces are pruned a minute directory at a time. A replay repeats
// the signed ts, hence the minute, hence the name.
type objectNonces struct{ o object.Store }

var _ auth.NonceStore = (*objectNonces)(nil)

func nonceName(k key.Public, nonce string, until time.Time) string {
	return fmt.Sprintf("nonces/%d/%x.%s", until.Unix()/60, k[:], nonce)
}

func (n *objectNonces) Use(ctx context.Context, k key.Public, nonce string, until time.Time) error {
	err := n.o.Create(ctx, nonceName(k, nonce, until), nil)
	if errors.Is(err, object.ErrExist) {
		return auth.ErrReplay
	}
	return err
}

// pruneNonces deletes the nonces that expired before now. Quick prunes look
// at the last ten minutes (run every minute, that is all there is); a full
// prune (GC) lists every nonce.
func pruneNonces(ctx context.Context, o object.Store, now time.Time, full bool) error {
	cur := now.Unix()/60 - 1 // a minute directory is expired once the next one starts
	if !full {
		for m := cur - 10; m <= cur; m++ {
			if err := deleteAll(ctx, o, "nonces/"+strconv.FormatInt(m, 10)+"/"); err != nil {
				return err
			}
		}
		return nil
	}
	var old []string
	err := o.List(ctx, "nonces/", func(fi object.Info) error {
		ms, _, _ := strings.Cut(strings.TrimPrefix(fi.Name, "nonces/"), "/")
		if m, err := strconv.ParseInt(ms, 10, 64); err == nil && m <= cur {
			old = append(old, fi.Name)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, n := range old {
		if err := o.Delete(ctx, n); err != nil {
			return err
		}
	}
	return nil
}

// deleteAll deletes every object under prefix.
func deleteAll(ctx context.Context, o object.Store, prefix string) error {
	var names []string
	if err := o.List(ctx, prefix, func(fi object.Info) error { names = append(names, fi.Name); return nil }); err != nil {
		return err
	}
	for _, n := range names {
		if err := o.Delete(ctx, n); err != nil {
			return err
		}
	}
	return nil
}
