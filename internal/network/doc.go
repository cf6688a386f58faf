// Package network gives a node's containers their private networks and the
// node its HTTP gateway to them. It follows ThreeFold zos's "network
// resources": a private network is a network namespace of its own, because
// two deployments of different owners will often choose the same subnet
// (10.1.0.0/24) and a bridge with that address cannot exist twice in the
// host's namespace.
//
// # Networks
//
// A network is identified by the node's id for it, like "12-net" (deployment
// 12, network "net"), and has an IPv4 subnet. Its namespace holds:
//
//   - a bridge "br" with the gateway address, the subnet's first host
//     (10.1.0.1/24), and a fixed MAC derived from the id, so the gateway's MAC
//     does not change as ports come and go;
//   - "transit", the namespace's end of a veth to the host. The pair has the
//     addresses of one /30 of the transit range (Options.Transit, default
//     100.127.0.0/16): the host's end the first host, the namespace's the
//     second, which is also the namespace's default route;
//   - one bridge port per attached sandbox;
//   - ip_forward on, and its own nftables table (below).
//
// A network's /30 is the one sha256(id) names in the range, or the next free
// one: a slot is free when no host address of any link lies in it, so two
// managers sharing a range do not collide. The addresses are kept on the
// links; they are the record, read back rather than allocated again.
//
// # Sandboxes
//
// A sandbox is a container's network namespace, created with only lo, up,
// and ip_forward off (a new namespace copies the host's, which networks turn
// on). Its path goes to the container runtime. Attach connects it to a
// network with a veth: the sandbox's end is the next free ethN with the
// container's address, and if the sandbox has no default route yet, one via
// that network's gateway, so the first network attached is the way out. The
// other end is a port of the network's bridge. A sandbox has at most one
// address per network; an address is held by one sandbox per network.
//
// # Isolation
//
// Containers of one network share a bridge and reach each other and the
// gateway address. Nothing routes between networks: each is a namespace
// whose only way out is its transit link, and the host, through which every
// transit goes, drops what comes from one transit link towards another. The
// host also drops connections from transit links to itself (containers do
// not reach the node's own services, its API among them) and connections
// from anywhere into a transit link: only replies go in. Inside a network,
// connections from the transit side to the namespace or the bridge are
// dropped too. What a container sees of another network is a timeout.
// Traffic between containers of one network is not filtered at all: where
// br_netfilter is loaded, the network's namespace keeps its bridge out of the
// IP hooks (net.bridge.bridge-nf-call-*tables = 0).
//
// A host process reaches containers with DialContext, whose socket is made
// inside the network's namespace: the connection comes from the gateway
// address, which no other network can claim.
//
// # NAT
//
// Outbound traffic is masqueraded twice: in the network's namespace, from
// the subnet to the transit address (so the host never sees the
// overlapping subnets), and on the host, from the transit range to the
// address of the link it leaves by. The host's ip_forward is turned on with
// the first network and left on.
//
// Rules are nftables, loaded with the nft binary as a whole table on stdin
// (`nft -f -`): each change is one atomic transaction that replaces the
// table, so a crash leaves the old table or the new one, never half of one.
// The host's table ("inet <prefix>") matches transit links by name wildcard
// ("<prefix>t*"): it is the same for one network or a hundred, reloaded by
// every EnsureNetwork (a flushed ruleset comes back with the next reconcile)
// and deleted with the last network. Each network's table lives
// and dies with its namespace. Another firewall on the host whose forward
// chain drops by default must let transit links out; that is the host's
// configuration, not this package's.
//
// # Gateway
//
// Gateway is an http.Handler that proxies a request, by its Host (without
// port, case-insensitive), to a container's ip:port in a network, through
// DialContext. Unknown hosts get 404; a container that does not answer, 502.
// It is the edge: X-Forwarded-For, -Host and -Proto are set from the
// request, not appended to what the client sent. Upgraded connections
// (websockets) pass. Each host has its own connection pool, since two
// networks may both have a 10.1.0.2:80. TLS is the listener's business.
//
// # Names and recovery after a restart
//
// The Manager keeps no state: namespaces are bind-mounted under
// Options.NetNSDir (default /run/zos/netns) as "<prefix>-net-<id>" and
// "<prefix>-sbx-<id>", and live on without the agent. Links the host sees
// are named "<prefix><kind><hash>", 15 characters (IFNAMSIZ), kind "t" for a
// transit and "v" for a bridge port, hash the first hex digits of sha256 of
// the id, and carry the id in their alias ("net:<id>", or "sbx:<id> <ip>" on
// a port), which also catches hash collisions. Inside the namespaces, which
// are the Manager's alone, names are fixed: "br", "transit", ethN.
//
// A new Manager over the same Options finds everything: Networks and
// Sandboxes list the namespace files (and transit links whose namespace file
// is gone), EnsureNetwork, Sandbox and Attach re-applied to what exists
// change nothing and repair what a crash left half made, and RemoveNetwork
// and RemoveSandbox remove what the agent no longer wants. A network's
// subnet is its bridge's address, so a different one for the same id is
// refused (ErrConflict) after a restart as before.
package network
