// Package node is the agent of a zos node (docs/NODE.md): a machine with no
// shell and no login whose only door is an API of signed requests. It
// accepts fully pinned, multi-signed deployments and drives the machine
// towards them.
//
// # API
//
// Every request is signed (package auth: time-bounded, never accepted
// twice, bound to the node's host names); a request that is unsigned,
// tampered, expired, replayed or addressed to another node is refused and
// the refusal logged. Nonces are kept in the state file, so a restart of
// the agent does not reopen a replay window. A deployment is accepted
// when the request comes from its owner twin's registered key (Twins) and
// its signature requirement is met (spec.Verify); an update needs a higher
// version; only the owner reads, updates or deletes it, and to anyone else
// it does not exist.
//
// # State and history
//
// One bbolt file (DB) holds the accepted specs, in canonical form with
// their signatures, and the history: an append-only log of every
// transition (requested, verified, refused, image fetched or refused,
// mounted, started, exited, restarted, stopped, failed, deleted). Each
// record carries the hash of the record before it and the node key's
// signature of its own hash, so a changed, removed or inserted record is
// found by VerifyEvents (`zos node history`).
//
// # Reconcile
//
// Run compares what the accepted deployments say with what the machine
// has, every Interval and after each accepted change, and repairs: images
// fetched once and checked against the pinned digest (a flist that
// changed behind its name or URL is refused, with an event); images
// mounted lazily by a Mounter in processes of their own (they outlive the
// agent), once per machine whatever the number of containers running
// them, and each container's root a writable overlay over its image's
// mount; sandboxes, private networks
// and gateway names (Networks, Gateway); containers (Runtime). A container
// that exits is restarted after 1s, 2s, 4s... up to Options.Backoff; one
// whose image mount died (or was mounted again under it), or whose spec
// changed, is recreated. What no
// deployment wants (leftovers of an agent killed half-way, of a deployment
// deleted meanwhile) is removed. Nothing is kept in memory that the
// machine cannot tell again: a new agent adopts the running containers.
//
// # Ledger
//
// With Options.Ledger the agent also watches the grid ledger (watcher): it
// finds its node record by its own key, verifies each of its active
// contracts itself (ContractView.Verify with the twins' keys the ledger
// holds) and makes it an accepted deployment, linked to the contract in the
// state file so that it is deployed once; a revision that became active is
// an update, a contract no longer active a delete. After reconcile passes
// it reports each contract's state with node.report transactions signed by
// the node key, rate-limited. The ledger's twins of its contracts join the
// Twins registry, so their owners use the API. A node with a wiped data
// directory and the same key rebuilds every active contract's workloads
// from the ledger alone.
//
// # Parts
//
// The agent declares the small interfaces it needs (Runtime, Networks,
// Gateway, Mounter, Twins, Ledger); cmd/zos wires internal/runtime,
// internal/network and `zos flist mount`. Volumes are ext4 file systems
// in sparse files on loop devices: the size is a hard limit.
package node
