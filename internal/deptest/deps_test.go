// Package deptest checks that dependencies point downward (STYLE.md,
// "Layout"): every internal package has a layer, and imports only packages
// of lower layers. Implementation packages of one layer (the stores, for
// example) never import each other. A new package must be given a layer
// here, which is the point: placing it is a design decision.
package deptest

import (
	"os/exec"
	"sort"
	"strings"
	"testing"
)

const module = "github.com/zosgrid/zos/"

// layer of each package (path below the module); cmd/ is above everything.
var layer = map[string]int{
	"internal/digest":  0,
	"internal/chunker": 0,
	"internal/canon":   0, // canonical JSON of signed data (specs, ledger transactions)
	"internal/webtest": 0, // headless Chromium for the web pages' tests
	"internal/key":     1,
	"internal/auth":    2, // signed requests: key, digest
	"internal/chunk":   1,
	"internal/flist":   2,
	"internal/store":   2,

	"internal/store/mem":       3,
	"internal/store/dir":       3,
	"internal/store/s3":        3,
	"internal/store/zdb":       3,
	"internal/store/httpstore": 3,
	"internal/store/lru":       3,
	"internal/store/cache":     3,
	"internal/store/router":    3,
	"internal/store/storetest": 3,
	"internal/store/storeurl":  4, // opens any backend by URL
	"internal/hub/object":      1, // the hub's named objects (dir, S3)
	"internal/hub/hubclient":   3, // wire types and client: nodes import it, not the server
	"internal/spec":            2, // deployments: canonical form, challenge, multisig (key, digest)
	"internal/ledger":          3, // the ledger's state machine: twins, nodes, contracts over spec (pure)
	"internal/ledger/engine":   4, // CometBFT in-process over a ledger.Machine
	"internal/oci":             4, // images as layer streams: only the registry client below it
	"internal/runtime":         1, // containers through libcontainer: receives a rootfs path
	"internal/network":         1, // private networks (namespaces, bridges, veths, nftables), gateway

	// The chain API: its client (with the wire types) sits beside the
	// engine so that nodes read the ledger without importing CometBFT.
	"internal/ledger/ledgerclient": 4,
	"internal/ledger/ledgerapi":    5, // the server and page over a running validator

	"internal/pack":            5,
	"internal/unpack":          5,
	"internal/treediff":        5,
	"internal/mount":           6,
	"internal/hub":             7, // the server: above pack and oci, for conversion
	"internal/node":            8, // the agent: spec, hubclient, runtime, network; mounts through cmd
	"internal/node/nodeclient": 3, // the node API's wire types and client
	"internal/deptest":         9,
}

func TestLayers(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", module+"...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var bad []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		pkg, ok := strings.CutPrefix(f[0], module)
		if !ok || strings.HasPrefix(pkg, "bench/") || strings.HasPrefix(pkg, "demo/") {
			continue
		}
		if strings.HasPrefix(pkg, "cmd/") {
			continue // the binaries wire everything
		}
		mine, ok := layer[pkg]
		if !ok {
			bad = append(bad, pkg+": no layer: add it to internal/deptest with the layer it belongs to")
			continue
		}
		for _, imp := range f[1:] {
			dep, ok := strings.CutPrefix(imp, module)
			if !ok {
				continue
			}
			if theirs, ok := layer[dep]; ok && theirs >= mine {
				bad = append(bad, pkg+" (layer "+itoa(mine)+") imports "+dep+" (layer "+itoa(theirs)+")")
			}
		}
	}
	sort.Strings(bad)
	for _, b := range bad {
		t.Error(b)
	}
}

func itoa(n int) string { return string(rune('0' + n)) }
