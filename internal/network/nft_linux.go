package network

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
)

// nft loads ruleset with `nft -f -`, one atomic transaction, in the namespace
// at nsPath ("" for the host's).
func nft(ctx context.Context, nsPath, ruleset string) error {
	run := func() error {
		cmd := exec.CommandContext(ctx, "nft", "-f", "-")
		cmd.Stdin = strings.NewReader(ruleset)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("nft: %w: %s", err, bytes.TrimSpace(out.Bytes()))
		}
		return nil
	}
	if nsPath == "" {
		return run()
	}
	// The child inherits the namespace of the locked thread that starts it.
	return inNS(nsPath, run)
}

// replaceTable is the transaction that swaps table for body atomically: the
// empty declaration makes the delete valid when the table is new.
func replaceTable(family, table, body string) string {
	return fmt.Sprintf("table %s %s {}\ndelete table %s %s\ntable %s %s {\n%s}\n",
		family, table, family, table, family, table, body)
}

// deleteTable is the transaction that removes table whether or not it exists.
func deleteTable(family, table string) string {
	return fmt.Sprintf("table %s %s {}\ndelete table %s %s\n", family, table, family, table)
}

// hostRules is the host's table: transit links do not reach each other nor the
// host, nothing from outside starts a connection into them, and what leaves
// the host from the transit range is masqueraded. Interface wildcards make it
// the same for any number of networks, so adding one changes nothing here.
func hostRules(prefix string, transit netip.Prefix) string {
	t := prefix + "t*"
	return fmt.Sprintf(`	chain input {
		type filter hook input priority filter; policy accept;
		iifname %[1]q ct state established,related accept
		iifname %[1]q drop
	}
	chain forward {
		type filter hook forward priority filter; policy accept;
		iifname %[1]q oifname %[1]q drop
		oifname %[1]q ct state established,related accept
		oifname %[1]q drop
	}
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		ip saddr %[2]s oifname != %[1]q masquerade
	}
`, t, transit)
}

// netRules is a network namespace's table: containers reach the gateway
// address and, masqueraded behind the transit address, the outside; nothing
// from the transit side starts a connection.
func netRules(subnet netip.Prefix) string {
	return fmt.Sprintf(`	chain input {
		type filter hook input priority filter; policy drop;
		iifname "lo" accept
		ct state established,related accept
		iifname %[1]q accept
	}
	chain forward {
		type filter hook forward priority filter; policy drop;
		ct state established,related accept
		iifname %[1]q accept
	}
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		ip saddr %[3]s oifname %[2]q masquerade
	}
`, bridgeName, transitName, subnet)
}
