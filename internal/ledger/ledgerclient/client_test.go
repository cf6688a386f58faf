package ledgerclient

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	"github.com/zosgrid/zos/internal/ledger"
)

// The client's behaviour against a real server and validator is tested in
// package ledgerapi; these are its pure parts.

func TestNextLink(t *testing.T) {
	for h, want := range map[string]string{
		``: "",
		`</v1/twins?after=2&limit=2>; rel="next"`:  "/v1/twins?after=2&limit=2",
		`</a>; rel=prev, </b>; rel=next`:           "/b",
		`</a>; rel="prev"`:                         "",
		`no brackets; rel="next"`:                  "",
		`</x>; title="t"; rel="next"; type="json"`: "/x",
	} {
		if got := nextLink(h); got != want {
			t.Errorf("nextLink(%q) = %q, want %q", h, got, want)
		}
	}
}

func TestResultJSON(t *testing.T) {
	r := Result{Hash: TxHash([]byte("tx")), Height: 7, Code: 0, Log: "", Events: []ledger.Event{{Type: "twin.created", ID: "3"}}}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var back Result
	if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back, r) {
		t.Fatalf("round trip of %s: %+v %v", b, back, err)
	}
	if back.Event("twin.created") != "3" || back.Event("node.registered") != "" {
		t.Fatalf("Event: %+v", back)
	}
	var empty Result
	b, _ = json.Marshal(empty)
	if string(b) != `{"hash":"","height":0,"code":0,"log":"","events":[]}` {
		t.Fatalf("empty result: %s", b)
	}
}

func TestRefusedErrorIs(t *testing.T) {
	err := error(&RefusedError{Code: ledger.CodeNonce, Log: "stale"})
	if !errors.Is(err, ErrRefused) || !errors.Is(err, ledger.ErrNonce) || errors.Is(err, ledger.ErrSignature) {
		t.Fatalf("%v", err)
	}
	if got := err.Error(); got != "transaction refused (code 5, stale nonce): stale" {
		t.Fatalf("%q", got)
	}
	se := &StatusError{Status: 404, Body: ErrorBody{Error: "no"}}
	if !errors.Is(se, ledger.ErrNotFound) || se.retryable() {
		t.Fatal("404")
	}
	if se := (&StatusError{Status: 503}); !se.retryable() || errors.Is(se, ledger.ErrNotFound) {
		t.Fatal("503")
	}
}
