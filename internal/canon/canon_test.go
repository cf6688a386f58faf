package canon

import (
	"encoding/json"
	"testing"
)

func TestEncode(t *testing.T) {
	v := Obj{
		"b":    []any{uint64(18446744073709551615), uint32(7), true, false},
		"a":    "q\"\\\x01\n\t\u00e9</>",
		"raw":  Raw(`{"x":1}`),
		"":     Obj{},
		"list": []any{},
	}
	got := string(Encode(v))
	want := `{"":{},"a":"q\"\\\u0001\n\té</>","b":[18446744073709551615,7,true,false],"list":[],"raw":{"x":1}}`
	if got != want {
		t.Fatalf("Encode:\n got %s\nwant %s", got, want)
	}
	// It is JSON, and it says what v says.
	var back map[string]any
	if err := json.Unmarshal([]byte(got), &back); err != nil {
		t.Fatal(err)
	}
	if back["a"] != "q\"\\\x01\n\t\u00e9</>" {
		t.Errorf("string round trip: %q", back["a"])
	}
}

func TestUnexpectedTypePanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("an int encoded without a panic")
		}
	}()
	Encode(Obj{"n": 1})
}
