package hubclient

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/zosgrid/zos/internal/key"
)

// View tokens let a browser, which cannot sign requests, show a private
// namespace on the hub's web page to its owner (docs/HUB.md, "Web page").
// A token is made offline by the owner's key, so no hub keeps any state
// for it:
//
//	EXPIRES.KEY.SIG
//
// EXPIRES in decimal Unix seconds, KEY the signer's 32-byte public key and
// SIG its ed25519 signature in the domain ViewDomain of the three lines
// HOST\nNAMESPACE\nEXPIRES (HOST as the browser addresses the hub, lower
// case, with the port if the URL has one), both in unpadded base64url. It
// opens that one namespace, on that hub, until it expires.
const (
	ViewDomain = "zos hub view v1"
	// ViewParam is the query parameter a view URL carries the token in.
	ViewParam = "view"
	// MaxViewTTL bounds how far ahead a token's expiry may be: a hub
	// refuses a token that would live longer.
	MaxViewTTL = 24 * time.Hour
)

func viewMessage(host, ns string, expires int64) []byte {
	return fmt.Appendf(nil, "%s\n%s\n%d", strings.ToLower(host), ns, expires)
}

// ViewToken returns a token that opens namespace ns on the hub addressed
// as host until expires.
func ViewToken(sec key.Secret, host, ns string, expires time.Time) string {
	pub := sec.Public()
	sig := sec.Sign(ViewDomain, viewMessage(host, ns, expires.Unix()))
	enc := base64.RawURLEncoding
	return strconv.FormatInt(expires.Unix(), 10) + "." + enc.EncodeToString(pub[:]) + "." + enc.EncodeToString(sig)
}

// ErrViewToken is wrapped by every refusal of CheckViewToken.
var ErrViewToken = errors.New("view token not valid")

// CheckViewToken parses tok strictly and checks its signature for
// namespace ns on the hub addressed as host, and that it is neither
// expired at now nor valid for longer than MaxViewTTL from now. Whether
// its key may read ns is the caller's to check.
func CheckViewToken(tok, host, ns string, now time.Time) (key.Public, time.Time, error) {
	parts := strings.Split(tok, ".")
	enc := base64.RawURLEncoding.Strict()
	if len(parts) != 3 || len(parts[0]) == 0 || len(parts[0]) > 19 || parts[0][0] == '0' ||
		strings.Trim(parts[0], "0123456789") != "" || len(parts[1]) != 43 || len(parts[2]) != 86 {
		return key.Public{}, time.Time{}, fmt.Errorf("%w: malformed", ErrViewToken)
	}
	exp, err := strconv.ParseInt(parts[0], 10, 64)
	if err != nil {
		return key.Public{}, time.Time{}, fmt.Errorf("%w: malformed", ErrViewToken)
	}
	kb, err1 := enc.DecodeString(parts[1])
	sig, err2 := enc.DecodeString(parts[2])
	if err1 != nil || err2 != nil || len(kb) != len(key.Public{}) {
		return key.Public{}, time.Time{}, fmt.Errorf("%w: malformed", ErrViewToken)
	}
	var k key.Public
	copy(k[:], kb)
	expires := time.Unix(exp, 0)
	switch {
	case !k.Verify(ViewDomain, viewMessage(host, ns, exp), sig):
		return k, expires, fmt.Errorf("%w: the signature does not verify for namespace %s on %s", ErrViewToken, ns, host)
	case !now.Before(expires):
		return k, expires, fmt.Errorf("%w: expired at %s", ErrViewToken, expires.UTC().Format(time.RFC3339))
	case expires.Sub(now) > MaxViewTTL:
		return k, expires, fmt.Errorf("%w: valid for more than %v", ErrViewToken, MaxViewTTL)
	}
	return k, expires, nil
}

// ViewURL returns the web page of namespace ns on this hub with a view
// token of the client's key that expires after ttl: what a browser opens
// to see a private namespace.
func (c *Client) ViewURL(ns string, ttl time.Duration) (string, error) {
	if c.key == nil {
		return "", errors.New("a view link is signed: the client needs a key")
	}
	if err := CheckNamespace(ns); err != nil {
		return "", err
	}
	if ttl <= 0 || ttl > MaxViewTTL {
		return "", fmt.Errorf("a view link lives more than 0 and at most %v", MaxViewTTL)
	}
	tok := ViewToken(*c.key, c.base.Host, ns, time.Now().Add(ttl))
	return c.base.String() + "/u/" + ns + "?" + url.Values{ViewParam: {tok}}.Encode(), nil
}
